//! Attacks on the proxy, one module per finding of the security review
//! (issues 13 and 15): each test sends what an attacker would and asserts
//! what a correct proxy does, so it fails while the hole is open.
//!
//! Findings are numbered as in the review's findings file (F1 most severe):
//!
//! - [`handshake`] (F1, F1b): Flight `Handshake` and the upstream credential;
//! - [`retention`] (F2): InfluxDB 3 names a v1 database/retention policy
//!   pair `db/rp`, a database of its own;
//! - [`public`] (F3, F6): what an unauthenticated client can hold through
//!   the public routes and silent connections;
//! - [`system_tables`] (F4): InfluxDB 3 SQL reaching server-wide tables;
//! - [`flux`] (F5): Flux programs the analyzer misreads;
//! - [`organizations`] (F7): InfluxDB 2.x organizations chosen by the caller;
//! - [`buckets`] (F8): v2 bucket deletion reveals bucket names;
//! - [`throttle`] (F9): the brute-force throttle and Telegraf's v1 output.
//!
//! `support` starts the real token service and a proxy in front of a
//! capturing upstream, with an upstream credential as `fluxgate serve
//! --upstream-token-file` adds one.
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
