//! Database administration requests (InfluxDB 3's `/api/v3/configure/*`,
//! InfluxDB 2's `/api/v2/buckets`): the database each acts on, the action
//! it needs, and its canonical form.
//!
//! Each endpoint takes its arguments from the query string or a JSON body,
//! as InfluxDB 3's handlers read them (`serde_urlencoded` or
//! `read_body_json` into the request structs of `influxdb3_types::http`).
//! JSON bodies are read strictly (only the struct's keys, spelled exactly,
//! none twice) and re-serialized; query strings are rebuilt from the
//! endpoint's own parameters. The database is the `db` argument (a v2
//! bucket's `name`), required and non-empty.

use bytes::Bytes;
use http::Method;
use serde_json::{Map, Value};

use super::json::parse_strict;
use super::params::Params;
use super::{Canonical, JSON};
use crate::authz::Action;
use crate::proxy::classify::route::Route;
use crate::proxy::reject::Rejection;

/// An administration request, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// The database (or v2 bucket name) it acts on.
    pub database: String,
    /// What it does to it.
    pub action: Action,
    /// What is forwarded.
    pub canonical: Canonical,
}

/// Where an endpoint's arguments are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The query string (the body is not read by the database).
    Query,
    /// A JSON body.
    Json,
    /// The query string when there is one, else a JSON body (InfluxDB 3's
    /// cache deletions); forwarded as a query string.
    QueryOrJson,
}

/// One endpoint and method.
struct Spec {
    source: Source,
    /// The arguments it reads (the first names the database).
    keys: &'static [&'static str],
    action: Action,
}

fn spec(route: Route, method: &Method) -> Option<Spec> {
    use Action::{Create, Delete};
    let (source, keys, action): (Source, &'static [&'static str], Action) =
        match (route, method.as_str()) {
            (Route::V3Database, "POST" | "PUT") => {
                (Source::Json, &["db", "retention_period"], Create)
            }
            (Route::V3Database, "DELETE") => (Source::Query, &["db", "hard_delete_at"], Delete),
            (Route::V3RetentionPeriod, "POST") => (Source::Query, &["db", "duration"], Create),
            (Route::V3RetentionPeriod, "DELETE") => (Source::Query, &["db"], Create),
            (Route::V3Table, "POST") => (Source::Json, &["db", "table", "tags", "fields"], Create),
            (Route::V3Table, "DELETE") => {
                (Source::Query, &["db", "table", "hard_delete_at"], Delete)
            }
            (Route::V3LastCache, "POST") => (
                Source::Json,
                &[
                    "db",
                    "table",
                    "name",
                    "key_columns",
                    "value_columns",
                    "count",
                    "ttl",
                ],
                Create,
            ),
            (Route::V3DistinctCache, "POST") => (
                Source::Json,
                &[
                    "db",
                    "table",
                    "name",
                    "columns",
                    "max_cardinality",
                    "max_age",
                ],
                Create,
            ),
            (Route::V3LastCache | Route::V3DistinctCache, "DELETE") => {
                (Source::QueryOrJson, &["db", "table", "name"], Delete)
            }
            (Route::V2Buckets, "POST") => (
                Source::Json,
                &[
                    "name",
                    "orgID",
                    "description",
                    "retentionRules",
                    "rp",
                    "schemaType",
                ],
                Create,
            ),
            _ => return None,
        };
    Some(Spec {
        source,
        keys,
        action,
    })
}

fn missing(key: &str) -> Rejection {
    Rejection::BadRequest(format!("{key:?} is required"))
}

