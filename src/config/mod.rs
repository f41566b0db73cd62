//! One configuration model for every command: flags, `FLUXGATE_*` environment
//! variables and a TOML file (`--config`), in that order of precedence, over
//! built-in defaults.
//!
//! Every option is a clap argument; the file's keys are the options' long
//! names (`authz-timeout = "2s"`). A file value is applied only when neither
//! the flag nor its environment variable was given, and it is parsed by the
//! same parser as the flag, so the two cannot drift apart.

mod check;
pub mod commands;
mod file;
mod options;
pub mod reference;
mod tls;
mod values;

pub use check::{Checked, check};
pub use file::{ConfigError, parse_args};
pub use options::*;
pub use tls::{AuthzTlsOptions, ServeTokenServiceTlsOptions, TokenServiceTlsOptions};
pub use values::{
    ByteSize, HumanDuration, WatchMode, count_between, duration_between, size_between, u32_between,
    usize_between,
};
