//! Where a request's token comes from (BRIEF §5): the `Authorization`
//! header, or for the v1 API the `p` parameter (with `u` ignored), and the
//! rules that make an ambiguous credential a 400 rather than a guess.

use http::{HeaderMap, header};

use super::read::params::Params;
use super::reject::Rejection;
use crate::credentials::{self, Token};

/// Reads the caller's token. `allow_param` enables the v1 `p` parameter.
pub fn extract(
    headers: &HeaderMap,
    params: &Params<'_>,
    allow_param: bool,
) -> Result<Token, Rejection> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let header_value = values.next();
    if values.next().is_some() {
        return Err(Rejection::MalformedCredentials(
            "more than one Authorization header".to_owned(),
        ));
    }
    let from_header = header_value
        .map(|v| credentials::from_authorization(v.as_bytes()))
        .transpose()
        .map_err(|e| Rejection::MalformedCredentials(e.to_string()))?;
    let from_param = match params.get("p") {
        Some(_) if !allow_param => None,
        Some("") => {
            return Err(Rejection::MalformedCredentials(
                "empty token in parameter \"p\"".to_owned(),
            ));
        }
        Some(p) => Token::new(p.as_bytes().to_vec()),
        None => None,
    };
    match (from_header, from_param) {
        (Some(h), Some(p)) => {
            // Token equality is constant time.
            if h == p {
                Ok(h)
            } else {
                Err(Rejection::MalformedCredentials(
                    "the Authorization header and parameter \"p\" carry different tokens"
                        .to_owned(),
                ))
            }
        }
        (Some(t), None) | (None, Some(t)) => Ok(t),
        (None, None) => Err(Rejection::NoToken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(values: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    fn p(q: &str) -> Params<'_> {
        Params::parse(Some(q)).unwrap()
    }

    #[test]
    fn sources_and_conflicts() {
        assert_eq!(
            extract(&h(&["Token abc"]), &p(""), true).unwrap().expose(),
            b"abc"
        );
        assert_eq!(
            extract(&h(&[]), &p("u=x&p=abc"), true).unwrap().expose(),
            b"abc"
        );
        assert_eq!(
            extract(&h(&["Token abc"]), &p("p=abc"), true)
                .unwrap()
                .expose(),
            b"abc"
        );
        assert!(matches!(
            extract(&h(&["Token abc"]), &p("p=xyz"), true),
            Err(Rejection::MalformedCredentials(_))
        ));
        assert!(matches!(
            extract(&h(&["Token a", "Token a"]), &p(""), true),
            Err(Rejection::MalformedCredentials(_))
        ));
        assert_eq!(extract(&h(&[]), &p(""), true), Err(Rejection::NoToken));
        assert_eq!(
            extract(&h(&[]), &p("p=abc"), false),
            Err(Rejection::NoToken)
        );
        assert!(matches!(
            extract(&h(&["Digest x"]), &p(""), true),
            Err(Rejection::MalformedCredentials(_))
        ));
        assert!(matches!(
            extract(&h(&[]), &p("p="), true),
            Err(Rejection::MalformedCredentials(_))
        ));
    }
}
