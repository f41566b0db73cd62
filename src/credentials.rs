//! Parsing of the credential a caller presents: `Authorization: Bearer <t>`,
//! `Token <t>` or `Basic base64(user:token)` (the user is ignored), for HTTP
//! headers and gRPC metadata alike.
//!
//! [`Token`] is the only type that holds a caller's secret. It has no
//! `Display`, its `Debug` is redacted, errors about it never echo it, and
//! its bytes are zeroed when it is dropped (as are the decoded bytes of
//! Basic credentials), so they do not linger in freed memory. Its SHA-512
//! [`TokenHash`] is the only form anything keeps.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::{Zeroize as _, Zeroizing};

use constant_time_eq::constant_time_eq;
use sha2::{Digest, Sha512};

/// A token presented by a caller. Two are equal when their bytes are,
/// compared in constant time (in the contents; the length is not secret).
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

impl Eq for Token {}

impl Token {
    /// Wraps raw token bytes; `None` when empty.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<Self> {
        let bytes = bytes.into();
        (!bytes.is_empty()).then_some(Self(bytes))
    }

    /// The bytes, to send to the authorizer or to hash. Never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The SHA-512 hash: the only form that may be kept.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why a credential could not be read. Messages never contain the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// A scheme other than Bearer, Token or Basic.
    #[error("unsupported authorization scheme (use Token, Bearer or Basic)")]
    UnknownScheme,
    /// `Scheme` with no space and value.
    #[error("malformed authorization header: expected '<scheme> <token>'")]
    Malformed,
    /// The scheme is followed by nothing.
    #[error("empty token in authorization header")]
    Empty,
    /// Basic credentials that are not base64 of `user:password`.
    #[error("malformed basic credentials: expected base64 of 'user:token'")]
    BadBasic,
}

/// Reads a token from an `Authorization` value.
pub fn from_authorization(value: &[u8]) -> Result<Token, CredentialError> {
    let Some(space) = value.iter().position(|b| *b == b' ') else {
        return Err(if scheme_known(value) {
            CredentialError::Malformed
        } else {
            CredentialError::UnknownScheme
        });
    };
    let (scheme, rest) = (&value[..space], &value[space + 1..]);
    let rest = rest.trim_ascii();
    if !scheme_known(scheme) {
        return Err(CredentialError::UnknownScheme);
    }
    if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = Zeroizing::new(
            STANDARD
                .decode(rest)
                .map_err(|_| CredentialError::BadBasic)?,
        );
        let colon = decoded
            .iter()
            .position(|b| *b == b':')
            .ok_or(CredentialError::BadBasic)?;
        return Token::new(decoded[colon + 1..].to_vec()).ok_or(CredentialError::Empty);
    }
    if rest.iter().any(|b| b.is_ascii_whitespace()) {
        return Err(CredentialError::Malformed);
    }
    Token::new(rest.to_vec()).ok_or(CredentialError::Empty)
}

fn scheme_known(scheme: &[u8]) -> bool {
    [b"bearer".as_slice(), b"token", b"basic"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s))
}

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
        constant_time_eq(&self.0, &other.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(s: &str) -> Token {
        Token::new(s.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn schemes() {
        assert_eq!(from_authorization(b"Bearer abc"), Ok(tok("abc")));
        assert_eq!(from_authorization(b"Token abc"), Ok(tok("abc")));
        assert_eq!(from_authorization(b"token abc"), Ok(tok("abc")));
        let basic = format!("Basic {}", STANDARD.encode("user:s3cret:x"));
        assert_eq!(from_authorization(basic.as_bytes()), Ok(tok("s3cret:x")));
    }

    #[test]
    fn malformed() {
        assert_eq!(
            from_authorization(b"Bearer"),
            Err(CredentialError::Malformed)
        );
        assert_eq!(from_authorization(b"Bearer "), Err(CredentialError::Empty));
        assert_eq!(
            from_authorization(b"Digest abc"),
            Err(CredentialError::UnknownScheme)
        );
        assert_eq!(
            from_authorization(b"abc"),
            Err(CredentialError::UnknownScheme)
        );
        assert_eq!(
            from_authorization(b"Token a b"),
            Err(CredentialError::Malformed)
        );
        assert_eq!(
            from_authorization(b"Basic !!!"),
            Err(CredentialError::BadBasic)
        );
        let no_colon = format!("Basic {}", STANDARD.encode("user"));
        assert_eq!(
            from_authorization(no_colon.as_bytes()),
            Err(CredentialError::BadBasic)
        );
        let empty_pw = format!("Basic {}", STANDARD.encode("user:"));
        assert_eq!(
            from_authorization(empty_pw.as_bytes()),
            Err(CredentialError::Empty)
        );
    }

    #[test]
    fn tokens_and_hashes_are_equal_exactly_when_their_bytes_are() {
        assert_eq!(tok("abc"), tok("abc"));
        assert_ne!(tok("abc"), tok("abd"));
        assert_ne!(tok("abc"), tok("abcd"));
        assert_ne!(tok("abc"), tok("ABC"));
        assert_eq!(tok("abc").hash(), tok("abc").hash());
        assert_ne!(tok("abc").hash(), tok("abd").hash());
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", tok("secret")), "Token(<redacted>)");
    }
}
