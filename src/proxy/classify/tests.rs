//! Tests of request classification: every route's needs, and the refusals.

use http::{HeaderMap, Method};

use super::*;
use crate::authz::Need;
use crate::proxy::read::{self, params::Params};

fn url(q: &str) -> Params<'_> {
    Params::parse(Some(q)).unwrap()
}

fn needs(plan: Result<Plan, Rejection>) -> Vec<Need> {
    match plan {
        Ok(Plan::Needs(n)) => n,
        other => panic!("expected needs, got {other:?}"),
    }
}

fn v1(q: &str) -> Result<Plan, Rejection> {
    let params = url(q);
    let r = read::influxql(&Method::GET, &params, &HeaderMap::new(), Default::default())?;
    v1_query(&r)
}

#[test]
fn writes_need_write_on_their_database() {
    let w = |route, q| write(route, &Write::read(route, &url(q), None));
    assert_eq!(
        needs(w(Route::V1Write, "db=a&rp=autogen")),
        vec![Need::write("a")]
    );
    assert_eq!(needs(w(Route::V3Write, "db=a")), vec![Need::write("a")]);
    // A bucket db/rp is database db to 1.8 and bucket db/rp to 2.x: both.
    assert_eq!(
        needs(w(Route::V2Write, "bucket=a/autogen&org=o")),
        vec![Need::write("a/autogen"), Need::write("a")]
    );
    assert!(w(Route::V1Write, "").is_err());
    assert!(w(Route::V1Write, "db=").is_err());
    assert!(w(Route::V2Write, "org=o").is_err());
}

#[test]
fn retention_policies_reach_other_databases_in_influxdb_3() {
    // InfluxDB 3 reads db + rp (not autogen/default) as database "db/rp".
    let w = |q| write(Route::V1Write, &Write::read(Route::V1Write, &url(q), None));
    assert_eq!(
        needs(w("db=x&rp=Foo")),
        vec![Need::write("x"), Need::write("x/foo")]
    );
    for plain in [
        "db=x",
        "db=x&rp=autogen",
        "db=x&rp=DEFAULT",
        "db=x&rp=%27%27",
    ] {
        assert_eq!(needs(w(plain)), vec![Need::write("x")], "{plain}");
    }
    assert_eq!(
        needs(v1("db=x&q=SELECT+*+FROM+x.foo.m")),
        vec![Need::read("x"), Need::read("x/foo")]
    );
    assert_eq!(
        needs(v1("db=x&rp=foo&q=SELECT+*+FROM+x..m")),
        vec![Need::read("x"), Need::read("x/foo")]
    );
    // The request's rp does not apply to a statement naming no database.
    assert_eq!(
        needs(v1("db=x&rp=foo&q=SELECT+*+FROM+m")),
        vec![Need::read("x")]
    );
    assert_eq!(
        needs(v1("db=x&q=SELECT+*+FROM+x.autogen.m")),
        vec![Need::read("x")]
    );
    assert_eq!(
        needs(v1("db=x&q=SELECT+*+INTO+y.bar.m+FROM+m")),
        vec![Need::read("x"), Need::write("y"), Need::write("y/bar")]
    );
}

#[test]
fn v1_queries_need_every_database_named() {
    assert_eq!(
        needs(v1("db=a&q=SELECT+*+FROM+m%3B+SELECT+*+INTO+c..x+FROM+b..m")),
        vec![Need::read("a"), Need::read("b"), Need::write("c")]
    );
    // The request database is needed only where a statement uses it.
    assert_eq!(
        needs(v1("db=a&q=SELECT+*+FROM+b..m")),
        vec![Need::read("b")]
    );
    // No db parameter and a statement naming none: refused, not guessed.
    assert!(v1("q=SELECT+*+FROM+m").is_err());
    assert!(v1("db=a").is_err());
}

#[test]
fn admin_statements_need_admin_actions_on_their_database() {
    let admin = |database: &str, action| Need {
        database: database.into(),
        action,
    };
    assert_eq!(
        needs(v1("q=CREATE+DATABASE+x")),
        vec![admin("x", Action::Create)]
    );
    // Mixed with data statements, every permission is needed.
    assert_eq!(
        needs(v1("db=a&q=SELECT+*+FROM+m%3BDROP+SERIES+FROM+m")),
        vec![Need::read("a"), admin("a", Action::Delete)]
    );
    assert!(v1("q=DROP+MEASUREMENT+m").is_err(), "no database to act on");
    match v1("db=a&q=SELECT+*+FROM+m%3BCREATE+USER+u+WITH+PASSWORD+%27p%27") {
        Ok(Plan::Refused(m)) => assert!(m.contains("replace database users"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn show_databases() {
    assert_eq!(v1("q=SHOW+DATABASES"), Ok(Plan::ShowDatabases));
    assert!(v1("db=a&q=SHOW+DATABASES%3BSELECT+*+FROM+m").is_err());
    let v3 = V3Query {
        db: "a".into(),
        q: "SHOW DATABASES".into(),
        format: None,
        params: None,
    };
    assert!(matches!(
        v3_query(Route::V3QueryInfluxQl, &v3),
        Ok(Plan::Refused(_))
    ));
}

#[test]
fn flux_queries_need_their_buckets() {
    let f = |q: &str| flux(&FluxRequest::from_text(q.to_owned()).unwrap());
    assert_eq!(
        needs(f(
            "from(bucket: \"telegraf/autogen\") |> range(start: -1h) |> to(bucket: \"copy\")"
        )),
        vec![
            Need::write("copy"),
            Need::read("telegraf"),
            Need::read("telegraf/autogen")
        ]
    );
    assert_eq!(
        needs(f("from(bucket: \"b\") |> range(start: -1h)")),
        vec![Need::read("b")]
    );
    assert!(f("b = \"x\"\nfrom(bucket: b)").is_err());
}

#[test]
fn v3_queries() {
    let q = |db: &str, q: &str| V3Query {
        db: db.into(),
        q: q.into(),
        format: None,
        params: None,
    };
    assert_eq!(
        needs(v3_query(Route::V3QuerySql, &q("a", "SELECT 1"))),
        vec![Need::read("a")]
    );
    // InfluxQL on v3: the request's database scopes the query.
    assert_eq!(
        needs(v3_query(
            Route::V3QueryInfluxQl,
            &q("a", "SELECT * FROM b..m")
        )),
        vec![Need::read("a"), Need::read("b")]
    );
}

#[test]
fn the_probe_asks_for_create() {
    assert_eq!(
        token_probe(Some("a")),
        Need {
            database: "a".into(),
            action: Action::Create
        }
    );
    assert_eq!(token_probe(None).database, "*");
    assert_eq!(token_probe(Some("")).database, "*");
}
