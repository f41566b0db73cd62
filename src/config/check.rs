//! `fluxgate check-config`: validates a configuration file for one command,
//! exactly as that command would read it, and shows what the command takes:
//! every option with its effective value and where that came from (the
//! file, the environment, the default). The start-up checks that need no
//! side effect (TLS files, URLs, secret files) run after this, in
//! [`crate::app::preflight`].

use std::fmt::Write as _;

use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory as _};

use super::file::{ConfigError, Layered, parse_layered};
use super::options::{CheckConfigArgs, Cli, Command};

/// A configuration that parsed: the command as it would run, and the
/// report to print.
#[derive(Debug)]
pub struct Checked {
    /// The parsed command.
    pub command: Command,
    /// Every option of the command, its value and its source.
    pub report: String,
}

/// Validates `args.config` for `args.target`.
pub fn check(args: &CheckConfigArgs) -> Result<Checked, ConfigError> {
    let name = args.target.command_name();
    let mut argv = vec!["fluxgate".to_owned(), name.to_owned()];
    if let Some(path) = &args.config {
        argv.push(format!("--config={}", path.display()));
    }
    let layered = parse_layered(argv)?;
    let report = report(name, &layered);
    Ok(Checked {
        command: layered.cli.command,
        report,
    })
}

/// `key = value  # source` for every option of `name`, in TOML form.
fn report(name: &str, layered: &Layered) -> String {
    let root = Cli::command();
    let (Some(cmd), Some(matches)) = (
        root.find_subcommand(name),
        layered.matches.subcommand_matches(name),
    ) else {
        return String::new();
    };
    let mut out = format!("fluxgate {name} takes these settings (effective value, source):\n");
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version" | "config") {
            continue;
        }
        let id = arg.get_id().as_str();
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let flag = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let value = match values.as_slice() {
            [] => "(unset)".to_owned(),
            [one] if flag => one.clone(),
            [one]
                if arg.get_num_args().is_none_or(|n| n.max_values() <= 1)
                    && !matches!(arg.get_action(), ArgAction::Append) =>
            {
                toml_string(one)
            }
            many => format!(
                "[{}]",
                many.iter()
                    .map(|v| toml_string(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let source = if layered.from_file.contains(long) {
            "file".to_owned()
        } else {
            match matches.value_source(id) {
                Some(ValueSource::EnvVariable) => {
                    arg.get_env().map_or("environment".to_owned(), |e| {
                        format!("environment {}", e.to_string_lossy())
                    })
                }
                Some(ValueSource::CommandLine) => "command line".to_owned(),
                Some(ValueSource::DefaultValue) => "default".to_owned(),
                _ => "unset".to_owned(),
            }
        };
        let _ = writeln!(out, "  {long} = {value}  # {source}");
    }
    out
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}
