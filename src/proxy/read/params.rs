//! Query strings and `application/x-www-form-urlencoded` bodies, read
//! strictly: only what Go's `url.ParseQuery` (InfluxDB 1.x and 2.x) and the
//! proxy are certain to read alike is accepted.
//!
//! Go and the WHATWG parser most Rust code uses disagree at the edges, and
//! every disagreement is a way to make the proxy authorize one value while
//! the database uses another. So:
//! - a `;` anywhere is refused (Go before 1.17 splits on it, later Go drops
//!   the pair, WHATWG keeps it in the value);
//! - a `%` not followed by two hex digits is refused (Go drops the whole
//!   pair, WHATWG keeps the `%`);
//! - a value or key that does not decode to UTF-8 is refused (Go keeps the
//!   bytes, InfluxQL reads one U+FFFD per invalid byte, and a lossy decoder
//!   makes one U+FFFD per invalid sequence);
//! - a parameter that decides what is authorized may appear only once.
//!
//! What is forwarded is never the original string: it is rebuilt from the
//! decoded pairs ([`Params::encode`]).

use std::borrow::Cow;

use crate::proxy::reject::Rejection;

/// Parameters that may appear at most once, and must agree where a URL and
/// a body both give them ([`Params::merge`]): those whose value decides what
/// is authorized or who is asking, and the other `/query` options fluxgate
/// forwards. Go reads a repeated key's first value (a urlencoded body's
/// before the URL's, the URL's before a multipart body's), InfluxDB 3
/// refuses a repeat or reads the last multipart part: the copies are never
/// left to decide.
pub const SINGLE_VALUED: &[&str] = &[
    "db",
    "rp",
    "bucket",
    "q",
    "p",
    "u",
    "org",
    "orgID",
    "bucketID",
    "database",
    "params",
    "epoch",
    "chunked",
    "chunk_size",
    "pretty",
    "async",
    "node_id",
    "time_format",
];

/// Decoded `key=value` pairs of a query string or form body, in order:
/// borrowed from it where there was nothing to decode (most keys, most
/// values), so reading a request's parameters copies only what was escaped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> Params<'a> {
    /// Parses a URL's query string.
    pub fn parse(query: Option<&'a str>) -> Result<Self, Rejection> {
        Self::parse_bytes(query.unwrap_or("").as_bytes(), "the query string")
    }

    /// Parses an `application/x-www-form-urlencoded` body.
    pub fn parse_form(body: &'a [u8]) -> Result<Self, Rejection> {
        Self::parse_bytes(body, "the form body")
    }

    fn parse_bytes(input: &'a [u8], what: &str) -> Result<Self, Rejection> {
        if input.contains(&b';') {
            return Err(Rejection::BadRequest(format!(
                "';' in {what} is ambiguous; percent-encode it as %3B"
            )));
        }
        let mut pairs = Vec::new();
        for pair in input.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let (key, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            pairs.push((unescape(key, what)?, unescape(value, what)?));
        }
        let params = Self(pairs);
        params.check_single()?;
        Ok(params)
    }

    /// Builds from already decoded pairs (multipart forms).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, Rejection> {
        let params = Self(
            pairs
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k), Cow::Owned(v)))
                .collect(),
        );
        params.check_single()?;
        Ok(params)
    }

    fn check_single(&self) -> Result<(), Rejection> {
        for key in SINGLE_VALUED {
            if self.0.iter().filter(|(k, _)| k == key).count() > 1 {
                return Err(Rejection::BadRequest(format!(
                    "parameter {key:?} given more than once"
                )));
            }
        }
        Ok(())
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    /// The value of `key` when present and not empty.
    pub fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    /// True when `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// The keys, in order (for messages about unexpected ones).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| &**k)
    }

    /// Merges a form body's parameters into the URL's. A single-valued key
    /// in both must agree: Go reads the body's first for a urlencoded form
    /// and the URL's first for a multipart one, and the proxy must not care
    /// which.
    pub fn merge(mut self, body: Params<'_>) -> Result<Self, Rejection> {
        for (k, v) in body.0 {
            if let Some(existing) = self.get(&k)
                && SINGLE_VALUED.contains(&&*k)
            {
                if existing != v {
                    return Err(Rejection::BadRequest(format!(
                        "parameter {k:?} differs between the URL and the body"
                    )));
                }
                continue;
            }
            self.0
                .push((Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned())));
        }
        Ok(self)
    }

    /// The canonical encoding of `pairs`: `application/x-www-form-urlencoded`
    /// as every reader decodes it alike (only unreserved bytes left as they
    /// are, space as `+`, everything else `%XX`): the `form_urlencoded`
    /// crate's bytes, written through a table rather than its serializer's
    /// piece by piece appends (a quarter of the time on a query).
    ///
    /// Made in one allocation, with room for the path forwarding puts in
    /// front of it ([`PATH_ROOM`]).
    pub fn encode<'p, I>(pairs: I) -> String
    where
        I: IntoIterator<Item = (&'p str, &'p str)>,
        I::IntoIter: Clone,
    {
        let pairs = pairs.into_iter();
        // At most three bytes for each, and a `=` and a `&` per pair.
        let most: usize = pairs
            .clone()
            .map(|(k, v)| 3 * (k.len() + v.len()) + 2)
            .sum();
        if most == 0 {
            return String::new();
        }
        let mut out = Vec::with_capacity(most + PATH_ROOM);
        for (k, v) in pairs {
            if !out.is_empty() {
                out.push(b'&');
            }
            encode_into(&mut out, k);
            out.push(b'=');
            encode_into(&mut out, v);
        }
        // Every byte written comes from ENCODED, which is all ASCII (checked
        // when compiled), so this never falls back.
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Room left in an encoded query string for the path put in front of it
/// when it is forwarded, so that needs no second allocation.
pub const PATH_ROOM: usize = 64;

/// How form encoding writes each byte, and how many of the three it uses:
/// `A-Z a-z 0-9 * - . _` as they are, space as `+`, every other byte as
/// `%XX` (upper-case hex).
const ENCODED: [([u8; 3], u8); 256] = {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut table = [([0; 3], 0); 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => ([b, 0, 0], 1),
            b' ' => ([b'+', 0, 0], 1),
            _ => (
                [b'%', DIGITS[(b >> 4) as usize], DIGITS[(b & 15) as usize]],
                3,
            ),
        };
        i += 1;
    }
    table
};

