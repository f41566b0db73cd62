//! Rendering of tokens for people (aligned tables and key/value blocks that
//! fit an 80-column terminal) and for scripts (JSON).
//!
//! JSON field names, shared by every command: `id`, `kind`, `description`,
//! `permissions` (a list of `{"database", "read", "write"}`), `created_at`,
//! `updated_at`, `expires_at`, `revoked_at` (RFC 3339 UTC, or null), and,
//! from `create` only, `token`. Nothing else ever prints a token string.
//!
//! Whatever the token service sends, nothing here panics or drives the
//! terminal: times outside 1970–9999 (which RFC 3339 cannot write) print
//! as `before 1970-01-01T00:00:00Z` / `after 9999-12-31T23:59:59Z`, and
//! control and invisible format characters (escape sequences, newlines,
//! bidirectional overrides) print escaped as `\u{…}` in tables and as
//! `\uXXXX` in JSON (the same string once parsed).

use std::io::{self, IsTerminal as _, Write};
use std::time::SystemTime;

use serde::Serialize;

use super::error::CliError;
use super::terminal::clean;
use crate::proto::tokens as pb;
use crate::tokens::model::MAX_EXPIRY_SECS;
use crate::tokens::unicode;

/// Width used when stdout is not a terminal (and the least used when it is).
pub const DEFAULT_WIDTH: usize = 80;
/// Widest layout used even on a wider terminal.
const MAX_WIDTH: usize = 200;
/// Width of the label column of key/value blocks.
const LABEL: usize = 13;

/// One permission as shown in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Permission {
    /// Database name or `*`.
    pub database: String,
    /// May query.
    pub read: bool,
    /// May write.
    pub write: bool,
}

/// A token as the token service describes it, in display form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenView {
    /// The id.
    pub id: String,
    /// `database`, `management` or `proxy`.
    pub kind: &'static str,
    /// Free text.
    pub description: String,
    /// Database tokens only.
    pub permissions: Vec<Permission>,
    /// Creation time.
    pub created_at: Option<SystemTime>,
    /// Last change of permissions or description.
    pub updated_at: Option<SystemTime>,
    /// Expiry, if any.
    pub expires_at: Option<SystemTime>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<SystemTime>,
}

impl TokenView {
    /// Converts the wire form. Never fails: a timestamp no system time can
    /// hold is kept as the earliest or latest printable one's neighbour, so
    /// one odd record cannot make a listing fail for every administrator.
    pub fn from_wire(info: pb::TokenInfo) -> Self {
        let time = |t: Option<prost_types::Timestamp>| -> Option<SystemTime> {
            t.map(|t| {
                let negative = t.seconds < 0;
                SystemTime::try_from(t).unwrap_or_else(|_| {
                    if negative {
                        SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(1)
                    } else {
                        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(MAX_EXPIRY_SECS + 1)
                    }
                })
            })
        };
        let kind = match pb::TokenKind::try_from(info.kind) {
            Ok(pb::TokenKind::Database) => "database",
            Ok(pb::TokenKind::Management) => "management",
            Ok(pb::TokenKind::Proxy) => "proxy",
            _ => "unknown",
        };
        Self {
            id: info.id,
            kind,
            description: info.description,
            permissions: info
                .permissions
                .into_iter()
                .map(|p| Permission {
                    database: p.database,
                    read: p.read,
                    write: p.write,
                })
                .collect(),
            created_at: time(info.created_at),
            updated_at: time(info.updated_at),
            expires_at: time(info.expires_at),
            revoked_at: time(info.revoked_at),
        }
    }

    /// `revoked`, `expired` or `active` at `now`.
    pub fn status(&self, now: SystemTime) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|t| t <= now) {
            "expired"
        } else {
            "active"
        }
    }

    fn to_json<'a>(&'a self, token: Option<&'a str>) -> TokenJson<'a> {
        TokenJson {
            id: &self.id,
            kind: self.kind,
            token,
            description: &self.description,
            permissions: &self.permissions,
            created_at: self.created_at.map(json_time),
            updated_at: self.updated_at.map(json_time),
            expires_at: self.expires_at.map(json_time),
            revoked_at: self.revoked_at.map(json_time),
        }
    }
}

#[derive(Serialize)]
struct TokenJson<'a> {
    id: &'a str,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    description: &'a str,
    permissions: &'a [Permission],
    created_at: Option<String>,
    updated_at: Option<String>,
    expires_at: Option<String>,
    revoked_at: Option<String>,
}

