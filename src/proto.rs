//! Code generated from `proto/` by `build.rs`: the IOx authorizer contract and
//! fluxgate's token management API, plus the descriptor set for reflection.

/// `influxdata.iox.authz.v1`: the InfluxDB 3 authorizer wire contract.
#[allow(
    clippy::all,
    missing_docs,
    unreachable_pub,
    missing_debug_implementations
)]
pub mod iox_authz {
    tonic::include_proto!("influxdata.iox.authz.v1");
}

/// `fluxgate.tokens.v1`: token management and the change stream.
#[allow(
    clippy::all,
    missing_docs,
    unreachable_pub,
    missing_debug_implementations
)]
pub mod tokens {
    tonic::include_proto!("fluxgate.tokens.v1");
}

/// The database name that means every database: in a token's permissions,
/// and in an Authorize call that needs every database (a statement or table
/// that reaches them all).
pub const ALL_DATABASES: &str = "*";

/// Response metadata carrying a valid token's expiry in Unix milliseconds.
///
/// Extra metadata leaves the IOx message contract untouched: IOx components
/// ignore it, fluxgate's proxy uses it to never cache an allow past expiry.
pub const EXPIRES_AT_METADATA: &str = "fluxgate-token-expires-at-ms";

/// Encoded `FileDescriptorSet` of every fluxgate proto, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/fluxgate_descriptor.bin"));
