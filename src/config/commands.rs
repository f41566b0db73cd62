//! The command line's client commands (`token`, `management`,
//! `proxy-token`, `database`, `login`), in the style of `influxctl`: the
//! surface scripts depend on, so change names only with care. What they do
//! is in [`crate::cli`].

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// The exit-code table, appended to the management commands' `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  other failure
  2  usage: bad flags or URL, no permission given, invalid request,
     revoke without a terminal and without --force
  3  authentication: no management token found, or the token service
     refused it (unknown, expired, revoked, or a database token)
  4  not found: no token with that id
  5  unavailable: the token service cannot be reached or timed out,
     or the OS keyring is unavailable";

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON for scripts.
    Json,
}

/// How every management command reaches the token service.
#[derive(Debug, Clone, Args)]
pub struct ConnectionOptions {
    /// TOML configuration file: the long option names as keys, flat or in a [cli] section.
    #[arg(long, env = "FLUXGATE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The token service's URL.
    #[arg(
        long,
        env = "FLUXGATE_AUTHZ",
        default_value = "http://127.0.0.1:8090",
        value_name = "URL"
    )]
    pub authz: String,
    /// File holding the management token (else env FLUXGATE_TOKEN, else the OS keyring).
    #[arg(long, env = "FLUXGATE_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub tls: super::AuthzTlsOptions,
}

/// What `token revoke`, `management revoke` and `proxy-token revoke` take.
#[derive(Debug, Clone, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnectionOptions,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub force: bool,
    /// The tokens' ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// What `token list`, `management list` and `proxy-token list` take.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnectionOptions,
    /// Also list revoked tokens.
    #[arg(long)]
    pub include_revoked: bool,
    /// Tokens fetched per request, 1 to 10000 (default: the token service's, 1000); the list is printed as pages arrive.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub page_size: Option<u32>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Permissions and expiry of a token being created.
#[derive(Debug, Clone, Args)]
pub struct ExpiryOptions {
    /// Expiry time (RFC 3339, e.g. 2027-01-01T00:00:00Z).
    #[arg(long, value_name = "RFC3339", conflicts_with = "expires_in")]
    pub expires_at: Option<String>,
    /// Expiry as a duration from now (e.g. 90d, 12h).
    #[arg(long, value_name = "DURATION")]
    pub expires_in: Option<String>,
}

/// `fluxgate token …`
#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Create a database token; prints the token string once.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Create {
        #[command(flatten)]
        #[allow(missing_docs)]
        conn: ConnectionOptions,
        /// Grant read on this database ('*' for all); repeatable.
        #[arg(long = "read-database", value_name = "DB")]
        read: Vec<String>,
        /// Grant write on this database ('*' for all); repeatable.
        #[arg(long = "write-database", value_name = "DB")]
        write: Vec<String>,
        #[command(flatten)]
        #[allow(missing_docs)]
        expiry: ExpiryOptions,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// What the token is for.
        description: String,
    },
    /// List database tokens (never their token strings).
    #[command(after_long_help = EXIT_CODES_HELP)]
    List(ListArgs),
    /// Show one database token.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Get {
        #[command(flatten)]
        #[allow(missing_docs)]
        conn: ConnectionOptions,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// The token's id.
        id: String,
    },
    /// Replace a database token's permissions.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Update {
        #[command(flatten)]
        #[allow(missing_docs)]
        conn: ConnectionOptions,
        /// Grant read on this database ('*' for all); repeatable.
        #[arg(long = "read-database", value_name = "DB")]
        read: Vec<String>,
        /// Grant write on this database ('*' for all); repeatable.
        #[arg(long = "write-database", value_name = "DB")]
        write: Vec<String>,
        /// New description.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// The token's id.
        id: String,
    },
    /// Revoke database tokens.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Revoke(RevokeArgs),
}

/// `fluxgate management …`
#[derive(Debug, Clone, Subcommand)]
pub enum ManagementCommand {
    /// Create a management token; prints the token string once.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Create {
        #[command(flatten)]
        #[allow(missing_docs)]
        conn: ConnectionOptions,
        /// What the token is for.
        #[arg(long, value_name = "TEXT", default_value = "")]
        description: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        expiry: ExpiryOptions,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List management tokens.
    #[command(after_long_help = EXIT_CODES_HELP)]
    List(ListArgs),
    /// Revoke management tokens.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Revoke(RevokeArgs),
}