/// Reads an administration request on `route`. `org_id` is the InfluxDB 2
/// organization buckets are created in (`--upstream-org-id`): the caller's
/// own `orgID` is never forwarded (a bucket name means the operator's
/// organization's bucket, as for writes and queries).
pub fn read(
    route: Route,
    method: &Method,
    url: &Params<'_>,
    body: Bytes,
    org_id: Option<&str>,
) -> Result<Admin, Rejection> {
    let spec = spec(route, method).ok_or(Rejection::MethodNotAllowed)?;
    let database_key = spec.keys[0];
    let from_query = match spec.source {
        Source::Query => true,
        Source::Json => false,
        Source::QueryOrJson => {
            let has_query = spec.keys.iter().any(|k| url.contains(k));
            if has_query && !body.is_empty() {
                return Err(Rejection::BadRequest(
                    "arguments given both in the query string and in the body".to_owned(),
                ));
            }
            has_query
        }
    };
    if from_query {
        let pairs: Vec<(&str, String)> = spec
            .keys
            .iter()
            .filter_map(|k| url.non_empty(k).map(|v| (*k, v.to_owned())))
            .collect();
        let database = pairs
            .iter()
            .find(|(k, _)| *k == database_key)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| missing(database_key))?;
        return Ok(Admin {
            database,
            action: spec.action,
            canonical: Canonical {
                query: Params::encode(pairs.iter().map(|(k, v)| (*k, v.as_str()))),
                body: None,
            },
        });
    }
    let mut object = json_object(&body, spec.keys)?;
    if route == Route::V2Buckets {
        set_organization(&mut object, org_id)?;
    }
    let database = match object.get(database_key) {
        Some(Value::String(db)) if !db.is_empty() => db.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => return Err(missing(database_key)),
        Some(_) => {
            return Err(Rejection::BadRequest(format!(
                "{database_key:?} must be a string"
            )));
        }
    };
    let canonical = if spec.source == Source::QueryOrJson {
        // Forwarded as the query string InfluxDB reads first.
        let mut pairs = Vec::new();
        for key in spec.keys {
            match object.get(*key) {
                None | Some(Value::Null) => {}
                Some(Value::String(v)) => pairs.push((*key, v.as_str())),
                Some(_) => {
                    return Err(Rejection::BadRequest(format!("{key:?} must be a string")));
                }
            }
        }
        Canonical {
            query: Params::encode(pairs),
            body: None,
        }
    } else {
        Canonical {
            query: String::new(),
            body: Some((Bytes::from(Value::Object(object).to_string()), JSON)),
        }
    };
    Ok(Admin {
        database,
        action: spec.action,
        canonical,
    })
}

/// Puts the operator's organization into a bucket creation: a caller's
/// `orgID` is accepted only when it is that one, and bucket creation is
/// refused when none is configured.
fn set_organization(
    object: &mut Map<String, Value>,
    org_id: Option<&str>,
) -> Result<(), Rejection> {
    let Some(org_id) = org_id else {
        return Err(Rejection::BadRequest(
            "creating InfluxDB 2 buckets through fluxgate needs the proxy's --upstream-org-id; \
             a caller's orgID is never forwarded"
                .to_owned(),
        ));
    };
    match object.get("orgID") {
        None | Some(Value::Null) => {}
        Some(Value::String(given)) if given == org_id => {}
        Some(_) => {
            return Err(Rejection::BadRequest(
                "\"orgID\" must be absent or the proxy's organization (--upstream-org-id)"
                    .to_owned(),
            ));
        }
    }
    object.insert("orgID".to_owned(), Value::String(org_id.to_owned()));
    Ok(())
}

/// The strict JSON object of `body`, every key one of `known`.
fn json_object(body: &[u8], known: &[&str]) -> Result<Map<String, Value>, Rejection> {
    let bad = |why: String| Rejection::BadRequest(format!("request body not accepted: {why}"));
    if body.is_empty() {
        return Err(bad("a JSON body is required".to_owned()));
    }
    let Value::Object(object) = parse_strict(body).map_err(bad)? else {
        return Err(bad("the body must be a JSON object".to_owned()));
    };
    if let Some(key) = object.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(bad(format!("unknown key {key:?}")));
    }
    Ok(object)
}

