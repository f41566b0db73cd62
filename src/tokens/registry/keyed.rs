//! The registry's two lookup tables, keyed by a field of the record they
//! hold instead of a copy of it: a million tokens would otherwise carry a
//! million copied 64-byte hashes and id strings (about 230 bytes a token
//! with the tables' spare capacity).

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::tokens::model::TokenRecord;
use crate::tokens::secret::TokenHash;

/// A token in memory and the revision that last wrote its row; found by
/// its id.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) record: Arc<TokenRecord>,
    pub(super) revision: u64,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.record.id == other.record.id
    }
}
impl Eq for Entry {}
impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so lookups by `&str` find it.
        self.record.id.as_str().hash(state);
    }
}
impl Borrow<str> for Entry {
    fn borrow(&self) -> &str {
        &self.record.id
    }
}

/// A record found by the hash of its token string.
#[derive(Debug, Clone)]
pub(super) struct ByHash(pub(super) Arc<TokenRecord>);

impl PartialEq for ByHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.hash == other.0.hash
    }
}
impl Eq for ByHash {}
impl Hash for ByHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `TokenHash` hashes, so lookups by `&TokenHash` find it.
        self.0.hash.hash(state);
    }
}
impl Borrow<TokenHash> for ByHash {
    fn borrow(&self) -> &TokenHash {
        &self.0.hash
    }
}

/// Records by id.
pub(super) type ById = HashSet<Entry>;

/// Records by token hash.
pub(super) type ByTokenHash = HashSet<ByHash>;

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::tokens::model::TokenKind;

    fn record(id: &str, token: &str) -> Arc<TokenRecord> {
        Arc::new(TokenRecord {
            id: id.to_owned(),
            kind: TokenKind::Database,
            description: String::new(),
            permissions: Vec::new(),
            hash: TokenHash::of(token.as_bytes()),
            created_at: SystemTime::UNIX_EPOCH,
            expires_at: None,
            revoked_at: None,
            updated_at: None,
        })
    }

    #[test]
    fn found_by_borrowed_keys_and_replaced_in_place() {
        let mut by_id = ById::default();
        let mut by_hash = ByTokenHash::default();
        let a = record("a", "secret-a");
        by_id.insert(Entry {
            record: Arc::clone(&a),
            revision: 1,
        });
        by_hash.insert(ByHash(Arc::clone(&a)));
        let newer = Entry {
            record: Arc::new(TokenRecord {
                description: "newer".into(),
                ..(*a).clone()
            }),
            revision: 2,
        };
        by_id.replace(newer);
        assert_eq!(by_id.len(), 1);
        let found = by_id.get("a").expect("by id");
        assert_eq!(
            (found.revision, found.record.description.as_str()),
            (2, "newer")
        );
        assert!(!by_id.contains("b"));
        let hash = TokenHash::of(b"secret-a");
        assert_eq!(by_hash.get(&hash).map(|r| r.0.id.as_str()), Some("a"));
        assert!(!by_hash.contains(&TokenHash::of(b"secret-b")));
    }
}
