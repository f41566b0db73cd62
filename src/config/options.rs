//! Every command and option of the `fluxgate` binary, as clap arguments.
//!
//! Each option has a long flag, a `FLUXGATE_*` environment variable and a
//! config-file key equal to its long name. `docs/CONFIGURATION.md` documents
//! each one; a test keeps the two in step.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::commands::{
    DatabaseCommand, LoginArgs, ManagementCommand, ProxyTokenCommand, TokenCommand,
};
use super::tls::{AuthzTlsOptions, ServeTokenServiceTlsOptions, TokenServiceTlsOptions};
use super::values::{
    ByteSize, HumanDuration, WatchMode, count_between, duration_between, size_between, u32_between,
    usize_between,
};

/// Token-authorization sidecar for InfluxDB.
#[derive(Debug, Parser)]
#[command(name = "fluxgate", version, about, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Proxy and token service in one process, with the embedded store.
    Serve(ServeArgs),
    /// The authorizing proxy alone, using a remote token service.
    Proxy(ProxyArgs),
    /// The token service alone (gRPC), owning the token store.
    Authz(AuthzArgs),
    /// Manage database tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage management tokens.
    #[command(subcommand)]
    Management(ManagementCommand),
    /// Manage proxy tokens (what `fluxgate proxy` presents to follow the token change stream).
    #[command(subcommand)]
    ProxyToken(ProxyTokenCommand),
    /// Manage databases through the proxy, with a management token.
    #[command(subcommand)]
    Database(DatabaseCommand),
    /// Store a management token in the OS keyring.
    Login(LoginArgs),
    /// Validate a configuration file and print the effective settings.
    CheckConfig(CheckConfigArgs),
}

/// Options every long-running command shares.
#[derive(Debug, Clone, Args)]
pub struct CommonOptions {
    /// TOML configuration file: the long option names as keys, flat (every key for this command) or in [serve], [proxy], [authz] sections.
    #[arg(long, env = "FLUXGATE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "FLUXGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level or filter (`info`, `fluxgate=debug`); RUST_LOG is used when unset.
    #[arg(long, env = "FLUXGATE_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`).
    #[arg(
        long,
        env = "FLUXGATE_ADMIN_LISTEN",
        default_value = "127.0.0.1:9090",
        value_name = "ADDR"
    )]
    pub admin_listen: SocketAddr,
    /// Once every listener is bound, write their addresses here as JSON (`{"proxy": "127.0.0.1:8086", "admin": …}`), replaced atomically and removed on exit: with port 0 in a listen address, this is how a supervisor learns the port.
    #[arg(long, env = "FLUXGATE_ADDRESSES_FILE", value_name = "PATH")]
    pub addresses_file: Option<PathBuf>,
    /// How long in-flight requests may run after SIGTERM/SIGINT (100ms to 1h).
    #[arg(
        long,
        env = "FLUXGATE_SHUTDOWN_GRACE",
        default_value = "30s",
        value_parser = duration_between::<100, 3_600_000>,
        value_name = "DURATION"
    )]
    pub shutdown_grace: HumanDuration,
    /// Let the process be core-dumped and traced; by default it is marked not dumpable, so the tokens in its memory cannot end up in a core file.
    #[arg(long, env = "FLUXGATE_ALLOW_CORE_DUMPS")]
    pub allow_core_dumps: bool,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How the upstream credential is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UpstreamScheme {
    /// `Authorization: Token <t>` (InfluxDB 2/3).
    Token,
    /// `Authorization: Bearer <t>` (InfluxDB 3).
    Bearer,
    /// `Authorization: Basic` with the file's `user:password` (InfluxDB 1.x).
    Basic,
}

