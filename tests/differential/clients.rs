//! The requests the official client libraries really send (recorded by
//! tests/python/test_client_compat.py into tests/fixtures/clients/), replayed
//! through the proxy: each must be forwarded, in canonical form, meaning to
//! the database exactly what it meant as sent. This is the list of shapes
//! the canonical readers must accept (the Python influxdb-client's `extern`
//! with parameters and profilers; the v1 client's gzip-declared empty
//! bodies).

use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use crate::harness::{Case, Env, Grant, unfaithful};

#[derive(Debug, Deserialize)]
struct Fixture {
    client: String,
    version: String,
    requests: Vec<Recorded>,
}

#[derive(Debug, Deserialize)]
struct Recorded {
    name: String,
    method: String,
    target: String,
    headers: std::collections::BTreeMap<String, String>,
    body_b64: String,
}

fn fixtures() -> Vec<Fixture> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clients");
    let mut out: Vec<Fixture> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap())
        .collect();
    out.sort_by(|a, b| a.client.cmp(&b.client));
    assert!(
        out.len() >= 2,
        "client fixtures missing in {}",
        dir.display()
    );
    out
}

#[tokio::test]
async fn official_client_requests_are_forwarded_faithfully() {
    // Grant everything: SELECT … INTO and writes need write on x.
    let env = Env::start(Grant::Everything).await;
    let mut failures = Vec::new();
    let mut total = 0;
    for fixture in fixtures() {
        for r in &fixture.requests {
            let mut case = Case::new(
                format!("{} {}: {}", fixture.client, fixture.version, r.name),
                &r.method,
                r.target.clone(),
            )
            .body(
                base64::engine::general_purpose::STANDARD
                    .decode(&r.body_b64)
                    .unwrap(),
            );
            for (k, v) in &r.headers {
                case = case.header(k, v);
            }
            total += 1;
            failures.extend(unfaithful(&env, &case).await);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} client requests are not forwarded faithfully:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}
