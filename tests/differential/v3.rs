//! InfluxDB 3 query requests: `GET` parameters and `POST` JSON bodies read
//! with serde (case-sensitive keys, a repeated field is an error, unknown
//! keys ignored, nothing after the object), bodies gunzipped one member.

use crate::gzip::gz;
use crate::harness::{Case, Env, Grant, assert_all_grants, assert_forwarded_faithfully};

fn v3(name: &str, path: &str, body: impl Into<Vec<u8>>) -> Case {
    Case::new(name, "POST", path)
        .header("Content-Type", "application/json")
        .body(body)
}

#[tokio::test]
async fn plain_v3_queries_are_forwarded_faithfully() {
    let env = Env::start(Grant::ReadX).await;
    for case in [
        Case::new("GET sql", "GET", "/api/v3/query_sql?db=x&q=SELECT+1"),
        v3(
            "POST sql",
            "/api/v3/query_sql",
            r#"{"db":"x","format":"json","q":"SELECT 1"}"#,
        ),
        v3(
            "POST influxql",
            "/api/v3/query_influxql",
            r#"{"db":"x","q":"SELECT * FROM m"}"#,
        ),
    ] {
        assert_forwarded_faithfully(&env, &case).await;
    }
}

#[tokio::test]
async fn duplicate_and_case_variant_keys() {
    assert_all_grants(&[
        v3(
            "duplicate db, secret first",
            "/api/v3/query_sql",
            r#"{"db":"secret","q":"SELECT 1","db":"x"}"#,
        ),
        v3(
            "duplicate db, secret last",
            "/api/v3/query_sql",
            r#"{"db":"x","q":"SELECT 1","db":"secret"}"#,
        ),
        v3(
            "Db casing",
            "/api/v3/query_sql",
            r#"{"db":"x","q":"SELECT 1","Db":"secret"}"#,
        ),
        v3(
            "escaped key",
            "/api/v3/query_sql",
            r#"{"db":"x","q":"SELECT 1","\u0064b":"secret"}"#,
        ),
        v3(
            "unknown key",
            "/api/v3/query_sql",
            r#"{"db":"x","q":"SELECT 1","x":1}"#,
        ),
        v3(
            "params",
            "/api/v3/query_influxql",
            r#"{"db":"x","q":"SELECT * FROM m WHERE h = $h","params":{"h":"a"}}"#,
        ),
        Case::new(
            "GET repeated db",
            "GET",
            "/api/v3/query_sql?db=x&q=SELECT+1&db=secret",
        ),
    ])
    .await;
}

#[tokio::test]
async fn bom_trailing_data_and_gzip() {
    let plain = r#"{"db":"x","q":"SELECT 1"}"#;
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(plain.as_bytes());
    let mut two = gz(plain.as_bytes());
    two.extend(gz(br#"{"db":"secret","q":"SELECT 1"}"#));
    assert_all_grants(&[
        v3("byte-order mark", "/api/v3/query_sql", bom),
        v3(
            "trailing object",
            "/api/v3/query_sql",
            format!(r#"{plain}{{"db":"secret"}}"#),
        ),
        v3("gzip JSON", "/api/v3/query_sql", gz(plain.as_bytes()))
            .header("Content-Encoding", "gzip"),
        v3("two gzip members", "/api/v3/query_sql", two).header("Content-Encoding", "gzip"),
        v3("GZIP JSON", "/api/v3/query_sql", gz(plain.as_bytes()))
            .header("Content-Encoding", "GZIP"),
    ])
    .await;
}
