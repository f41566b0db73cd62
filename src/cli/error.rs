//! Errors of the management CLI and the one table of exit codes they map to.
//!
//! Every failure ends as exactly one line on stderr, `fluxgate: <message>`,
//! and one of the exit codes below, so scripts can tell "fix your flags"
//! from "fix your credentials" from "try again later":
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other failure (unexpected answer, local I/O error, cancelled) |
//! | 2 | usage: bad flags or URL, no permission given, a request the token service refused as invalid, `revoke` off a terminal without `--force` |
//! | 3 | authentication: no management token found, or the token service refused it (unknown, expired, revoked, or a database token) |
//! | 4 | not found: no token with that id |
//! | 5 | unavailable: the token service cannot be reached or did not answer in time, or the OS keyring is unavailable |
//!
//! Messages are built from fixed text, ids, URLs and the token service's
//! status messages (which never carry token material; [`scrub`] removes the
//! token anyway). No token string is ever formatted into one.

use std::fmt;
use std::process::ExitCode;

use tonic::{Code, Status};

/// The exit codes of the management commands.
pub mod exit_code {
    /// Success.
    pub const SUCCESS: u8 = 0;
    /// Any other failure.
    pub const FAILURE: u8 = 1;
    /// Bad flags, URL or request (also clap's own code for usage errors).
    pub const USAGE: u8 = 2;
    /// No management token, or the token service refused it.
    pub const AUTHENTICATION: u8 = 3;
    /// No token with that id.
    pub const NOT_FOUND: u8 = 4;
    /// The token service or the OS keyring cannot be reached.
    pub const UNAVAILABLE: u8 = 5;
}

/// What kind of failure, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Exit code 2.
    Usage,
    /// Exit code 3.
    Authentication,
    /// Exit code 4.
    NotFound,
    /// Exit code 5.
    Unavailable,
    /// Exit code 1.
    Other,
}

impl ErrorKind {
    /// The process exit code for this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Usage => exit_code::USAGE,
            ErrorKind::Authentication => exit_code::AUTHENTICATION,
            ErrorKind::NotFound => exit_code::NOT_FOUND,
            ErrorKind::Unavailable => exit_code::UNAVAILABLE,
            ErrorKind::Other => exit_code::FAILURE,
        }
    }

    /// The kind a gRPC status code maps to.
    pub fn of_code(code: Code) -> Self {
        match code {
            Code::Unauthenticated | Code::PermissionDenied => ErrorKind::Authentication,
            Code::NotFound => ErrorKind::NotFound,
            Code::Unavailable | Code::DeadlineExceeded => ErrorKind::Unavailable,
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::Usage,
            _ => ErrorKind::Other,
        }
    }
}

/// A failure of a management command: a kind and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    kind: ErrorKind,
    message: String,
}

impl CliError {
    /// An error of `kind` with `message` (which must not contain a token).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A usage error (exit code 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, message)
    }

    /// An authentication error (exit code 3).
    pub fn authentication(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Authentication, message)
    }

    /// An unavailable error (exit code 5).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// Any other error (exit code 1).
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Other, message)
    }

    /// The error of a failed call; `doing` says what was attempted
    /// ("cannot list database tokens"). `secret` is scrubbed from the
    /// service's message in case a server ever echoes it.
    pub fn from_status(status: &Status, doing: &str, secret: &str) -> Self {
        let kind = ErrorKind::of_code(status.code());
        let detail = if status.message().is_empty() {
            status.code().description().to_owned()
        } else {
            scrub(status.message(), secret)
        };
        let message = match status.code() {
            // The service's not-found message names the kind and id already.
            Code::NotFound => detail,
            Code::Unauthenticated => {
                format!("{doing}: the token service refused the management token: {detail}")
            }
            Code::Unavailable => format!("{doing}: the token service is unavailable: {detail}"),
            Code::DeadlineExceeded => {
                format!("{doing}: the token service did not answer in time: {detail}")
            }
            _ => format!("{doing}: {detail}"),
        };
        Self { kind, message }
    }

    /// Appends `suffix` to the message (e.g. how far a batch got).
    pub fn with_suffix(mut self, suffix: &str) -> Self {
        self.message.push_str(suffix);
        self
    }

    /// The kind, which decides the exit code.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Prints the one stderr line and returns the exit code.
    pub fn report(&self) -> ExitCode {
        // One line, whatever the message holds: scripts read the first
        // line, and nothing in it may drive the terminal.
        eprintln!("fluxgate: {}", super::terminal::clean(&self.message));
        ExitCode::from(self.kind.exit_code())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Replaces every occurrence of `secret` in `text` with `<redacted>`.
pub fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    text.replace(secret, "<redacted>")
}

/// An error and its sources, joined with ": " (tonic's transport errors say
/// only "transport error" at the top; the cause is further down).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        // hyper and tonic repeat the inner message in the outer one at times.
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        assert_eq!(
            ErrorKind::of_code(Code::Unauthenticated),
            ErrorKind::Authentication
        );
        assert_eq!(
            ErrorKind::of_code(Code::PermissionDenied),
            ErrorKind::Authentication
        );
        assert_eq!(ErrorKind::of_code(Code::NotFound), ErrorKind::NotFound);
        assert_eq!(
            ErrorKind::of_code(Code::DeadlineExceeded),
            ErrorKind::Unavailable
        );
        assert_eq!(ErrorKind::of_code(Code::InvalidArgument), ErrorKind::Usage);
        assert_eq!(ErrorKind::of_code(Code::Internal), ErrorKind::Other);
        assert_eq!(ErrorKind::Usage.exit_code(), 2);
        assert_eq!(ErrorKind::Unavailable.exit_code(), 5);
    }

    #[test]
    fn status_messages_are_scrubbed() {
        let status = Status::invalid_argument("bad token fgmt_secret here");
        let e = CliError::from_status(&status, "cannot create", "fgmt_secret");
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert!(!e.to_string().contains("fgmt_secret"));
        assert!(e.to_string().contains("<redacted>"));
    }
}
