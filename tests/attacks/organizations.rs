//! F7: the organization is the caller's choice (InfluxDB 2.x).
//!
//! InfluxDB 2.x bucket names are unique per organization, not per server:
//! `/api/v2/write?org=O&bucket=B` writes bucket `B` of organization `O`,
//! and `/api/v2/query?org=O` looks up `from(bucket: "B")` in `O`. The proxy
//! authorizes the bucket name alone and forwards the caller's `org` /
//! `orgID` as given, while its own upstream credential (typically the
//! operator token created at setup) reaches every organization: a token
//! for `x` reads and writes the bucket named `x` of every organization.

use crate::common::proxy::{request, send};

use super::support::Env;

async fn post(env: &Env, path: &str, content_type: &str, body: &str) -> u16 {
    let auth = format!("Token {}", env.x);
    send(request(
        "POST",
        &env.proxy.url(path),
        &[
            ("authorization", auth.as_str()),
            ("content-type", content_type),
        ],
        body.to_owned(),
    ))
    .await
    .status
}

/// The organization parameters of the forwarded requests.
fn forwarded_orgs(env: &Env) -> Vec<Vec<(String, String)>> {
    env.upstream
        .requests()
        .iter()
        .map(|r| {
            form_urlencoded::parse(r.uri.query().unwrap_or("").as_bytes())
                .filter(|(k, _)| k == "org" || k == "orgID")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn a_write_cannot_choose_the_organization_of_its_bucket() {
    let env = Env::start(None).await;
    for org in ["org=mine", "org=someone-else", "orgID=0123456789abcdef"] {
        post(
            &env,
            &format!("/api/v2/write?bucket=x&{org}"),
            "text/plain",
            "m v=1",
        )
        .await;
    }
    let orgs = forwarded_orgs(&env);
    assert!(
        orgs.windows(2).all(|w| w[0] == w[1]),
        "the caller chose the organization its write to bucket x lands in: {orgs:?}"
    );
}

#[tokio::test]
async fn a_flux_query_cannot_choose_the_organization_of_its_bucket() {
    let env = Env::start(None).await;
    let body = serde_json::json!({"query": "from(bucket: \"x\") |> range(start: -1h)"}).to_string();
    for org in ["org=mine", "org=someone-else", "orgID=0123456789abcdef"] {
        post(
            &env,
            &format!("/api/v2/query?{org}"),
            "application/json",
            &body,
        )
        .await;
    }
    let orgs = forwarded_orgs(&env);
    assert!(
        orgs.windows(2).all(|w| w[0] == w[1]),
        "the caller chose the organization its Flux read of bucket x runs in: {orgs:?}"
    );
}