/// The authorizing proxy's options.
#[derive(Debug, Clone, Args)]
pub struct ProxyOptions {
    /// Address the proxy listens on (HTTP/1.1, h2c and gRPC on one port; with --tls-cert, HTTPS and gRPC over TLS).
    #[arg(
        long,
        env = "FLUXGATE_LISTEN",
        default_value = "127.0.0.1:8086",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,
    /// Threads serving the proxy's connections, each with its own single-threaded runtime and upstream connections (default: one per core; 0: serve on the process's shared work-stealing runtime instead; at most 1024).
    #[arg(
        long,
        env = "FLUXGATE_LISTENER_THREADS",
        value_parser = usize_between::<0, 1024>,
        value_name = "N"
    )]
    pub listener_threads: Option<usize>,
    /// PEM certificate chain: serve HTTPS and gRPC over TLS on --listen (with --tls-key; reloaded when the file changes or on SIGHUP).
    #[arg(
        long,
        env = "FLUXGATE_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "FLUXGATE_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// The database's HTTP base URL.
    #[arg(long, env = "FLUXGATE_UPSTREAM", value_name = "URL")]
    pub upstream: http::Uri,
    /// The database's gRPC (Flight) base URL; defaults to --upstream.
    #[arg(long, env = "FLUXGATE_UPSTREAM_GRPC", value_name = "URL")]
    pub upstream_grpc: Option<http::Uri>,
    /// PEM CA certificates trusted for an https:// upstream instead of the system roots.
    #[arg(long, env = "FLUXGATE_UPSTREAM_CA", value_name = "PATH")]
    pub upstream_ca: Option<PathBuf>,
    /// File holding a credential to add to forwarded requests.
    #[arg(long, env = "FLUXGATE_UPSTREAM_TOKEN_FILE", value_name = "PATH")]
    pub upstream_token_file: Option<PathBuf>,
    /// Scheme of the upstream credential.
    #[arg(long, env = "FLUXGATE_UPSTREAM_AUTH_SCHEME", value_enum, default_value_t = UpstreamScheme::Token)]
    pub upstream_auth_scheme: UpstreamScheme,
    /// Longest wait for an authorization decision before answering 503 (10ms to 5m).
    #[arg(
        long,
        env = "FLUXGATE_AUTHZ_TIMEOUT",
        default_value = "2s",
        value_parser = duration_between::<10, 300_000>,
        value_name = "DURATION"
    )]
    pub authz_timeout: HumanDuration,
    /// Largest request body read to authorize a query (larger → 413; 1KiB to 1GiB).
    #[arg(
        long,
        env = "FLUXGATE_MAX_BODY",
        default_value = "1MiB",
        value_parser = size_between::<1024, 1_073_741_824>,
        value_name = "SIZE"
    )]
    pub max_body: ByteSize,
    /// Longest time a body read to authorize may take to arrive, and longest pause in a body streamed upstream (→ 408; 100ms to 1h).
    #[arg(
        long,
        env = "FLUXGATE_BODY_READ_TIMEOUT",
        default_value = "30s",
        value_parser = duration_between::<100, 3_600_000>,
        value_name = "DURATION"
    )]
    pub body_read_timeout: HumanDuration,
    /// Bytes all requests together may hold while their bodies are read to authorize them (more → 503; 1KiB to 64GiB).
    #[arg(
        long,
        env = "FLUXGATE_MAX_BUFFERED_BYTES",
        default_value = "256MiB",
        value_parser = size_between::<1024, 68_719_476_736>,
        value_name = "SIZE"
    )]
    pub max_buffered_bytes: ByteSize,
    /// Invalid tokens a client address (IPv4, or IPv6 /64) may present per minute before its requests get 429 without an authorization call (1 to 1000000).
    #[arg(
        long,
        env = "FLUXGATE_INVALID_TOKEN_RATE",
        default_value = "20",
        value_parser = count_between::<1, 1_000_000>,
        value_name = "PER_MINUTE"
    )]
    pub invalid_token_rate: u64,
    /// Longest wait for the database's response head (→ 504, DEADLINE_EXCEEDED on gRPC; 100ms to 1h).
    #[arg(
        long,
        env = "FLUXGATE_UPSTREAM_TIMEOUT",
        default_value = "60s",
        value_parser = duration_between::<100, 3_600_000>,
        value_name = "DURATION"
    )]
    pub upstream_timeout: HumanDuration,
    /// Extra path forwarded without any token check (repeatable).
    #[arg(
        long = "allow-path",
        env = "FLUXGATE_ALLOW_PATH",
        value_delimiter = ',',
        value_name = "PATH"
    )]
    pub allow_paths: Vec<String>,
    /// InfluxDB 2 organization every v2 request (writes, Flux queries, bucket listings) is sent for; the caller's own org/orgID is never forwarded, so a bucket name always means this organization's bucket. Unset: none is sent (InfluxDB 1.8 and 3 ignore it; InfluxDB 2 then uses the upstream token's organization).
    #[arg(long, env = "FLUXGATE_UPSTREAM_ORG", value_name = "NAME")]
    pub upstream_org: Option<String>,
    /// ID of --upstream-org's organization: `POST /api/v2/buckets` creates buckets in it (a caller's orgID is accepted only when it is this one). Unset: InfluxDB 2 buckets are not created through the proxy.
    #[arg(long, env = "FLUXGATE_UPSTREAM_ORG_ID", value_name = "ID")]
    pub upstream_org_id: Option<String>,
    /// InfluxDB 3 route that runs code on the server (processing engine, plugins, `/api/v3/engine/…` request triggers), forwarded for management tokens (repeatable; exact paths under /api/v3/).
    #[arg(
        long = "allow-admin-path",
        env = "FLUXGATE_ALLOW_ADMIN_PATH",
        value_delimiter = ',',
        value_name = "PATH"
    )]
    pub allow_admin_paths: Vec<String>,
    /// Arrow Flight method forwarded beyond Handshake, DoGet and GetFlightInfo (repeatable: DoPut, DoAction, DoExchange, ListFlights, ListActions, GetSchema, PollFlightInfo).
    #[arg(
        long = "allow-flight-method",
        env = "FLUXGATE_ALLOW_FLIGHT_METHOD",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub allow_flight_methods: Vec<String>,
    /// Where audit events go (one JSON line per decision): a file path, `stdout` or `off`.
    #[arg(
        long,
        env = "FLUXGATE_AUDIT_LOG",
        default_value = "off",
        value_name = "PATH|stdout|off"
    )]
    pub audit_log: String,
    /// Refuse requests (503, UNAVAILABLE on gRPC) while audit events cannot be written (the writer failing, e.g. a full disk, or falling behind) instead of serving them unaudited.
    #[arg(long, env = "FLUXGATE_AUDIT_REQUIRED")]
    pub audit_required: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub limits: LimitOptions,
}