/// `fluxgate proxy-token …`
#[derive(Debug, Clone, Subcommand)]
pub enum ProxyTokenCommand {
    /// Create a proxy token (for `fluxgate proxy --authz-token-file`); prints the token string once.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Create {
        #[command(flatten)]
        #[allow(missing_docs)]
        conn: ConnectionOptions,
        #[command(flatten)]
        #[allow(missing_docs)]
        expiry: ExpiryOptions,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Which proxies hold it (e.g. "sidecars of pool A").
        description: String,
    },
    /// List proxy tokens (never their token strings).
    #[command(after_long_help = EXIT_CODES_HELP)]
    List(ListArgs),
    /// Revoke proxy tokens: change streams opened with them end.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Revoke(RevokeArgs),
}

/// `fluxgate login`'s long help: where the token comes from and goes to.
/// (The variant's doc comment sets the about text, so this goes after.)
fn login_help() -> String {
    format!(
        "The token is read from --token-file when given, else from standard input\n\
         (a prompt without echo on a terminal, the first line otherwise). It is\n\
         checked against the token service, then stored in the OS keyring under\n\
         service \"fluxgate\" and user = the --authz URL (scheme://host:port), so\n\
         each token service has its own entry. The other commands use it when\n\
         neither --token-file nor FLUXGATE_TOKEN is given.\n\n{EXIT_CODES_HELP}"
    )
}

/// `fluxgate login`
#[derive(Debug, Clone, Args)]
#[command(after_long_help = login_help())]
pub struct LoginArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: ConnectionOptions,
    /// Remove the token stored for --authz instead.
    #[arg(long)]
    pub remove: bool,
}

/// The API of the database behind the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiKind {
    /// InfluxDB 1.x: InfluxQL on `/query`.
    V1,
    /// InfluxDB 3: `/api/v3/configure/database`.
    V3,
}

/// How `fluxgate database` reaches the proxy.
#[derive(Debug, Clone, Args)]
pub struct HostOptions {
    /// TOML configuration file: the long option names as keys, flat or in a [cli] section.
    #[arg(long, env = "FLUXGATE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The fluxgate proxy's URL (databases are administered through it).
    #[arg(
        long,
        env = "FLUXGATE_HOST",
        default_value = "http://127.0.0.1:8086",
        value_name = "URL"
    )]
    pub host: String,
    /// PEM CA certificates trusted for an https:// --host instead of the system roots.
    #[arg(long, env = "FLUXGATE_HOST_CA", value_name = "PATH")]
    pub host_ca: Option<PathBuf>,
    /// The database's API; read from the proxy's /ping when not given.
    #[arg(long, value_enum)]
    pub api: Option<ApiKind>,
    /// File holding the management token (else env FLUXGATE_TOKEN, else the OS keyring entry of --authz).
    #[arg(long, env = "FLUXGATE_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// The token service whose OS keyring entry (`fluxgate login`) holds the management token.
    #[arg(
        long,
        env = "FLUXGATE_AUTHZ",
        default_value = "http://127.0.0.1:8090",
        value_name = "URL"
    )]
    pub authz: String,
}

/// `fluxgate database …`
#[derive(Debug, Clone, Subcommand)]
pub enum DatabaseCommand {
    /// Create a database.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Create {
        #[command(flatten)]
        #[allow(missing_docs)]
        conn: HostOptions,
        /// How long data is kept: m, h, d, w, mo (30 days), y (365 days), combined (1w2d); 0 or infinite: forever.
        #[arg(long, value_name = "DURATION")]
        retention_period: Option<String>,
        /// InfluxDB Cloud Dedicated's table limit (not supported here: refused).
        #[arg(long, value_name = "N")]
        max_tables: Option<u64>,
        /// InfluxDB Cloud Dedicated's column limit (not supported here: refused).
        #[arg(long, value_name = "N")]
        max_columns: Option<u64>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// The database's name.
        name: String,
    },
    /// List the databases the management token may see.
    #[command(after_long_help = EXIT_CODES_HELP)]
    List {
        #[command(flatten)]
        #[allow(missing_docs)]
        conn: HostOptions,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Change a database's retention period.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Update {
        #[command(flatten)]
        #[allow(missing_docs)]
        conn: HostOptions,
        /// How long data is kept (as for create).
        #[arg(long, value_name = "DURATION")]
        retention_period: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// The database's name.
        name: String,
    },
    /// Delete databases and all their data.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Delete {
        #[command(flatten)]
        #[allow(missing_docs)]
        conn: HostOptions,
        /// Do not ask for confirmation (required without a terminal).
        #[arg(long)]
        force: bool,
        /// The databases' names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}
