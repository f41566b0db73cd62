//! F9: the brute-force throttle makes Telegraf's v1 output drop data.
//!
//! Once a client address has presented `--invalid-token-rate` invalid
//! tokens, every request from it that carries a token is answered 429,
//! valid tokens included (so a guesser learns nothing). Telegraf's
//! `outputs.influxdb` (v1) drops a batch on any 4xx (BRIEF §10; only 5xx are
//! retried), so a valid agent sharing the address (NAT, load balancer, an
//! IPv6 /64, or one misconfigured agent on the same host) loses its writes
//! while someone else guesses. A 503 with `Retry-After` for every throttled
//! v1 write refuses just as much and tells a guesser just as little.

use std::sync::Arc;
use std::time::Duration;

use fluxgate::authz::client::AuthzClient;
use fluxgate::proxy::Proxy;
use fluxgate::proxy::forward::{Protocol, Upstream};
use fluxgate::proxy::gate::GateSettings;
use fluxgate::proxy::http::HttpService;

use crate::common::TokenServer;
use crate::common::capture::CaptureUpstream;
use crate::common::proxy::{ProxyServer, gate, request, send, settings};

#[tokio::test]
async fn a_valid_v1_write_from_a_throttled_address_is_retryable() {
    let tokens = TokenServer::start().await;
    let upstream = CaptureUpstream::start().await;
    let gate = gate(
        Arc::new(AuthzClient::for_uri(
            tokens.url().parse().unwrap(),
            Duration::from_secs(2),
        )),
        &GateSettings {
            invalid_token_rate: 3,
            ..settings()
        },
    );
    let http = HttpService::new(
        gate,
        Upstream::new(upstream.url().parse().unwrap(), None, Protocol::Http1),
        Default::default(),
    );
    let proxy = ProxyServer::serve(Proxy::new(http)).await;
    let (_, good) = tokens.database_token(&[("telegraf", true, true)]).await;
    // Someone else at the same address guesses.
    for i in 0..4 {
        send(request(
            "POST",
            &proxy.url("/write?db=telegraf"),
            &[("authorization", &format!("Token guess-{i}"))],
            "m v=1",
        ))
        .await;
    }
    // The agent's own write, with its valid token, as Telegraf's v1 output
    // sends it (Basic, token as the password).
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("telegraf:{good}"),
    );
    let reply = send(request(
        "POST",
        &proxy.url("/write?db=telegraf&rp=autogen&precision=ns"),
        &[
            ("authorization", &format!("Basic {basic}")),
            ("user-agent", "Telegraf/1.30"),
        ],
        "cpu,host=a usage=1 1700000000000000000",
    ))
    .await;
    assert!(
        reply.status >= 500,
        "a valid v1 write from a throttled address got {} (Telegraf's v1 output drops the batch on any 4xx)",
        reply.status
    );
}
