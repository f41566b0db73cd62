//! Paged listings on the wire: page sizes (the default, the maximum) and
//! page tokens, which carry a [`ListPosition`] and the kind listed.
//!
//! A page token is opaque to clients: URL-safe base64 (no padding) of
//! `1:<kind>:<nanoseconds since 1970>:<id>`. It is a position, not an
//! offset, so tokens created or revoked between pages neither repeat nor
//! make older ones go missing; and it holds nothing a listing does not
//! show already (an id and a creation time).

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::model::TokenKind;
use super::registry::ListPosition;

/// Tokens in a page when the request asks for 0 (clients that predate
/// paging send 0).
pub const DEFAULT_PAGE_SIZE: usize = 1000;

/// Most tokens in a page; larger requests get this many.
pub const MAX_PAGE_SIZE: usize = 10_000;

/// Most bytes of tokens in one response: well under gRPC's 4 MiB default
/// message limit, whatever the tokens hold (one token with the most
/// permissions and the longest description is about 270 KiB).
pub const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// Longest page token accepted (ids are UUIDs; this leaves room for any
/// id a store may hold while bounding the work on junk).
const MAX_PAGE_TOKEN: usize = 2048;

const VERSION: &str = "1";

/// Why a page token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageTokenError {
    /// Not a token this service made.
    #[error(
        "malformed page_token: pass the next_page_token of the previous response unchanged, or none for the first page"
    )]
    Malformed,
    /// Made by a listing of another kind.
    #[error(
        "page_token belongs to a listing of {0} tokens: page tokens only continue the listing that returned them"
    )]
    OtherKind(&'static str),
}

/// The page size to use for a request's `page_size`.
pub fn page_size(requested: u32) -> usize {
    match usize::try_from(requested) {
        Ok(0) => DEFAULT_PAGE_SIZE,
        Ok(n) => n.min(MAX_PAGE_SIZE),
        Err(_) => MAX_PAGE_SIZE,
    }
}

/// The page token that continues a listing of `kind` after `position`.
pub fn encode(kind: TokenKind, position: &ListPosition) -> String {
    let nanos: i128 = match position.created_at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    };
    let text = format!("{VERSION}:{}:{nanos}:{}", kind.as_str(), position.id);
    URL_SAFE_NO_PAD.encode(text)
}

/// Where a listing of `kind` continues: `None` for an empty token (the
/// first page).
pub fn decode(kind: TokenKind, token: &str) -> Result<Option<ListPosition>, PageTokenError> {
    if token.is_empty() {
        return Ok(None);
    }
    if token.len() > MAX_PAGE_TOKEN {
        return Err(PageTokenError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| PageTokenError::Malformed)?;
    let text = String::from_utf8(bytes).map_err(|_| PageTokenError::Malformed)?;
    let mut parts = text.splitn(4, ':');
    let (Some(VERSION), Some(listed), Some(nanos), Some(id)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PageTokenError::Malformed);
    };
    let listed = TokenKind::parse(listed).ok_or(PageTokenError::Malformed)?;
    if listed != kind {
        return Err(PageTokenError::OtherKind(listed.as_str()));
    }
    let nanos: i128 = nanos.parse().map_err(|_| PageTokenError::Malformed)?;
    let created_at = time(nanos).ok_or(PageTokenError::Malformed)?;
    if id.is_empty() {
        return Err(PageTokenError::Malformed);
    }
    Ok(Some(ListPosition {
        created_at,
        id: id.to_owned(),
    }))
}

/// `nanos` after (or, negative, before) 1970 as a time, if one can hold it.
fn time(nanos: i128) -> Option<SystemTime> {
    const NANOS: u128 = 1_000_000_000;
    let magnitude = nanos.unsigned_abs();
    let secs = u64::try_from(magnitude / NANOS).ok()?;
    // Below NANOS, so it fits.
    let sub = u32::try_from(magnitude % NANOS).ok()?;
    let offset = Duration::new(secs, sub);
    if nanos < 0 {
        SystemTime::UNIX_EPOCH.checked_sub(offset)
    } else {
        SystemTime::UNIX_EPOCH.checked_add(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(created_at: SystemTime, id: &str) -> ListPosition {
        ListPosition {
            created_at,
            id: id.to_owned(),
        }
    }

    #[test]
    fn tokens_round_trip_to_the_nanosecond() {
        let cases = [
            position(
                SystemTime::UNIX_EPOCH + Duration::new(1_798_761_600, 123_456_789),
                "0c8ba4ef-7f5c-4a3e-9a71-1f2a2b3c4d5e",
            ),
            position(SystemTime::UNIX_EPOCH, "id:with:colons"),
            position(SystemTime::UNIX_EPOCH - Duration::new(5, 7), "before"),
        ];
        for p in cases {
            let token = encode(TokenKind::Proxy, &p);
            assert!(!token.contains(['+', '/', '=']), "URL-safe: {token}");
            assert_eq!(decode(TokenKind::Proxy, &token), Ok(Some(p)));
        }
        assert_eq!(decode(TokenKind::Database, ""), Ok(None));
    }

    #[test]
    fn junk_and_other_listings_are_refused() {
        let p = position(SystemTime::UNIX_EPOCH, "a");
        let management = encode(TokenKind::Management, &p);
        assert_eq!(
            decode(TokenKind::Database, &management),
            Err(PageTokenError::OtherKind("management"))
        );
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let junk = [
            "not base64!".to_owned(),
            "x".repeat(MAX_PAGE_TOKEN + 1),
            b64("2:database:0:a"),
            b64("1:database:0:"),
            b64("1:database:zero:a"),
            b64("1:unicorn:0:a"),
            b64("1:database:0"),
            b64(&format!("1:database:{}:a", i128::MAX)),
            URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
        ];
        for token in junk {
            assert_eq!(
                decode(TokenKind::Database, &token),
                Err(PageTokenError::Malformed),
                "{token}"
            );
        }
    }

    #[test]
    fn sizes_default_and_clamp() {
        assert_eq!(page_size(0), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(7), 7);
        assert_eq!(page_size(u32::MAX), MAX_PAGE_SIZE);
    }
}
