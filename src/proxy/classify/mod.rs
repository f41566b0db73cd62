//! Classification: what a request needs before it may be forwarded. Each
//! route of BRIEF §4 becomes a [`Plan`]: the (database, action) pairs the
//! token must hold, or an admin statement no database token may run.

pub mod body;
pub mod flux;
pub mod influxql;
pub mod params;
pub mod route;

use std::collections::BTreeSet;

use self::body::QueryBody;
use self::influxql::{DbRef, Statement};
use self::params::Params;
use self::route::Route;
use super::reject::Rejection;
use crate::authz::{Action, Need};

/// Telegraf's v1 output sends `CREATE DATABASE` at start-up; say how to stop it.
const TELEGRAF_HINT: &str = " (Telegraf: set skip_database_creation = true in [[outputs.influxdb]]; create databases with an admin credential)";

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Every need must be granted.
    Needs(Vec<Need>),
    /// An admin statement: refused for database tokens (after the token is
    /// checked, so unknown tokens still get 401). The string explains why.
    Admin(String),
    /// `SHOW DATABASES` alone: forwarded, and the answer filtered to the
    /// databases the token can read.
    ShowDatabases,
}

impl Plan {
    /// The databases named, for logs and audit.
    pub fn databases(&self) -> Vec<&str> {
        match self {
            Plan::Needs(needs) => needs.iter().map(|n| n.database.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

/// True when `route` must have its body read to be authorized.
pub fn needs_body(route: Route, method: &http::Method) -> bool {
    match route {
        Route::V2Query => true,
        Route::V1Query | Route::V3QuerySql | Route::V3QueryInfluxQl => method == http::Method::POST,
        _ => false,
    }
}

/// The database a v2 bucket names: `db/rp` is the 1.x compatibility form.
fn bucket_database(bucket: &str) -> &str {
    bucket.split('/').next().unwrap_or(bucket)
}

fn required<'a>(params: &'a Params, key: &str, message: &str) -> Result<&'a str, Rejection> {
    match params.get(key) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Rejection::BadRequest(message.to_owned())),
    }
}

/// Plans a request on `route` with URL parameters `params` and, for routes
/// whose body carries the query, the decoded `body`.
pub fn plan(route: Route, params: &Params, body: QueryBody) -> Result<Plan, Rejection> {
    match route {
        Route::Public => Ok(Plan::Needs(Vec::new())),
        Route::V1Write => Ok(Plan::Needs(vec![Need::write(required(
            params,
            "db",
            "database is required",
        )?)])),
        Route::V3Write => Ok(Plan::Needs(vec![Need::write(required(
            params,
            "db",
            "database is required",
        )?)])),
        Route::V2Write => {
            let bucket = required(params, "bucket", "bucket is required")?;
            Ok(Plan::Needs(vec![Need::write(bucket_database(bucket))]))
        }
        Route::V1Query => plan_v1_query(params, body),
        Route::V2Query => plan_flux(body),
        Route::V3QuerySql | Route::V3QueryInfluxQl => plan_v3_query(route, params, body),
    }
}

fn plan_v1_query(params: &Params, body: QueryBody) -> Result<Plan, Rejection> {
    let merged;
    let (params, text) = match body {
        QueryBody::None => (params, None),
        QueryBody::Form(form) => {
            // Credentials in a form body would reach the database: refuse.
            if form.contains("p") || form.contains("u") {
                return Err(Rejection::BadRequest(
                    "credentials in the request body are not supported; use the Authorization header".to_owned(),
                ));
            }
            merged = params.clone().merge(form)?;
            (&merged, None)
        }
        QueryBody::Text(q) => {
            if params.contains("q") {
                return Err(Rejection::BadRequest(
                    "query given both in the URL and in the body".to_owned(),
                ));
            }
            (params, Some(q))
        }
        QueryBody::Json(_) => {
            return Err(Rejection::UnsupportedMediaType(
                "/query does not take a JSON body".to_owned(),
            ));
        }
    };
    let query = match &text {
        Some(q) => q.as_str(),
        None => required(params, "q", "missing required parameter \"q\"")?,
    };
    plan_influxql(query, params.get("db").filter(|d| !d.is_empty()), true)
}