const _: () = {
    let mut i = 0;
    while i < 256 * 3 {
        assert!(ENCODED[i / 3].0[i % 3].is_ascii());
        i += 1;
    }
};

/// Appends `text` form-encoded. Each byte's three table bytes are copied
/// whole and the end moved on by as many as it uses: no branch per byte.
fn encode_into(out: &mut Vec<u8>, text: &str) {
    let start = out.len();
    out.resize(start + 3 * text.len(), 0);
    let mut end = start;
    for &b in text.as_bytes() {
        let (bytes, len) = &ENCODED[usize::from(b)];
        // Always in range: three bytes were made room for per input byte.
        if let Some(slot) = out.get_mut(end..end + 3) {
            slot.copy_from_slice(bytes);
        }
        end += usize::from(*len);
    }
    out.truncate(end);
}

/// Decodes `+` and `%XX` strictly, into UTF-8: borrowed when there is
/// nothing to decode.
fn unescape<'a>(input: &'a [u8], what: &str) -> Result<Cow<'a, str>, Rejection> {
    let not_utf8 = || Rejection::BadRequest(format!("{what} is not valid UTF-8 once decoded"));
    if !input.iter().any(|&b| b == b'+' || b == b'%') {
        return std::str::from_utf8(input)
            .map(Cow::Borrowed)
            .map_err(|_| not_utf8());
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        i += 1;
        let byte = match b {
            b'%' => {
                let (Some(&high), Some(&low)) = (input.get(i), input.get(i + 1)) else {
                    return Err(bad_escape(what));
                };
                let (high, low) = (HEX_VALUE[usize::from(high)], HEX_VALUE[usize::from(low)]);
                // Either not a hex digit (0xFF).
                if (high | low) > 0xF {
                    return Err(bad_escape(what));
                }
                i += 2;
                high << 4 | low
            }
            b'+' => b' ',
            other => other,
        };
        out.push(byte);
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| not_utf8())
}

fn bad_escape(what: &str) -> Rejection {
    Rejection::BadRequest(format!("invalid percent-encoding in {what}"))
}

/// Each byte's value as an ASCII hex digit (either case); 0xFF for any
/// other byte (a sign included: `%+1` is not an escape).
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xFF; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => 0xFF,
        };
        i += 1;
    }
    table
};

