//! Layering of the TOML configuration file under flags and environment
//! variables.
//!
//! The command line is parsed once to learn the command, the `--config` path
//! and which options the flags or the environment already set. Every other
//! key of the file becomes a `--key=value` argument, and the result is parsed
//! again by clap, so a file value is validated exactly like a flag.
//!
//! A file is either flat — every key is an option of the command that reads
//! it — or sectioned: `[serve]`, `[proxy]`, `[authz]` and `[cli]` tables,
//! each read by its command(s) only (`[cli]` by `token`, `management`,
//! `proxy-token`, `login` and `database`), so one file can configure
//! several commands.
//! A key the command does not take is an error naming the key and the
//! command, never silently skipped: a `serve` file given to `fluxgate
//! authz` would otherwise bring the token service up with the proxy's port
//! and certificate and without its client CA.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory as _, FromArgMatches as _};

use super::options::Cli;

/// Why the configuration could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad flags (or `--help`/`--version`, which clap reports this way).
    #[error(transparent)]
    Usage(#[from] clap::Error),
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key no command knows.
    #[error("config file {path}: unknown key `{key}`")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A key of another command.
    #[error(
        "config file {path}: `{key}` is not an option of `fluxgate {command}` (it is one of {owners}){hint}; keys for several commands go in [serve], [proxy], [authz] and [cli] sections"
    )]
    NotForCommand {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The command reading the file.
        command: String,
        /// The commands that take it, as `fluxgate x`, comma-separated.
        owners: String,
        /// What the command calls the same setting, when it has one.
        hint: String,
    },
    /// A sectioned file without the command's section, or with an
    /// unknown section or a key outside any section.
    #[error("config file {path}: {message}")]
    Sections {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A key whose value does not parse.
    #[error("config file {path}: bad value for key `{key}`: {message}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The sections of a sectioned file, and the commands reading each.
pub(crate) const SECTIONS: [(&str, &[&str]); 4] = [
    ("serve", &["serve"]),
    ("proxy", &["proxy"]),
    ("authz", &["authz"]),
    (
        "cli",
        &["token", "management", "proxy-token", "login", "database"],
    ),
];

/// Settings one command calls differently from another, for the hint of
/// [`ConfigError::NotForCommand`]: (command, key given, its own key).
const RENAMED: [(&str, &str, &str); 5] = [
    ("serve", "client-ca", "authz-client-ca"),
    ("authz", "authz-listen", "listen"),
    ("authz", "authz-tls-cert", "tls-cert"),
    ("authz", "authz-tls-key", "tls-key"),
    ("authz", "authz-client-ca", "client-ca"),
];

/// The result of layering: the parsed command line, clap's matches, and
/// the keys that came from the file.
pub(crate) struct Layered {
    pub(crate) cli: Cli,
    pub(crate) matches: ArgMatches,
    pub(crate) from_file: BTreeSet<String>,
}

/// Parses `args` (including the program name) with the config file layered in.
pub fn parse_args<I, T>(args: I) -> Result<Cli, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    parse_layered(args).map(|l| l.cli)
}