/// Plans an InfluxQL query; `default_db` stands for statements naming none.
fn plan_influxql(
    query: &str,
    default_db: Option<&str>,
    show_databases_allowed: bool,
) -> Result<Plan, Rejection> {
    let statements = influxql::parse_statements(query)
        .map_err(|e| Rejection::BadRequest(format!("error parsing query: {e}")))?;
    let mut needs = BTreeSet::new();
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
            Statement::Admin { what } => {
                let hint = if what.eq_ignore_ascii_case("CREATE DATABASE") {
                    TELEGRAF_HINT
                } else {
                    ""
                };
                return Ok(Plan::Admin(format!(
                    "{what} is an admin statement; database tokens cannot run it{hint}"
                )));
            }
            Statement::ShowDatabases => show_databases = true,
            Statement::Data { reads, writes } => {
                for r in reads {
                    needs.insert(Need::read(resolve(r)?));
                }
                for w in writes {
                    needs.insert(Need::write(resolve(w)?));
                }
            }
        }
    }
    if show_databases {
        if statements.len() > 1 || !show_databases_allowed {
            return Err(Rejection::BadRequest(if show_databases_allowed {
                "SHOW DATABASES must be sent on its own".to_owned()
            } else {
                "SHOW DATABASES is only supported on /query".to_owned()
            }));
        }
        return Ok(Plan::ShowDatabases);
    }
    if needs.is_empty() {
        return Err(Rejection::BadRequest("query names no database".to_owned()));
    }
    Ok(Plan::Needs(needs.into_iter().collect()))
}

fn plan_flux(body: QueryBody) -> Result<Plan, Rejection> {
    let query = match body {
        QueryBody::Text(q) => q,
        QueryBody::Json(v) => {
            if let Some(kind) = v.get("type").and_then(|t| t.as_str())
                && kind != "flux"
            {
                return Err(Rejection::BadRequest(format!(
                    "query type {kind:?} is not supported; use flux"
                )));
            }
            match v.get("query").and_then(|q| q.as_str()) {
                Some(q) => q.to_owned(),
                None => {
                    return Err(Rejection::BadRequest(
                        "missing \"query\" in the request body".to_owned(),
                    ));
                }
            }
        }
        QueryBody::None => {
            return Err(Rejection::BadRequest(
                "missing query in the request body".to_owned(),
            ));
        }
        QueryBody::Form(_) => {
            return Err(Rejection::UnsupportedMediaType(
                "Flux queries must be JSON or application/vnd.flux".to_owned(),
            ));
        }
    };
    let access = flux::analyze(&query)
        .map_err(|e| Rejection::BadRequest(format!("cannot authorize Flux query: {e}")))?;
    let mut needs = BTreeSet::new();
    for bucket in &access.reads {
        needs.insert(Need::read(bucket_database(bucket)));
    }
    for bucket in &access.writes {
        needs.insert(Need::write(bucket_database(bucket)));
    }
    if needs.is_empty() {
        return Err(Rejection::BadRequest(
            "Flux query names no bucket".to_owned(),
        ));
    }
    Ok(Plan::Needs(needs.into_iter().collect()))
}

fn plan_v3_query(route: Route, params: &Params, body: QueryBody) -> Result<Plan, Rejection> {
    let (db, query) = match body {
        QueryBody::None => (
            required(params, "db", "database is required")?.to_owned(),
            required(params, "q", "query is required")?.to_owned(),
        ),
        QueryBody::Json(v) => {
            let db = v
                .get("db")
                .and_then(|d| d.as_str())
                .unwrap_or_default()
                .to_owned();
            let q = v
                .get("q")
                .and_then(|q| q.as_str())
                .unwrap_or_default()
                .to_owned();
            if db.is_empty() {
                return Err(Rejection::BadRequest("database is required".to_owned()));
            }
            if q.is_empty() {
                return Err(Rejection::BadRequest("query is required".to_owned()));
            }
            if params.get("db").is_some_and(|u| u != db) {
                return Err(Rejection::BadRequest(
                    "parameter \"db\" differs between the URL and the body".to_owned(),
                ));
            }
            if params.get("q").is_some_and(|u| u != q) {
                return Err(Rejection::BadRequest(
                    "parameter \"q\" differs between the URL and the body".to_owned(),
                ));
            }
            (db, q)
        }
        QueryBody::Form(_) | QueryBody::Text(_) => {
            return Err(Rejection::UnsupportedMediaType(
                "v3 query bodies must be JSON".to_owned(),
            ));
        }
    };
    match route {
        // SQL in InfluxDB 3 cannot reach across databases.
        Route::V3QuerySql => Ok(Plan::Needs(vec![Need::read(db)])),
        _ => plan_influxql(&query, Some(&db), false),
    }
}

/// The action a plan's admin check asks about: CREATE is never held by a
/// database token, so the answer is "invalid token" (401) or "forbidden".
pub fn admin_probe(params: &Params) -> Need {
    Need {
        database: params
            .get("db")
            .filter(|d| !d.is_empty())
            .unwrap_or("*")
            .to_owned(),
        action: Action::Create,
    }
}

#[cfg(test)]
mod tests;
