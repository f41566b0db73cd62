//! The option reference of `docs/CONFIGURATION.md`, rendered from the clap
//! definitions themselves, so the documentation cannot drift from the code
//! (a test compares the two).

use clap::CommandFactory as _;

use super::options::Cli;

/// Markers around the generated part of `docs/CONFIGURATION.md`.
pub const BEGIN: &str = "<!-- BEGIN GENERATED OPTION REFERENCE -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- END GENERATED OPTION REFERENCE -->";

fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// One Markdown table per command: flag, config-file key, environment
/// variable, default and meaning of every option.
pub fn markdown() -> String {
    let mut out = String::new();
    let root = Cli::command();
    let mut stack: Vec<(String, clap::Command)> = root
        .get_subcommands()
        .map(|c| (c.get_name().to_owned(), c.clone()))
        .collect();
    stack.reverse();
    while let Some((path, cmd)) = stack.pop() {
        let subs: Vec<_> = cmd.get_subcommands().cloned().collect();
        for sub in subs.iter().rev() {
            stack.push((format!("{path} {}", sub.get_name()), sub.clone()));
        }
        let args: Vec<_> = cmd
            .get_arguments()
            .filter(|a| a.get_long().is_some_and(|l| l != "help" && l != "version"))
            .collect();
        if args.is_empty() {
            continue;
        }
        out.push_str(&format!("\n### `fluxgate {path}`\n\n"));
        if let Some(about) = cmd.get_about() {
            out.push_str(&format!("{about}\n\n"));
        }
        out.push_str(
            "| flag | file key | environment | default | meaning |\n|---|---|---|---|---|\n",
        );
        for arg in args {
            let long = arg.get_long().unwrap_or_default();
            let env = arg
                .get_env()
                .map(|e| format!("`{}`", e.to_string_lossy()))
                .unwrap_or_default();
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let default = if defaults.is_empty() {
                String::new()
            } else {
                format!("`{}`", defaults.join(","))
            };
            let help = arg
                .get_help()
                .map(|h| escape(&h.to_string()))
                .unwrap_or_default();
            out.push_str(&format!(
                "| `--{long}` | `{long}` | {env} | {default} | {help} |\n"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps docs/CONFIGURATION.md in step with the code. Run with
    /// `FLUXGATE_UPDATE_DOCS=1` to rewrite the generated part.
    #[test]
    fn configuration_doc_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIGURATION.md");
        let doc = std::fs::read_to_string(path).expect("docs/CONFIGURATION.md exists");
        let (Some(start), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
            panic!("docs/CONFIGURATION.md lacks the generated-reference markers");
        };
        let current = &doc[start + BEGIN.len()..end];
        let expected = markdown();
        if current.trim() != expected.trim() {
            if std::env::var_os("FLUXGATE_UPDATE_DOCS").is_some() {
                let updated = format!(
                    "{}{BEGIN}\n{}\n{}",
                    &doc[..start],
                    expected.trim(),
                    &doc[end..]
                );
                std::fs::write(path, updated).expect("write docs/CONFIGURATION.md");
                return;
            }
            panic!(
                "docs/CONFIGURATION.md is out of date with the options in src/; \
                 run `FLUXGATE_UPDATE_DOCS=1 cargo test --lib configuration_doc` and review the diff"
            );
        }
    }
}