/// [`parse_args`], keeping what `check-config` reports.
pub(crate) fn parse_layered<I, T>(args: I) -> Result<Layered, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let argv: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let root = Cli::command();
    let strict = || -> Result<Layered, ConfigError> {
        let matches = root.clone().try_get_matches_from(&argv)?;
        Ok(Layered {
            cli: Cli::from_arg_matches(&matches)?,
            matches,
            from_file: BTreeSet::new(),
        })
    };
    // First pass, lenient: a required option may well be in the file.
    let matches = root
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&argv)?;
    let (path, leaf_matches) = leaf(&matches);
    let Some(leaf_cmd) = find_command(&root, &path) else {
        return strict();
    };
    let config: Option<PathBuf> = leaf_matches
        .try_get_one::<PathBuf>("config")
        .ok()
        .flatten()
        .cloned();
    let Some(config) = config else {
        return strict();
    };
    // check-config reads the file for the command it checks, not for itself.
    let Some(top) = path.first().filter(|t| *t != "check-config") else {
        return strict();
    };

    let table = section_for(read_table(&config)?, top, &config)?;
    let owners = key_owners(&root);
    // Keys any sibling of a CLI command takes: one [cli] file serves them all.
    let group_keys: BTreeSet<String> = if is_cli(top) {
        SECTIONS[3]
            .1
            .iter()
            .filter_map(|c| owners_of_command(&owners, c))
            .flatten()
            .collect()
    } else {
        BTreeSet::new()
    };
    // A subcommand of a server command (`authz bootstrap`) reads that
    // command's file: the keys of the command's family it does not take
    // are skipped.
    let family_keys: BTreeSet<String> = if path.len() > 1 && !is_cli(top) {
        owners_of_command(&owners, top)
            .into_iter()
            .flatten()
            .collect()
    } else {
        BTreeSet::new()
    };
    let mut injected: Vec<(String, Vec<OsString>)> = Vec::new();
    for (raw_key, value) in &table {
        let key = raw_key.replace('_', "-");
        if key == "config" {
            return Err(ConfigError::UnknownKey { path: config, key });
        }
        let Some(arg) = leaf_cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
        else {
            if group_keys.contains(&key) || family_keys.contains(&key) {
                continue; // another management command's option: same file.
            }
            return Err(not_for_command(&config, &key, top, &owners));
        };
        let id = arg.get_id().as_str();
        if matches!(
            leaf_matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let is_flag = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let flags = to_flags(&key, value, is_flag).map_err(|message| ConfigError::BadValue {
            path: config.clone(),
            key: key.clone(),
            message,
        })?;
        injected.push((key, flags));
    }

    // Injected right after the subcommand names, so a `--` the user typed
    // cannot turn them into positional values.
    let at = 1 + path.len();
    let with = |extra: &[OsString]| -> Vec<OsString> {
        let mut v = argv.clone();
        let tail = v.split_off(at.min(v.len()));
        v.extend_from_slice(extra);
        v.extend(tail);
        v
    };
    let all: Vec<OsString> = injected
        .iter()
        .flat_map(|(_, f)| f.iter().cloned())
        .collect();
    let from_file: BTreeSet<String> = injected.iter().map(|(k, _)| k.clone()).collect();
    match root.clone().try_get_matches_from(with(&all)) {
        Ok(m) => Ok(Layered {
            cli: Cli::from_arg_matches(&m)?,
            matches: m,
            from_file,
        }),
        Err(e) if e.kind() == clap::error::ErrorKind::MissingRequiredArgument => Err(e.into()),
        Err(e) => {
            // Name the file key at fault, if one is: its values through
            // the option's own parser.
            for (key, flags) in &injected {
                let Some(arg) = leaf_cmd
                    .get_arguments()
                    .find(|a| a.get_long() == Some(key.as_str()))
                else {
                    continue;
                };
                // The option alone, freed of what it requires of others.
                let alone = clap::Command::new("fluxgate").arg(
                    arg.clone()
                        .required(false)
                        .requires(clap::builder::Resettable::<clap::Id>::Reset),
                );
                let mut argv = vec![OsString::from("fluxgate")];
                argv.extend(flags.iter().cloned());
                if let Err(single) = alone.try_get_matches_from(argv) {
                    return Err(ConfigError::BadValue {
                        path: config,
                        key: key.clone(),
                        message: first_line(&single),
                    });
                }
            }
            Err(e.into())
        }
    }
}

fn is_cli(command: &str) -> bool {
    SECTIONS[3].1.contains(&command)
}

/// The part of `table` that `command` reads: all of a flat file, its
/// section of a sectioned one.
fn section_for(table: toml::Table, command: &str, path: &Path) -> Result<toml::Table, ConfigError> {
    let is_section =
        |k: &str, v: &toml::Value| v.is_table() && SECTIONS.iter().any(|(name, _)| *name == k);
    if !table.iter().any(|(k, v)| is_section(k, v)) {
        return Ok(table);
    }
    let sections_err = |message: String| ConfigError::Sections {
        path: path.to_owned(),
        message,
    };
    let names = SECTIONS.map(|(n, _)| format!("[{n}]")).join(", ");
    for (k, v) in &table {
        if !is_section(k, v) {
            return Err(sections_err(format!(
                "`{k}` is outside any section; a file with sections holds every setting in one of {names}"
            )));
        }
    }
    let wanted = SECTIONS
        .iter()
        .find(|(_, commands)| commands.contains(&command))
        .map_or(command, |(name, _)| name);
    let mut table = table;
    match table.remove(wanted) {
        Some(toml::Value::Table(section)) => Ok(section),
        _ => {
            let present: Vec<String> = table.keys().map(|k| format!("[{k}]")).collect();
            Err(sections_err(format!(
                "no [{wanted}] section for `fluxgate {command}` (it has {})",
                present.join(", ")
            )))
        }
    }
}

