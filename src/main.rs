//! The `fluxgate` binary: parse the configuration, set up logging, run the
//! command, drain on SIGTERM/SIGINT. Everything else lives in the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use fluxgate::config::{self, ConfigError};

fn main() -> ExitCode {
    let cli = match config::parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(ConfigError::Usage(e)) => e.exit(),
        Err(e) => {
            eprintln!("fluxgate: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fluxgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(fluxgate::run(cli))
}
