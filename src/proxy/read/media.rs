//! Media types (`Content-Type`, `Content-Disposition`): `type/subtype` or a
//! disposition type, then `; name=value` parameters, read strictly.
//!
//! Go's `mime.ParseMediaType` (what InfluxDB reads these headers with)
//! accepts RFC 2231 extended parameters (`name*=UTF-8''…`, continuations
//! `name*0=`) and prefers them to the plain ones, lower-cases names, and
//! returns the media type even when a parameter is malformed. Each of those
//! is a chance for two readers to disagree, so here a parameter name with a
//! `*`, a repeated name, a malformed list and anything but a token or a
//! quoted string as a value are refused.

use crate::proxy::reject::Rejection;

/// A parsed media type or disposition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// The type, lower-cased (`multipart/form-data`, `form-data`).
    pub essence: String,
    /// Parameters, names lower-cased, in order, each name once.
    pub params: Vec<(String, String)>,
}

impl MediaType {
    /// The value of parameter `name` (lower-case).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn bad(header: &str, why: &str) -> Rejection {
    Rejection::BadRequest(format!("malformed {header} header: {why}"))
}

/// Parses `value` as it appears in header `header` (named in errors).
pub fn parse(value: &str, header: &str) -> Result<MediaType, Rejection> {
    let mut rest = value.trim_matches([' ', '\t']);
    let end = rest.find(';').unwrap_or(rest.len());
    let essence = rest[..end].trim_matches([' ', '\t']).to_ascii_lowercase();
    let valid_essence = !essence.is_empty()
        && essence.split('/').count() <= 2
        && essence
            .split('/')
            .all(|part| !part.is_empty() && part.chars().all(is_token_char));
    if !valid_essence {
        return Err(bad(header, "invalid type"));
    }
    rest = &rest[end..];
    let mut params: Vec<(String, String)> = Vec::new();
    while let Some(after) = rest.strip_prefix(';') {
        let after = after.trim_start_matches([' ', '\t']);
        if after.is_empty() {
            // A trailing `;` adds nothing (Go accepts it too).
            rest = after;
            break;
        }
        let eq = after
            .find('=')
            .ok_or_else(|| bad(header, "parameter without a value"))?;
        let name = after[..eq].to_ascii_lowercase();
        if name.is_empty() || !name.chars().all(is_token_char) {
            return Err(bad(header, "invalid parameter name"));
        }
        if name.contains('*') {
            return Err(bad(
                header,
                "extended (RFC 2231) parameters are not supported",
            ));
        }
        if params.iter().any(|(n, _)| *n == name) {
            return Err(bad(header, "repeated parameter"));
        }
        let (value, remainder) = value_of(&after[eq + 1..], header)?;
        params.push((name, value));
        rest = remainder.trim_start_matches([' ', '\t']);
    }
    if !rest.is_empty() {
        return Err(bad(header, "unexpected text after the parameters"));
    }
    Ok(MediaType { essence, params })
}

/// A token or a quoted string at the start of `input`, and what follows.
fn value_of<'a>(input: &'a str, header: &str) -> Result<(String, &'a str), Rejection> {
    if let Some(quoted) = input.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((out, &quoted[i + 1..])),
                '\\' => match chars.next() {
                    Some((_, escaped)) if !escaped.is_control() => out.push(escaped),
                    _ => return Err(bad(header, "invalid escape in a quoted string")),
                },
                c if c.is_control() => {
                    return Err(bad(header, "control character in a quoted string"));
                }
                c => out.push(c),
            }
        }
        return Err(bad(header, "unterminated quoted string"));
    }
    let end = input
        .find(|c: char| !is_token_char(c))
        .unwrap_or(input.len());
    if end == 0 {
        return Err(bad(header, "empty parameter value"));
    }
    Ok((input[..end].to_owned(), &input[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_parameters() {
        let m = parse("Multipart/Form-Data; boundary=\"a b\\\"c\"", "Content-Type").unwrap();
        assert_eq!(m.essence, "multipart/form-data");
        assert_eq!(m.param("boundary"), Some("a b\"c"));
        let m = parse(
            "form-data; name=q; filename=\"x.iql\"",
            "Content-Disposition",
        )
        .unwrap();
        assert_eq!(m.essence, "form-data");
        assert_eq!(m.param("name"), Some("q"));
        assert_eq!(m.param("filename"), Some("x.iql"));
        let m = parse("application/json", "Content-Type").unwrap();
        assert!(m.params.is_empty());
    }

    #[test]
    fn ambiguities_are_refused() {
        for bad in [
            "form-data; name=a; name=b",
            "form-data; name*=UTF-8''q",
            "form-data; name*0=q",
            "form-data; name=\"q",
            "form-data; name=",
            "form-data; name",
            "form-data; name=q junk",
            "form-data;; name=q",
            "",
            "a/b/c",
            "form-data; name=\"a\u{1}\"",
        ] {
            assert!(parse(bad, "Content-Disposition").is_err(), "{bad:?}");
        }
    }
}