/// Limits that protect the proxy's listener from abuse.
#[derive(Debug, Clone, Args)]
pub struct LimitOptions {
    /// Most client connections open at once; further ones wait in the backlog (1 to 1000000).
    #[arg(
        long,
        env = "FLUXGATE_MAX_CONNECTIONS",
        default_value = "10000",
        value_parser = usize_between::<1, 1_000_000>,
        value_name = "N"
    )]
    pub max_connections: usize,
    /// Longest time a client may take to send a request's headers (slowloris; 100ms to 10m).
    #[arg(
        long,
        env = "FLUXGATE_HEADER_READ_TIMEOUT",
        default_value = "10s",
        value_parser = duration_between::<100, 600_000>,
        value_name = "DURATION"
    )]
    pub header_read_timeout: HumanDuration,
    /// Largest request head accepted (8KiB to 1MiB).
    #[arg(
        long,
        env = "FLUXGATE_MAX_HEADER_BYTES",
        default_value = "64KiB",
        value_parser = size_between::<8192, 1_048_576>,
        value_name = "SIZE"
    )]
    pub max_header_bytes: ByteSize,
    /// How long a connection with no request in flight stays open (100ms to 24h).
    #[arg(
        long,
        env = "FLUXGATE_IDLE_TIMEOUT",
        default_value = "60s",
        value_parser = duration_between::<100, 86_400_000>,
        value_name = "DURATION"
    )]
    pub idle_timeout: HumanDuration,
    /// Most concurrent HTTP/2 streams (requests) on one client connection; also bounds the upstream connections one client connection can hold (1 to 10000).
    #[arg(
        long,
        env = "FLUXGATE_MAX_CONCURRENT_STREAMS",
        default_value = "128",
        value_parser = u32_between::<1, 10_000>,
        value_name = "N"
    )]
    pub max_concurrent_streams: u32,
}

