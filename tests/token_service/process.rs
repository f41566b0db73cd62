//! The `fluxgate authz` binary itself: acknowledged creates and revokes
//! survive SIGKILL, and its logs never carry a token string.

use std::path::Path;

use fluxgate::proto::iox_authz::resource_action_permission::Action;
use fluxgate::proto::tokens as pb;

use crate::{authorize, bearer, create_db_token, db_perm, id_of, perm};

const BOOTSTRAP_FILE: &str = "bootstrap-management-token";

/// A `fluxgate authz` process on 127.0.0.1:0, its address read from its
/// JSON log, its log kept for inspection.
struct Binary {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
    log: std::sync::Arc<parking_lot::Mutex<String>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Binary {
    async fn start(dir: &Path) -> Self {
        use tokio::io::AsyncBufReadExt as _;

        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_fluxgate"));
        for (key, _) in std::env::vars() {
            if key.starts_with("FLUXGATE_") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        command
            .args([
                "authz",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--log-format", "json", "--log-level", "info", "--data-dir"])
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn fluxgate authz");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let log = std::sync::Arc::new(parking_lot::Mutex::new(String::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let sink = std::sync::Arc::clone(&log);
        let reader = tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                {
                    let mut sink = sink.lock();
                    sink.push_str(&line);
                    sink.push('\n');
                }
                let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if json["message"] == "token service listening" {
                    let addr = json["addr"].as_str().unwrap_or_default().parse().ok();
                    if let (Some(tx), Some(addr)) = (addr_tx.take(), addr) {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr = match tokio::time::timeout(crate::EVENT_DEADLINE, addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => panic!("fluxgate authz did not start; log:\n{}", log.lock()),
        };
        Self {
            child,
            addr,
            log,
            reader,
        }
    }

    async fn tokens(
        &self,
    ) -> fluxgate::proto::tokens::token_service_client::TokenServiceClient<tonic::transport::Channel>
    {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        fluxgate::proto::tokens::token_service_client::TokenServiceClient::new(channel)
    }

    async fn authz(
        &self,
    ) -> fluxgate::proto::iox_authz::iox_authorizer_service_client::IoxAuthorizerServiceClient<
        tonic::transport::Channel,
    > {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        fluxgate::proto::iox_authz::iox_authorizer_service_client::IoxAuthorizerServiceClient::new(
            channel,
        )
    }

    /// SIGKILL: no shutdown code runs. Returns the whole log.
    async fn kill(mut self) -> String {
        self.child.kill().await.expect("kill our child");
        // The pipe closes with the process: the reader sees the end of it.
        tokio::time::timeout(crate::EVENT_DEADLINE, self.reader)
            .await
            .expect("log reader ends")
            .expect("log reader did not panic");
        std::mem::take(&mut *self.log.lock())
    }
}

#[tokio::test]
async fn creates_and_revokes_are_durable_when_the_process_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let first = Binary::start(&dir).await;
    let mgmt = std::fs::read_to_string(dir.join(BOOTSTRAP_FILE))
        .unwrap()
        .trim()
        .to_owned();
    let mut client = first.tokens().await;
    let kept = create_db_token(
        &mut client,
        &mgmt,
        "kept",
        vec![db_perm("db", true, true)],
        None,
    )
    .await;
    let revoked = create_db_token(
        &mut client,
        &mgmt,
        "revoked",
        vec![db_perm("db", true, true)],
        None,
    )
    .await;
    client
        .revoke_database_token(bearer(
            pb::RevokeTokenRequest {
                id: id_of(&revoked),
            },
            &mgmt,
        ))
        .await
        .unwrap();
    drop(client);
    let log = first.kill().await;

    let second = Binary::start(&dir).await;
    let mut authz = second.authz().await;
    let r = authorize(
        &mut authz,
        kept.token.as_bytes(),
        vec![perm("db", Action::Write)],
    )
    .await;
    assert!(r.valid, "a create acknowledged before the kill survives it");
    assert_eq!(r.permissions, vec![perm("db", Action::Write)]);
    let r = authorize(
        &mut authz,
        revoked.token.as_bytes(),
        vec![perm("db", Action::Write)],
    )
    .await;
    assert!(
        !r.valid,
        "a revoke acknowledged before the kill survives it"
    );
    let mut client = second.tokens().await;
    client
        .list_database_tokens(bearer(pb::ListTokensRequest::default(), &mgmt))
        .await
        .expect("the bootstrap token survives");
    let log = log + &second.kill().await;

    // The logs name ids and the bootstrap file's path, never a token.
    assert!(log.contains(BOOTSTRAP_FILE), "the path is logged:\n{log}");
    assert!(log.contains(&id_of(&kept)), "ids are logged");
    for secret in [&mgmt, &kept.token, &revoked.token] {
        let (_, suffix) = secret.split_once('_').unwrap();
        assert!(!log.contains(suffix), "a token string is in the log");
    }
}
