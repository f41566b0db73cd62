//! `multipart/form-data` query bodies, read strictly.
//!
//! InfluxDB reads these with Go's `mime/multipart`, which decodes
//! `Content-Transfer-Encoding: quoted-printable`, takes the first of repeated
//! headers, prefers RFC 2231 `name*=` parameters, skips parts whose
//! disposition is not `form-data`, skips a preamble, ignores an epilogue and
//! allows transport padding after a boundary. A general-purpose parser makes
//! other choices, and each difference lets a body mean one query to the
//! proxy and another to the database. So this reader accepts only the plain
//! shape every client library sends and refuses everything else:
//!
//! - the body starts with the first delimiter (no preamble) and ends right
//!   after the closing one (an optional CRLF at most);
//! - lines end with CRLF; a delimiter is followed by CRLF or `--`, nothing
//!   else (no padding), and the boundary appears nowhere but in delimiters;
//! - each part has exactly one `Content-Disposition: form-data` with a
//!   `name` (and optionally a `filename`), at most one `Content-Type`, and
//!   no other header — in particular no `Content-Transfer-Encoding`;
//! - contents are UTF-8.
//!
//! The proxy never forwards the multipart body: it forwards the values it
//! read, re-encoded as a form.

use super::media::{self, MediaType};
use crate::proxy::reject::Rejection;

/// One part of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The field name.
    pub name: String,
    /// A file part (`filename` given and not empty): Go keeps these apart
    /// from the values, and InfluxDB reads only the file `q`.
    pub file: bool,
    /// The content.
    pub content: String,
}

fn bad(why: &str) -> Rejection {
    Rejection::BadRequest(format!("multipart body not accepted: {why}"))
}

/// RFC 2046 boundary characters, without the space (which may not end a
/// boundary, and which Go's padding rule makes ambiguous anyway).
fn is_boundary_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"'()+_,-./:=?".contains(&b)
}

/// Parses `body`, whose `Content-Type` is `content_type`.
pub fn parse(content_type: &MediaType, body: &[u8]) -> Result<Vec<Part>, Rejection> {
    let boundary = content_type
        .param("boundary")
        .ok_or_else(|| bad("no boundary in the Content-Type"))?;
    if boundary.is_empty() || boundary.len() > 70 || !boundary.bytes().all(is_boundary_char) {
        return Err(bad("invalid boundary"));
    }
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut rest = body
        .strip_prefix(delimiter)
        .ok_or_else(|| bad("the body must start with the boundary"))?;
    let mut parts = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix(b"--") {
            if !after.is_empty() && after != b"\r\n" {
                return Err(bad("data after the closing boundary"));
            }
            break;
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or_else(|| bad("a boundary must be followed by CRLF or --"))?;
        let (part, after) = part(rest, delimiter)?;
        parts.push(part);
        rest = after;
    }
    Ok(parts)
}

