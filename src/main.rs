//! The `fluxgate` binary: parse the configuration, set up logging, run the
//! command, drain on SIGTERM/SIGINT. Everything else lives in the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use fluxgate::config::{self, ConfigError};

/// mimalloc: per-thread free lists suit a proxy that allocates and frees
/// small buffers on every request on every worker (glibc's malloc took
/// 10–14 % of the proxy's CPU in the load benchmark's profiles).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
