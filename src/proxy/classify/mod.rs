//! Classification: what a request needs before it may be forwarded. Each
//! request the proxy decides, once read (see [`crate::proxy::read`]),
//! becomes a [`Plan`]: the (database, action) pairs the token must hold —
//! read and write for data, create, delete and read-schema for
//! administration, which only management tokens hold — or a statement no
//! token may run.

pub mod flux;
pub mod influxql;
pub mod route;
pub mod sql;

use std::collections::BTreeSet;

use self::influxql::{DbRef, Statement};
use self::route::Route;
use super::read::json::{FluxRequest, V3Query};
use super::read::{InfluxQl, Write};
use super::reject::Rejection;
use crate::authz::{Action, Need};
use crate::proto::ALL_DATABASES;

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Every need must be granted.
    Needs(Vec<Need>),
    /// A statement no token may run through the proxy: refused (after the
    /// token is checked, so unknown tokens still get 401). The string
    /// explains why.
    Refused(String),
    /// `SHOW DATABASES` alone: forwarded, and the answer filtered to the
    /// databases the token can read.
    ShowDatabases,
}

/// Which database's InfluxQL a query is: they differ in what the request's
/// database means and in what they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// InfluxDB 1.x (`/query`): `db` only fills in statements that name no
    /// database; administration and `SHOW DATABASES` (filtered) run here.
    V1,
    /// InfluxDB 3 (`/api/v3/query_influxql`, Flight tickets): the request's
    /// database scopes the whole query, so it is always read; InfluxDB 3
    /// administers through its HTTP API, so only schema listings of the
    /// admin statements are accepted, and `SHOW DATABASES` (whose answer the
    /// proxy cannot filter here) is refused.
    V3,
}

fn required<'a>(value: Option<&'a str>, message: &str) -> Result<&'a str, Rejection> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Rejection::BadRequest(message.to_owned()))
}

/// The databases a v2 bucket name reaches: a bucket `db/rp` is database
/// `db`, retention policy `rp` to InfluxDB 1.8, and a bucket of that whole
/// name to InfluxDB 2.x and 3, so both must be held.
pub fn bucket_databases(bucket: &str) -> impl Iterator<Item = &str> {
    let database = bucket.split_once('/').map(|(db, _)| db);
    std::iter::once(bucket).chain(database)
}

/// A write needs write on the database (for a v2 bucket, see
/// [`bucket_databases`]).
pub fn write(route: Route, write: &Write<'_>) -> Result<Plan, Rejection> {
    let needs = match route {
        Route::V2Write => {
            let bucket = required(write.get("bucket"), "bucket is required")?;
            bucket_databases(bucket).map(Need::write).collect()
        }
        Route::V1Write => {
            let db = required(write.get("db"), "database is required")?;
            // InfluxDB 3 writes `db` with retention policy `rp` into the
            // database `db/rp` (rp lower-cased; `''`, `autogen` and
            // `default` mean none: `iox_http` write `RetentionPolicy`).
            let rp = write.get("rp").map(str::to_lowercase);
            let mut needs = vec![Need::write(db)];
            if let Some(rp) = rp.filter(|rp| rp != "''") {
                needs.extend(scoped_database(db, Some(&rp)).map(Need::write));
            }
            needs
        }
        _ => vec![Need::write(required(
            write.get("db"),
            "database is required",
        )?)],
    };
    Ok(Plan::Needs(needs))
}

/// A v1 `/query`.
pub fn v1_query(query: &InfluxQl<'_>) -> Result<Plan, Rejection> {
    influxql_plan(&query.q, query.get("db"), query.get("rp"), Dialect::V1)
}

/// The database InfluxDB 3 reads for `database` with retention policy
/// `policy`: `db/rp`, unless the policy is `autogen` or `default` (as
/// `iox_query_influxql_rewrite` `resolve_dbrp` spells them), or none.
fn scoped_database(database: &str, policy: Option<&str>) -> Option<String> {
    match policy {
        None | Some("" | "autogen" | "default") => None,
        Some(rp) => Some(format!("{database}/{rp}")),
    }
}