/// `t` in RFC 3339 when it can be written so (1970 to 9999), else which
/// side of that range it lies on (humantime panics out of it).
fn rfc3339(t: SystemTime, millis: bool) -> String {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Err(_) => "before 1970-01-01T00:00:00Z".to_owned(),
        Ok(d) if d.as_secs() > MAX_EXPIRY_SECS => "after 9999-12-31T23:59:59Z".to_owned(),
        Ok(_) if millis => humantime::format_rfc3339_millis(t).to_string(),
        Ok(_) => humantime::format_rfc3339_seconds(t).to_string(),
    }
}

fn json_time(t: SystemTime) -> String {
    rfc3339(t, true)
}

pub(super) fn table_time(t: Option<SystemTime>, none: &str) -> String {
    t.map_or_else(|| none.to_owned(), |t| rfc3339(t, false))
}

/// The layout width: the terminal's when stdout is one, else 80.
pub fn width() -> usize {
    if !io::stdout().is_terminal() {
        return DEFAULT_WIDTH;
    }
    terminal_size::terminal_size()
        .map(|(w, _)| usize::from(w.0))
        .unwrap_or(DEFAULT_WIDTH)
        .clamp(DEFAULT_WIDTH, MAX_WIDTH)
}

/// Runs `render` against stdout. A closed pipe (`| head`) is not an error.
pub fn to_stdout(render: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<(), CliError> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match render(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(CliError::other(format!("cannot write the output: {e}")))
        }
        _ => Ok(()),
    }
}

/// One token as a JSON object (with its token string after creation).
pub fn json_token(out: &mut dyn Write, token: &TokenView, secret: Option<&str>) -> io::Result<()> {
    write_json(out, &token.to_json(secret))
}

/// Tokens as a JSON array.
pub fn json_tokens(out: &mut dyn Write, tokens: &[TokenView]) -> io::Result<()> {
    let items: Vec<TokenJson<'_>> = tokens.iter().map(|t| t.to_json(None)).collect();
    write_json(out, &items)
}

/// One token of a list as pretty JSON (no token string), without a final
/// newline: a JSON array's element, as [`json_tokens`] writes it when its
/// lines are indented by two spaces.
pub fn json_list_item(token: &TokenView) -> io::Result<String> {
    json_text(&token.to_json(None))
}

/// Pretty JSON with every control or format character (which can only be
/// inside strings) written as a `\uXXXX` escape: the same document to a
/// parser, nothing a terminal acts on.
fn write_json(out: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    let escaped = json_text(value)?;
    writeln!(out, "{escaped}")
}

/// See [`write_json`].
fn json_text(value: &impl Serialize) -> io::Result<String> {
    let text = serde_json::to_string_pretty(value)?;
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c != '\n' && (c.is_control() || unicode::is_format(c)) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                escaped.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            escaped.push(c);
        }
    }
    Ok(escaped)
}

/// Permissions in compact form: `read:db1,db2 write:db3`, or `-` for none.
pub fn compact_permissions(permissions: &[Permission]) -> String {
    let parts: Vec<String> = permission_groups(permissions)
        .into_iter()
        .map(|(action, dbs)| format!("{action}:{}", dbs.join(",")))
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(" ")
    }
}

fn permission_groups(permissions: &[Permission]) -> Vec<(&'static str, Vec<String>)> {
    let pick = |f: fn(&Permission) -> bool| -> Vec<String> {
        permissions
            .iter()
            .filter(|p| f(p))
            .map(|p| clean(&p.database))
            .collect()
    };
    [("read", pick(|p| p.read)), ("write", pick(|p| p.write))]
        .into_iter()
        .filter(|(_, dbs)| !dbs.is_empty())
        .collect()
}

