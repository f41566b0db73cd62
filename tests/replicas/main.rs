//! Several `fluxgate authz` replicas (the real binary) over one PostgreSQL
//! database (a real cluster this test binary starts, see
//! `common/postgres.rs`): one gapless change log, revocations refused
//! everywhere within a second, a proxy that moves to another replica
//! without flushing its cache, exactly one bootstrap token when replicas
//! start together, PostgreSQL outages (writes refused, reads served,
//! readiness dropped, recovery without restart), and TLS to PostgreSQL
//! with a private CA.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../tls/certs.rs"]
mod certs;

mod failover;
mod log;
mod outage;
mod support;
mod tls;
