//! The `--authz` URL as the management commands take it: one or several
//! `http(s)://host[:port]` URLs, checked and normalized, never echoed when
//! they might carry a secret. Its own module so that the stored
//! credentials (keyed by this URL) and the client (which dials it) do not
//! import each other.

use std::fmt;

use super::error::CliError;

/// A validated `--authz`: one or several `http(s)://host[:port]` URLs,
/// comma-separated (replicas of one token service, tried in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzUrl {
    urls: Vec<String>,
    normalized: String,
}

impl AuthzUrl {
    /// Checks a URL list as typed by the user; every failure is a usage error.
    pub fn parse(input: &str) -> Result<Self, CliError> {
        let input = input.trim();
        let urls = if input.contains(',') {
            input
                .split(',')
                .map(|one| {
                    let one = one.trim();
                    if one.is_empty() {
                        Err(CliError::usage(
                            "invalid --authz: an empty URL in the comma-separated list",
                        ))
                    } else {
                        parse_one(one)
                    }
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            vec![parse_one(input)?]
        };
        Ok(Self {
            normalized: urls.join(","),
            urls,
        })
    }

    /// `scheme://host:port`, lower-cased, comma-separated when several:
    /// shown in messages and used as the keyring entry's user name, so each
    /// token service has its own entry.
    pub fn as_str(&self) -> &str {
        &self.normalized
    }

    /// Each URL, in the order given.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }
}

/// Checks one URL; returns it normalized.
fn parse_one(input: &str) -> Result<String, CliError> {
    // A URL with userinfo may carry a secret: never echo one.
    let shown = if input.contains('@') {
        "(not shown: it contains '@')".to_owned()
    } else {
        format!("{input:?}")
    };
    let bad = |why: &str| {
        CliError::usage(format!(
            "invalid --authz URL {shown}: {why}; expected http://HOST:PORT or https://HOST:PORT"
        ))
    };
    if input.is_empty() {
        return Err(bad("it is empty"));
    }
    let uri: http::Uri = input
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    let scheme = match uri.scheme_str() {
        None => return Err(bad("it has no scheme")),
        Some(s) => s.to_ascii_lowercase(),
    };
    if scheme != "http" && scheme != "https" {
        return Err(bad(&format!("unsupported scheme {scheme:?}")));
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("it has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(bad(
            "credentials in the URL are not supported (use --token-file or FLUXGATE_TOKEN)",
        ));
    }
    if authority.host().is_empty() {
        return Err(bad("it has no host"));
    }
    // gRPC puts the method in the path, so a base path cannot be honoured.
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("it must not have a path or query"));
    }
    Ok(format!(
        "{scheme}://{}",
        authority.as_str().to_ascii_lowercase()
    ))
}

impl fmt::Display for AuthzUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::error::ErrorKind;

    #[test]
    fn urls_are_checked_and_normalized() {
        let url = AuthzUrl::parse(" HTTP://LocalHost:8090/ ").expect("valid");
        assert_eq!(url.as_str(), "http://localhost:8090");
        assert!(AuthzUrl::parse("https://authz.example:443").is_ok());
        for bad in [
            "",
            "localhost:8090",
            "ftp://x:1",
            "http://",
            "http://h:1/prefix",
            "http://h:1/?a=b",
            "not a url",
        ] {
            let e = AuthzUrl::parse(bad).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::Usage, "{bad}");
        }
    }

    #[test]
    fn several_replicas_are_comma_separated() {
        let url = AuthzUrl::parse("http://A:1, https://b:2").expect("valid");
        assert_eq!(url.urls(), ["http://a:1", "https://b:2"]);
        assert_eq!(url.as_str(), "http://a:1,https://b:2");
        for bad in ["http://a:1,", ",http://a:1", "http://a:1,ftp://b:2"] {
            let e = AuthzUrl::parse(bad).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::Usage, "{bad}");
        }
    }

    #[test]
    fn urls_with_credentials_are_refused_without_echo() {
        let e = AuthzUrl::parse("http://user:s3cret@h:1").expect_err("userinfo");
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert!(!e.to_string().contains("s3cret"));
    }
}
