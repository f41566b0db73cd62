//! A capturing upstream: a real HTTP/1.1 + h2c server on 127.0.0.1:0 that
//! records every request exactly as received (HTTP/2 request trailers
//! included) and answers with a canned response, so tests can assert what
//! the proxy forwarded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpListener;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Captured {
    /// The proxy's end of the connection the request came over.
    pub peer: SocketAddr,
    pub method: http::Method,
    pub uri: http::Uri,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// The request's trailers (HTTP/2 trailing HEADERS, or HTTP/1.1
    /// chunked trailers), if it had any.
    pub trailers: Option<http::HeaderMap>,
}

/// What the upstream answers.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Default for Canned {
    fn default() -> Self {
        Self {
            status: 204,
            headers: vec![],
            body: Bytes::new(),
        }
    }
}

pub struct CaptureUpstream {
    pub addr: SocketAddr,
    captured: Arc<Mutex<Vec<Captured>>>,
    canned: Arc<Mutex<Canned>>,
    /// While set, every answer waits until this many requests are waiting.
    hold: Arc<Mutex<Option<Arc<tokio::sync::Barrier>>>>,
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CaptureUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let captured: Arc<Mutex<Vec<Captured>>> = Arc::default();
        let canned: Arc<Mutex<Canned>> = Arc::default();
        let hold: Arc<Mutex<Option<Arc<tokio::sync::Barrier>>>> = Arc::default();
        let open: Arc<AtomicUsize> = Arc::default();
        let (c, k, h, o) = (
            Arc::clone(&captured),
            Arc::clone(&canned),
            Arc::clone(&hold),
            Arc::clone(&open),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    return;
                };
                let (c, k, h, o) = (
                    Arc::clone(&c),
                    Arc::clone(&k),
                    Arc::clone(&h),
                    Arc::clone(&o),
                );
                o.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: http::Request<Incoming>| {
                            let (c, k, h) = (Arc::clone(&c), Arc::clone(&k), Arc::clone(&h));
                            async move {
                                let (parts, body) = req.into_parts();
                                let (body, trailers) = match body.collect().await {
                                    Ok(collected) => {
                                        let trailers = collected.trailers().cloned();
                                        (collected.to_bytes(), trailers)
                                    }
                                    Err(_) => (Bytes::new(), None),
                                };
                                c.lock().push(Captured {
                                    peer,
                                    method: parts.method,
                                    uri: parts.uri,
                                    version: parts.version,
                                    headers: parts.headers,
                                    body,
                                    trailers,
                                });
                                let held = h.lock().clone();
                                if let Some(barrier) = held {
                                    barrier.wait().await;
                                }
                                let canned = k.lock().clone();
                                let mut resp = http::Response::new(Full::new(canned.body));
                                *resp.status_mut() =
                                    http::StatusCode::from_u16(canned.status).unwrap();
                                for (name, value) in canned.headers {
                                    resp.headers_mut().append(
                                        http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                                        http::HeaderValue::from_str(&value).unwrap(),
                                    );
                                }
                                Ok::<_, Infallible>(resp)
                            }
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            captured,
            canned,
            hold,
            open,
            task,
        }
    }

    /// Connections open to this upstream now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Holds every answer until `n` requests are waiting for theirs (so
    /// `n` concurrent requests need `n` connections), or, with `None`,
    /// answers at once again.
    pub fn hold_answers_until(&self, n: Option<usize>) {
        *self.hold.lock() = n.map(|n| Arc::new(tokio::sync::Barrier::new(n)));
    }

    pub fn set_response(&self, canned: Canned) {
        *self.canned.lock() = canned;
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.captured.lock().clone()
    }

    pub fn last(&self) -> Captured {
        self.captured
            .lock()
            .last()
            .cloned()
            .expect("the upstream received no request")
    }

    pub fn count(&self) -> usize {
        self.captured.lock().len()
    }
}

impl Drop for CaptureUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