/// Where the proxy finds the token service.
#[derive(Debug, Clone, Args)]
pub struct AuthzClientOptions {
    /// The token service's URL; several replicas as a comma-separated list (or a host name resolving to several addresses): calls fail over to the next when one is unreachable.
    #[arg(
        long,
        env = "FLUXGATE_AUTHZ",
        default_value = "http://127.0.0.1:8090",
        value_delimiter = ',',
        value_name = "URL[,URL…]"
    )]
    pub authz: Vec<http::Uri>,
    /// File holding a proxy token (`fluxgate proxy-token create`), presented to follow the token change stream and sent with Authorize calls; not needed with mutual TLS (--authz-client-cert). Never a management token.
    #[arg(long, env = "FLUXGATE_AUTHZ_TOKEN_FILE", value_name = "PATH")]
    pub authz_token_file: Option<PathBuf>,
    /// Follow the token change stream: auto (fall back to none when the authorizer does not implement it, e.g. an IOx authorizer serving Authorize only), required, or off. Without it, revocations apply within --cache-disconnected-allow-ttl instead of about a second.
    #[arg(long, env = "FLUXGATE_AUTHZ_WATCH", value_enum, default_value_t = WatchMode::Auto)]
    pub authz_watch: WatchMode,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub tls: AuthzTlsOptions,
}

/// The decision cache's options.
#[derive(Debug, Clone, Args)]
pub struct CacheOptions {
    /// How long an allow decision is reused while the change stream is followed (100ms to 1h).
    #[arg(
        long,
        env = "FLUXGATE_CACHE_ALLOW_TTL",
        default_value = "60s",
        value_parser = duration_between::<100, 3_600_000>,
        value_name = "DURATION"
    )]
    pub cache_allow_ttl: HumanDuration,
    /// How long a deny decision is reused (100ms to 1h).
    #[arg(
        long,
        env = "FLUXGATE_CACHE_DENY_TTL",
        default_value = "5s",
        value_parser = duration_between::<100, 3_600_000>,
        value_name = "DURATION"
    )]
    pub cache_deny_ttl: HumanDuration,
    /// Most decisions kept (1 to 100000000).
    #[arg(
        long,
        env = "FLUXGATE_CACHE_MAX_ENTRIES",
        default_value = "100000",
        value_parser = count_between::<1, 100_000_000>,
        value_name = "N"
    )]
    pub cache_max_entries: u64,
    /// Random spread of each TTL, in percent (10 → ±10 %), so entries
    /// cached together do not expire together.
    #[arg(
        long,
        env = "FLUXGATE_CACHE_TTL_JITTER",
        default_value_t = 10,
        value_parser = clap::value_parser!(u8).range(0..=50),
        value_name = "PERCENT"
    )]
    pub cache_ttl_jitter: u8,
    /// While the token change stream is down (or not followed), no decision older than this is served, counted from when it was fetched: revocations cannot reach the cache then (100ms to 10m).
    #[arg(
        long,
        env = "FLUXGATE_CACHE_DISCONNECTED_ALLOW_TTL",
        default_value = "5s",
        value_parser = duration_between::<100, 600_000>,
        value_name = "DURATION"
    )]
    pub cache_disconnected_allow_ttl: HumanDuration,
    /// When the token service cannot answer, serve a cached allow up to this long past its TTL, and, while the change stream is down, no later than this long after it broke. The trade: a token revoked during the outage (the proxy cannot know) may be served for up to this long. Never for a token known revoked or expired. Unset: fail closed (1s to 1h).
    #[arg(
        long,
        env = "FLUXGATE_STALE_GRACE",
        value_parser = duration_between::<1_000, 3_600_000>,
        value_name = "DURATION"
    )]
    pub stale_grace: Option<HumanDuration>,
}

