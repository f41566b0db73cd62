//! `/api/v2/query` Flux JSON bodies. InfluxDB 2.x and 1.8 decode them with
//! Go's encoding/json into QueryRequest: keys match case-insensitively
//! (with Unicode folding), the last duplicate wins, unknown keys are
//! ignored, only the first JSON value is read (trailing bytes ignored), and
//! `extern` (run before the query) and `ast` (run instead of an empty
//! query) are part of what executes.

use serde_json::json;

use crate::gzip::gz;
use crate::harness::{Case, Env, Grant, assert_all_grants, assert_forwarded_faithfully};

pub const READ_X: &str = r#"from(bucket: "x") |> range(start: -1h)"#;
pub const READ_SECRET: &str = r#"from(bucket: "secret") |> range(start: -1h)"#;

pub fn flux(name: &str, body: impl Into<Vec<u8>>) -> Case {
    Case::new(name, "POST", "/api/v2/query?org=o")
        .header("Content-Type", "application/json")
        .body(body)
}

/// A Flux AST `File` whose one statement is `option v = from(bucket: b)`.
pub fn extern_reading(bucket: &str) -> serde_json::Value {
    json!({"type": "File", "package": null, "imports": null, "body": [{
        "type": "OptionStatement",
        "assignment": {"type": "VariableAssignment",
            "id": {"type": "Identifier", "name": "v"},
            "init": {"type": "CallExpression",
                "callee": {"type": "Identifier", "name": "from"},
                "arguments": [{"type": "ObjectExpression", "properties": [{
                    "type": "Property",
                    "key": {"type": "Identifier", "name": "bucket"},
                    "value": {"type": "StringLiteral", "value": bucket}}]}]}}}]})
}

/// A Flux AST `Package` whose program is `from(bucket: b) |> range(start: -1h)`.
pub fn ast_reading(bucket: &str) -> serde_json::Value {
    json!({"type": "Package", "package": "main", "files": [{"type": "File", "body": [{
        "type": "ExpressionStatement",
        "expression": {"type": "PipeExpression",
            "argument": {"type": "CallExpression",
                "callee": {"type": "Identifier", "name": "from"},
                "arguments": [{"type": "ObjectExpression", "properties": [{
                    "type": "Property",
                    "key": {"type": "Identifier", "name": "bucket"},
                    "value": {"type": "StringLiteral", "value": bucket}}]}]},
            "call": {"type": "CallExpression",
                "callee": {"type": "Identifier", "name": "range"},
                "arguments": [{"type": "ObjectExpression", "properties": [{
                    "type": "Property",
                    "key": {"type": "Identifier", "name": "start"},
                    "value": {"type": "UnaryExpression", "operator": "-",
                        "argument": {"type": "DurationLiteral", "values": [{"magnitude": 1, "unit": "h"}]}}}]}]}}}]}]})
}

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

#[tokio::test]
async fn plain_flux_queries_are_forwarded_faithfully() {
    let env = Env::start(Grant::ReadX).await;
    for case in [
        flux(
            "query and type",
            format!(r#"{{"query":{},"type":"flux"}}"#, q(READ_X)),
        ),
        flux(
            "query, dialect, type",
            format!(
                r#"{{"dialect":{{"annotations":["datatype","group","default"],"header":true}},"query":{},"type":"flux"}}"#,
                q(READ_X)
            ),
        ),
        Case::new("application/vnd.flux", "POST", "/api/v2/query?org=o")
            .header("Content-Type", "application/vnd.flux")
            .body(READ_X),
    ] {
        assert_forwarded_faithfully(&env, &case).await;
    }
}

#[tokio::test]
async fn case_variant_and_duplicate_keys() {
    assert_all_grants(&[
        flux(
            "query then Query",
            format!(r#"{{"query":{},"Query":{}}}"#, q(READ_X), q(READ_SECRET)),
        ),
        flux(
            "query then QUERY",
            format!(
                r#"{{"type":"flux","query":{},"QUERY":{}}}"#,
                q(READ_X),
                q(READ_SECRET)
            ),
        ),
        flux("lone QUERY", format!(r#"{{"QUERY":{}}}"#, q(READ_SECRET))),
        flux(
            "duplicate query",
            format!(r#"{{"query":{},"query":{}}}"#, q(READ_SECRET), q(READ_X)),
        ),
        flux(
            "escaped key",
            format!(
                r#"{{"query":{},"\u0071uery":{}}}"#,
                q(READ_X),
                q(READ_SECRET)
            ),
        ),
        flux(
            "escaped capital key",
            format!(
                r#"{{"query":{},"\u0051uery":{}}}"#,
                q(READ_X),
                q(READ_SECRET)
            ),
        ),
        flux(
            "type then Type influxql",
            r#"{"query":"SELECT * FROM cpu","type":"flux","Type":"influxql","bucket":"secret"}"#,
        ),
        flux(
            "TYPE flux",
            format!(r#"{{"query":{},"TYPE":"flux"}}"#, q(READ_X)),
        ),
        flux(
            "unknown key",
            format!(r#"{{"query":{},"foo":1}}"#, q(READ_X)),
        ),
        flux(
            "PreferNoContent key",
            format!(r#"{{"query":{},"prefernocontent":true}}"#, q(READ_X)),
        ),
    ])
    .await;
}

#[tokio::test]
async fn bom_trailing_data_and_encodings() {
    let plain = format!(r#"{{"query":{}}}"#, q(READ_X));
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(plain.as_bytes());
    assert_all_grants(&[
        flux("byte-order mark", bom),
        flux(
            "trailing object",
            format!(r#"{plain} {{"query":{}}}"#, q(READ_SECRET)),
        ),
        flux("trailing garbage", format!("{plain}garbage")),
        flux("gzip JSON", gz(plain.as_bytes())).header("Content-Encoding", "gzip"),
        Case::new("no Content-Type", "POST", "/api/v2/query?org=o").body(plain.clone()),
        Case::new("text/plain JSON", "POST", "/api/v2/query?org=o")
            .header("Content-Type", "text/plain")
            .body(plain.clone()),
        flux("null query", r#"{"query":null}"#),
    ])
    .await;
}

#[tokio::test]
async fn extern_and_ast_run_too() {
    let ext = extern_reading("secret");
    let ast = ast_reading("secret");
    assert_all_grants(&[
        flux(
            "extern reading secret",
            json!({"query": READ_X, "extern": ext}).to_string(),
        ),
        flux(
            "Extern reading secret",
            json!({"query": READ_X, "Extern": ext}).to_string(),
        ),
        flux(
            "ast reading secret, empty query",
            json!({"query": "", "ast": ast}).to_string(),
        ),
        flux(
            "ast reading secret, no query",
            json!({"ast": ast}).to_string(),
        ),
        flux(
            "folded ast key, empty query",
            format!(r#"{{"query":"","a\u017ft":{ast}}}"#),
        ),
        flux(
            "ast beside a query",
            json!({"query": READ_X, "ast": ast}).to_string(),
        ),
    ])
    .await;
}

#[tokio::test]
async fn buckets_with_a_slash() {
    // 1.8 reads "x/anything" as database x; 2.x and 3.x as a bucket of that
    // name. Both must have been authorized.
    assert_all_grants(&[flux(
        "bucket x/anything",
        json!({"query": r#"from(bucket: "x/anything") |> range(start: -1h)"#}).to_string(),
    )])
    .await;
}
