//! Certificate reload under a running proxy: new handshakes see the new
//! certificate, established connections keep working on the old one, and a
//! broken new file leaves the certificate in use in place. Triggered by a
//! file change (short poll here), by SIGHUP in-process, and by SIGHUP sent
//! to the real binary.

use std::time::{Duration, Instant};

use http_body_util::Full;
use tokio_util::sync::CancellationToken;

use super::certs::{self, Ca};
use super::common::TokenServer;
use super::common::binary::Process;
use super::common::capture::CaptureUpstream;
use super::{TlsProxy, connect, http1_over, local_authorizer, proxy_tls, served_certificate};

/// Waits (bounded) until the proxy at `addr` serves `expected` to new
/// handshakes.
async fn until_served(addr: std::net::SocketAddr, ca: &Ca, expected: &[u8], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while served_certificate(addr, ca).await != expected {
        assert!(
            Instant::now() < deadline,
            "{what}: still the old certificate"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn ping(port: u16) -> http::Request<Full<bytes::Bytes>> {
    http::Request::get(format!("https://localhost:{port}/ping"))
        .header("host", "localhost")
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn a_changed_certificate_reaches_new_handshakes_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("fluxgate test CA");
    let (first, second, third) = (ca.server("first"), ca.server("second"), ca.server("third"));
    let tls = proxy_tls(dir.path(), &first);
    let stop = CancellationToken::new();
    let _watch = tls.watch(Duration::from_millis(20), stop.clone());
    let _stop = stop.drop_guard();
    let tokens = TokenServer::start().await;
    let upstream = CaptureUpstream::start().await;
    let proxy = TlsProxy::start(
        local_authorizer(&tokens),
        &upstream.url(),
        &upstream.url(),
        None,
        Some(tls.clone()),
    )
    .await;
    let port = proxy.addr.port();

    // A kept-alive connection made with the first certificate.
    let conn = connect(proxy.addr, certs::client_config(&ca, &[b"http/1.1"], None))
        .await
        .unwrap();
    let presented = conn.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    assert_eq!(presented, first.der.to_vec());
    let mut kept = http1_over(conn).await;
    assert_eq!(kept.send_request(ping(port)).await.unwrap().status(), 204);

    // Written in place, certificate then key, as a careless deploy would:
    // a check in between sees a mismatch and keeps the first one.
    second.write(dir.path(), "proxy");
    until_served(proxy.addr, &ca, &second.der, "after the files changed").await;

    // The established connection was not dropped.
    assert_eq!(kept.send_request(ping(port)).await.unwrap().status(), 204);

    // A truncated certificate: the error names the file; nothing changes.
    let cert_path = dir.path().join("proxy.crt");
    std::fs::write(&cert_path, &third.cert_pem[..third.cert_pem.len() / 2]).unwrap();
    let e = tls.reload().expect_err("a truncated certificate");
    assert!(
        e.to_string().starts_with(&format!(
            "--tls-cert {}: malformed PEM",
            cert_path.display()
        )),
        "{e}"
    );
    assert_eq!(
        served_certificate(proxy.addr, &ca).await,
        second.der.to_vec()
    );

    // A certificate whose key is not the one in the key file.
    std::fs::write(&cert_path, &third.cert_pem).unwrap();
    let e = tls.reload().expect_err("a mismatched key");
    assert!(
        e.to_string().contains("does not match the certificate"),
        "{e}"
    );
    assert_eq!(
        served_certificate(proxy.addr, &ca).await,
        second.der.to_vec()
    );

    // Fixed: the third one goes live.
    std::fs::write(dir.path().join("proxy.key"), &third.key_pem).unwrap();
    until_served(proxy.addr, &ca, &third.der, "after the key was fixed").await;
    assert_eq!(kept.send_request(ping(port)).await.unwrap().status(), 204);
}

#[tokio::test]
async fn sighup_reloads_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("fluxgate test CA");
    let (first, second) = (ca.server("first"), ca.server("second"));
    let tls = proxy_tls(dir.path(), &first);
    let stop = CancellationToken::new();
    // Polling practically never: only the signal can bring the change in.
    let _watch = tls.watch(Duration::from_secs(3600), stop.clone());
    let _stop = stop.drop_guard();
    let tokens = TokenServer::start().await;
    let upstream = CaptureUpstream::start().await;
    let proxy = TlsProxy::start(
        local_authorizer(&tokens),
        &upstream.url(),
        &upstream.url(),
        None,
        Some(tls),
    )
    .await;
    assert_eq!(
        served_certificate(proxy.addr, &ca).await,
        first.der.to_vec()
    );
    second.write(dir.path(), "proxy");
    // The watcher installed the handler before `watch` returned, so the
    // signal reaches it instead of terminating the test process.
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    until_served(proxy.addr, &ca, &second.der, "after SIGHUP").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_on_sighup_and_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("fluxgate test CA");
    let (first, second) = (ca.server("first"), ca.server("second"));
    let (cert, key) = first.write(dir.path(), "proxy");
    let upstream = CaptureUpstream::start().await;
    let args = [
        "serve".to_owned(),
        "--listen=127.0.0.1:0".to_owned(),
        "--authz-listen=127.0.0.1:0".to_owned(),
        "--admin-listen=127.0.0.1:0".to_owned(),
        format!("--data-dir={}", dir.path().join("data").display()),
        format!("--upstream={}", upstream.url()),
        format!("--tls-cert={}", cert.display()),
        format!("--tls-key={}", key.display()),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut serve, bound) = Process::listening(&args, &[], &dir.path().join("serve.log"));
    let port = bound.proxy.unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(served_certificate(addr, &ca).await, first.der.to_vec());

    second.write(dir.path(), "proxy");
    let pid = serve.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    until_served(addr, &ca, &second.der, "after SIGHUP to the binary").await;
    assert!(
        serve.child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop fluxgate"
    );
    assert!(serve.log_text().contains("TLS certificate reloaded"));
    assert_eq!(serve.terminate(), 0);
}
