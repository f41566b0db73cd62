//! The headers a forwarded message carries: hop-by-hop ones removed (RFC
//! 9110 §7.6.1), a replaced body described afresh, `X-Forwarded-*` set.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::pinned::Origin;

/// Headers that describe a body the proxy replaced with its own.
const BODY_HEADERS: &[HeaderName] = &[
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_TYPE,
    header::TRANSFER_ENCODING,
    header::EXPECT,
];

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Describes `body`, the proxy's own, in place of the caller's body headers
/// (no body: no body headers at all).
pub(super) fn replace_body_headers(
    headers: &mut HeaderMap,
    body: &Bytes,
    content_type: Option<&'static str>,
) {
    remove_all(headers, BODY_HEADERS);
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // `Connection` is one of them: without any, it names nothing either.
    if !carries_any(headers, &HOP_BY_HOP) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Removes every header named in `names`.
fn remove_all(headers: &mut HeaderMap, names: &[HeaderName]) {
    if carries_any(headers, names) {
        for name in names {
            headers.remove(name);
        }
    }
}

/// True when `headers` has any of `names`. A request carries a few headers
/// and almost never these: one pass over its names, comparing without
/// hashing, usually finds none, where a removal per name hashes each.
fn carries_any(headers: &HeaderMap, names: &[HeaderName]) -> bool {
    headers.keys().any(|name| names.contains(name))
}

/// Sets `X-Forwarded-For` (the caller's address, after any the caller
/// sent) and `X-Forwarded-Proto`.
pub(super) fn set_forwarded(headers: &mut HeaderMap, origin: &Origin) {
    let existing = headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let forwarded_for = match existing {
        // Most requests: the value made once for the connection.
        None => Some(origin.forwarded_for.clone()),
        Some(existing) => {
            let mut list = String::with_capacity(existing.len() + 2 + origin.forwarded_for.len());
            list.push_str(existing);
            list.push_str(", ");
            list.push_str(origin.forwarded_for.to_str().unwrap_or_default());
            HeaderValue::from_maybe_shared(Bytes::from(list)).ok()
        }
    };
    // An earlier value that cannot be extended is replaced, never passed on.
    headers.remove(&X_FORWARDED_FOR);
    if let Some(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(origin.proto),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_bodies_are_described_afresh() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=x"),
        );
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/x-msgpack"),
        );
        replace_body_headers(
            &mut h,
            &Bytes::from_static(b"q=1"),
            Some("application/x-www-form-urlencoded"),
        );
        assert_eq!(h.len(), 3);
        assert_eq!(h[header::CONTENT_LENGTH], "3");
        assert_eq!(h[header::CONTENT_TYPE], "application/x-www-form-urlencoded");
        assert_eq!(h[header::ACCEPT], "application/x-msgpack");
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_ENCODING));
    }

    #[test]
    fn forwarded_for_lists_the_caller_last() {
        let origin = Origin::new("10.1.2.3:5000".parse().unwrap(), "https");
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, &origin);
        assert_eq!(h[&X_FORWARDED_FOR], "10.1.2.3");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("192.0.2.1"));
        set_forwarded(&mut h, &origin);
        assert_eq!(h[&X_FORWARDED_FOR], "192.0.2.1, 10.1.2.3");
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
    }
}