/// The query string of a listing (`GET /api/v3/configure/database`,
/// `GET /api/v2/buckets`), rebuilt from its own parameters. InfluxDB 3's
/// answer is filtered by the proxy, so only JSON formats are accepted.
pub fn listing(route: Route, url: &Params<'_>, org: Option<&str>) -> Result<Canonical, Rejection> {
    let keys: &[&str] = match route {
        Route::V3Database => {
            match url.get("format") {
                Some("json" | "jsonl") => {}
                _ => {
                    return Err(Rejection::BadRequest(
                        "list databases with format=json or format=jsonl through the proxy (it filters the answer)".to_owned(),
                    ));
                }
            }
            &["format", "show_deleted"]
        }
        // The operator's organization, never the caller's.
        _ => &["name", "id", "limit", "offset", "after"],
    };
    let org = org
        .filter(|_| route == Route::V2Buckets)
        .map(|org| ("org", org));
    let pairs = keys
        .iter()
        .filter_map(|k| url.non_empty(k).map(|v| (*k, v)))
        .chain(org);
    Ok(Canonical {
        query: Params::encode(pairs),
        body: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(q: &str) -> Params<'_> {
        Params::parse(Some(q)).unwrap()
    }

    fn body(s: &str) -> Bytes {
        Bytes::from(s.to_owned())
    }

    /// [`super::read`] with no InfluxDB 2 organization configured.
    fn read(
        route: Route,
        method: &Method,
        url: &Params<'_>,
        body: Bytes,
    ) -> Result<Admin, Rejection> {
        super::read(route, method, url, body, None)
    }

    #[test]
    fn buckets_are_created_in_the_operators_organization_only() {
        let create = |b: &str, org: Option<&str>| {
            super::read(
                Route::V2Buckets,
                &Method::POST,
                &Params::default(),
                body(b),
                org,
            )
        };
        let a = create(r#"{"name": "b"}"#, Some("00000000000000aa")).unwrap();
        assert_eq!(
            a.canonical.body,
            Some((body(r#"{"name":"b","orgID":"00000000000000aa"}"#), JSON)),
            "the operator's organization is filled in"
        );
        assert!(
            create(
                r#"{"name": "b", "orgID": "00000000000000aa"}"#,
                Some("00000000000000aa")
            )
            .is_ok()
        );
        for (b, org) in [
            (
                r#"{"name": "b", "orgID": "00000000000000bb"}"#,
                Some("00000000000000aa"),
            ),
            (r#"{"name": "b", "orgID": 1}"#, Some("00000000000000aa")),
            (r#"{"name": "b"}"#, None),
            (r#"{"name": "b", "orgID": "00000000000000bb"}"#, None),
        ] {
            assert!(
                matches!(create(b, org), Err(Rejection::BadRequest(_))),
                "{b} with {org:?}"
            );
        }
    }

    #[test]
    fn v3_database_administration() {
        let a = read(
            Route::V3Database,
            &Method::POST,
            &url("db=ignored"),
            body(r#"{"retention_period": "30d", "db": "x"}"#),
        )
        .unwrap();
        assert_eq!((a.database.as_str(), a.action), ("x", Action::Create));
        assert_eq!(
            a.canonical,
            Canonical {
                query: String::new(),
                body: Some((body(r#"{"db":"x","retention_period":"30d"}"#), JSON)),
            }
        );
        let a = read(
            Route::V3Database,
            &Method::DELETE,
            &url("db=x&junk=1&hard_delete_at=now"),
            body("{\"db\": \"secret\"}"),
        )
        .unwrap();
        assert_eq!((a.database.as_str(), a.action), ("x", Action::Delete));
        assert_eq!(a.canonical.query, "db=x&hard_delete_at=now");
        assert_eq!(
            a.canonical.body, None,
            "the body InfluxDB ignores is not forwarded"
        );
        for (method, q, b) in [
            (Method::POST, "", r#"{"db": "x", "DB": "y"}"#),
            (Method::POST, "", r#"{"db": "x", "db": "y"}"#),
            (Method::POST, "", r#"{"db": ""}"#),
            (Method::POST, "", r#"{"db": 1}"#),
            (Method::POST, "", ""),
            (Method::DELETE, "", ""),
            (Method::PATCH, "db=x", ""),
        ] {
            assert!(
                read(Route::V3Database, &method, &url(q), body(b)).is_err(),
                "{method} {q} {b}"
            );
        }
    }

    #[test]
    fn cache_deletions_read_the_query_or_the_body() {
        let a = read(
            Route::V3LastCache,
            &Method::DELETE,
            &Params::default(),
            body(r#"{"db": "x", "table": "t", "name": "c"}"#),
        )
        .unwrap();
        assert_eq!(a.canonical.query, "db=x&table=t&name=c");
        assert_eq!(a.canonical.body, None);
        assert!(
            read(
                Route::V3DistinctCache,
                &Method::DELETE,
                &url("db=x&table=t&name=c"),
                body(r#"{"db": "secret"}"#)
            )
            .is_err()
        );
    }

    #[test]
    fn v2_buckets() {
        // The caller's orgID is the configured one; the unit test above
        // covers any other.
        let org = Some("0123456789abcdef");
        let a = super::read(
            Route::V2Buckets,
            &Method::POST,
            &Params::default(),
            body(r#"{"name": "b", "orgID": "0123456789abcdef", "retentionRules": [{"type": "expire", "everySeconds": 3600}]}"#),
            org,
        )
        .unwrap();
        assert_eq!((a.database.as_str(), a.action), ("b", Action::Create));
        assert!(
            super::read(
                Route::V2Buckets,
                &Method::POST,
                &Params::default(),
                body(r#"{"Name": "b"}"#),
                org,
            )
            .is_err()
        );
    }

    #[test]
    fn listings_are_rebuilt_and_json_only() {
        let q = |route, query, org| listing(route, &url(query), org).map(|c| c.query);
        assert_eq!(
            q(Route::V3Database, "format=json&x=1", None).unwrap(),
            "format=json"
        );
        assert!(q(Route::V3Database, "format=csv", None).is_err());
        assert!(q(Route::V3Database, "", None).is_err());
        assert_eq!(
            q(Route::V2Buckets, "org=theirs&name=b", Some("ours")).unwrap(),
            "name=b&org=ours"
        );
        assert_eq!(
            q(Route::V2Buckets, "orgID=1&name=b", None).unwrap(),
            "name=b"
        );
    }
}
