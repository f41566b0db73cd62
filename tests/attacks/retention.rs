//! F2: InfluxDB 3 names a v1 (database, retention policy) pair `db/rp`,
//! a database of its own.
//!
//! - `/write?db=x&rp=foo`: core/iox_http/src/write/single_tenant/mod.rs
//!   `parse_v1` writes namespace `x/foo` (rp lower-cased; `autogen`,
//!   `default` and empty mean `x`), creating it if needed;
//! - `/query`: core/iox_v1_query_api/src/handler.rs resolves each
//!   statement's database with `Rewritten::resolve_dbrp`
//!   (core/iox_query_influxql_rewrite): `FROM x.foo.m`, or `FROM x..m` with
//!   `rp=foo`, runs against database `x/foo` (the statement's db/rp win
//!   over the parameters).
//!
//! The proxy already treats a v2 bucket `x/foo` as needing both `x/foo` and
//! `x` (InfluxDB 1.8 reads it as db `x`, rp `foo`); the v1 forms of the
//! same pair are authorized as `x` alone, so a token for `x` reads and
//! writes (and creates) every InfluxDB 3 database named `x/<anything>`.

use crate::common::proxy::{request, send};

use super::support::Env;

async fn call(env: &Env, method: &str, path: &str, token: &str, body: &str) -> u16 {
    let auth = format!("Token {token}");
    send(request(
        method,
        &env.proxy.url(path),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "text/plain"),
        ],
        body.to_owned(),
    ))
    .await
    .status
}

fn encoded(q: &str) -> String {
    form_urlencoded::byte_serialize(q.as_bytes()).collect()
}

#[tokio::test]
async fn a_v1_write_with_a_retention_policy_needs_the_db_rp_database() {
    let env = Env::start(None).await;
    for rp in ["foo", "Secret", "x"] {
        let status = call(
            &env,
            "POST",
            &format!("/write?db=x&rp={rp}"),
            &env.x,
            "m v=1",
        )
        .await;
        assert_eq!(
            (status, env.upstream.count()),
            (403, 0),
            "a token for x only wrote with rp={rp} (InfluxDB 3: database x/{})",
            rp.to_lowercase()
        );
    }
}

#[tokio::test]
async fn a_v1_write_to_db_rp_is_allowed_with_both_databases() {
    // The control: the pair is granted, so the write goes through.
    let env = Env::start(None).await;
    let both = env.token(&[("x", true, true), ("x/foo", true, true)]).await;
    assert_eq!(
        call(&env, "POST", "/write?db=x&rp=foo", &both, "m v=1").await,
        204
    );
    // autogen / default / no rp are database x itself in InfluxDB 3.
    for rp in ["", "&rp=autogen", "&rp=DEFAULT"] {
        assert_eq!(
            call(&env, "POST", &format!("/write?db=x{rp}"), &env.x, "m v=1").await,
            204
        );
    }
}

#[tokio::test]
async fn influxql_naming_a_retention_policy_needs_the_db_rp_database() {
    let env = Env::start(None).await;
    for (query, extra) in [
        ("SELECT * FROM x.foo.m", ""),
        ("SELECT * FROM \"x\".\"secret\".\"m\"", ""),
        ("SELECT * FROM x..m", "&rp=foo"),
        ("SELECT * FROM x.foo./m/", ""),
        ("SHOW MEASUREMENTS ON x.foo", ""),
        ("SELECT * FROM (SELECT * FROM x.foo.m)", ""),
    ] {
        let path = format!("/query?db=x{extra}&q={}", encoded(query));
        let status = call(&env, "GET", &path, &env.x, "").await;
        assert_eq!(
            (status, env.upstream.count()),
            (403, 0),
            "{query:?}{extra} was allowed for a token reading x only (InfluxDB 3 runs it against x/<rp>)"
        );
    }
}
