//! `SHOW DATABASES` through the proxy: the database's answer, filtered to
//! the databases the token may read, so a token never learns of others.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::Value;

use super::body::ProxyBody;
use super::reject::Rejection;
use crate::authz::Need;

/// Largest `SHOW DATABASES` answer the proxy reads.
const MAX_ANSWER: usize = 16 << 20;

/// Prepares the request so the answer comes back as plain JSON.
pub fn prepare(headers: &mut http::HeaderMap) {
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    headers.remove(header::ACCEPT_ENCODING);
}

/// Every database name in a v1 answer (one JSON object, or several when chunked).
pub fn names(answers: &[Value]) -> Vec<String> {
    let mut names = Vec::new();
    for answer in answers {
        for series in series_of(answer) {
            if let Some(values) = series.get("values").and_then(Value::as_array) {
                for row in values {
                    if let Some(name) = row.get(0).and_then(Value::as_str) {
                        names.push(name.to_owned());
                    }
                }
            }
        }
    }
    names
}

fn series_of(answer: &Value) -> impl Iterator<Item = &Value> {
    answer
        .get("results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("series").and_then(Value::as_array))
        .flatten()
}

/// Keeps only the rows whose database `keep` accepts.
pub fn filter(answers: &mut [Value], keep: impl Fn(&str) -> bool) {
    for answer in answers.iter_mut() {
        let Some(results) = answer.get_mut("results").and_then(Value::as_array_mut) else {
            continue;
        };
        for result in results {
            let Some(series) = result.get_mut("series").and_then(Value::as_array_mut) else {
                continue;
            };
            for s in series {
                if let Some(values) = s.get_mut("values").and_then(Value::as_array_mut) {
                    values.retain(|row| row.get(0).and_then(Value::as_str).is_some_and(&keep));
                }
            }
        }
    }
}

/// Parses the upstream's answer (one or more JSON documents).
pub async fn read_answer(
    response: Response<ProxyBody>,
) -> Result<(http::response::Parts, Vec<Value>), Rejection> {
    use http_body_util::{BodyExt as _, Limited};
    let (parts, body) = response.into_parts();
    let bytes = match Limited::new(body, MAX_ANSWER).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            tracing::warn!("SHOW DATABASES answer from the database is too large or unreadable");
            return Err(Rejection::UpstreamUnavailable);
        }
    };
    let answers: Result<Vec<Value>, _> = serde_json::Deserializer::from_slice(&bytes)
        .into_iter::<Value>()
        .collect();
    let answers = answers.map_err(|e| {
        tracing::warn!(error = %e, "SHOW DATABASES answer from the database is not JSON");
        Rejection::UpstreamUnavailable
    })?;
    Ok((parts, answers))
}

/// Rebuilds the response from the filtered answers.
pub fn respond(mut parts: http::response::Parts, answers: &[Value]) -> Response<ProxyBody> {
    let body: String = answers.iter().map(|a| format!("{a}\n")).collect();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, ProxyBody::full(Bytes::from(body)))
}

/// The needs to check for `names`: read on each.
pub fn needs(names: &[String]) -> Vec<Need> {
    names.iter().map(|n| Need::read(n.clone())).collect()
}

/// Whether the upstream answered successfully (else the answer passes as is).
pub fn is_success(status: StatusCode) -> bool {
    status == StatusCode::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_rows() {
        let mut answers = vec![
            serde_json::json!({"results":[{"statement_id":0,"series":[{"name":"databases","columns":["name"],"values":[["_internal"],["a"],["b"]]}]}]}),
        ];
        assert_eq!(names(&answers), vec!["_internal", "a", "b"]);
        filter(&mut answers, |n| n == "b");
        assert_eq!(names(&answers), vec!["b"]);
    }
}
