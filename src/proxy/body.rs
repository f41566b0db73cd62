//! The body type of every response the proxy produces and every request it
//! forwards: a boxed stream of bytes (streamed from the peer, or buffered);
//! and [`Streamed`], the guard on request bodies that stream upstream.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

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

/// What a streamed request body does with trailers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trailers {
    /// Drop them (HTTP: nothing upstream reads request trailers, and nothing
    /// the proxy did not decide may reach it).
    Drop,
    /// A trailers frame carrying anything is an error, which resets the
    /// upstream stream (gRPC: tonic merges request trailers into the
    /// metadata the proxy authorized, replacing header values).
    Refuse,
}

/// A request body streamed upstream after the request was decided: its
/// trailers handled per [`Trailers`], and a stall between two frames longer
/// than `idle` ending it (the upstream connection is then freed, and
/// `stalled` tells the request path to answer 408).
#[derive(Debug)]
pub struct Streamed {
    inner: ProxyBody,
    trailers: Trailers,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: Arc<AtomicBool>,
}

impl Streamed {
    /// Streams `inner`; see [`Streamed`].
    pub fn new(
        inner: ProxyBody,
        trailers: Trailers,
        idle: Duration,
        stalled: Arc<AtomicBool>,
    ) -> Self {
        Self {
            inner,
            trailers,
            idle,
            timer: None,
            stalled,
        }
    }
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                // Only a body that had to wait pays for a timer.
                this.timer = None;
                let frame = match frame {
                    Some(Ok(frame)) if frame.is_trailers() => frame,
                    other => return Poll::Ready(other),
                };
                let carries = frame.trailers_ref().is_some_and(|t| !t.is_empty());
                if carries && this.trailers == Trailers::Refuse {
                    return Poll::Ready(Some(Err(
                        "request trailers carrying metadata are not accepted".into(),
                    )));
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.stalled.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err("request body stalled".into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
