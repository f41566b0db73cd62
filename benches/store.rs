//! The token store under writes, through the real `fluxgate authz` binary
//! and its gRPC API (what an operator's scripts see):
//!
//! 1. Token creations per second with `FLUXGATE_BENCH_CREATE_CALLERS` (16)
//!    concurrent callers, each waiting for its create to return (durable:
//!    SQLite `synchronous = FULL`, PostgreSQL with `fsync` and
//!    `synchronous_commit` on), over the SQLite store and over PostgreSQL
//!    (a throwaway cluster on 127.0.0.1, started like the tests' one);
//!    also with one caller, for the latency of a lone create. With
//!    `FLUXGATE_BENCH_BASELINE_BIN` pointing at an older `fluxgate`, the
//!    same on its SQLite store, side by side.
//! 2. Cross-replica revocation latency: three replicas over one
//!    PostgreSQL; each round creates a token on replica A, waits until B
//!    and C authorize it, revokes it on A and measures, from the moment the
//!    revoke returned, how long until both B and C refuse it (each polled
//!    with back-to-back Authorize calls). `FLUXGATE_BENCH_REVOCATIONS`
//!    (200) rounds; p50, p99 and max.
//!
//! `cargo bench --bench store`; settings: `FLUXGATE_BENCH_SECS` (5),
//! `FLUXGATE_BENCH_ROUNDS` (3), `FLUXGATE_BENCH_BIN`,
//! `FLUXGATE_BENCH_RESULTS`.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/common/postgres.rs"]
mod postgres;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fluxgate::proto::iox_authz::AuthorizeRequest;
use fluxgate::proto::iox_authz::iox_authorizer_service_client::IoxAuthorizerServiceClient;
use fluxgate::proto::tokens as pb;
use fluxgate::proto::tokens::token_service_client::TokenServiceClient;
use support::{ProcessGuard, machine, median, results_dir, setting, table};
use tonic::transport::Channel;

/// A `fluxgate authz` process and its management token.
struct Authz {
    _guard: ProcessGuard,
    addr: SocketAddr,
}

fn start_authz(binary: &Path, dir: &Path, name: &str, store: &[String]) -> Authz {
    let log_path = dir.join(format!("{name}.log"));
    let (guard, addr) = support::spawn_authz(binary, name, &dir.join(name), &log_path, store);
    Authz {
        _guard: guard,
        addr,
    }
}