/// One token as a key/value block; `secret` adds the token string once,
/// with the line telling the user to store it.
pub fn block(
    out: &mut dyn Write,
    token: &TokenView,
    secret: Option<&str>,
    now: SystemTime,
    width: usize,
) -> io::Result<()> {
    let value_width = width.saturating_sub(LABEL).max(20);
    let mut field = |label: &str, lines: Vec<String>| -> io::Result<()> {
        for (i, line) in lines.iter().enumerate() {
            let label = if i == 0 { label } else { "" };
            writeln!(out, "{label:<LABEL$}{line}")?;
        }
        Ok(())
    };
    field("ID", vec![clean(&token.id)])?;
    field("Kind", vec![token.kind.to_owned()])?;
    let description = if token.description.is_empty() {
        "-".to_owned()
    } else {
        clean(&token.description)
    };
    field("Description", wrap(&description, value_width))?;
    if token.kind == "database" {
        let mut lines = Vec::new();
        for (action, dbs) in permission_groups(&token.permissions) {
            lines.extend(wrap(&format!("{action}:{}", dbs.join(",")), value_width));
        }
        if lines.is_empty() {
            lines.push("-".to_owned());
        }
        field("Permissions", lines)?;
    }
    field("Status", vec![token.status(now).to_owned()])?;
    field("Created", vec![table_time(token.created_at, "-")])?;
    field("Updated", vec![table_time(token.updated_at, "-")])?;
    field("Expires", vec![table_time(token.expires_at, "never")])?;
    field("Revoked", vec![table_time(token.revoked_at, "-")])?;
    if let Some(secret) = secret {
        // On its own line, so it can be copied whole whatever its length.
        writeln!(out)?;
        writeln!(out, "Token (shown only this once):")?;
        writeln!(out, "{secret}")?;
        writeln!(
            out,
            "Store it in a secret store now (a secret file, FLUXGATE_TOKEN, a keyring)."
        )?;
    }
    Ok(())
}

/// Cuts `text` to `width` characters, ending with `…` when cut.
pub fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

/// Splits `text` into lines of at most `width` characters, preferring to
/// break after a comma or at a space. Linear in the text's length (huge
/// descriptions from a token service must not stall the CLI).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut lines = Vec::new();
    let mut start = 0;
    while chars.len() - start > width && width > 0 {
        let rest = &chars[start..];
        // After a comma (kept on this line) or at a space (dropped).
        let after_comma = rest[..width].iter().rposition(|c| *c == ',').map(|i| i + 1);
        let at_space = rest[..=width].iter().rposition(|c| *c == ' ');
        let at = after_comma
            .into_iter()
            .chain(at_space)
            .filter(|&i| i > 0)
            .max()
            .unwrap_or(width);
        lines.push(rest[..at].iter().collect::<String>().trim_end().to_owned());
        start += at;
        while chars.get(start) == Some(&' ') {
            start += 1;
        }
    }
    lines.push(chars[start..].iter().collect());
    lines
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;

    /// A database token with `description` and `perms` (database, read,
    /// write); also used by the table tests.
    pub(in crate::cli) fn view(description: &str, perms: &[(&str, bool, bool)]) -> TokenView {
        TokenView {
            id: "0c8ba4ef-7f5c-4a3e-9a71-1f2a2b3c4d5e".into(),
            kind: "database",
            description: description.into(),
            permissions: perms
                .iter()
                .map(|(d, r, w)| Permission {
                    database: (*d).into(),
                    read: *r,
                    write: *w,
                })
                .collect(),
            created_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_798_761_600)),
            updated_at: None,
            expires_at: None,
            revoked_at: None,
        }
    }

    /// What `f` writes, as text.
    pub(in crate::cli) fn render(f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
        let mut buf = Vec::new();
        f(&mut buf).expect("render");
        String::from_utf8(buf).expect("utf8")
    }

    #[test]
    fn compact_form() {
        let v = view(
            "",
            &[("a", true, false), ("b", true, true), ("c", false, true)],
        );
        assert_eq!(compact_permissions(&v.permissions), "read:a,b write:b,c");
        assert_eq!(compact_permissions(&[]), "-");
    }

    #[test]
    fn blocks_wrap_and_show_rfc3339() {
        let many: Vec<String> = (0..30).map(|i| format!("database{i}")).collect();
        let perms: Vec<(&str, bool, bool)> =
            many.iter().map(|d| (d.as_str(), true, false)).collect();
        let v = view("d", &perms);
        let text = render(|out| block(out, &v, Some("fgdb_x"), SystemTime::now(), 80));
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{line:?}");
        }
        assert!(text.contains("2027-01-01T00:00:00Z"));
        assert!(text.contains("database29"));
        assert!(text.contains("fgdb_x"));
    }

    #[test]
    fn json_has_the_documented_fields() {
        let v = view("d", &[("*", true, false)]);
        let text = render(|out| json_token(out, &v, None));
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert!(json.get("token").is_none());
        assert_eq!(json["expires_at"], serde_json::Value::Null);
        assert_eq!(json["created_at"], "2027-01-01T00:00:00.000Z");
        assert_eq!(json["permissions"][0]["database"], "*");
        assert_eq!(json["permissions"][0]["read"], true);
    }

    #[test]
    fn wrapping_and_truncation() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(wrap("read:a,b,c", 7), vec!["read:a,", "b,c"]);
        assert_eq!(wrap("hello world", 8), vec!["hello", "world"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
    }
}
