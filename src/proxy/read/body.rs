//! Reading a body the proxy must understand before it decides: bounded in
//! size (`--max-body`), in time (`--body-read-timeout`) and, across every
//! connection at once, in memory (`--max-buffered-bytes`); then its
//! `Content-Encoding` undone, strictly.
//!
//! The budget is what keeps many clients each sending just under
//! `--max-body` from holding the proxy's memory together: bytes are
//! reserved as they arrive, and a request that cannot reserve is answered
//! 503 (retryable) instead of growing the heap. Reservations are released
//! when the request's buffers are dropped.

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, header};
use http_body::Body;
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::proxy::body::{BoxError, Trailers};
use crate::proxy::reject::Rejection;

/// The bytes every connection together may hold while reading bodies to
/// authorize them.
#[derive(Debug, Clone)]
pub struct Budget {
    bytes: Arc<Semaphore>,
}

/// Bytes held against a [`Budget`]; given back when dropped.
#[derive(Debug, Default)]
pub struct Reservation(Option<OwnedSemaphorePermit>);

impl Budget {
    /// A budget of `bytes` (capped at what a semaphore can count).
    pub fn new(bytes: u64) -> Self {
        let permits = usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(permits)),
        }
    }

    /// Reserves `n` more bytes into `held`, or says the proxy is full.
    pub fn reserve(&self, held: &mut Reservation, n: usize) -> Result<(), Rejection> {
        if n == 0 {
            return Ok(());
        }
        let n = u32::try_from(n).map_err(|_| Rejection::Busy)?;
        let permit = Arc::clone(&self.bytes)
            .try_acquire_many_owned(n)
            .map_err(|_| {
                metrics::counter!("fluxgate_buffer_budget_exhausted_total").increment(1);
                Rejection::Busy
            })?;
        match &mut held.0 {
            Some(existing) => existing.merge(permit),
            None => held.0 = Some(permit),
        }
        Ok(())
    }

    /// Bytes currently free (for tests and metrics).
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

/// How a body the proxy must read is bounded.
#[derive(Debug, Clone)]
pub struct ReadLimits {
    /// Largest body, before and after decoding.
    pub max_body: u64,
    /// Longest time the whole body may take to arrive.
    pub timeout: Duration,
    /// Shared with every other request.
    pub budget: Budget,
}

/// A body read into memory, with the bytes it holds reserved.
#[derive(Debug)]
pub struct Buffered {
    /// The bytes as received.
    pub bytes: Bytes,
    /// The reservation covering them.
    pub reservation: Reservation,
}

/// Reads all of `body` within `limits`. Trailers (HTTP/1.1 chunked or
/// HTTP/2) are dropped ([`Trailers::Drop`]: what is forwarded is rebuilt
/// from the bytes, so they never reach the database) or, when they carry
/// anything, refused ([`Trailers::Refuse`], gRPC).
pub async fn read<B>(
    body: B,
    limits: &ReadLimits,
    trailers: Trailers,
) -> Result<Buffered, Rejection>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut body = body;
    let limit = usize::try_from(limits.max_body).unwrap_or(usize::MAX);
    let mut reservation = Reservation::default();
    let mut buf = BytesMut::new();
    let reading = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                Rejection::BadRequest(format!("cannot read the request body: {}", e.into()))
            })?;
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    let carries = frame.trailers_ref().is_some_and(|t| !t.is_empty());
                    if carries && trailers == Trailers::Refuse {
                        return Err(Rejection::BadRequest(
                            "request trailers carrying metadata are not accepted".to_owned(),
                        ));
                    }
                    continue;
                }
            };
            if buf.len().saturating_add(data.len()) > limit {
                return Err(Rejection::TooLarge(limits.max_body));
            }
            limits.budget.reserve(&mut reservation, data.len())?;
            buf.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(limits.timeout, reading).await {
        Ok(result) => result?,
        Err(_) => return Err(Rejection::BodyTimeout),
    }
    Ok(Buffered {
        bytes: buf.freeze(),
        reservation,
    })
}

/// The request's `Content-Encoding`, of which the proxy reads only `gzip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// None, or `identity`.
    Identity,
    /// `gzip`, one member.
    Gzip,
}

/// Which encodings the database behind an endpoint undoes: the proxy
/// accepts exactly those, as the database spells them, so a body never
/// means one thing compressed to the proxy and another raw to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decodes {
    /// Nothing: InfluxDB 1.x `/query` and the Flux endpoint read the body as
    /// sent, so a compressed body (a non-empty one) is refused.
    Nothing,
    /// `gzip` and `identity`, spelled exactly so (InfluxDB 3's `read_body`).
    Gzip,
}

/// The single `Content-Encoding` of a body the proxy reads, for an endpoint
/// whose database `decodes` what it does. Lists, repeated headers and
/// anything else are refused.
pub fn encoding(headers: &HeaderMap, decodes: Decodes) -> Result<Encoding, Rejection> {
    let mut values = headers.get_all(header::CONTENT_ENCODING).iter();
    let Some(value) = values.next() else {
        return Ok(Encoding::Identity);
    };
    if values.next().is_some() {
        return Err(Rejection::BadRequest(
            "more than one Content-Encoding header".to_owned(),
        ));
    }
    match (value.as_bytes(), decodes) {
        (b"identity", _) => Ok(Encoding::Identity),
        (b"gzip", Decodes::Gzip) => Ok(Encoding::Gzip),
        (_, Decodes::Nothing) => Err(Rejection::UnsupportedMediaType(
            "the database reads this body uncompressed: send it without a Content-Encoding"
                .to_owned(),
        )),
        (_, Decodes::Gzip) => Err(Rejection::UnsupportedMediaType(
            "only one Content-Encoding, \"gzip\" or \"identity\", is supported".to_owned(),
        )),
    }
}