/// The bootstrap token written by whichever of `dirs` created it.
fn bootstrap_token(dirs: &[PathBuf]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for dir in dirs {
            if let Ok(t) = std::fs::read_to_string(dir.join("bootstrap-management-token"))
                && !t.trim().is_empty()
            {
                return t.trim().to_owned();
            }
        }
        assert!(Instant::now() < deadline, "no bootstrap token in {dirs:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap()
}

async fn create(client: &mut TokenServiceClient<Channel>, admin: &str) -> (String, String) {
    let created = client
        .create_database_token(bearer(
            pb::CreateDatabaseTokenRequest {
                description: "store benchmark".into(),
                permissions: vec![pb::DatabasePermission {
                    database: "bench".into(),
                    read: false,
                    write: true,
                }],
                expires_at: None,
            },
            admin,
        ))
        .await
        .expect("create")
        .into_inner();
    (created.info.unwrap().id, created.token)
}

/// Creates for `secs` with `callers` concurrent callers (one channel each,
/// one create in flight each): creates per second.
async fn creates_per_second(addr: SocketAddr, admin: &str, callers: usize, secs: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..callers {
        let mut client = TokenServiceClient::new(channel(addr).await);
        let admin = admin.to_owned();
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                create(&mut client, &admin).await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

async fn allowed(client: &mut IoxAuthorizerServiceClient<Channel>, token: &str) -> bool {
    let r = client
        .authorize(AuthorizeRequest {
            token: token.as_bytes().to_vec(),
            permissions: vec![support::write_bench()],
        })
        .await
        .unwrap()
        .into_inner();
    r.valid && !r.permissions.is_empty()
}

/// Polls `client` until `token` is refused; returns when.
async fn refused_at(mut client: IoxAuthorizerServiceClient<Channel>, token: String) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(30);
    while allowed(&mut client, &token).await {
        assert!(
            Instant::now() < deadline,
            "a replica never refused a revoked token"
        );
    }
    Instant::now()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let secs: f64 = setting("FLUXGATE_BENCH_SECS", 5.0);
    let rounds: usize = setting("FLUXGATE_BENCH_ROUNDS", 3usize).max(1);
    let callers: usize = setting("FLUXGATE_BENCH_CREATE_CALLERS", 16usize).max(1);
    let revocations: usize = setting("FLUXGATE_BENCH_REVOCATIONS", 200usize).max(1);
    let binary = support::fluxgate_binary();
    let baseline = std::env::var_os("FLUXGATE_BENCH_BASELINE_BIN").map(PathBuf::from);
    let out_dir = results_dir();
    let tmp = tempfile::Builder::new()
        .prefix("fluxgate-store-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_path_buf();
    let machine_before = machine();
    eprintln!("store: {machine_before}");

    let cluster = postgres::PgCluster::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pg_store = |database: &str| -> Vec<String> {
        vec![
            "--store".to_owned(),
            cluster.url(database),
            "--store-password-file".to_owned(),
            cluster.password_file(&dir).to_str().unwrap().to_owned(),
        ]
    };

    // 1. Creates per second.
    let mut targets: Vec<(String, Authz, String)> = Vec::new();
    let sqlite = start_authz(&binary, &dir, "sqlite", &[]);
    let admin = bootstrap_token(&[dir.join("sqlite")]);
    targets.push(("SQLite store".to_owned(), sqlite, admin));
    let database = runtime.block_on(cluster.database());
    let pg = start_authz(&binary, &dir, "postgres", &pg_store(&database));
    let admin = bootstrap_token(&[dir.join("postgres")]);
    targets.push(("PostgreSQL store".to_owned(), pg, admin));
    if let Some(baseline) = &baseline {
        let old = start_authz(baseline, &dir, "baseline", &[]);
        let admin = bootstrap_token(&[dir.join("baseline")]);
        targets.push((
            format!("SQLite store, baseline {}", baseline.display()),
            old,
            admin,
        ));
    }
    let mut measured: Vec<(Vec<f64>, Vec<f64>)> =
        targets.iter().map(|_| Default::default()).collect();
    runtime.block_on(async {
        for (name, authz, admin) in &targets {
            creates_per_second(authz.addr, admin, callers, 1.0).await;
            eprintln!("warmed up {name}");
        }
        for round in 0..rounds {
            let mut order: Vec<usize> = (0..targets.len()).collect();
            order.rotate_left(round % targets.len());
            for i in order {
                let (name, authz, admin) = &targets[i];
                let many = creates_per_second(authz.addr, admin, callers, secs).await;
                let one = creates_per_second(authz.addr, admin, 1, secs.min(3.0)).await;
                eprintln!(
                    "round {} {name:<40} {callers} callers: {many:>6.0} creates/s; 1 caller: {one:>5.0} creates/s",
                    round + 1
                );
                measured[i].0.push(many);
                measured[i].1.push(one);
            }
        }
    });
    let mut rows = Vec::new();
    for ((name, ..), (many, one)) in targets.iter().zip(&measured) {
        let range = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{:.0} ({lo:.0}–{hi:.0})", median(v))
        };
        rows.push(vec![
            name.clone(),
            range(many),
            range(one),
            format!("{:.1}", 1000.0 / median(one)),
        ]);
    }
    let creates = table(
        &[
            "fluxgate authz over",
            &format!("creates/s, {callers} callers (median, range)"),
            "creates/s, 1 caller",
            "ms per lone create",
        ],
        &rows,
    );
    drop(targets);

    // 2. Cross-replica revocation latency.
    let database = runtime.block_on(cluster.database());
    let mut store = pg_store(&database);
    // Revoked tokens are polled without a proxy token: not a guesser.
    store.extend(["--authorize-invalid-rate".to_owned(), "1000000".to_owned()]);
    let replicas: Vec<Authz> = ["a", "b", "c"]
        .iter()
        .map(|n| start_authz(&binary, &dir, &format!("replica-{n}"), &store))
        .collect();
    let admin = bootstrap_token(&["a", "b", "c"].map(|n| dir.join(format!("replica-{n}"))));
    let (mut from_return, mut from_send) = runtime.block_on(async {
        let mut manage = TokenServiceClient::new(channel(replicas[0].addr).await);
        let b = IoxAuthorizerServiceClient::new(channel(replicas[1].addr).await);
        let c = IoxAuthorizerServiceClient::new(channel(replicas[2].addr).await);
        let mut from_return = Vec::new();
        let mut from_send = Vec::new();
        for _ in 0..revocations {
            let (id, token) = create(&mut manage, &admin).await;
            for client in [&b, &c] {
                let mut client = client.clone();
                while !allowed(&mut client, &token).await {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            let watch_b = tokio::spawn(refused_at(b.clone(), token.clone()));
            let watch_c = tokio::spawn(refused_at(c.clone(), token.clone()));
            let sent = Instant::now();
            manage
                .revoke_database_token(bearer(pb::RevokeTokenRequest { id }, &admin))
                .await
                .unwrap();
            let returned = Instant::now();
            let done = watch_b.await.unwrap().max(watch_c.await.unwrap());
            from_return.push(done.saturating_duration_since(returned));
            from_send.push(done.saturating_duration_since(sent));
        }
        (from_return, from_send)
    });
    drop(replicas);
    from_return.sort();
    from_send.sort();
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
    let revocation = table(
        &["measured from", "p50 ms", "p99 ms", "max ms"],
        &[
            vec![
                "the revoke returning on A".to_owned(),
                ms(percentile(&from_return, 50.0)),
                ms(percentile(&from_return, 99.0)),
                ms(*from_return.last().unwrap()),
            ],
            vec![
                "the revoke being sent to A".to_owned(),
                ms(percentile(&from_send, 50.0)),
                ms(percentile(&from_send, 99.0)),
                ms(*from_send.last().unwrap()),
            ],
        ],
    );
    runtime.shutdown_timeout(Duration::from_secs(2));
    drop(cluster);

    let text = format!(
        "fluxgate token store benchmark\nmachine: {machine_before}\nload average after: {}\n\n\
         Token creations through the management API (medians over {rounds} rounds of {secs} s; every create durable before it returns):\n\n{creates}\n\
         Cross-replica revocation: 3 replicas over one PostgreSQL, {revocations} revocations on A, until both B and C refuse the token:\n\n{revocation}",
        support::load_average()
    );
    println!("{text}");
    let file = out_dir.join("store.txt");
    std::fs::write(&file, &text).unwrap();
    println!("written to {}", file.display());
}
