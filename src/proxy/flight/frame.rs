//! gRPC message framing on the request side: reading the first
//! length-prefixed message of a streaming request body (bounded, so a huge
//! or never-ending prefix cannot make the proxy buffer without limit), and
//! re-emitting exactly the bytes read, followed by the rest of the body
//! untouched, so the upstream receives the caller's request byte for byte.
//!
//! A gRPC message is `compressed-flag (1 byte) | length (4 bytes, big
//! endian) | message`. Only the first message is ever buffered; everything
//! after it streams through with HTTP/2 flow control intact.

use std::io::Read as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;

use crate::proxy::body::{BoxError, ProxyBody};
use crate::proxy::reject::Rejection;

/// Length of the message prefix.
const PREFIX: usize = 5;

/// Most bytes reserved up front while reading a message: the declared length
/// is the caller's claim, so memory grows with what actually arrives.
const INITIAL_CAPACITY: usize = 16 << 10;

/// How a compressed message is encoded (`grpc-encoding`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoding {
    /// No `grpc-encoding`, or `identity`.
    Identity,
    /// `gzip`.
    Gzip,
    /// `deflate` (zlib format, as gRPC defines it).
    Deflate,
    /// Anything else: the proxy cannot read such a message.
    Other(String),
}

impl Encoding {
    /// The request's message encoding.
    pub fn of(headers: &HeaderMap) -> Self {
        match headers.get("grpc-encoding").map(|v| v.as_bytes()) {
            None => Encoding::Identity,
            Some(v) if v.eq_ignore_ascii_case(b"identity") => Encoding::Identity,
            Some(v) if v.eq_ignore_ascii_case(b"gzip") => Encoding::Gzip,
            Some(v) if v.eq_ignore_ascii_case(b"deflate") => Encoding::Deflate,
            Some(v) => Encoding::Other(String::from_utf8_lossy(v).into_owned()),
        }
    }
}

/// The first message of a request body.
#[derive(Debug)]
pub struct FirstMessage {
    /// Every byte read from the body so far, unchanged: the frame itself
    /// and any bytes of later messages that arrived in the same chunk.
    pub raw: Bytes,
    /// Bytes in `raw` after the first frame.
    pub excess: usize,
    /// The message, decompressed if it was compressed.
    pub message: Bytes,
}

/// Reads the first message of `body` (at most `limit` bytes, compressed or
/// decompressed). Bad framing, an unreadable compression and a body that
/// ends early are `BadRequest`; a message over the limit is `TooLarge`.
pub async fn read_first(
    body: &mut ProxyBody,
    limit: u64,
    encoding: &Encoding,
) -> Result<FirstMessage, Rejection> {
    let mut buf = BytesMut::new();
    let mut declared: Option<(bool, usize)> = None;
    loop {
        if declared.is_none() && buf.len() >= PREFIX {
            let (compressed, length) = parse_prefix(&buf)?;
            if u64::try_from(length).map_or(true, |l| l > limit) {
                return Err(Rejection::TooLarge(limit));
            }
            buf.reserve(length.min(INITIAL_CAPACITY));
            declared = Some((compressed, length));
        }
        if let Some((compressed, length)) = declared {
            let end = PREFIX + length;
            if buf.len() >= end {
                let raw = buf.freeze();
                let payload = raw.slice(PREFIX..end);
                let message = if compressed {
                    decompress(&payload, encoding, limit)?
                } else {
                    payload
                };
                return Ok(FirstMessage {
                    excess: raw.len() - end,
                    raw,
                    message,
                });
            }
        }
        match body.frame().await {
            None => {
                return Err(Rejection::BadRequest(if buf.is_empty() {
                    "the request carries no gRPC message".to_owned()
                } else {
                    "the request body ends inside a gRPC message".to_owned()
                }));
            }
            Some(Err(e)) => {
                return Err(Rejection::BadRequest(format!(
                    "cannot read the request body: {e}"
                )));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => buf.extend_from_slice(&data),
                Err(_) => {
                    return Err(Rejection::BadRequest(
                        "request trailers arrived before the first gRPC message was complete"
                            .to_owned(),
                    ));
                }
            },
        }
    }
}

/// The compressed flag and the declared length of the message at the start
/// of `buf` (which holds at least [`PREFIX`] bytes).
fn parse_prefix(buf: &[u8]) -> Result<(bool, usize), Rejection> {
    let Some(&[flag, a, b, c, d]) = buf.get(..PREFIX) else {
        return Err(Rejection::BadRequest(
            "short gRPC message prefix".to_owned(),
        ));
    };
    let compressed = match flag {
        0 => false,
        1 => true,
        other => {
            return Err(Rejection::BadRequest(format!(
                "invalid gRPC compressed-flag byte {other}"
            )));
        }
    };
    let length = usize::try_from(u32::from_be_bytes([a, b, c, d]))
        .map_err(|_| Rejection::BadRequest("gRPC message length out of range".to_owned()))?;
    Ok((compressed, length))
}

/// Undoes the message compression, reading at most `limit` bytes, so a small
/// compressed message cannot expand without end.
fn decompress(payload: &[u8], encoding: &Encoding, limit: u64) -> Result<Bytes, Rejection> {
    let reader: Box<dyn std::io::Read + '_> = match encoding {
        Encoding::Identity => {
            return Err(Rejection::BadRequest(
                "compressed gRPC message without a grpc-encoding".to_owned(),
            ));
        }
        Encoding::Gzip => Box::new(flate2::read::GzDecoder::new(payload)),
        Encoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(payload)),
        Encoding::Other(name) => {
            return Err(Rejection::BadRequest(format!(
                "grpc-encoding {name:?} is not supported by the proxy (use gzip, deflate or none)"
            )));
        }
    };
    let mut out = Vec::new();
    let read = reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|_| Rejection::BadRequest("compressed gRPC message is corrupt".to_owned()))?;
    if u64::try_from(read).map_or(true, |r| r > limit) {
        return Err(Rejection::TooLarge(limit));
    }
    Ok(Bytes::from(out))
}

