//! Layering of the TOML configuration file under flags and environment
//! variables.
//!
//! The command line is parsed once to learn the command, the `--config` path
//! and which options the flags or the environment already set. Every other
//! key of the file becomes a `--key=value` argument, and the result is parsed
//! again by clap, so a file value is validated exactly like a flag.

use std::collections::BTreeSet;
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

/// Parses `args` (including the program name) with the config file layered in.
pub fn parse_args<I, T>(args: I) -> Result<Cli, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let argv: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let root = Cli::command();
    let strict = || -> Result<Cli, ConfigError> {
        let matches = root.clone().try_get_matches_from(&argv)?;
        Ok(Cli::from_arg_matches(&matches)?)
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

    let table = read_table(&config)?;
    let known_anywhere = all_long_names(&root);
    let mut injected: Vec<(String, Vec<OsString>)> = Vec::new();
    for (raw_key, value) in &table {
        let key = raw_key.replace('_', "-");
        let Some(arg) = leaf_cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
        else {
            if known_anywhere.contains(&key) && key != "config" {
                continue; // an option of another command: one file may serve several.
            }
            return Err(ConfigError::UnknownKey { path: config, key });
        };
        if key == "config" {
            return Err(ConfigError::UnknownKey { path: config, key });
        }
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
    match root.clone().try_get_matches_from(with(&all)) {
        Ok(m) => Ok(Cli::from_arg_matches(&m)?),
        Err(e) if e.kind() == clap::error::ErrorKind::MissingRequiredArgument => Err(e.into()),
        Err(e) => {
            for (key, flags) in &injected {
                if let Err(single) = root.clone().try_get_matches_from(with(flags)) {
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

fn all_long_names(root: &clap::Command) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(cmd) = stack.pop() {
        names.extend(
            cmd.get_arguments()
                .filter_map(|a| a.get_long())
                .map(str::to_owned),
        );
        stack.extend(cmd.get_subcommands());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Command;

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, contents.as_bytes()).unwrap();
        f
    }

    fn proxy(args: &[&str]) -> Result<crate::config::ProxyArgs, ConfigError> {
        let mut argv = vec!["fluxgate", "proxy"];
        argv.extend_from_slice(args);
        match parse_args(argv)?.command {
            Command::Proxy(p) => Ok(p),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn file_values_apply_under_flags() {
        let f = file(
            "upstream = \"http://db:8087\"\nlisten = \"127.0.0.1:9999\"\nauthz_timeout = \"5s\"\nallow-path = [\"/a\", \"/b\"]\n",
        );
        let path = f.path().to_str().unwrap();
        let p = proxy(&["--config", path]).unwrap();
        assert_eq!(p.proxy.upstream.to_string(), "http://db:8087/");
        assert_eq!(p.proxy.listen.port(), 9999);
        assert_eq!(p.proxy.authz_timeout.0, std::time::Duration::from_secs(5));
        assert_eq!(p.proxy.allow_paths, vec!["/a", "/b"]);
        // A flag beats the file; defaults fill the rest.
        let p = proxy(&[
            "--config",
            path,
            "--listen",
            "127.0.0.1:1234",
            "--allow-path",
            "/c",
        ])
        .unwrap();
        assert_eq!(p.proxy.listen.port(), 1234);
        assert_eq!(p.proxy.allow_paths, vec!["/c"]);
        assert_eq!(p.proxy.max_body.0, 1 << 20);
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let f = file("upstream = \"http://db:8087\"\nlisten_adress = \"x\"\n");
        match proxy(&["--config", f.path().to_str().unwrap()]) {
            Err(ConfigError::UnknownKey { key, .. }) => assert_eq!(key, "listen-adress"),
            other => panic!("{other:?}"),
        }
        let f = file("upstream = \"http://db:8087\"\nauthz-timeout = \"soon\"\n");
        match proxy(&["--config", f.path().to_str().unwrap()]) {
            Err(ConfigError::BadValue { key, .. }) => assert_eq!(key, "authz-timeout"),
            other => panic!("{other:?}"),
        }
        let f = file("upstream = \"http://db:8087\"\nmax-connections = [1, 2]\n");
        assert!(matches!(
            proxy(&["--config", f.path().to_str().unwrap()]),
            Err(ConfigError::BadValue { .. })
        ));
        let f = file("this is = not toml");
        assert!(matches!(
            proxy(&["--config", f.path().to_str().unwrap()]),
            Err(ConfigError::Syntax { .. })
        ));
        // A key of another command is ignored: one file can serve several.
        let f = file("upstream = \"http://db:8087\"\ndata-dir = \"/var/lib/fluxgate\"\n");
        assert!(proxy(&["--config", f.path().to_str().unwrap()]).is_ok());
    }
}