/// The query string with every pair whose decoded key is in `drop` removed;
/// the other pairs are kept byte for byte. Only for requests the proxy does
/// not decide (public routes): decided requests are rebuilt instead.
pub fn strip_query(query: &str, drop: &[&str]) -> String {
    query
        .split('&')
        .filter(|pair| {
            if pair.is_empty() {
                return false;
            }
            let key = pair.split('=').next().unwrap_or("");
            let decoded: String = form_urlencoded::parse(key.as_bytes())
                .map(|(k, _)| k.into_owned())
                .collect();
            !drop.contains(&decoded.as_str())
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_sensitive_params_are_refused() {
        assert!(Params::parse(Some("db=a&db=b")).is_err());
        assert!(Params::parse(Some("db=a&d%62=b")).is_err());
        assert!(Params::parse(Some("q=1&q=2")).is_err());
        assert!(Params::parse(Some("bucket=a&bucket=a")).is_err());
        assert!(Params::parse(Some("params=a&params=b")).is_err());
        assert!(Params::parse(Some("db=a;db=b")).is_err());
        let p = Params::parse(Some("db=a&precision=s&x=1&x=2")).unwrap();
        assert_eq!(p.get("db"), Some("a"));
    }

    #[test]
    fn decoding_is_strict() {
        let p = Params::parse(Some("q=SELECT+*+FROM+%22m%22&db=%C3%A9&e=&&k")).unwrap();
        assert_eq!(p.get("q"), Some("SELECT * FROM \"m\""));
        assert_eq!(p.get("db"), Some("é"));
        assert_eq!(p.get("e"), Some(""));
        assert_eq!(p.get("k"), Some(""));
        assert_eq!(p.get("a=b"), None);
        assert_eq!(Params::parse(Some("q=a=b")).unwrap().get("q"), Some("a=b"));
        for bad in [
            "db=%zz", "db=%", "db=%4", "db=%+1", "db=%FF", "db=%C3", "d%zzb=x", "db=a;b",
        ] {
            assert!(Params::parse(Some(bad)).is_err(), "{bad}");
        }
        assert!(Params::parse_form(b"db=\xff").is_err());
        assert!(Params::parse_form(b"q=x;").is_err());
    }

    #[test]
    fn encoding_round_trips() {
        let pairs = [
            ("q", "SELECT * FROM \"a b\"..m WHERE t = 'x&y=z;%'"),
            ("db", "é ☃+"),
        ];
        let encoded = Params::encode(pairs);
        assert!(!encoded.contains(';'));
        let back = Params::parse_form(encoded.as_bytes()).unwrap();
        assert_eq!(back.get("q"), Some(pairs[0].1));
        assert_eq!(back.get("db"), Some(pairs[1].1));
    }

    proptest::proptest! {
        #[test]
        fn encoding_matches_form_urlencoded(pairs in proptest::collection::vec((".*", ".*"), 0..4)) {
            let mut expected = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &pairs {
                expected.append_pair(k, v);
            }
            let got = Params::encode(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            proptest::prop_assert_eq!(got, expected.finish());
        }

        /// Whatever strict decoding accepts, the lenient WHATWG decoder
        /// reads alike; and it refuses every `%` not followed by two hex
        /// digits.
        #[test]
        fn decoding_agrees_with_form_urlencoded(raw in "[a-z+%0-9A-Fg=&\\x{e9}\\-]{0,24}") {
            let bytes = raw.as_bytes();
            let bad_escape = bytes.iter().enumerate().any(|(i, &b)| {
                b == b'%'
                    && !bytes
                        .get(i + 1..i + 3)
                        .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
            });
            // When refused (a bad escape, bytes that are not UTF-8 once
            // decoded, a repeated single-valued key) there is nothing to
            // compare.
            if let Ok(ours) = Params::parse(Some(&raw)) {
                proptest::prop_assert!(!bad_escape);
                let reference: Vec<_> = form_urlencoded::parse(bytes)
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                let ours: Vec<_> = ours.0.into_iter().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
                proptest::prop_assert_eq!(ours, reference);
            }
            if bad_escape {
                proptest::prop_assert!(Params::parse(Some(&raw)).is_err());
            }
        }
    }

    #[test]
    fn merge_requires_agreement() {
        let url = Params::parse(Some("db=a")).unwrap();
        assert!(
            url.clone()
                .merge(Params::parse_form(b"db=b&q=x").unwrap())
                .is_err()
        );
        let merged = url.merge(Params::parse_form(b"db=a&q=x").unwrap()).unwrap();
        assert_eq!(merged.get("q"), Some("x"));
    }

    #[test]
    fn strip_keeps_other_pairs_verbatim() {
        assert_eq!(
            strip_query("db=a%20b&u=me&p=secret&precision=s", &["u", "p"]),
            "db=a%20b&precision=s"
        );
        assert_eq!(strip_query("%70=secret&db=x", &["p"]), "db=x");
        assert_eq!(strip_query("", &["p"]), "");
    }
}
