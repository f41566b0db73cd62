//! F5: Flux programs the analyzer misreads (InfluxDB 2.x, Flux ≥ 0.184).
//!
//! Every program below was checked with the real Flux compiler of InfluxDB
//! 2.7 (libflux at flux v0.194.5, `new_semantic_analyzer` +
//! `analyze_source`): it parses and type-checks, and its semantic graph
//! holds the call the proxy did not see.
//!
//! - `in` is not a Flux keyword since flux v0.184 (influxdata/flux 6698ad4:
//!   "`empty` and `in` keywords have been removed"): it is an identifier,
//!   so a `/` after it is division. The analyzer still lists `in` as a
//!   keyword and scans a regex after it, which hides everything up to the
//!   next `/` — a whole `from(bucket: "secret")` or `to(bucket: "secret")`.
//! - Packages are records: `experimental["to"]`, `influxdb["to"]`,
//!   `influxdb["wideTo"]` are the write functions, `influxdb["buckets"]` and
//!   `v1["databases"]` the listings, with no identifier `to`/`buckets` for
//!   the analyzer to catch: a write through them is authorized as a read
//!   of its bucket, a listing not at all. The same through a variable
//!   holding the package (`r = influxdb; r.buckets()`, `w = r.to`): the
//!   analyzer only knows import aliases as packages.

use crate::common::proxy::{request, send};

use super::support::Env;

async fn flux(env: &Env, token: &str, query: &str) -> u16 {
    let auth = format!("Token {token}");
    let body = serde_json::json!({"query": query, "type": "flux"}).to_string();
    send(request(
        "POST",
        &env.proxy.url("/api/v2/query?org=o"),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        body,
    ))
    .await
    .status
}

#[tokio::test]
async fn a_read_hidden_after_the_identifier_in_is_authorized() {
    let env = Env::start(None).await;
    let query = r#"in = 1.0
leak = in /(from(bucket: "secret") |> range(start: 0) |> findRecord(fn: (key) => true, idx: 0))._value/ 1.0
from(bucket: "x") |> range(start: 0) |> map(fn: (r) => ({r with leak: leak}))"#;
    let status = flux(&env, &env.x, query).await;
    assert!(
        (400..500).contains(&status) && env.upstream.count() == 0,
        "answered {status}, forwarded {}: a token for x read bucket secret: `in / (from(bucket: \"secret\") …)._value / 1.0` is a division in Flux",
        env.upstream.count()
    );
}

#[tokio::test]
async fn a_write_hidden_after_the_identifier_in_is_authorized() {
    let env = Env::start(None).await;
    let query = r#"in = 1.0
w = in /(from(bucket: "x") |> range(start: 0) |> to(bucket: "secret") |> findRecord(fn: (key) => true, idx: 0))._value/ 1.0
from(bucket: "x") |> range(start: 0) |> map(fn: (r) => ({r with w: w}))"#;
    let status = flux(&env, &env.x, query).await;
    assert!(
        (400..500).contains(&status) && env.upstream.count() == 0,
        "answered {status}, forwarded {}: a token for x wrote into bucket secret through a to() hidden after `in /`",
        env.upstream.count()
    );
}

#[tokio::test]
async fn write_functions_reached_by_index_need_write() {
    let env = Env::start(None).await;
    // Reads both buckets, writes neither.
    let reader = env
        .token(&[("x", true, false), ("secret", true, false)])
        .await;
    for query in [
        "import \"experimental\"\nfrom(bucket: \"x\") |> range(start: -1h) |> experimental[\"to\"](bucket: \"secret\")",
        "import \"influxdata/influxdb\"\nfrom(bucket: \"x\") |> range(start: -1h) |> influxdb[\"to\"](bucket: \"secret\")",
        "import \"influxdata/influxdb\"\nfrom(bucket: \"x\") |> range(start: -1h) |> influxdb[\"wideTo\"](bucket: \"secret\")",
        "import \"influxdata/influxdb\"\nf = influxdb[\"to\"]\nfrom(bucket: \"x\") |> range(start: -1h) |> f(bucket: \"secret\")",
        // A package is a value too: through a variable, `to` is a plain field.
        "import \"influxdata/influxdb\"\nr = influxdb\nw = r.to\nfrom(bucket: \"x\") |> range(start: -1h) |> w(bucket: \"secret\")",
        "import \"experimental\"\nr = experimental\nw = r.to\nfrom(bucket: \"x\") |> range(start: -1h) |> w(bucket: \"secret\")",
    ] {
        let status = flux(&env, &reader, query).await;
        assert!(
            (400..500).contains(&status) && env.upstream.count() == 0,
            "answered {status}, forwarded {}: a token that only reads secret wrote into it:\n{query}",
            env.upstream.count()
        );
    }
}

#[tokio::test]
async fn listings_reached_by_index_are_refused() {
    let env = Env::start(None).await;
    for query in [
        "import \"influxdata/influxdb\"\nb = influxdb[\"buckets\"]() |> map(fn: (r) => ({_value: r.name}))\nfrom(bucket: \"x\") |> range(start: -1h) |> yield(name: \"ok\")\nb |> yield(name: \"leak\")",
        "import \"influxdata/influxdb/v1\"\nd = v1[\"databases\"]()\nfrom(bucket: \"x\") |> range(start: -1h) |> yield(name: \"ok\")\nd |> yield(name: \"leak\")",
        "import \"influxdata/influxdb\"\nr = influxdb\nb = r.buckets()\nfrom(bucket: \"x\") |> range(start: -1h) |> yield(name: \"ok\")\nb |> yield(name: \"leak\")",
        "import \"influxdata/influxdb/v1\"\nr = v1\nd = r.databases()\nfrom(bucket: \"x\") |> range(start: -1h) |> yield(name: \"ok\")\nd |> yield(name: \"leak\")",
        "import \"influxdata/influxdb\"\nr = {p: influxdb}\nb = r.p.buckets()\nfrom(bucket: \"x\") |> range(start: -1h) |> yield(name: \"ok\")\nb |> yield(name: \"leak\")",
    ] {
        let status = flux(&env, &env.x, query).await;
        assert!(
            (400..500).contains(&status) && env.upstream.count() == 0,
            "answered {status}, forwarded {}: a bucket listing (every bucket's name, unfiltered) was forwarded:\n{query}",
            env.upstream.count()
        );
    }
}
