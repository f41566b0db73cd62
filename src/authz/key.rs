//! Keys of the decision cache: (token fingerprint, database, action), kept
//! compact because a proxy may hold a million of them.
//!
//! - The token is represented by a 128-bit keyed hash of it (SipHash-2-4
//!   with a random key drawn when the process starts), never by the token
//!   itself. The fingerprint never leaves the process and the key never
//!   leaves memory: an accidental collision among a million cached tokens
//!   has a probability around 2^-88, and choosing a token whose fingerprint
//!   is another's needs the key (SipHash is a keyed pseudo-random function).
//!   It costs ~50 ns where the SHA-512 the token store keys on costs ~500:
//!   the cache is looked up on every request, the store only on a miss.
//! - Database names are interned: every key of one database shares one
//!   allocation instead of repeating the name.
//! - Lookups use [`KeyRef`], which borrows the database name, so a cache hit
//!   allocates nothing.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use siphasher::sip128::SipHasher24;

use super::Action;
use crate::credentials::Token;

/// Bytes of a fingerprint.
pub const FINGERPRINT_BYTES: usize = 16;

/// Action byte of the token-level entry recording that a token is invalid
/// (unknown, expired or revoked): true of every database and action at once.
pub(crate) const ANY_ACTION: u8 = u8::MAX;

/// The cache's identity of a token: its keyed 128-bit hash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; FINGERPRINT_BYTES]);

/// This process's fingerprint key.
fn key() -> &'static [u8; 16] {
    static KEY: OnceLock<[u8; 16]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

impl Fingerprint {
    /// Hashes `token` with this process's key.
    pub fn of(token: &Token) -> Self {
        Self(
            SipHasher24::new_with_key(key())
                .hash(token.expose())
                .as_bytes(),
        )
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not a secret, but nothing anyone needs to read in a log either.
        f.write_str("Fingerprint(..)")
    }
}

/// The byte an action is stored as.
pub(crate) fn action_byte(action: Action) -> u8 {
    action as u8
}

/// One hashing routine for owned and borrowed keys: the two must agree.
pub(crate) fn hash_parts<H: Hasher>(
    fingerprint: &Fingerprint,
    database: &str,
    action: u8,
    state: &mut H,
) {
    state.write(&fingerprint.0);
    database.hash(state);
    state.write_u8(action);
}

/// A stored key.
#[derive(Clone)]
pub struct DecisionKey {
    fingerprint: Fingerprint,
    database: Arc<str>,
    action: u8,
}

impl DecisionKey {
    /// A key for `action` on `database` (an interned name).
    pub(crate) fn new(fingerprint: Fingerprint, database: Arc<str>, action: u8) -> Self {
        Self {
            fingerprint,
            database,
            action,
        }
    }

    /// The stored database name (interned).
    pub(crate) fn database(&self) -> &Arc<str> {
        &self.database
    }

    /// The borrowed form of this key.
    pub(crate) fn borrowed(&self) -> KeyRef<'_> {
        KeyRef {
            fingerprint: self.fingerprint,
            database: &self.database,
            action: self.action,
        }
    }
}

impl PartialEq for DecisionKey {
    fn eq(&self, other: &Self) -> bool {
        self.borrowed() == other.borrowed()
    }
}

impl Eq for DecisionKey {}

impl Hash for DecisionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(&self.fingerprint, &self.database, self.action, state);
    }
}

impl std::fmt::Debug for DecisionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionKey")
            .field("database", &self.database)
            .field("action", &self.action)
            .finish_non_exhaustive()
    }
}

/// A key as looked up: borrows the database name from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef<'a> {
    /// The token.
    pub fingerprint: Fingerprint,
    /// The database name.
    pub database: &'a str,
    /// The action byte (`u8::MAX` for the token-level entry).
    pub action: u8,
}

impl<'a> KeyRef<'a> {
    /// The key of `action` on `database` for `fingerprint`.
    pub fn new(fingerprint: Fingerprint, database: &'a str, action: Action) -> Self {
        Self {
            fingerprint,
            database,
            action: action_byte(action),
        }
    }

    /// The token-level key ("this token is invalid").
    pub(crate) fn token_level(fingerprint: Fingerprint) -> Self {
        Self {
            fingerprint,
            database: "",
            action: ANY_ACTION,
        }
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(&self.fingerprint, self.database, self.action, state);
    }
}

/// Interns database names. Names no key uses any more are dropped once the
/// set has doubled since the last sweep, so a stream of made-up names cannot
/// grow it without bound (the cache itself is bounded).
#[derive(Debug)]
pub(crate) struct Interner {
    inner: Mutex<InternerState>,
}

#[derive(Debug)]
struct InternerState {
    names: HashSet<Arc<str>>,
    sweep_at: usize,
}

/// Smallest set size at which unused names are swept.
const MIN_SWEEP: usize = 1024;

impl Interner {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new(InternerState {
                names: HashSet::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// The shared copy of `name`.
    pub(crate) fn intern(&self, name: &str) -> Arc<str> {
        let mut state = self.inner.lock();
        if let Some(existing) = state.names.get(name) {
            return Arc::clone(existing);
        }
        if state.names.len() >= state.sweep_at {
            // Only the set holds a name nobody else references.
            state.names.retain(|n| Arc::strong_count(n) > 1);
            state.sweep_at = (state.names.len() * 2).max(MIN_SWEEP);
        }
        let name: Arc<str> = Arc::from(name);
        state.names.insert(Arc::clone(&name));
        name
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().names.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;

    use super::*;

    fn token(s: &str) -> Token {
        Token::new(s.as_bytes().to_vec()).expect("non-empty")
    }

    #[test]
    fn owned_and_borrowed_keys_hash_and_compare_alike() {
        let interner = Interner::new();
        let fp = Fingerprint::of(&token("secret"));
        let owned = DecisionKey::new(fp, interner.intern("db"), action_byte(Action::Read));
        let borrowed = KeyRef::new(fp, "db", Action::Read);
        let s = RandomState::new();
        assert_eq!(s.hash_one(&owned), s.hash_one(borrowed));
        assert_eq!(borrowed, owned.borrowed());
        assert_ne!(KeyRef::new(fp, "db", Action::Write), owned.borrowed());
        assert_ne!(
            KeyRef::new(Fingerprint::of(&token("other")), "db", Action::Read),
            owned.borrowed()
        );
        assert_eq!(fp, Fingerprint::of(&token("secret")), "stable in a process");
        // Field boundaries are unambiguous: ("ab", x) is not ("a", "b"…).
        assert_ne!(
            s.hash_one(KeyRef::new(fp, "ab", Action::Read)),
            s.hash_one(KeyRef::new(fp, "a", Action::Read))
        );
    }

    #[test]
    fn interner_shares_and_sweeps() {
        let interner = Interner::new();
        let a = interner.intern("a");
        assert!(Arc::ptr_eq(&a, &interner.intern("a")));
        for i in 0..(MIN_SWEEP * 3) {
            drop(interner.intern(&format!("unused-{i}")));
        }
        assert!(interner.len() <= MIN_SWEEP * 2, "swept: {}", interner.len());
        assert!(
            Arc::ptr_eq(&a, &interner.intern("a")),
            "a used name survives"
        );
    }

    #[test]
    fn debug_shows_no_fingerprint() {
        let fp = Fingerprint::of(&token("secret"));
        assert_eq!(format!("{fp:?}"), "Fingerprint(..)");
    }
}
