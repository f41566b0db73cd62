//! Database administration through the proxy against a capturing upstream:
//! InfluxDB 3's `/api/v3/configure/*` and InfluxDB 2's `/api/v2/buckets`.
//! What a management token may do arrives in the canonical form of what was
//! authorized, without the caller's credential; what a database token asks
//! is refused and never arrives; the routes that manage the database's own
//! tokens or run code never arrive either (unless an operator lists the
//! latter); listings are filtered to what the token may see.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TokenServer;
use common::capture::{Canned, CaptureUpstream};
use common::proxy::{ProxyServer, request, send, settings};
use fluxgate::authz::client::AuthzClient;
use fluxgate::proxy::Proxy;
use fluxgate::proxy::forward::{Protocol, Upstream};
use fluxgate::proxy::http::{AllowedPaths, HttpService};

struct Env {
    tokens: TokenServer,
    upstream: CaptureUpstream,
    proxy: ProxyServer,
    /// A database token reading and writing `db`.
    user: String,
    admin: String,
}

async fn env() -> Env {
    let tokens = TokenServer::start().await;
    let upstream = CaptureUpstream::start().await;
    let gate = common::proxy::gate(
        Arc::new(AuthzClient::for_uri(
            tokens.url().parse().unwrap(),
            Duration::from_secs(2),
        )),
        &settings(),
    );
    let http = HttpService::new(
        gate,
        Upstream::new(
            upstream.url().parse().unwrap(),
            Some(http::HeaderValue::from_static("Token upstream-secret")),
            Protocol::Http1,
        ),
        AllowedPaths {
            public: vec![],
            admin: vec!["/api/v3/configure/processing_engine_trigger".to_owned()],
            org: None,
            org_id: Some("0123456789abcdef".to_owned()),
        },
    );
    let proxy = ProxyServer::serve(Proxy::new(http)).await;
    let (_, user) = tokens.database_token(&[("db", true, true)]).await;
    let admin = tokens.management_token.clone();
    Env {
        tokens,
        upstream,
        proxy,
        user,
        admin,
    }
}

impl Env {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> common::proxy::Reply {
        let auth = format!("Token {token}");
        send(request(
            method,
            &self.proxy.url(path),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.to_owned(),
        ))
        .await
    }
}

#[tokio::test]
async fn management_tokens_administer_v3_databases_in_canonical_form() {
    let e = env().await;
    let cases = [
        (
            "POST",
            "/api/v3/configure/database?db=ignored",
            r#"{"retention_period": "30d", "db": "db"}"#,
            "/api/v3/configure/database",
            r#"{"db":"db","retention_period":"30d"}"#,
        ),
        (
            "PUT",
            "/api/v3/configure/database",
            r#"{"db": "db", "retention_period": "7d"}"#,
            "/api/v3/configure/database",
            r#"{"db":"db","retention_period":"7d"}"#,
        ),
        (
            "DELETE",
            "/api/v3/configure/database?db=db&u=x&p=y&hard_delete_at=now",
            r#"{"db": "other"}"#,
            "/api/v3/configure/database?db=db&hard_delete_at=now",
            "",
        ),
        (
            "POST",
            "/api/v3/configure/database/retention_period?db=db&duration=1d",
            "",
            "/api/v3/configure/database/retention_period?db=db&duration=1d",
            "",
        ),
        (
            "POST",
            "/api/v3/configure/table",
            r#"{"db": "db", "table": "t", "tags": ["a"], "fields": [{"name": "f", "type": "float64"}]}"#,
            "/api/v3/configure/table",
            r#"{"db":"db","fields":[{"name":"f","type":"float64"}],"table":"t","tags":["a"]}"#,
        ),
        (
            "DELETE",
            "/api/v3/configure/last_cache",
            r#"{"db": "db", "table": "t", "name": "c"}"#,
            "/api/v3/configure/last_cache?db=db&table=t&name=c",
            "",
        ),
    ];
    for (method, path, body, forwarded_path, forwarded_body) in cases {
        let r = e.call(method, path, &e.admin, body).await;
        assert_eq!(r.status, 204, "{method} {path}: {:?}", r.body);
        let got = e.upstream.last();
        assert_eq!(got.method.as_str(), method);
        assert_eq!(got.uri.path_and_query().unwrap().as_str(), forwarded_path);
        assert_eq!(got.body, forwarded_body.as_bytes(), "{method} {path}");
        assert_eq!(got.headers["authorization"], "Token upstream-secret");
        if forwarded_body.is_empty() {
            assert!(got.headers.get("content-length").is_none_or(|l| l == "0"));
        }
    }
    assert_eq!(e.upstream.count(), cases.len());
}

