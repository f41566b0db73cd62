//! Differential tests: every request is read by the proxy and, directly
//! and after forwarding, by a reference reader that reads requests exactly
//! as InfluxDB does (tests/oracle, Go: InfluxDB's own readers are Go's
//! net/http, mime/multipart, encoding/json and compress/gzip). A refused
//! request must not reach the upstream; a forwarded one must be authorized
//! for exactly what the database will do with it, be in the one canonical
//! form, and mean to the database what the original meant (the proxy may
//! refuse what it cannot preserve, never reinterpret).
//!
//! One file per reader: form (query strings and urlencoded bodies),
//! multipart, gzip, flux (Flux JSON), v3 (InfluxDB 3 JSON), grpc (HTTP/2
//! request trailers and Flight tickets).
#![allow(clippy::unwrap_used, unreachable_pub)]

#[path = "../common/mod.rs"]
mod common;

mod canonical;
mod clients;
mod flux;
mod form;
mod grpc;
mod gzip;
mod harness;
mod meaning;
mod multipart;
mod oracle_self;
mod props;
mod v3;
