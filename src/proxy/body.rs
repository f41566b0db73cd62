//! The body type of every response the proxy produces and every request it
//! forwards: a boxed stream of bytes (streamed from the peer, or buffered).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full};

/// Errors carried by a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed or buffered body.
#[derive(Debug)]
pub struct ProxyBody(UnsyncBoxBody<Bytes, BoxError>);

impl ProxyBody {
    /// Wraps any body (e.g. hyper's `Incoming`), streaming it.
    pub fn new<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self(body.map_err(Into::into).boxed_unsync())
    }

    /// A buffered body.
    pub fn full(bytes: Bytes) -> Self {
        Self::new(Full::new(bytes).map_err(|never| match never {}))
    }

    /// No body.
    pub fn empty() -> Self {
        Self::new(Empty::<Bytes>::new().map_err(|never| match never {}))
    }
}

impl Default for ProxyBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}
