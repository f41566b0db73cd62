//! Attacks on the proxy, one module per finding of the security review
//! (issues 13 and 15): each test sends what an attacker would and asserts
//! what a correct proxy does, so it fails while the hole is open.
//!
//! - [`buckets`]: v2 bucket deletion reveals bucket names;
//! - [`flux`]: Flux programs the analyzer misreads;
//! - [`handshake`]: Flight `Handshake` and the upstream credential;
//! - [`retention`]: InfluxDB 3 names a v1 database/retention policy pair
//!   `db/rp`, a database of its own;
//! - [`organizations`]: InfluxDB 2.x organizations chosen by the caller;
//! - [`public`]: what an unauthenticated client can hold through the
//!   public routes;
//! - [`system_tables`]: InfluxDB 3 SQL reaching server-wide tables;
//! - [`throttle`]: the brute-force throttle and Telegraf's v1 output.
#![allow(clippy::unwrap_used, unreachable_pub)]

#[path = "../common/mod.rs"]
mod common;

mod buckets;
mod flux;
mod handshake;
mod organizations;
mod public;
mod retention;
mod support;
mod system_tables;
mod throttle;