/// A request body that yields `prefix` (the bytes already read) and then the
/// rest of the original body, data and trailers, unchanged.
///
/// With `single_message` set (methods whose request is one message, like
/// DoGet) any further data is an error, which resets the upstream stream:
/// the upstream must never see a message the proxy did not authorize.
#[derive(Debug)]
pub struct Replay {
    prefix: Option<Bytes>,
    rest: ProxyBody,
    single_message: bool,
}

impl Replay {
    /// `prefix` followed by `rest`.
    pub fn new(prefix: Bytes, rest: ProxyBody, single_message: bool) -> Self {
        Self {
            prefix: (!prefix.is_empty()).then_some(prefix),
            rest,
            single_message,
        }
    }
}

impl Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        let single_message = self.single_message;
        match Pin::new(&mut self.rest).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame)))
                if single_message && frame.data_ref().is_some_and(|d| !d.is_empty()) =>
            {
                Poll::Ready(Some(Err(
                    "more than one message on a single-message gRPC call".into(),
                )))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.size_hint();
        let Some(prefix) = &self.prefix else {
            return rest;
        };
        // Built afresh: `set_lower` on an exact hint would exceed its upper
        // bound (and `SizeHint` asserts), so lower goes first on an open one.
        let len = u64::try_from(prefix.len()).unwrap_or(u64::MAX);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(len));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(len));
        }
        hint
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// A body delivering `chunks` one frame at a time.
    fn chunked(chunks: Vec<Vec<u8>>) -> ProxyBody {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from(c))));
        ProxyBody::new(StreamBody::new(futures_util::stream::iter(frames)))
    }

    #[tokio::test]
    async fn reads_across_chunks_and_replays_byte_for_byte() {
        let wire = frame(0, b"hello ticket");
        let chunks: Vec<Vec<u8>> = wire.chunks(3).map(<[u8]>::to_vec).collect();
        let mut body = chunked(chunks);
        let first = read_first(&mut body, 1024, &Encoding::Identity)
            .await
            .unwrap();
        assert_eq!(&first.message[..], b"hello ticket");
        assert_eq!(first.excess, 0);
        let replay = Replay::new(first.raw, body, true);
        let all = replay.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], &wire[..]);
    }

    #[tokio::test]
    async fn framing_errors() {
        let mut body = chunked(vec![vec![0, 0, 0]]);
        assert!(matches!(
            read_first(&mut body, 10, &Encoding::Identity).await,
            Err(Rejection::BadRequest(_))
        ));
        let mut body = chunked(vec![]);
        assert!(matches!(
            read_first(&mut body, 10, &Encoding::Identity).await,
            Err(Rejection::BadRequest(_))
        ));
        let mut body = chunked(vec![frame(2, b"x")]);
        assert!(matches!(
            read_first(&mut body, 10, &Encoding::Identity).await,
            Err(Rejection::BadRequest(_))
        ));
        let mut body = chunked(vec![frame(1, b"x")]);
        assert!(matches!(
            read_first(&mut body, 10, &Encoding::Identity).await,
            Err(Rejection::BadRequest(_))
        ));
        // Declared length over the limit: refused before the message arrives.
        let mut body = chunked(vec![vec![0, 0xff, 0xff, 0xff, 0xff]]);
        assert_eq!(
            read_first(&mut body, 1 << 20, &Encoding::Identity)
                .await
                .unwrap_err(),
            Rejection::TooLarge(1 << 20)
        );
    }

    #[tokio::test]
    async fn gzip_messages_are_decoded_and_bounded() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&[b'a'; 4096]).unwrap();
        let compressed = gz.finish().unwrap();
        let mut body = chunked(vec![frame(1, &compressed)]);
        let first = read_first(&mut body, 8192, &Encoding::Gzip).await.unwrap();
        assert_eq!(first.message.len(), 4096);
        let mut body = chunked(vec![frame(1, &compressed)]);
        assert_eq!(
            read_first(&mut body, 1000, &Encoding::Gzip)
                .await
                .unwrap_err(),
            Rejection::TooLarge(1000)
        );
        let mut body = chunked(vec![frame(1, &compressed)]);
        assert!(matches!(
            read_first(&mut body, 8192, &Encoding::Other("zstd".into())).await,
            Err(Rejection::BadRequest(_))
        ));
    }

    #[test]
    fn size_hint_adds_the_prefix_to_an_exact_hint() {
        let replay = Replay::new(
            Bytes::from_static(b"12345"),
            ProxyBody::full(Bytes::from_static(b"678")),
            false,
        );
        assert_eq!(replay.size_hint().exact(), Some(8));
        let replay = Replay::new(Bytes::from_static(b"12345"), ProxyBody::empty(), false);
        assert_eq!(replay.size_hint().exact(), Some(5));
    }

    #[tokio::test]
    async fn single_message_calls_refuse_more_data() {
        let mut body = chunked(vec![frame(0, b"one"), frame(0, b"two")]);
        let first = read_first(&mut body, 100, &Encoding::Identity)
            .await
            .unwrap();
        assert_eq!(first.excess, 0);
        let replay = Replay::new(first.raw, body, true);
        assert!(replay.collect().await.is_err());
    }
}