/// The needs of InfluxQL `query` run with request database `default_db`:
/// the one rule for `/query`, `/api/v3/query_influxql` and InfluxQL Flight
/// tickets.
/// `rp` is the request's retention policy: InfluxDB 3 applies it to every
/// statement that names its database without one.
pub fn influxql_plan(
    query: &str,
    default_db: Option<&str>,
    rp: Option<&str>,
    dialect: Dialect,
) -> Result<Plan, Rejection> {
    let default_db = default_db.filter(|d| !d.is_empty());
    let statements = influxql::parse_statements(query)
        .map_err(|e| Rejection::BadRequest(format!("error parsing query: {e}")))?;
    let mut needs = BTreeSet::new();
    if dialect == Dialect::V3
        && let Some(db) = default_db
    {
        needs.insert(Need::read(db));
    }
    let resolve = |r: &DbRef| -> Result<String, Rejection> {
        match r {
            DbRef::Named(name) => Ok(name.clone()),
            DbRef::Default => default_db
                .map(str::to_owned)
                .ok_or_else(|| Rejection::BadRequest("database name required".to_owned())),
        }
    };
    let mut show_databases = false;
    for statement in &statements {
        match statement {
            Statement::Refused { what, why } => {
                return Ok(Plan::Refused(format!("{what} is not allowed: {why}")));
            }
            Statement::Admin { what, needs: admin }
                if dialect == Dialect::V3
                    && admin.iter().any(|(_, a)| *a != Action::ReadSchema) =>
            {
                return Ok(Plan::Refused(format!(
                    "{what} is not allowed here: InfluxDB 3 is administered through its HTTP API (/api/v3/configure/…)"
                )));
            }
            // Mixed with data statements, every permission is needed.
            Statement::Admin { needs: admin, .. } => {
                for (db, action) in admin {
                    needs.insert(Need {
                        database: resolve(db)?,
                        action: *action,
                    });
                }
            }
            Statement::ShowDatabases => show_databases = true,
            Statement::Data {
                reads,
                writes,
                scoped,
            } => {
                for r in reads {
                    needs.insert(Need::read(resolve(r)?));
                }
                for w in writes {
                    needs.insert(Need::write(resolve(w)?));
                }
                for s in scoped {
                    let policy = s.policy.as_deref().or(rp);
                    if let Some(database) = scoped_database(&s.database, policy) {
                        needs.insert(if s.write {
                            Need::write(database)
                        } else {
                            Need::read(database)
                        });
                    }
                }
            }
        }
    }
    if show_databases {
        if dialect == Dialect::V3 {
            // Elsewhere the answer cannot be filtered to what the token
            // may see.
            return Ok(Plan::Refused(
                "SHOW DATABASES is only supported on /query".to_owned(),
            ));
        }
        if statements.len() > 1 {
            return Err(Rejection::BadRequest(
                "SHOW DATABASES must be sent on its own".to_owned(),
            ));
        }
        return Ok(Plan::ShowDatabases);
    }
    if needs.is_empty() {
        return Err(Rejection::BadRequest("query names no database".to_owned()));
    }
    Ok(Plan::Needs(needs.into_iter().collect()))
}

/// A Flux query needs read on every bucket it reads and write on every
/// bucket it writes (see [`bucket_databases`]).
pub fn flux(request: &FluxRequest) -> Result<Plan, Rejection> {
    let access = flux::analyze(&request.query)
        .map_err(|e| Rejection::BadRequest(format!("cannot authorize Flux query: {e}")))?;
    let mut needs = BTreeSet::new();
    for bucket in &access.reads {
        needs.extend(bucket_databases(bucket).map(Need::read));
    }
    for bucket in &access.writes {
        needs.extend(bucket_databases(bucket).map(Need::write));
    }
    if needs.is_empty() {
        return Err(Rejection::BadRequest(
            "Flux query names no bucket".to_owned(),
        ));
    }
    Ok(Plan::Needs(needs.into_iter().collect()))
}

/// A v3 query: SQL reads its database (and, through the server-wide system
/// tables, every database: see [`sql`]); InfluxQL reads it and every
/// database it names.
pub fn v3_query(route: Route, query: &V3Query) -> Result<Plan, Rejection> {
    match route {
        Route::V3QuerySql => sql::sql_plan(&query.db, &query.q),
        _ => influxql_plan(&query.q, Some(&query.db), None, Dialect::V3),
    }
}

/// The need that tells a known token from an unknown one without granting
/// anything data-related: CREATE on `database` (or `*`). The answer is
/// "invalid token" (401) or, for any known token, allowed or forbidden.
pub fn token_probe(database: Option<&str>) -> Need {
    Need {
        database: database
            .filter(|d| !d.is_empty())
            .unwrap_or(ALL_DATABASES)
            .to_owned(),
        action: Action::Create,
    }
}

#[cfg(test)]
mod tests;
