//! Token strings: generation from the OS CSPRNG, with the kind's prefix.
//! Their SHA-512 hash ([`TokenHash`], the only stored form) lives with the
//! credential parsing, which the proxy shares.
//!
//! A token string never leaves this module except as the return value of
//! [`generate`], which the caller hands to the client exactly once.

use super::model::TokenKind;
pub use crate::credentials::TokenHash;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore as _;

/// Random bytes per token: 384 bits, above the 256 the threat model needs.
const RANDOM_BYTES: usize = 48;

/// Prefix of database tokens, so a leaked one is recognisable (secret scanners).
pub const DATABASE_PREFIX: &str = "fgdb_";
/// Prefix of management tokens.
pub const MANAGEMENT_PREFIX: &str = "fgmt_";
/// Prefix of proxy tokens.
pub const PROXY_PREFIX: &str = "fgpx_";

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
