//! Reading the bodies that must be understood to authorize a query (POST
//! `/query`, v3 query JSON, Flux JSON): bounded buffering, gzip, and the
//! form, multipart, InfluxQL and JSON encodings. The original bytes are what
//! is forwarded; the decoded form is only looked at.

use std::io::Read as _;

use bytes::Bytes;
use http::{HeaderMap, header};
use http_body::Body;
use http_body_util::{BodyExt as _, Limited};

use super::params::Params;
use crate::proxy::reject::Rejection;

/// A query body, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryBody {
    /// No body (or an empty one).
    None,
    /// `application/x-www-form-urlencoded` or `multipart/form-data` fields.
    Form(Params),
    /// `application/vnd.influxql` or `application/vnd.flux`: the query itself.
    Text(String),
    /// `application/json`.
    Json(serde_json::Value),
}

/// Reads at most `limit` bytes of `body`; more → 413.
pub async fn read_limited<B>(body: B, limit: u64) -> Result<Bytes, Rejection>
where
    B: Body<Data = Bytes>,
    B::Error: Into<crate::proxy::body::BoxError>,
{
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Rejection::TooLarge(limit))
        }
        Err(e) => Err(Rejection::BadRequest(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// The body with its `Content-Encoding` undone (gzip only), bounded by
/// `limit` decoded bytes so a small compressed body cannot expand without end.
pub fn decode(headers: &HeaderMap, raw: &Bytes, limit: u64) -> Result<Bytes, Rejection> {
    let encodings: Vec<&[u8]> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    match encodings.as_slice() {
        [] => Ok(raw.clone()),
        [e] if e.eq_ignore_ascii_case(b"identity") => Ok(raw.clone()),
        [e] if e.eq_ignore_ascii_case(b"gzip") => {
            let mut out = Vec::new();
            let read = flate2::read::GzDecoder::new(&raw[..])
                .take(limit.saturating_add(1))
                .read_to_end(&mut out)
                .map_err(|_| Rejection::BadRequest("request body is not valid gzip".to_owned()))?;
            if read as u64 > limit {
                return Err(Rejection::TooLarge(limit));
            }
            Ok(Bytes::from(out))
        }
        _ => Err(Rejection::UnsupportedMediaType(
            "only gzip content-encoding is supported for query bodies".to_owned(),
        )),
    }
}

fn media_type(headers: &HeaderMap) -> Result<String, Rejection> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let value = values.next();
    if values.next().is_some() {
        return Err(Rejection::BadRequest(
            "more than one Content-Type header".to_owned(),
        ));
    }
    let Some(value) = value else {
        return Ok(String::new());
    };
    let value = value
        .to_str()
        .map_err(|_| Rejection::BadRequest("Content-Type is not ASCII".to_owned()))?;
    Ok(value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase())
}

/// Parses a decoded query body according to its `Content-Type`.
pub async fn parse(headers: &HeaderMap, decoded: Bytes) -> Result<QueryBody, Rejection> {
    if decoded.is_empty() {
        return Ok(QueryBody::None);
    }
    let media = media_type(headers)?;
    match media.as_str() {
        "application/x-www-form-urlencoded" => Ok(QueryBody::Form(Params::parse_form(&decoded)?)),
        "multipart/form-data" => multipart(headers, decoded).await,
        "application/vnd.influxql" | "application/vnd.flux" | "text/plain" => {
            let text = String::from_utf8(decoded.to_vec())
                .map_err(|_| Rejection::BadRequest("query body is not UTF-8".to_owned()))?;
            Ok(QueryBody::Text(text))
        }
        "application/json" | "" => serde_json::from_slice(&decoded)
            .map(QueryBody::Json)
            .map_err(|e| Rejection::BadRequest(format!("request body is not valid JSON: {e}"))),
        other => Err(Rejection::UnsupportedMediaType(format!(
            "unsupported Content-Type {other:?} for a query"
        ))),
    }
}

async fn multipart(headers: &HeaderMap, decoded: Bytes) -> Result<QueryBody, Rejection> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| Rejection::BadRequest("multipart body without a boundary".to_owned()))?;
    let stream =
        futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(decoded) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut pairs = Vec::new();
    loop {
        let field = form
            .next_field()
            .await
            .map_err(|e| Rejection::BadRequest(format!("malformed multipart body: {e}")))?;
        let Some(field) = field else { break };
        let Some(name) = field.name().map(str::to_owned) else {
            return Err(Rejection::BadRequest(
                "multipart field without a name".to_owned(),
            ));
        };
        let text = field
            .text()
            .await
            .map_err(|e| Rejection::BadRequest(format!("malformed multipart body: {e}")))?;
        pairs.push((name, text));
    }
    Ok(QueryBody::Form(Params::from_pairs(pairs)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::io::Write as _;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        h
    }

    #[tokio::test]
    async fn encodings() {
        let form = parse(
            &headers("application/x-www-form-urlencoded"),
            Bytes::from_static(b"q=SHOW+MEASUREMENTS&db=x"),
        )
        .await
        .unwrap();
        let QueryBody::Form(p) = form else { panic!() };
        assert_eq!(p.get("q"), Some("SHOW MEASUREMENTS"));

        let text = parse(
            &headers("application/vnd.influxql"),
            Bytes::from_static(b"SELECT 1"),
        )
        .await
        .unwrap();
        assert_eq!(text, QueryBody::Text("SELECT 1".into()));

        let json = parse(
            &headers("application/json"),
            Bytes::from_static(br#"{"db":"x"}"#),
        )
        .await
        .unwrap();
        assert_eq!(json, QueryBody::Json(serde_json::json!({"db":"x"})));

        let mp = "--XX\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\nSELECT * FROM m\r\n--XX\r\nContent-Disposition: form-data; name=\"db\"\r\n\r\nmydb\r\n--XX--\r\n";
        let QueryBody::Form(p) = parse(
            &headers("multipart/form-data; boundary=XX"),
            Bytes::from(mp),
        )
        .await
        .unwrap() else {
            panic!()
        };
        assert_eq!(p.get("db"), Some("mydb"));
        assert!(
            parse(&headers("image/png"), Bytes::from_static(b"x"))
                .await
                .is_err()
        );
    }

    #[test]
    fn gzip_is_bounded() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&vec![b'a'; 10_000]).unwrap();
        let raw = Bytes::from(enc.finish().unwrap());
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(decode(&h, &raw, 20_000).unwrap().len(), 10_000);
        assert_eq!(decode(&h, &raw, 1_000), Err(Rejection::TooLarge(1_000)));
        assert!(decode(&h, &Bytes::from_static(b"not gzip"), 1_000).is_err());
    }
}
