//! Tests of request classification: every route's needs, and the refusals.

use super::*;
use crate::authz::Need;

fn params(q: &str) -> Params {
    Params::parse(Some(q)).unwrap()
}

fn needs(plan: Result<Plan, Rejection>) -> Vec<Need> {
    match plan {
        Ok(Plan::Needs(n)) => n,
        other => panic!("expected needs, got {other:?}"),
    }
}

#[test]
fn writes_need_write_on_their_database() {
    assert_eq!(
        needs(plan(Route::V1Write, &params("db=a&rp=x"), QueryBody::None)),
        vec![Need::write("a")]
    );
    assert_eq!(
        needs(plan(Route::V3Write, &params("db=a"), QueryBody::None)),
        vec![Need::write("a")]
    );
    assert_eq!(
        needs(plan(
            Route::V2Write,
            &params("bucket=a/autogen&org=o"),
            QueryBody::None
        )),
        vec![Need::write("a")]
    );
    assert!(plan(Route::V1Write, &params(""), QueryBody::None).is_err());
    assert!(plan(Route::V1Write, &params("db="), QueryBody::None).is_err());
    assert!(plan(Route::V2Write, &params("org=o"), QueryBody::None).is_err());
}

#[test]
fn v1_queries_need_every_database_named() {
    let p = params("db=a&q=SELECT+*+FROM+m%3B+SELECT+*+INTO+c..x+FROM+b..m");
    assert_eq!(
        needs(plan(Route::V1Query, &p, QueryBody::None)),
        vec![Need::read("a"), Need::read("b"), Need::write("c")]
    );
    // No db parameter and a statement naming none: refused, not guessed.
    assert!(
        plan(
            Route::V1Query,
            &params("q=SELECT+*+FROM+m"),
            QueryBody::None
        )
        .is_err()
    );
    assert!(plan(Route::V1Query, &params("db=a"), QueryBody::None).is_err());
}

#[test]
fn admin_and_show_databases() {
    match plan(
        Route::V1Query,
        &params("q=CREATE+DATABASE+x"),
        QueryBody::None,
    ) {
        Ok(Plan::Admin(m)) => assert!(m.contains("skip_database_creation")),
        other => panic!("{other:?}"),
    }
    match plan(
        Route::V1Query,
        &params("db=a&q=SELECT+*+FROM+m%3BDROP+SERIES+FROM+m"),
        QueryBody::None,
    ) {
        Ok(Plan::Admin(m)) => assert!(!m.contains("skip_database_creation")),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        plan(Route::V1Query, &params("q=SHOW+DATABASES"), QueryBody::None),
        Ok(Plan::ShowDatabases)
    );
    assert!(
        plan(
            Route::V1Query,
            &params("db=a&q=SHOW+DATABASES%3BSELECT+*+FROM+m"),
            QueryBody::None
        )
        .is_err()
    );
    assert!(
        plan(
            Route::V3QueryInfluxQl,
            &params("db=a&q=SHOW+DATABASES"),
            QueryBody::None
        )
        .is_err()
    );
}

#[test]
fn v1_query_bodies() {
    let form = QueryBody::Form(Params::parse_form(b"q=SELECT+*+FROM+m&db=a").unwrap());
    assert_eq!(
        needs(plan(Route::V1Query, &params(""), form)),
        vec![Need::read("a")]
    );
    let creds = QueryBody::Form(Params::parse_form(b"q=SELECT+*+FROM+m&db=a&p=secret").unwrap());
    assert!(plan(Route::V1Query, &params(""), creds).is_err());
    let text = QueryBody::Text("SELECT * FROM b..m".into());
    assert_eq!(
        needs(plan(Route::V1Query, &params("db=a"), text)),
        vec![Need::read("b")]
    );
    let both = QueryBody::Text("SELECT * FROM m".into());
    assert!(plan(Route::V1Query, &params("db=a&q=SELECT+1"), both).is_err());
}

#[test]
fn flux_queries_need_their_buckets() {
    let body = QueryBody::Json(serde_json::json!({
        "query": "from(bucket: \"telegraf/autogen\") |> range(start: -1h) |> to(bucket: \"copy\")",
        "type": "flux"
    }));
    assert_eq!(
        needs(plan(Route::V2Query, &params("org=o"), body)),
        vec![Need::write("copy"), Need::read("telegraf")]
    );
    let text = QueryBody::Text("from(bucket: \"b\") |> range(start: -1h)".into());
    assert_eq!(
        needs(plan(Route::V2Query, &params(""), text)),
        vec![Need::read("b")]
    );
    let dynamic = QueryBody::Text("b = \"x\"\nfrom(bucket: b)".into());
    assert!(plan(Route::V2Query, &params(""), dynamic).is_err());
    let influxql = QueryBody::Json(serde_json::json!({"query": "SELECT 1", "type": "influxql"}));
    assert!(plan(Route::V2Query, &params(""), influxql).is_err());
    assert!(plan(Route::V2Query, &params(""), QueryBody::None).is_err());
}

#[test]
fn v3_queries() {
    assert_eq!(
        needs(plan(
            Route::V3QuerySql,
            &params("db=a&q=SELECT+1"),
            QueryBody::None
        )),
        vec![Need::read("a")]
    );
    let json = QueryBody::Json(serde_json::json!({"db": "a", "q": "SELECT * FROM b..m"}));
    assert_eq!(
        needs(plan(Route::V3QueryInfluxQl, &params(""), json)),
        vec![Need::read("b")]
    );
    let json = QueryBody::Json(serde_json::json!({"db": "a", "q": "SELECT 1"}));
    assert!(plan(Route::V3QuerySql, &params("db=b"), json).is_err());
    let no_db = QueryBody::Json(serde_json::json!({"q": "SELECT 1"}));
    assert!(plan(Route::V3QuerySql, &params(""), no_db).is_err());
    assert!(plan(Route::V3QuerySql, &params("q=SELECT+1"), QueryBody::None).is_err());
}

#[test]
fn admin_probe_asks_for_create() {
    assert_eq!(
        admin_probe(&params("db=a")),
        Need {
            database: "a".into(),
            action: Action::Create
        }
    );
    assert_eq!(admin_probe(&params("")).database, "*");
}