/// The token service's options.
#[derive(Debug, Clone, Args)]
pub struct TokenServiceOptions {
    /// Directory of the embedded token store (unless --store says otherwise) and of the first management token's file.
    #[arg(
        long,
        env = "FLUXGATE_DATA_DIR",
        default_value = "./fluxgate-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// Authorize answers for invalid tokens each caller (IPv4 address or IPv6 /64) may get per minute; past it every Authorize call from it answers RESOURCE_EXHAUSTED. Callers with a proxy token or a verified client certificate are exempt (1 to 1000000).
    #[arg(
        long,
        env = "FLUXGATE_AUTHORIZE_INVALID_RATE",
        default_value = "20",
        value_parser = count_between::<1, 1_000_000>,
        value_name = "PER_MINUTE"
    )]
    pub authorize_invalid_rate: u64,
    /// The token store: sqlite://PATH, or postgres://USER@HOST:PORT/DATABASE (TLS: ?sslmode=verify-full&sslrootcert=CA.pem) shared by several replicas. Default: the SQLite file fluxgate.db under --data-dir.
    #[arg(long, env = "FLUXGATE_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// File holding the PostgreSQL password for --store (keep it out of the URL).
    #[arg(long, env = "FLUXGATE_STORE_PASSWORD_FILE", value_name = "PATH")]
    pub store_password_file: Option<PathBuf>,
    /// Report not ready (gRPC health NOT_SERVING, /readyz 503) once the store has not been read for this long; Authorize keeps answering from memory meanwhile (1s to 1h).
    #[arg(
        long,
        env = "FLUXGATE_STORE_STALE_AFTER",
        default_value = "10s",
        value_parser = duration_between::<1_000, 3_600_000>,
        value_name = "DURATION"
    )]
    pub store_stale_after: HumanDuration,
}

/// What `fluxgate authz` can do besides serving.
#[derive(Debug, Clone, Subcommand)]
pub enum AuthzAction {
    /// Mint a new management token straight into the token store, for when every management token is lost. Needs the store itself (its file, or the database credentials), never the network; running replicas pick the token up by themselves.
    Bootstrap(BootstrapArgs),
}

/// `fluxgate authz bootstrap`.
#[derive(Debug, Clone, Args)]
pub struct BootstrapArgs {
    /// TOML configuration file (the token service's; its store settings apply).
    #[arg(long, env = "FLUXGATE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub service: TokenServiceOptions,
    /// File to write the new management token to (created with mode 0600; an existing file is never overwritten). Default: bootstrap-management-token under --data-dir.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

/// `fluxgate serve`. Its proxy decides in-process from the token registry,
/// so it has no decision cache and no cache options.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonOptions,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub proxy: ProxyOptions,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub service: TokenServiceOptions,
    /// Address of the token service's gRPC listener (for the CLI and other proxies).
    #[arg(
        long,
        env = "FLUXGATE_AUTHZ_LISTEN",
        default_value = "127.0.0.1:8090",
        value_name = "ADDR"
    )]
    pub authz_listen: SocketAddr,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub authz_tls: ServeTokenServiceTlsOptions,
}

/// `fluxgate proxy`.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonOptions,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub proxy: ProxyOptions,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub cache: CacheOptions,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub authz: AuthzClientOptions,
}

/// `fluxgate authz`.
#[derive(Debug, Clone, Args)]
pub struct AuthzArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonOptions,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub service: TokenServiceOptions,
    /// Address of the token service's gRPC listener.
    #[arg(
        long,
        env = "FLUXGATE_AUTHZ_LISTEN",
        default_value = "127.0.0.1:8090",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub tls: TokenServiceTlsOptions,
    /// Instead of serving: a one-off action on the store.
    #[command(subcommand)]
    pub action: Option<AuthzAction>,
}

/// `fluxgate check-config`.
#[derive(Debug, Clone, Args)]
pub struct CheckConfigArgs {
    /// The configuration file to check.
    #[arg(long, env = "FLUXGATE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The command whose settings to check.
    #[arg(long = "for", value_enum, default_value_t = CheckTarget::Serve)]
    pub target: CheckTarget,
    /// Check values only, without opening the files the configuration names (TLS files, secret files, the audit log's directory): for checking a configuration away from the host it runs on.
    #[arg(long)]
    pub offline: bool,
}

/// Commands `check-config` can check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckTarget {
    /// `fluxgate serve`.
    Serve,
    /// `fluxgate proxy`.
    Proxy,
    /// `fluxgate authz`.
    Authz,
}

impl CheckTarget {
    /// The subcommand name.
    pub fn command_name(self) -> &'static str {
        match self {
            CheckTarget::Serve => "serve",
            CheckTarget::Proxy => "proxy",
            CheckTarget::Authz => "authz",
        }
    }
}