/// One part starting at `input` (just after its delimiter line), and the
/// input after its closing delimiter.
fn part<'a>(input: &'a [u8], delimiter: &[u8]) -> Result<(Part, &'a [u8]), Rejection> {
    let mut rest = input;
    let mut disposition: Option<MediaType> = None;
    let mut content_type = false;
    loop {
        let end = find(rest, b"\r\n").ok_or_else(|| bad("unterminated part header"))?;
        let line = &rest[..end];
        rest = &rest[end + 2..];
        if line.is_empty() {
            break;
        }
        if line.contains(&b'\n') || line.contains(&b'\r') {
            return Err(bad("bare CR or LF in a part header"));
        }
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            return Err(bad("folded part header"));
        }
        let line = std::str::from_utf8(line).map_err(|_| bad("part header is not UTF-8"))?;
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad("part header without ':'"))?;
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("content-disposition") {
            if disposition.is_some() {
                return Err(bad("repeated Content-Disposition"));
            }
            disposition = Some(media::parse(value, "Content-Disposition")?);
        } else if name.eq_ignore_ascii_case("content-type") {
            if content_type {
                return Err(bad("repeated Content-Type"));
            }
            media::parse(value, "Content-Type")?;
            content_type = true;
        } else if name.eq_ignore_ascii_case("content-transfer-encoding") {
            return Err(bad("Content-Transfer-Encoding is not supported"));
        } else {
            return Err(bad("unexpected part header"));
        }
    }
    let disposition = disposition.ok_or_else(|| bad("part without Content-Disposition"))?;
    if disposition.essence != "form-data" {
        return Err(bad("part disposition other than form-data"));
    }
    if let Some((name, _)) = disposition
        .params
        .iter()
        .find(|(n, _)| n != "name" && n != "filename")
    {
        return Err(bad(&format!("unexpected disposition parameter {name:?}")));
    }
    let name = disposition
        .param("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("part without a name"))?
        .to_owned();
    let file = disposition.param("filename").is_some_and(|f| !f.is_empty());

    let mut closing = b"\r\n".to_vec();
    closing.extend_from_slice(delimiter);
    let end = find(rest, &closing).ok_or_else(|| bad("part without a closing boundary"))?;
    let content = &rest[..end];
    if find(content, delimiter).is_some() {
        return Err(bad("the boundary appears inside a part"));
    }
    let content = std::str::from_utf8(content)
        .map_err(|_| bad("part content is not UTF-8"))?
        .to_owned();
    Ok((
        Part {
            name,
            file,
            content,
        },
        &rest[end + closing.len()..],
    ))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(boundary: &str) -> MediaType {
        media::parse(
            &format!("multipart/form-data; boundary={boundary}"),
            "Content-Type",
        )
        .unwrap()
    }

    fn ok(body: &str) -> Vec<Part> {
        parse(&ct("XX"), body.as_bytes()).unwrap_or_else(|e| panic!("{body:?}: {e}"))
    }

    const GOOD: &str = "--XX\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\nSELECT * FROM m\r\n--XX\r\nContent-Disposition: form-data; name=db\r\n\r\nmydb\r\n--XX--\r\n";

    #[test]
    fn plain_forms_are_read() {
        let parts = ok(GOOD);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "q");
        assert_eq!(parts[0].content, "SELECT * FROM m");
        assert!(!parts[0].file);
        assert_eq!(parts[1].content, "mydb");
        let file = ok(
            "--XX\r\nContent-Disposition: form-data; name=\"q\"; filename=\"q.txt\"\r\nContent-Type: text/plain\r\n\r\nSHOW DATABASES\r\n--XX--",
        );
        assert!(file[0].file);
        // An empty filename is a value to Go, not a file.
        let value =
            ok("--XX\r\nContent-Disposition: form-data; name=q; filename=\"\"\r\n\r\nx\r\n--XX--");
        assert!(!value[0].file);
        // Content may hold CRLF and dashes that are not the boundary.
        let lines =
            ok("--XX\r\nContent-Disposition: form-data; name=q\r\n\r\na\r\n-- b\r\n--X\r\n--XX--");
        assert_eq!(lines[0].content, "a\r\n-- b\r\n--X");
    }

    #[test]
    fn everything_go_reads_differently_is_refused() {
        let cases = [
            // quoted-printable: Go decodes it.
            "--XX\r\nContent-Disposition: form-data; name=q\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nSELECT 1 =3B DROP\r\n--XX--",
            // Repeated disposition: Go takes the first.
            "--XX\r\nContent-Disposition: form-data; name=q\r\nContent-Disposition: form-data; name=x\r\n\r\nv\r\n--XX--",
            // RFC 2231: Go prefers name*.
            "--XX\r\nContent-Disposition: form-data; name=x; name*=UTF-8''q\r\n\r\nv\r\n--XX--",
            // Not form-data: Go skips the part.
            "--XX\r\nContent-Disposition: attachment; name=q\r\n\r\nv\r\n--XX--",
            // Preamble and epilogue.
            "junk\r\n--XX\r\nContent-Disposition: form-data; name=q\r\n\r\nv\r\n--XX--",
            "--XX\r\nContent-Disposition: form-data; name=q\r\n\r\nv\r\n--XX--\r\n--XX\r\n",
            // Padding after a boundary, LF-only lines, folded headers.
            "--XX \r\nContent-Disposition: form-data; name=q\r\n\r\nv\r\n--XX--",
            "--XX\nContent-Disposition: form-data; name=q\n\nv\n--XX--",
            "--XX\r\nContent-Disposition: form-data;\r\n name=q\r\n\r\nv\r\n--XX--",
            // The boundary inside a part, other headers, no name, unterminated.
            "--XX\r\nContent-Disposition: form-data; name=q\r\n\r\nv--XX\r\n--XX--",
            "--XX\r\nContent-Disposition: form-data; name=q\r\nX-Other: 1\r\n\r\nv\r\n--XX--",
            "--XX\r\nContent-Disposition: form-data\r\n\r\nv\r\n--XX--",
            "--XX\r\nContent-Disposition: form-data; name=q\r\n\r\nv",
            "--XX\r\nContent-Disposition: form-data; name=q; size=3\r\n\r\nv\r\n--XX--",
        ];
        for body in cases {
            assert!(parse(&ct("XX"), body.as_bytes()).is_err(), "{body:?}");
        }
        assert!(
            parse(
                &ct("XX"),
                b"--XX\r\nContent-Disposition: form-data; name=q\r\n\r\n\xff\r\n--XX--"
            )
            .is_err()
        );
        let spaced = media::parse("multipart/form-data; boundary=\"a b\"", "Content-Type").unwrap();
        assert!(parse(&spaced, b"--a b\r\n").is_err());
    }
}