/// Every long option name, with the top-level commands that take it
/// (`check-config` reads no file).
fn key_owners(root: &clap::Command) -> BTreeMap<String, BTreeSet<String>> {
    let mut owners: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for top in root
        .get_subcommands()
        .filter(|c| c.get_name() != "check-config")
    {
        let mut stack = vec![top];
        while let Some(cmd) = stack.pop() {
            for long in cmd.get_arguments().filter_map(|a| a.get_long()) {
                owners
                    .entry(long.to_owned())
                    .or_default()
                    .insert(top.get_name().to_owned());
            }
            stack.extend(cmd.get_subcommands());
        }
    }
    owners
}

/// The option names `command` (a top-level command) takes.
fn owners_of_command(
    owners: &BTreeMap<String, BTreeSet<String>>,
    command: &str,
) -> Option<Vec<String>> {
    let keys: Vec<String> = owners
        .iter()
        .filter(|(_, cmds)| cmds.contains(command))
        .map(|(k, _)| k.clone())
        .collect();
    (!keys.is_empty()).then_some(keys)
}

fn not_for_command(
    path: &Path,
    key: &str,
    command: &str,
    owners: &BTreeMap<String, BTreeSet<String>>,
) -> ConfigError {
    let Some(takers) = owners.get(key) else {
        return ConfigError::UnknownKey {
            path: path.to_owned(),
            key: key.to_owned(),
        };
    };
    let hint = RENAMED
        .iter()
        .find(|(c, given, own)| *c == command && *given == key && *own != key)
        .map(|(_, _, own)| format!("; `fluxgate {command}` calls it `{own}`"))
        .unwrap_or_default();
    ConfigError::NotForCommand {
        path: path.to_owned(),
        key: key.to_owned(),
        command: command.to_owned(),
        owners: takers
            .iter()
            .map(|c| format!("`fluxgate {c}`"))
            .collect::<Vec<_>>()
            .join(", "),
        hint,
    }
}

fn first_line(e: &clap::Error) -> String {
    let rendered = e.to_string();
    rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned()
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

fn to_flags(key: &str, value: &toml::Value, is_flag: bool) -> Result<Vec<OsString>, String> {
    use toml::Value;
    let scalar = |v: &Value| -> Result<String, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Integer(i) => Ok(i.to_string()),
            Value::Float(f) => Ok(f.to_string()),
            Value::Boolean(b) => Ok(b.to_string()),
            Value::Datetime(d) => Ok(d.to_string()),
            Value::Array(_) | Value::Table(_) => Err("expected a single value".to_owned()),
        }
    };
    if is_flag {
        return match value {
            Value::Boolean(true) => Ok(vec![format!("--{key}").into()]),
            Value::Boolean(false) => Ok(Vec::new()),
            _ => Err("expected true or false".to_owned()),
        };
    }
    let values = match value {
        Value::Array(items) => items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?,
        other => vec![scalar(other)?],
    };
    Ok(values
        .into_iter()
        .map(|v| OsString::from(format!("--{key}={v}")))
        .collect())
}

/// The chain of subcommand names and the innermost matches.
fn leaf(matches: &ArgMatches) -> (Vec<String>, &ArgMatches) {
    let mut path = Vec::new();
    let mut current = matches;
    while let Some((name, sub)) = current.subcommand() {
        path.push(name.to_owned());
        current = sub;
    }
    (path, current)
}

fn find_command<'a>(root: &'a clap::Command, path: &[String]) -> Option<&'a clap::Command> {
    let mut current = root;
    for name in path {
        current = current.find_subcommand(name)?;
    }
    Some(current)
}

#[cfg(test)]
mod tests;
