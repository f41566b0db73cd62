//! The token model: kinds, database permissions, the stored record, and the
//! rule that decides whether a token holds a permission.

use std::time::SystemTime;

use super::secret::TokenHash;

/// The database name that stands for every database.
pub const ALL_DATABASES: &str = "*";

/// Longest database name accepted, in bytes.
pub const MAX_DATABASE_NAME: usize = 256;

/// Longest description accepted, in bytes.
pub const MAX_DESCRIPTION: usize = 1024;

/// The two kinds of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Reads and/or writes databases; no admin rights.
    Database,
    /// Manages tokens and databases; no data access.
    Management,
}

impl TokenKind {
    /// The name stored in the database and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Database => "database",
            TokenKind::Management => "management",
        }
    }

    /// Parses [`TokenKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "database" => Some(TokenKind::Database),
            "management" => Some(TokenKind::Management),
            _ => None,
        }
    }
}

/// An action on a database, as in the IOx contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read table and column names only.
    ReadSchema,
    /// Query data.
    Read,
    /// Write data.
    Write,
    /// Create the database: never held by a database token.
    Create,
    /// Delete the database: never held by a database token.
    Delete,
}

impl Action {
    /// Lower-case name for logs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ReadSchema => "read_schema",
            Action::Read => "read",
            Action::Write => "write",
            Action::Create => "create",
            Action::Delete => "delete",
        }
    }
}

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

/// Why a permission list or database name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// Empty database name.
    #[error("database name must not be empty")]
    EmptyDatabase,
    /// Over-long database name.
    #[error("database name is longer than {MAX_DATABASE_NAME} bytes")]
    DatabaseTooLong,
    /// Control characters in a database name.
    #[error("database name {0:?} contains a control character")]
    ControlCharacter(String),
    /// No read and no write anywhere.
    #[error("a database token needs at least one read or write permission")]
    NoPermission,
    /// Over-long description.
    #[error("description is longer than {MAX_DESCRIPTION} bytes")]
    DescriptionTooLong,
    /// Expiry not in the future.
    #[error("expires_at must be in the future")]
    ExpiryInPast,
}

/// Checks one database name as typed by an operator.
pub fn validate_database_name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::EmptyDatabase);
    }
    if name.len() > MAX_DATABASE_NAME {
        return Err(ValidationError::DatabaseTooLong);
    }
    if name.chars().any(char::is_control) {
        // Debug-escaped so the message itself carries no raw control bytes.
        return Err(ValidationError::ControlCharacter(
            name.escape_debug().to_string(),
        ));
    }
    Ok(())
}

/// Validates a permission list and merges entries naming the same database,
/// so the stored list has one entry per database in a stable order.
pub fn normalize_permissions(
    permissions: Vec<DatabasePermission>,
) -> Result<Vec<DatabasePermission>, ValidationError> {
    let mut merged: Vec<DatabasePermission> = Vec::with_capacity(permissions.len());
    for p in permissions {
        validate_database_name(&p.database)?;
        if !p.read && !p.write {
            continue;
        }
        match merged.iter_mut().find(|m| m.database == p.database) {
            Some(m) => {
                m.read |= p.read;
                m.write |= p.write;
            }
            None => merged.push(p),
        }
    }
    if merged.is_empty() {
        return Err(ValidationError::NoPermission);
    }
    merged.sort_by(|a, b| a.database.cmp(&b.database));
    Ok(merged)
}

/// Checks a description.
pub fn validate_description(description: &str) -> Result<(), ValidationError> {
    if description.len() > MAX_DESCRIPTION {
        return Err(ValidationError::DescriptionTooLong);
    }
    Ok(())
}

/// Checks an expiry given at creation.
pub fn validate_expiry(
    expires_at: Option<SystemTime>,
    now: SystemTime,
) -> Result<(), ValidationError> {
    match expires_at {
        Some(t) if t <= now => Err(ValidationError::ExpiryInPast),
        _ => Ok(()),
    }
}

/// A token as stored: everything but the token string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Random id, safe to log.
    pub id: String,
    /// Database or management.
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
    /// `*` included, and never READ or WRITE: no data access. Database
    /// tokens hold what their permissions say, READ covering READ_SCHEMA,
    /// and never CREATE or DELETE.
    pub fn holds(&self, database: &str, action: Action) -> bool {
        if self.kind == TokenKind::Management {
            return matches!(action, Action::Create | Action::Delete | Action::ReadSchema);
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
