//! TLS to PostgreSQL: `sslmode=verify-full` against a private CA.

use crate::common::binary::Process;
use crate::common::postgres::PgCluster;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_to_postgres_verifies_a_private_ca() {
    let ca = crate::certs::Ca::new("fluxgate test PostgreSQL CA");
    let leaf = ca.server("postgres");
    let cluster = PgCluster::start_with(Some(crate::common::postgres::ServerTls {
        cert_pem: leaf.cert_pem.clone(),
        key_pem: leaf.key_pem.clone(),
    }));
    let database = cluster.database().await;
    let root = tempfile::tempdir().unwrap();
    let ca_file = root.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let url = format!(
        "postgres://{}@localhost:{}/{database}?sslmode=verify-full&sslrootcert={}",
        crate::common::postgres::USER,
        cluster.port,
        ca_file.display()
    );
    let dir = root.path().join("ok");
    std::fs::create_dir_all(&dir).unwrap();
    let password = cluster.password_file(&dir);
    let (ok, _) = Process::listening(
        &[
            "authz",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().unwrap(),
            "--store",
            &url,
            "--store-password-file",
            password.to_str().unwrap(),
        ],
        &[],
        &dir.join("authz.log"),
    );
    assert!(dir.join(BOOTSTRAP_FILE).exists());
    let encrypted = cluster
        .query(
            &database,
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
              WHERE a.application_name = 'fluxgate' AND s.ssl",
        )
        .await;
    assert_ne!(encrypted, vec!["0"], "fluxgate's connections use TLS");
    assert!(
        !ok.log_text().contains(&cluster.password),
        "the password never reaches the log"
    );

    // Another CA: the server is not trusted, the replica does not start.
    let other = crate::certs::Ca::new("someone else");
    let other_file = root.path().join("other.pem");
    std::fs::write(&other_file, &other.pem).unwrap();
    let bad_dir = root.path().join("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let output = std::process::Command::new(crate::common::binary::binary())
        .args([
            "authz",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
            bad_dir.to_str().unwrap(),
            "--store",
            &url.replace(ca_file.to_str().unwrap(), other_file.to_str().unwrap()),
            "--store-password-file",
            password.to_str().unwrap(),
        ])
        .env_remove("FLUXGATE_STORE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot open the token store (PostgreSQL localhost:"),
        "{stderr}"
    );
    assert!(!stderr.contains(&cluster.password));
}
