//! gRPC message framing on the request side: the one message of a unary
//! request read from its whole body (bounded by the caller), decompressed
//! when it was compressed, and the uncompressed framing of the message the
//! proxy forwards instead.
//!
//! A gRPC message is `compressed-flag (1 byte) | length (4 bytes, big
//! endian) | message`.

use std::io::Read as _;

use bytes::{BufMut as _, Bytes, BytesMut};
use http::HeaderMap;

use crate::proxy::reject::Rejection;

/// Length of the message prefix.
const PREFIX: usize = 5;

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

/// The first message of a streaming request body, read as soon as it is
/// whole (the caller may wait for an answer before sending more), bounded
/// by `limits` in size and time; the rest of the body is not read.
pub async fn read_first(
    body: &mut crate::proxy::body::ProxyBody,
    limits: &crate::proxy::read::body::ReadLimits,
    encoding: &Encoding,
) -> Result<Bytes, Rejection> {
    use http_body_util::BodyExt as _;
    let limit = limits.max_body;
    let mut reservation = crate::proxy::read::body::Reservation::default();
    let mut buf = BytesMut::new();
    let reading = async {
        loop {
            if buf.len() >= PREFIX {
                let (_, length) = parse_prefix(&buf)?;
                if u64::try_from(length).map_or(true, |l| l > limit) {
                    return Err(Rejection::TooLarge(limit));
                }
                let end = PREFIX + length;
                if buf.len() >= end {
                    return single(&buf[..end], encoding, limit);
                }
            }
            let Some(frame) = body.frame().await else {
                return Err(Rejection::BadRequest(
                    "the request ends before its first gRPC message".to_owned(),
                ));
            };
            let frame = frame
                .map_err(|e| Rejection::BadRequest(format!("cannot read the request: {e}")))?;
            if let Ok(data) = frame.into_data() {
                limits.budget.reserve(&mut reservation, data.len())?;
                buf.extend_from_slice(&data);
            }
        }
    };
    match tokio::time::timeout(limits.timeout, reading).await {
        Ok(result) => result,
        Err(_) => Err(Rejection::BodyTimeout),
    }
}

/// The one message of a whole gRPC request body `buf` (at most `limit`
/// bytes, compressed or decompressed). Bad framing, an unreadable
/// compression, no message or more than one are `BadRequest`.
pub fn single(buf: &[u8], encoding: &Encoding, limit: u64) -> Result<Bytes, Rejection> {
    if buf.is_empty() {
        return Err(Rejection::BadRequest(
            "the request carries no gRPC message".to_owned(),
        ));
    }
    if buf.len() < PREFIX {
        return Err(Rejection::BadRequest(
            "the request body ends inside a gRPC message".to_owned(),
        ));
    }
    let (compressed, length) = parse_prefix(buf)?;
    if u64::try_from(length).map_or(true, |l| l > limit) {
        return Err(Rejection::TooLarge(limit));
    }
    let end = PREFIX.saturating_add(length);
    match buf.len().cmp(&end) {
        std::cmp::Ordering::Less => Err(Rejection::BadRequest(
            "the request body ends inside a gRPC message".to_owned(),
        )),
        std::cmp::Ordering::Greater => Err(Rejection::BadRequest(
            "this call takes exactly one request message".to_owned(),
        )),
        std::cmp::Ordering::Equal => {
            let payload = &buf[PREFIX..end];
            if compressed {
                decompress(payload, encoding, limit)
            } else {
                Ok(Bytes::copy_from_slice(payload))
            }
        }
    }
}

/// `message` framed uncompressed: what the proxy forwards in place of the
/// caller's framing.
pub fn encode(message: &[u8]) -> Result<Bytes, Rejection> {
    let length = u32::try_from(message.len())
        .map_err(|_| Rejection::BadRequest("gRPC message too large".to_owned()))?;
    let mut out = BytesMut::with_capacity(PREFIX + message.len());
    out.put_u8(0);
    out.put_u32(length);
    out.extend_from_slice(message);
    Ok(out.freeze())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn one_message_exactly() {
        let wire = frame(0, b"hello ticket");
        assert_eq!(
            &single(&wire, &Encoding::Identity, 1024).unwrap()[..],
            b"hello ticket"
        );
        assert_eq!(encode(b"hello ticket").unwrap(), wire);
        let mut two = wire.clone();
        two.extend_from_slice(&frame(0, b"again"));
        assert!(matches!(
            single(&two, &Encoding::Identity, 1024),
            Err(Rejection::BadRequest(_))
        ));
        assert!(matches!(
            single(&[0, 0, 0], &Encoding::Identity, 10),
            Err(Rejection::BadRequest(_))
        ));
        assert!(matches!(
            single(&[], &Encoding::Identity, 10),
            Err(Rejection::BadRequest(_))
        ));
        assert!(matches!(
            single(&frame(2, b"x"), &Encoding::Identity, 10),
            Err(Rejection::BadRequest(_))
        ));
        assert!(matches!(
            single(&frame(1, b"x"), &Encoding::Identity, 10),
            Err(Rejection::BadRequest(_))
        ));
        assert!(matches!(
            single(&wire[..8], &Encoding::Identity, 1024),
            Err(Rejection::BadRequest(_))
        ));
        assert_eq!(
            single(&[0, 0xff, 0xff, 0xff, 0xff], &Encoding::Identity, 1 << 20).unwrap_err(),
            Rejection::TooLarge(1 << 20)
        );
    }

    #[test]
    fn gzip_messages_are_decoded_and_bounded() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&[b'a'; 4096]).unwrap();
        let compressed = frame(1, &gz.finish().unwrap());
        assert_eq!(
            single(&compressed, &Encoding::Gzip, 8192).unwrap().len(),
            4096
        );
        assert_eq!(
            single(&compressed, &Encoding::Gzip, 1000).unwrap_err(),
            Rejection::TooLarge(1000)
        );
        assert!(matches!(
            single(&compressed, &Encoding::Other("zstd".into()), 8192),
            Err(Rejection::BadRequest(_))
        ));
    }
}