#[tokio::test]
async fn database_tokens_never_administer() {
    let e = env().await;
    for (method, path, body) in [
        ("POST", "/api/v3/configure/database", r#"{"db": "db"}"#),
        ("DELETE", "/api/v3/configure/database?db=db", ""),
        (
            "POST",
            "/api/v3/configure/table",
            r#"{"db": "db", "table": "t", "tags": [], "fields": []}"#,
        ),
        (
            "POST",
            "/api/v2/buckets",
            r#"{"name": "db", "orgID": "0123456789abcdef"}"#,
        ),
    ] {
        let r = e.call(method, path, &e.user, body).await;
        assert_eq!(r.status, 403, "{method} {path}: {:?}", r.body);
        let json = r.json();
        let message = json.get("error").or_else(|| json.get("message")).unwrap();
        assert!(
            message.as_str().unwrap().contains("management tokens"),
            "{message}"
        );
    }
    // And management tokens never read or write data.
    let r = e
        .call("POST", "/api/v3/write_lp?db=db", &e.admin, "m v=1")
        .await;
    assert_eq!(r.status, 403);
    let r = e
        .call("GET", "/api/v3/query_sql?db=db&q=SELECT+1", &e.admin, "")
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(e.upstream.count(), 0);
}

#[tokio::test]
async fn token_routes_and_unlisted_code_routes_never_arrive() {
    let e = env().await;
    for (method, path, token) in [
        ("POST", "/api/v3/configure/token/admin", None),
        (
            "POST",
            "/api/v3/configure/token/admin/regenerate",
            Some(&e.admin),
        ),
        (
            "DELETE",
            "/api/v3/configure/token?token_name=x",
            Some(&e.admin),
        ),
        (
            "POST",
            "/api/v3/configure/token/named_admin",
            Some(&e.admin),
        ),
        ("POST", "/api/v3/enterprise/configure/token", Some(&e.admin)),
    ] {
        let auth = token.map(|t| format!("Token {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = send(request(method, &e.proxy.url(path), &headers, "{}")).await;
        assert_eq!(r.status, 403, "{path}");
        assert!(r.json()["error"].as_str().unwrap().contains("own tokens"));
    }
    for path in [
        "/api/v3/configure/plugin_environment/install_packages",
        "/api/v3/plugins/files",
        "/api/v3/engine/my-trigger",
        "/api/v3/plugin_test/wal",
        "/api/v3/configure/unknown",
        "/api/v3/configure/database/",
        "/api/v3/Configure/database",
    ] {
        let r = e.call("POST", path, &e.admin, "{}").await;
        assert_eq!(r.status, 404, "{path}");
    }
    // A listed code-running route: management tokens only, forwarded as sent.
    let trigger = "/api/v3/configure/processing_engine_trigger";
    let r = e.call("POST", trigger, &e.user, r#"{"db": "db"}"#).await;
    assert_eq!(r.status, 403);
    assert_eq!(e.upstream.count(), 0);
    let r = e.call("POST", trigger, &e.admin, r#"{"db": "db"}"#).await;
    assert_eq!(r.status, 204);
    let got = e.upstream.last();
    assert_eq!(got.uri.path(), trigger);
    assert_eq!(got.body, br#"{"db": "db"}"#.as_slice());
    assert_eq!(got.headers["authorization"], "Token upstream-secret");
}

#[tokio::test]
async fn listings_show_only_what_the_token_may_see() {
    let e = env().await;
    e.upstream.set_response(Canned {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: bytes::Bytes::from_static(
            br#"[{"iox::database":"_internal"},{"iox::database":"db"},{"iox::database":"secret"}]"#,
        ),
    });
    let names = |r: &common::proxy::Reply| -> Vec<String> {
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["iox::database"].as_str().unwrap().to_owned())
            .collect()
    };
    let path = "/api/v3/configure/database?format=json&junk=1";
    let r = e.call("GET", path, &e.user, "").await;
    assert_eq!((r.status, names(&r)), (200, vec!["db".to_owned()]));
    assert_eq!(
        e.upstream.last().uri.path_and_query().unwrap().as_str(),
        "/api/v3/configure/database?format=json"
    );
    let r = e.call("GET", path, &e.admin, "").await;
    assert_eq!(names(&r), ["_internal", "db", "secret"]);
    let r = e
        .call("GET", "/api/v3/configure/database?format=csv", &e.admin, "")
        .await;
    assert_eq!(r.status, 400, "only JSON formats can be filtered");
    let r = e.call("GET", path, "nobody", "").await;
    assert_eq!(r.status, 401);

    e.upstream.set_response(Canned {
        status: 200,
        headers: vec![],
        body: bytes::Bytes::from_static(
            br#"{"links":{},"buckets":[{"id":"0000000000000001","name":"db"},{"id":"0000000000000002","name":"secret"}]}"#,
        ),
    });
    let r = e.call("GET", "/api/v2/buckets?org=o", &e.user, "").await;
    let json = r.json();
    let buckets: Vec<&str> = json["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(buckets, ["db"]);
}

#[tokio::test]
async fn v2_buckets_are_created_by_name_and_deleted_by_management_tokens() {
    let e = env().await;
    let r = e
        .call(
            "POST",
            "/api/v2/buckets",
            &e.admin,
            r#"{"orgID": "0123456789abcdef", "name": "b", "retentionRules": []}"#,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        e.upstream.last().body,
        br#"{"name":"b","orgID":"0123456789abcdef","retentionRules":[]}"#.as_slice()
    );
    // Another organization's bucket of that name is not the one decided on.
    let before = e.upstream.count();
    let r = e
        .call(
            "POST",
            "/api/v2/buckets",
            &e.admin,
            r#"{"orgID": "fedcba9876543210", "name": "b"}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(e.upstream.count(), before, "nothing reached the database");
    // DELETE by id: an id names no database the proxy can see, so only a
    // token that may delete every database (a management token) may, and
    // nothing is asked of the database before that.
    let path = "/api/v2/buckets/0123456789abcdef";
    let before = e.upstream.count();
    let r = e.call("DELETE", path, &e.user, "").await;
    assert_eq!(r.status, 403);
    assert!(!r.body.windows(4).any(|w| w == b"name"), "{:?}", r.body);
    assert_eq!(e.upstream.count(), before, "nothing reached the database");
    let r = e.call("DELETE", path, &e.admin, "").await;
    assert_eq!(r.status, 204);
    let last = e.upstream.last();
    assert_eq!((last.method.as_str(), last.uri.path()), ("DELETE", path));
    assert_eq!(e.upstream.count(), before + 1);
    let _ = &e.tokens;
}
