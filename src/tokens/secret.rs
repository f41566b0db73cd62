//! Token strings and their hashes: generation from the OS CSPRNG, the SHA-512
//! hash that is the only stored form, and constant-time comparison.
//!
//! A token string never leaves this module except as the return value of
//! [`generate`], which the caller hands to the client exactly once.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore as _;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::model::TokenKind;

/// Random bytes per token: 384 bits, above the 256 the threat model needs.
const RANDOM_BYTES: usize = 48;

/// Prefix of database tokens, so a leaked one is recognisable (secret scanners).
pub const DATABASE_PREFIX: &str = "fgdb_";
/// Prefix of management tokens.
pub const MANAGEMENT_PREFIX: &str = "fgmt_";
/// Prefix of proxy tokens.
pub const PROXY_PREFIX: &str = "fgpx_";

/// The SHA-512 hash of a token string: how tokens are stored and looked up.
///
/// Tokens carry at least 256 bits of entropy, so a plain hash cannot be
/// brute-forced and a password KDF would only cost latency on every call.
#[derive(Clone, Copy)]
pub struct TokenHash(pub [u8; 64]);

impl TokenHash {
    /// Hashes a token as presented by a client.
    pub fn of(token: &[u8]) -> Self {
        Self(Sha512::digest(token).into())
    }

    /// The raw hash bytes (what the store keeps).
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    /// Rebuilds a hash read back from the store.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }
}

impl PartialEq for TokenHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for TokenHash {}

impl std::hash::Hash for TokenHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // The hash is uniformly distributed already; a prefix is enough for buckets.
        state.write(&self.0[..16]);
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// A freshly generated token string. Not `Debug`, not `Display`: the only way
/// out is [`NewToken::into_string`], used to answer the create call.
pub struct NewToken {
    secret: String,
    hash: TokenHash,
}

impl NewToken {
    /// The hash to store.
    pub fn hash(&self) -> TokenHash {
        self.hash
    }

    /// The token string, to be returned to the client once.
    pub fn into_string(mut self) -> String {
        std::mem::take(&mut self.secret)
    }
}

impl Drop for NewToken {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewToken(..)")
    }
}

/// Generates a token of `kind` from the operating system's CSPRNG.
pub fn generate(kind: TokenKind) -> Result<NewToken, rand::rand_core::OsError> {
    let mut random = [0u8; RANDOM_BYTES];
    rand::rngs::OsRng.try_fill_bytes(&mut random)?;
    let prefix = match kind {
        TokenKind::Database => DATABASE_PREFIX,
        TokenKind::Management => MANAGEMENT_PREFIX,
        TokenKind::Proxy => PROXY_PREFIX,
    };
    let secret = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random));
    let hash = TokenHash::of(secret.as_bytes());
    Ok(NewToken { secret, hash })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn tokens_have_kind_prefix_and_enough_entropy() {
        let db = generate(TokenKind::Database).unwrap().into_string();
        let mgmt = generate(TokenKind::Management).unwrap().into_string();
        assert!(db.starts_with(DATABASE_PREFIX));
        assert!(mgmt.starts_with(MANAGEMENT_PREFIX));
        // 48 bytes base64 without padding = 64 characters.
        assert_eq!(db.len(), DATABASE_PREFIX.len() + 64);
    }

    #[test]
    fn tokens_are_unique_and_hash_matches() {
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let t = generate(TokenKind::Database).unwrap();
            let h = t.hash();
            let s = t.into_string();
            assert_eq!(TokenHash::of(s.as_bytes()), h);
            assert!(seen.insert(s));
        }
    }

    #[test]
    fn debug_never_shows_secret() {
        let t = generate(TokenKind::Database).unwrap();
        assert_eq!(format!("{t:?}"), "NewToken(..)");
        assert_eq!(format!("{:?}", t.hash()), "TokenHash(..)");
    }
}
