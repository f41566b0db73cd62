//! The token model: kinds, database permissions, the stored record, the
//! limits every token respects, and the rule that decides whether a token
//! holds a permission.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::unicode;
use crate::credentials::TokenHash;

pub use crate::proto::ALL_DATABASES;

/// Longest database name accepted, in bytes.
pub const MAX_DATABASE_NAME: usize = 256;

/// Longest description accepted, in bytes.
pub const MAX_DESCRIPTION: usize = 1024;

/// Most permission entries one request may give a token. Listings carry
/// every token's permissions: unbounded lists would make `token list`
/// exceed the clients' message limits.
pub const MAX_PERMISSIONS: usize = 1000;

/// Latest expiry accepted: 9999-12-31T23:59:59Z, the last instant RFC 3339
/// (and every client's date formatting) can write.
pub const MAX_EXPIRY_SECS: u64 = 253_402_300_799;

/// [`MAX_EXPIRY_SECS`] as a time.
pub fn max_expiry() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(MAX_EXPIRY_SECS)
}

/// The kinds of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Reads and/or writes databases; no admin rights.
    Database,
    /// Manages tokens and databases; no data access.
    Management,
    /// Held by proxies: may follow the token change stream (and is exempt
    /// from Authorize's invalid-token throttling). No data access, no
    /// management.
    Proxy,
}

impl TokenKind {
    /// The name stored in the database and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Database => "database",
            TokenKind::Management => "management",
            TokenKind::Proxy => "proxy",
        }
    }

    /// Parses [`TokenKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "database" => Some(TokenKind::Database),
            "management" => Some(TokenKind::Management),
            "proxy" => Some(TokenKind::Proxy),
            _ => None,
        }
    }

    /// Every kind, for gauges and listings.
    pub const ALL: [TokenKind; 3] = [TokenKind::Database, TokenKind::Management, TokenKind::Proxy];
}

pub use crate::authz::Action;

/// Read and/or write on one database or on [`ALL_DATABASES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabasePermission {
    /// Database name or `*`.
    pub database: String,
    /// May query.
    pub read: bool,
    /// May write.
    pub write: bool,
}

impl DatabasePermission {
    fn covers(&self, database: &str) -> bool {
        self.database == ALL_DATABASES || self.database == database
    }
}

/// Why a permission list, name, description or expiry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// Empty database name.
    #[error("database name must not be empty")]
    EmptyDatabase,
    /// Over-long database name.
    #[error("database name is longer than {MAX_DATABASE_NAME} bytes")]
    DatabaseTooLong,
    /// Control characters in a database name.
    #[error("database name \"{0}\" contains a control character")]
    ControlCharacter(String),
    /// Invisible formatting characters in a database name.
    #[error(
        "database name \"{0}\" contains an invisible Unicode format character (zero-width, bidirectional control or byte-order mark): it would list as a different name"
    )]
    FormatCharacter(String),
    /// No read and no write anywhere.
    #[error("a database token needs at least one read or write permission")]
    NoPermission,
    /// Too many permission entries.
    #[error(
        "too many permissions: {0} given, at most {MAX_PERMISSIONS} per token (use '*' for every database)"
    )]
    TooManyPermissions(usize),
    /// Over-long description.
    #[error("description is longer than {MAX_DESCRIPTION} bytes")]
    DescriptionTooLong,
    /// Control characters (newline, escape…) in a description.
    #[error(
        "description contains a control character (newline, tab, escape…); use plain text on one line"
    )]
    DescriptionControlCharacter,
    /// Expiry not in the future.
    #[error("expires_at must be in the future")]
    ExpiryInPast,
    /// Expiry past the year 9999.
    #[error(
        "expires_at is too far in the future: the latest accepted is 9999-12-31T23:59:59Z (omit it for a token that never expires)"
    )]
    ExpiryTooLate,
}

/// Checks one database name as typed by an operator.
pub fn validate_database_name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::EmptyDatabase);
    }
    if name.len() > MAX_DATABASE_NAME {
        return Err(ValidationError::DatabaseTooLong);
    }
    // Escaped, so the message itself carries no raw control or format
    // character to the terminal that shows it.
    if name.chars().any(char::is_control) {
        return Err(ValidationError::ControlCharacter(unicode::escape(name)));
    }
    if name.chars().any(unicode::is_format) {
        return Err(ValidationError::FormatCharacter(unicode::escape(name)));
    }
    Ok(())
}

