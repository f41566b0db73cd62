//! What the commands print on success, in the `--format` asked for: a
//! created token (its string, once) or one token. Lists: [`super::listing`].

use std::time::SystemTime;

use super::error::CliError;
use super::output::{self, TokenView};
use crate::config::commands::Format;
use crate::proto::tokens as pb;

/// Which list layout to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// Database tokens: with permissions.
    Database,
    /// Management tokens: with expiry.
    Management,
    /// Proxy tokens: with expiry.
    Proxy,
}

/// A newly created token, with its token string and the reminder to store it.
pub fn created(created: pb::CreatedToken, format: Format) -> Result<(), CliError> {
    let info = created
        .info
        .ok_or_else(|| CliError::other("the token service answered without the token's details"))?;
    if created.token.is_empty() {
        return Err(CliError::other(
            "the token service answered without a token string",
        ));
    }
    let view = TokenView::from_wire(info);
    // Zeroed once printed.
    let secret = zeroize::Zeroizing::new(created.token);
    let secret = secret.as_str();
    match format {
        Format::Json => output::to_stdout(|out| output::json_token(out, &view, Some(secret))),
        Format::Table => {
            let width = output::width();
            output::to_stdout(|out| {
                output::block(out, &view, Some(secret), SystemTime::now(), width)
            })
        }
    }
}

/// One token (never its token string).
pub fn one(info: pb::TokenInfo, format: Format) -> Result<(), CliError> {
    let view = TokenView::from_wire(info);
    match format {
        Format::Json => output::to_stdout(|out| output::json_token(out, &view, None)),
        Format::Table => {
            let width = output::width();
            output::to_stdout(|out| output::block(out, &view, None, SystemTime::now(), width))
        }
    }
}