/// `raw` with its encoding undone, at most `limit` bytes, its decoded bytes
/// reserved in `held`. An empty body is empty whatever it declares (the
/// Python `influxdb` client sends `Content-Encoding: gzip` with no body).
/// A gzip body must be exactly one member: a second member, or any byte
/// after the first, is refused — a reader that stops after one member and
/// one that reads them all would see different requests.
pub fn decode(
    raw: &Bytes,
    encoding: Encoding,
    limit: u64,
    budget: &Budget,
    held: &mut Reservation,
) -> Result<Bytes, Rejection> {
    if raw.is_empty() || encoding == Encoding::Identity {
        return Ok(raw.clone());
    }
    let not_gzip = || Rejection::BadRequest("request body is not valid gzip".to_owned());
    let mut decoder = flate2::bufread::GzDecoder::new(&raw[..]);
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        let n = decoder.read(&mut chunk).map_err(|_| not_gzip())?;
        if n == 0 {
            break;
        }
        if (out.len() + n) as u64 > limit {
            return Err(Rejection::TooLarge(limit));
        }
        budget.reserve(held, n)?;
        out.extend_from_slice(&chunk[..n]);
    }
    if !decoder.into_inner().is_empty() {
        return Err(Rejection::BadRequest(
            "gzip body with more than one member or trailing bytes".to_owned(),
        ));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http_body_util::Full;
    use std::io::Write as _;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn limits(max: u64, budget: u64) -> ReadLimits {
        ReadLimits {
            max_body: max,
            timeout: Duration::from_secs(5),
            budget: Budget::new(budget),
        }
    }

    #[tokio::test]
    async fn size_and_budget_bound_the_read() {
        let l = limits(10, 100);
        let b = read(
            Full::new(Bytes::from_static(b"0123456789")),
            &l,
            Trailers::Drop,
        )
        .await
        .unwrap();
        assert_eq!(l.budget.available(), 90);
        drop(b);
        assert_eq!(l.budget.available(), 100);
        assert_eq!(
            read(
                Full::new(Bytes::from_static(b"0123456789x")),
                &l,
                Trailers::Drop
            )
            .await
            .unwrap_err(),
            Rejection::TooLarge(10)
        );
        let small = limits(10, 5);
        assert_eq!(
            read(
                Full::new(Bytes::from_static(b"0123456789")),
                &small,
                Trailers::Drop
            )
            .await
            .unwrap_err(),
            Rejection::Busy
        );
        assert_eq!(small.budget.available(), 5, "nothing kept on refusal");
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let l = ReadLimits {
            timeout: Duration::from_millis(50),
            ..limits(10, 100)
        };
        let body = http_body_util::StreamBody::new(futures_util::stream::pending::<
            Result<http_body::Frame<Bytes>, BoxError>,
        >());
        assert_eq!(
            read(body, &l, Trailers::Drop).await.unwrap_err(),
            Rejection::BodyTimeout
        );
    }

    #[test]
    fn gzip_is_one_member_exactly_and_bounded() {
        let budget = Budget::new(1 << 20);
        let mut held = Reservation::default();
        let one = Bytes::from(gzip(b"q=SELECT+1"));
        assert_eq!(
            decode(&one, Encoding::Gzip, 100, &budget, &mut held).unwrap(),
            &b"q=SELECT+1"[..]
        );
        let mut two = gzip(b"q=a");
        two.extend_from_slice(&gzip(b"&q=b"));
        assert!(decode(&Bytes::from(two), Encoding::Gzip, 100, &budget, &mut held).is_err());
        let mut trailing = gzip(b"q=a");
        trailing.extend_from_slice(b"&q=b");
        assert!(
            decode(
                &Bytes::from(trailing),
                Encoding::Gzip,
                100,
                &budget,
                &mut held
            )
            .is_err()
        );
        let big = Bytes::from(gzip(&[b'a'; 10_000]));
        assert_eq!(
            decode(&big, Encoding::Gzip, 1_000, &budget, &mut held),
            Err(Rejection::TooLarge(1_000))
        );
        assert!(
            decode(
                &Bytes::from_static(b"nope"),
                Encoding::Gzip,
                100,
                &budget,
                &mut held
            )
            .is_err()
        );
        assert_eq!(
            decode(&Bytes::new(), Encoding::Gzip, 100, &budget, &mut held).unwrap(),
            Bytes::new()
        );
    }

    #[test]
    fn encodings() {
        let mut h = HeaderMap::new();
        assert_eq!(encoding(&h, Decodes::Nothing), Ok(Encoding::Identity));
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(encoding(&h, Decodes::Gzip), Ok(Encoding::Gzip));
        assert!(encoding(&h, Decodes::Nothing).is_err());
        for other in ["GZIP", "gzip, identity", "br", " gzip", "x-gzip"] {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(other));
            assert!(encoding(&h, Decodes::Gzip).is_err(), "{other}");
            assert!(encoding(&h, Decodes::Nothing).is_err(), "{other}");
        }
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        assert_eq!(encoding(&h, Decodes::Nothing), Ok(Encoding::Identity));
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        h.append(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(encoding(&h, Decodes::Gzip).is_err());
    }
}