/// Validates a permission list and merges entries naming the same database,
/// so the stored list has one entry per database, sorted by name. At most
/// [`MAX_PERMISSIONS`] entries; O(n log n).
pub fn normalize_permissions(
    permissions: Vec<DatabasePermission>,
) -> Result<Vec<DatabasePermission>, ValidationError> {
    if permissions.len() > MAX_PERMISSIONS {
        return Err(ValidationError::TooManyPermissions(permissions.len()));
    }
    let mut merged: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for p in permissions {
        validate_database_name(&p.database)?;
        if !p.read && !p.write {
            continue;
        }
        let entry = merged.entry(p.database).or_default();
        entry.0 |= p.read;
        entry.1 |= p.write;
    }
    if merged.is_empty() {
        return Err(ValidationError::NoPermission);
    }
    Ok(merged
        .into_iter()
        .map(|(database, (read, write))| DatabasePermission {
            database,
            read,
            write,
        })
        .collect())
}

/// Checks a description: bounded, one line of text.
pub fn validate_description(description: &str) -> Result<(), ValidationError> {
    if description.len() > MAX_DESCRIPTION {
        return Err(ValidationError::DescriptionTooLong);
    }
    if description.chars().any(char::is_control) {
        return Err(ValidationError::DescriptionControlCharacter);
    }
    Ok(())
}

/// Checks an expiry given at creation: in the future, not past year 9999.
pub fn validate_expiry(
    expires_at: Option<SystemTime>,
    now: SystemTime,
) -> Result<(), ValidationError> {
    match expires_at {
        Some(t) if t <= now => Err(ValidationError::ExpiryInPast),
        Some(t) if t > max_expiry() => Err(ValidationError::ExpiryTooLate),
        _ => Ok(()),
    }
}

/// A token as stored: everything but the token string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Random id, safe to log.
    pub id: String,
    /// Database, management or proxy.
    pub kind: TokenKind,
    /// Free text from the operator.
    pub description: String,
    /// Database tokens only; empty for management tokens.
    pub permissions: Vec<DatabasePermission>,
    /// SHA-512 of the token string.
    pub hash: TokenHash,
    /// Creation time.
    pub created_at: SystemTime,
    /// Optional expiry.
    pub expires_at: Option<SystemTime>,
    /// Set once revoked.
    pub revoked_at: Option<SystemTime>,
    /// Last change of permissions or description.
    pub updated_at: Option<SystemTime>,
}

