//! Flight `Handshake`, answered by the proxy itself.
//!
//! InfluxDB 3 answers a Handshake by echoing the request's message and
//! returning the credential it was called with as
//! `authorization: Bearer <token>` response metadata, which Flight SQL
//! clients (the JDBC driver, `pyarrow.flight`'s `authenticate_basic_token`)
//! then present on every call (`service_grpc_flight` `handshake`). Forwarded,
//! that credential would be the proxy's upstream credential — the one secret
//! fluxgate exists to keep — so the Handshake never reaches the upstream:
//! the proxy checks the caller's token is known and gives the same answer
//! InfluxDB would, with the caller's own token.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, header};
use http_body::Frame;
use http_body_util::StreamBody;
use prost::Message as _;

use super::frame;
use crate::proxy::body::ProxyBody;
use crate::proxy::reject::Rejection;

/// `arrow.flight.protocol.HandshakeRequest` and `HandshakeResponse` (the
/// same fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Handshake {
    /// The protocol version the client speaks.
    #[prost(uint64, tag = "1")]
    pub protocol_version: u64,
    /// Arbitrary auth payload.
    #[prost(bytes = "bytes", tag = "2")]
    pub payload: Bytes,
}

/// The answer to a Handshake whose first message is `message`, made by a
/// caller that presented `token` (already known to be valid).
pub fn answer(message: &[u8], token: &[u8]) -> Result<Response<ProxyBody>, Rejection> {
    let request = Handshake::decode(message).map_err(|_| {
        Rejection::BadRequest("the Handshake message is not a HandshakeRequest".to_owned())
    })?;
    let framed = frame::encode(&request.encode_to_vec())?;
    let mut bearer = BytesMut::from(&b"Bearer "[..]);
    bearer.extend_from_slice(token);
    let mut authorization = HeaderValue::from_maybe_shared(bearer.freeze())
        .map_err(|_| Rejection::BadRequest("the token cannot be echoed".to_owned()))?;
    authorization.set_sensitive(true);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = [
        Ok::<_, crate::proxy::body::BoxError>(Frame::data(framed)),
        Ok(Frame::trailers(trailers)),
    ];
    let mut response = Response::new(ProxyBody::new(StreamBody::new(futures_util::stream::iter(
        frames,
    ))));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::AUTHORIZATION, authorization);
    Ok(response)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn echoes_the_message_and_the_callers_token() {
        let request = Handshake {
            protocol_version: 7,
            payload: Bytes::from_static(b"hello"),
        };
        let response = answer(&request.encode_to_vec(), b"fgdb_secret").unwrap();
        assert_eq!(response.headers()["authorization"], "Bearer fgdb_secret");
        let body = response.into_body().collect().await.unwrap();
        assert_eq!(body.trailers().unwrap()["grpc-status"], "0");
        let bytes = body.to_bytes();
        assert_eq!(Handshake::decode(&bytes[5..]).unwrap(), request);
        assert!(answer(b"\xff\xff", b"t").is_err());
    }
}
