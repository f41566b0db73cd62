//! Listings of databases through the proxy — v1 `SHOW DATABASES`, InfluxDB
//! 3's `GET /api/v3/configure/database`, InfluxDB 2's `GET /api/v2/buckets`
//! — answered by the database, then filtered to the databases the token may
//! read or administer (READ_SCHEMA), so a token never learns of others.
//! An answer that cannot be read is not passed on (502).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::Value;

use super::body::ProxyBody;
use super::reject::Rejection;

/// Largest listing the proxy reads.
const MAX_ANSWER: usize = 16 << 20;

/// Which listing an answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `SHOW DATABASES`: one JSON document (or several when chunked) of
    /// `results[].series[].values[][0]`.
    InfluxQl,
    /// InfluxDB 3, `format=json`: an array of objects with `iox::database`.
    V3Json,
    /// InfluxDB 3, `format=jsonl`: one such object per line.
    V3Jsonl,
    /// InfluxDB 2: `{"buckets": [{"name": …}, …], …}`.
    V2Buckets,
}

/// The column InfluxDB 3 names databases with.
const V3_NAME: &str = "iox::database";

/// Prepares a request so the answer comes back as plain (uncompressed)
/// JSON.
pub fn prepare(headers: &mut http::HeaderMap) {
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    headers.remove(header::ACCEPT_ENCODING);
}

/// A parsed answer.
#[derive(Debug)]
pub struct Answer {
    shape: Shape,
    documents: Vec<Value>,
}

fn unreadable(why: impl std::fmt::Display) -> Rejection {
    tracing::warn!(error = %why, "a database listing from the upstream cannot be read");
    Rejection::UpstreamUnavailable
}

/// Reads the upstream's answer.
pub async fn read(
    shape: Shape,
    response: Response<ProxyBody>,
) -> Result<(http::response::Parts, Answer), Rejection> {
    use http_body_util::{BodyExt as _, Limited};
    let (parts, body) = response.into_parts();
    let bytes = match Limited::new(body, MAX_ANSWER).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return Err(unreadable(e)),
    };
    let documents: Vec<Value> = match shape {
        Shape::InfluxQl | Shape::V3Jsonl => serde_json::Deserializer::from_slice(&bytes)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .map_err(unreadable)?,
        Shape::V3Json | Shape::V2Buckets => {
            vec![serde_json::from_slice(&bytes).map_err(unreadable)?]
        }
    };
    Ok((parts, Answer { shape, documents }))
}

impl Answer {
    /// The entries of the listing (the values holding a name).
    fn entries(&mut self) -> Vec<&mut Vec<Value>> {
        match self.shape {
            Shape::InfluxQl => self
                .documents
                .iter_mut()
                .filter_map(|d| d.get_mut("results").and_then(Value::as_array_mut))
                .flatten()
                .filter_map(|r| r.get_mut("series").and_then(Value::as_array_mut))
                .flatten()
                .filter_map(|s| s.get_mut("values").and_then(Value::as_array_mut))
                .collect(),
            Shape::V3Json => self
                .documents
                .iter_mut()
                .filter_map(Value::as_array_mut)
                .collect(),
            Shape::V2Buckets => self
                .documents
                .iter_mut()
                .filter_map(|d| d.get_mut("buckets").and_then(Value::as_array_mut))
                .collect(),
            Shape::V3Jsonl => Vec::new(),
        }
    }

    fn name_of(shape: Shape, entry: &Value) -> Option<&str> {
        match shape {
            Shape::InfluxQl => entry.get(0),
            Shape::V3Json | Shape::V3Jsonl => entry.get(V3_NAME),
            Shape::V2Buckets => entry.get("name"),
        }
        .and_then(Value::as_str)
    }

    /// Every name listed.
    pub fn names(&mut self) -> Vec<String> {
        let shape = self.shape;
        if shape == Shape::V3Jsonl {
            return self
                .documents
                .iter()
                .filter_map(|d| Self::name_of(shape, d).map(str::to_owned))
                .collect();
        }
        self.entries()
            .into_iter()
            .flat_map(|entries| entries.iter())
            .filter_map(|e| Self::name_of(shape, e).map(str::to_owned))
            .collect()
    }

    /// Keeps only the entries whose name `keep` accepts (an entry without a
    /// readable name goes too).
    pub fn filter(&mut self, keep: impl Fn(&str) -> bool) {
        let shape = self.shape;
        let kept = |e: &Value| Self::name_of(shape, e).is_some_and(&keep);
        if shape == Shape::V3Jsonl {
            self.documents.retain(kept);
            return;
        }
        for entries in self.entries() {
            entries.retain(kept);
        }
    }

    /// The response rebuilt from the filtered answer.
    pub fn respond(self, mut parts: http::response::Parts) -> Response<ProxyBody> {
        let body: String = match self.shape {
            Shape::InfluxQl | Shape::V3Jsonl => {
                self.documents.iter().map(|a| format!("{a}\n")).collect()
            }
            Shape::V3Json | Shape::V2Buckets => self
                .documents
                .first()
                .map(ToString::to_string)
                .unwrap_or_default(),
        };
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::CONTENT_ENCODING);
        parts.headers.remove(header::TRANSFER_ENCODING);
        let content_type = if self.shape == Shape::V3Jsonl {
            "application/jsonl"
        } else {
            "application/json"
        };
        parts
            .headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        Response::from_parts(parts, ProxyBody::full(Bytes::from(body)))
    }
}

/// Whether the upstream answered successfully (else the answer passes as is).
pub fn is_success(status: StatusCode) -> bool {
    status == StatusCode::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(shape: Shape, text: &str) -> Answer {
        let documents = match shape {
            Shape::InfluxQl | Shape::V3Jsonl => serde_json::Deserializer::from_str(text)
                .into_iter::<Value>()
                .collect::<Result<_, _>>()
                .unwrap(),
            _ => vec![serde_json::from_str(text).unwrap()],
        };
        Answer { shape, documents }
    }

    #[test]
    fn every_shape_is_filtered_by_name() {
        let cases = [
            (
                Shape::InfluxQl,
                r#"{"results":[{"statement_id":0,"series":[{"name":"databases","columns":["name"],"values":[["_internal"],["a"],["b"]]}]}]}"#,
            ),
            (
                Shape::V3Json,
                r#"[{"iox::database":"_internal"},{"iox::database":"a"},{"iox::database":"b"}]"#,
            ),
            (
                Shape::V3Jsonl,
                "{\"iox::database\":\"_internal\"}\n{\"iox::database\":\"a\"}\n{\"iox::database\":\"b\"}\n",
            ),
            (
                Shape::V2Buckets,
                r#"{"links":{},"buckets":[{"id":"1","name":"_internal"},{"id":"2","name":"a"},{"id":"3","name":"b"}]}"#,
            ),
        ];
        for (shape, text) in cases {
            let mut a = answer(shape, text);
            assert_eq!(a.names(), ["_internal", "a", "b"], "{shape:?}");
            a.filter(|n| n == "b");
            assert_eq!(a.names(), ["b"], "{shape:?}");
        }
    }
}