impl TokenRecord {
    /// True when the token may be used at `now`: not revoked and not expired.
    pub fn is_usable(&self, now: SystemTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|t| now < t)
    }

    /// True when this token holds `action` on `database`.
    ///
    /// Management tokens administer every database: CREATE, DELETE and
    /// READ_SCHEMA (listing retention policies, shards) on any database,
    /// `*` included, and never READ or WRITE: no data access. Proxy tokens
    /// hold nothing. Database tokens hold what their permissions say, READ
    /// covering READ_SCHEMA, and never CREATE or DELETE.
    pub fn holds(&self, database: &str, action: Action) -> bool {
        match self.kind {
            TokenKind::Management => {
                return matches!(action, Action::Create | Action::Delete | Action::ReadSchema);
            }
            TokenKind::Proxy => return false,
            TokenKind::Database => {}
        }
        self.permissions
            .iter()
            .filter(|p| p.covers(database))
            .any(|p| match action {
                Action::Read | Action::ReadSchema => p.read,
                Action::Write => p.write,
                Action::Create | Action::Delete => false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(perms: &[(&str, bool, bool)]) -> TokenRecord {
        TokenRecord {
            id: "t".into(),
            kind: TokenKind::Database,
            description: String::new(),
            permissions: perms
                .iter()
                .map(|(d, r, w)| DatabasePermission {
                    database: (*d).into(),
                    read: *r,
                    write: *w,
                })
                .collect(),
            hash: TokenHash([0; 64]),
            created_at: SystemTime::UNIX_EPOCH,
            expires_at: None,
            revoked_at: None,
            updated_at: None,
        }
    }

    #[test]
    fn holds_follows_permissions_and_wildcard() {
        let t = token(&[("a", true, false), ("*", false, true)]);
        assert!(t.holds("a", Action::Read));
        assert!(t.holds("a", Action::ReadSchema));
        assert!(!t.holds("b", Action::Read));
        assert!(t.holds("b", Action::Write));
        assert!(t.holds("a", Action::Write));
        assert!(!t.holds("a", Action::Create));
        assert!(!t.holds("a", Action::Delete));
    }

    #[test]
    fn management_tokens_administer_and_hold_no_data_permission() {
        let mut t = token(&[("*", true, true)]);
        t.kind = TokenKind::Management;
        assert!(!t.holds("a", Action::Read));
        assert!(!t.holds("a", Action::Write));
        for action in [Action::Create, Action::Delete, Action::ReadSchema] {
            assert!(t.holds("a", action));
            assert!(t.holds("*", action));
        }
    }

    #[test]
    fn normalize_merges_and_rejects_empty() {
        let merged = normalize_permissions(vec![
            DatabasePermission {
                database: "b".into(),
                read: true,
                write: false,
            },
            DatabasePermission {
                database: "a".into(),
                read: false,
                write: true,
            },
            DatabasePermission {
                database: "b".into(),
                read: false,
                write: true,
            },
        ])
        .unwrap();
        assert_eq!(merged.len(), 2);
        assert_eq!(
            merged[1],
            DatabasePermission {
                database: "b".into(),
                read: true,
                write: true
            }
        );
        assert_eq!(
            normalize_permissions(vec![]),
            Err(ValidationError::NoPermission)
        );
        assert_eq!(
            normalize_permissions(vec![DatabasePermission {
                database: "x".into(),
                read: false,
                write: false
            }]),
            Err(ValidationError::NoPermission)
        );
    }

    #[test]
    fn database_names_are_checked() {
        assert_eq!(
            validate_database_name(""),
            Err(ValidationError::EmptyDatabase)
        );
        assert_eq!(
            validate_database_name(&"x".repeat(257)),
            Err(ValidationError::DatabaseTooLong)
        );
        assert!(matches!(
            validate_database_name("a\nb"),
            Err(ValidationError::ControlCharacter(_))
        ));
        assert!(validate_database_name("telegraf/autogen").is_ok());
        assert!(validate_database_name("*").is_ok());
    }

    #[test]
    fn invisible_characters_are_refused_in_database_names() {
        for name in ["x\u{200b}", "\u{feff}db", "a\u{202e}b", "db\u{2066}"] {
            let e = validate_database_name(name).unwrap_err();
            assert!(matches!(e, ValidationError::FormatCharacter(_)), "{name:?}");
            let message = e.to_string();
            assert!(message.contains("\\u{"), "{message}");
            assert!(!message.chars().any(unicode::is_format), "{message}");
        }
        assert!(validate_database_name("données_é").is_ok());
    }

    #[test]
    fn permissions_are_capped_and_merged_in_n_log_n() {
        let many: Vec<DatabasePermission> = (0..=MAX_PERMISSIONS)
            .map(|i| DatabasePermission {
                database: format!("db{i}"),
                read: true,
                write: false,
            })
            .collect();
        assert_eq!(
            normalize_permissions(many.clone()),
            Err(ValidationError::TooManyPermissions(MAX_PERMISSIONS + 1))
        );
        let merged = normalize_permissions(many[..MAX_PERMISSIONS].to_vec()).unwrap();
        assert_eq!(merged.len(), MAX_PERMISSIONS);
        assert!(merged.windows(2).all(|w| w[0].database < w[1].database));
    }

    #[test]
    fn descriptions_are_one_bounded_line() {
        assert!(validate_description("telegraf east, rack 7 — ünïcode").is_ok());
        for bad in [
            "a\nb",
            "a\rb",
            "tab\there",
            "\u{1b}[31mred",
            "nul\0",
            "\u{85}",
        ] {
            assert_eq!(
                validate_description(bad),
                Err(ValidationError::DescriptionControlCharacter),
                "{bad:?}"
            );
        }
        assert_eq!(
            validate_description(&"x".repeat(MAX_DESCRIPTION + 1)),
            Err(ValidationError::DescriptionTooLong)
        );
    }

    #[test]
    fn expiry_is_bounded_by_year_9999() {
        let now = SystemTime::now();
        assert_eq!(validate_expiry(Some(max_expiry()), now), Ok(()));
        assert_eq!(
            validate_expiry(Some(max_expiry() + std::time::Duration::from_secs(1)), now),
            Err(ValidationError::ExpiryTooLate)
        );
        assert_eq!(
            humantime::format_rfc3339(max_expiry()).to_string(),
            "9999-12-31T23:59:59Z"
        );
    }

    #[test]
    fn proxy_tokens_hold_nothing_and_kinds_round_trip() {
        let mut t = token(&[("*", true, true)]);
        t.kind = TokenKind::Proxy;
        assert!(!t.holds("a", Action::Read));
        for kind in TokenKind::ALL {
            assert_eq!(TokenKind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn expiry_makes_token_unusable() {
        let mut t = token(&[("a", true, true)]);
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100);
        t.expires_at = Some(now);
        assert!(!t.is_usable(now));
        t.expires_at = Some(now + std::time::Duration::from_secs(1));
        assert!(t.is_usable(now));
        t.revoked_at = Some(now);
        assert!(!t.is_usable(now));
    }
}
