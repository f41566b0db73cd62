//! Query-string parameters, read the way the database reads them, with the
//! ambiguities that could make the proxy authorize one value while the
//! database uses another refused up front.

use super::super::reject::Rejection;

/// Parameters whose value decides what is authorized or who is asking: each
/// may appear at most once.
pub const SINGLE_VALUED: &[&str] = &[
    "db", "rp", "bucket", "q", "p", "u", "org", "orgID", "bucketID", "database",
];

/// Decoded `key=value` pairs of a query string (or a form body), in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses a query string. A raw `;` is refused: older Go servers
    /// (InfluxDB 1.x) split on it, so the two sides would disagree.
    pub fn parse(query: Option<&str>) -> Result<Self, Rejection> {
        let query = query.unwrap_or("");
        if query.contains(';') {
            return Err(Rejection::BadRequest(
                "';' in the query string is ambiguous; percent-encode it as %3B".to_owned(),
            ));
        }
        let params = Self(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        );
        params.check_single()?;
        Ok(params)
    }

    /// Parses an `application/x-www-form-urlencoded` body.
    pub fn parse_form(body: &[u8]) -> Result<Self, Rejection> {
        let params = Self(form_urlencoded::parse(body).into_owned().collect());
        params.check_single()?;
        Ok(params)
    }

    /// Builds from already decoded pairs (multipart forms).
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, Rejection> {
        let params = Self(pairs);
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
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// True when `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// Merges a form body's parameters into the URL's. A single-valued key
    /// in both must agree (the database would pick one; we must not guess).
    pub fn merge(mut self, body: Params) -> Result<Self, Rejection> {
        for (k, v) in body.0 {
            if let Some(existing) = self.get(&k)
                && SINGLE_VALUED.contains(&k.as_str())
            {
                if existing != v {
                    return Err(Rejection::BadRequest(format!(
                        "parameter {k:?} differs between the URL and the body"
                    )));
                }
                continue;
            }
            self.0.push((k, v));
        }
        Ok(self)
    }
}

/// The query string with every pair whose decoded key is in `drop` removed;
/// the other pairs are kept byte for byte.
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
        assert!(Params::parse(Some("db=a;db=b")).is_err());
        let p = Params::parse(Some("db=a&precision=s&x=1&x=2")).unwrap();
        assert_eq!(p.get("db"), Some("a"));
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
