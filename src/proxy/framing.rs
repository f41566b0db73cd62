//! Following a connection's HTTP/1.1 requests as its bytes are read: the
//! detection of requests that carry both `Content-Length` and
//! `Transfer-Encoding`, and whether a request head is on its way (for the
//! listener's header timeout, [`HeadProgress`]).
//!
//! hyper handles such a request safely (chunked wins, the connection closes)
//! but drops the `Content-Length` header before the service sees it, and
//! fluxgate refuses these requests outright: a proxy and a database that
//! frame one message differently is how requests are smuggled. So the
//! connection's bytes pass through [`FramingWatch`], which follows request
//! heads and body framing and raises a per-connection flag the service
//! checks. A parse it cannot follow only stops the watching: hyper then
//! answers malformed input itself. The watch can refuse, never admit.
//!
//! hyper's own header timer cannot be what bounds a slow head: it also
//! runs while a kept-alive connection waits for its next request, so it
//! closed idle connections at the header timeout (10 s, Telegraf's flush
//! interval) instead of the idle timeout. The watch sees when a head
//! begins, so the listener's sweeper times heads, and idleness, apart.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use memchr::memmem::Finder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// HTTP/2's connection preface: no HTTP/1 framing to follow.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
/// Longest head followed; longer ones are hyper's to refuse.
const MAX_HEAD: usize = 64 << 10;

#[derive(Debug)]
enum State {
    /// Collecting a request head.
    Head(Vec<u8>),
    /// Skipping `n` body bytes, then back to `Head`.
    Body(u64),
    /// Collecting a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Skipping chunk data plus its CRLF.
    ChunkData(u64),
    /// Collecting trailers until an empty line.
    Trailers(Vec<u8>),
    /// HTTP/2: no HTTP/1 framing to follow.
    Http2,
    /// Not following any more (input hyper will refuse, or a head longer
    /// than [`MAX_HEAD`]).
    Off,
}

/// The flag shared between a connection's watch and its requests.
#[derive(Debug, Clone, Default)]
pub struct AmbiguousFraming(Arc<AtomicBool>);

impl AmbiguousFraming {
    /// True once a request head with both framing headers was read.
    pub fn seen(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Whether a request head is on its way: shared by a connection's watch
/// and the listener's sweeper, which closes a connection whose head takes
/// longer than the header timeout, the first head or any later one.
#[derive(Debug, Clone)]
pub struct HeadProgress(Arc<Progress>);

#[derive(Debug)]
struct Progress {
    origin: Instant,
    /// When the head arriving now began, in ms since `origin`, plus one;
    /// 0 while none is (between requests, or reading a body).
    begun: AtomicU64,
    /// The watch stopped following the connection's HTTP/1 requests.
    lost: AtomicBool,
}

impl HeadProgress {
    pub(super) fn new() -> Self {
        Self(Arc::new(Progress {
            origin: Instant::now(),
            begun: AtomicU64::new(0),
            lost: AtomicBool::new(false),
        }))
    }

    /// When the watch began: the connection's start.
    pub fn origin(&self) -> Instant {
        self.0.origin
    }

    /// How long the request head now arriving has been arriving (part of
    /// it read, not its end); `None` when no head is arriving.
    pub fn arriving_for(&self) -> Option<Duration> {
        let begun = self.0.begun.load(Ordering::Relaxed).checked_sub(1)?;
        Some(
            self.0
                .origin
                .elapsed()
                .saturating_sub(Duration::from_millis(begun)),
        )
    }

    /// True once the watch no longer follows the connection's requests
    /// (input hyper refuses, or a head over 64 KiB): it cannot tell a head
    /// arriving from an idle connection then.
    pub fn lost(&self) -> bool {
        self.0.lost.load(Ordering::Relaxed)
    }

    fn lose_track(&self) {
        self.0.lost.store(true, Ordering::Relaxed);
    }

    /// Marks a head arriving from now, or none arriving.
    pub(super) fn arriving(&self, arriving: bool) {
        let begun = if arriving {
            let ms = u64::try_from(self.0.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
            ms + 1
        } else {
            0
        };
        self.0.begun.store(begun, Ordering::Relaxed);
    }
}

/// An I/O stream whose reads are followed for ambiguous framing and for
/// request heads on their way.
#[derive(Debug)]
pub struct FramingWatch<S> {
    inner: S,
    state: State,
    flag: AmbiguousFraming,
    progress: HeadProgress,
    /// What `progress` was last told: a head is arriving.
    arriving: bool,
}

impl<S> FramingWatch<S> {
    /// Watches `inner`; the returned flag is raised on ambiguous framing.
    pub fn new(inner: S) -> (Self, AmbiguousFraming) {
        let flag = AmbiguousFraming::default();
        (
            Self {
                inner,
                state: State::Head(Vec::new()),
                flag: flag.clone(),
                progress: HeadProgress::new(),
                arriving: false,
            },
            flag,
        )
    }

    /// Whether a request head is on its way on this connection.
    pub fn progress(&self) -> HeadProgress {
        self.progress.clone()
    }

    /// Tells `progress` when a head begins arriving (part of one read, its
    /// end not yet), ends, or can no longer be followed: a clock read only
    /// for heads that arrive in pieces.
    fn track_progress(&mut self) {
        let arriving = matches!(&self.state, State::Head(buf) if !buf.is_empty());
        if arriving != self.arriving {
            self.arriving = arriving;
            self.progress.arriving(arriving);
        }
        if matches!(self.state, State::Off) && !self.progress.lost() {
            self.progress.lose_track();
        }
    }

    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off | State::Http2 => return,
                State::Head(buf) => {
                    // A head that arrives whole in one read (almost every
                    // one) is read where it lies, not copied first.
                    if buf.is_empty() {
                        bytes = skip_leading_crlfs(bytes);
                        if let Some(end) = head_end(bytes) {
                            self.state = self.after_head(&bytes[..end]);
                            bytes = &bytes[end..];
                            continue;
                        }
                    }
                    let Some(end) = take_until_blank_line(buf, &mut bytes) else {
                        if buf.len() > MAX_HEAD {
                            self.state = State::Off;
                        }
                        continue;
                    };
                    let head = std::mem::take(buf);
                    self.state = self.after_head(&head[..end]);
                }
                State::Body(n) => {
                    let skip = usize::try_from(*n).unwrap_or(usize::MAX).min(bytes.len());
                    bytes = &bytes[skip..];
                    *n -= skip as u64;
                    if *n == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkSize(line) => {
                    let Some(pos) = bytes.iter().position(|b| *b == b'\n') else {
                        line.extend_from_slice(bytes);
                        if line.len() > 1024 {
                            self.state = State::Off;
                        }
                        return;
                    };
                    line.extend_from_slice(&bytes[..=pos]);
                    bytes = &bytes[pos + 1..];
                    let size = std::str::from_utf8(line)
                        .ok()
                        .and_then(|l| l.trim().split(';').next().map(str::trim).map(str::to_owned))
                        .and_then(|hex| u64::from_str_radix(&hex, 16).ok());
                    self.state = match size {
                        Some(0) => State::Trailers(Vec::new()),
                        Some(n) => State::ChunkData(n.saturating_add(2)),
                        None => State::Off,
                    };
                }
                State::ChunkData(n) => {
                    let skip = usize::try_from(*n).unwrap_or(usize::MAX).min(bytes.len());
                    bytes = &bytes[skip..];
                    *n -= skip as u64;
                    if *n == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
                State::Trailers(buf) => {
                    // The last chunk's line ended already: an immediate CRLF ends the message.
                    buf.extend_from_slice(bytes);
                    bytes = &[];
                    if buf.starts_with(b"\r\n") || buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let rest_at = if buf.starts_with(b"\r\n") {
                            2
                        } else {
                            buf.windows(4)
                                .position(|w| w == b"\r\n\r\n")
                                .map_or(buf.len(), |p| p + 4)
                        };
                        let rest = buf.split_off(rest_at);
                        self.state = State::Head(Vec::new());
                        self.observe(&rest);
                        return;
                    }
                    if buf.len() > MAX_HEAD {
                        self.state = State::Off;
                    }
                }
            }
        }
    }

    fn after_head(&self, head: &[u8]) -> State {
        if head.starts_with(H2_PREFACE) {
            return State::Http2;
        }
        // Left uninitialized: httparse writes the ones it fills.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
        let mut request = httparse::Request::new(&mut []);
        if !matches!(
            request.parse_with_uninit_headers(head, &mut headers),
            Ok(httparse::Status::Complete(_))
        ) {
            return State::Off;
        }
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut te = false;
        for h in request.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let Some(n) = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                else {
                    return State::Off;
                };
                if length.is_some_and(|l| l != n) {
                    return State::Off;
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
                chunked = h.value.to_ascii_lowercase().ends_with(b"chunked");
            }
        }
        if te && length.is_some() {
            self.flag.0.store(true, Ordering::Release);
        }
        match (te, chunked, length) {
            (true, true, _) => State::ChunkSize(Vec::new()),
            (true, false, _) => State::Off,
            (false, _, Some(0) | None) => State::Head(Vec::new()),
            (false, _, Some(n)) => State::Body(n),
        }
    }
}

/// `bytes` past the CRLFs allowed between pipelined requests.
fn skip_leading_crlfs(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(bytes.len());
    &bytes[n..]
}

/// The length of the head at the start of `bytes`, its blank line
/// included, if it is complete. Lines end as httparse (hyper's reader)
/// ends them, with `\r\n` or a bare `\n`: a head whose lines end in `\n`
/// must end where hyper ends it, or the watch would read its body as the
/// rest of the head and lose track of every request after it.
fn head_end(bytes: &[u8]) -> Option<usize> {
    // A blank line is `\n\r\n` or `\n\n`. The first `\n\r\n` (the end
    // of almost every head) also bounds the search for `\n\n`, which so
    // never runs through a body.
    static LF_CRLF: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\r\n"));
    static LF_LF: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\n"));
    let crlf = LF_CRLF.find(bytes).map(|p| p + 3);
    let lf = LF_LF
        .find(crlf.map_or(bytes, |end| &bytes[..end]))
        .map(|p| p + 2);
    match (crlf, lf) {
        (Some(crlf), Some(lf)) => Some(crlf.min(lf)),
        (crlf, lf) => crlf.or(lf),
    }
}

/// Moves bytes from `input` into `buf` up to and including the first blank
/// line; returns the head's length when one is complete.
fn take_until_blank_line(buf: &mut Vec<u8>, input: &mut &[u8]) -> Option<usize> {
    if buf.is_empty() {
        *input = skip_leading_crlfs(input);
    }
    // The blank line may have begun in the bytes already kept.
    let start = buf.len().saturating_sub(3);
    buf.extend_from_slice(input);
    match head_end(&buf[start..]) {
        Some(p) => {
            let end = start + p;
            let consumed_from_input = input.len() - (buf.len() - end);
            *input = &input[consumed_from_input..];
            buf.truncate(end);
            Some(end)
        }
        None => {
            *input = &[];
            None
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingWatch<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.observe(&buf.filled()[before..]);
            this.track_progress();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingWatch<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_end_where_httparse_ends_them() {
        for (head, end) in [
            (&b"GET / HTTP/1.1\r\nhost: a\r\n\r\nrest"[..], Some(27)),
            (b"GET / HTTP/1.1\nhost: a\n\nrest", Some(24)),
            (b"GET / HTTP/1.1\r\nhost: a\r\n\nrest", Some(26)),
            (b"GET / HTTP/1.1\nhost: a\n\r\nrest", Some(25)),
            (b"GET / HTTP/1.1\n\n", Some(16)),
            (b"GET / HTTP/1.1\r\nhost: a\r\n\r", None),
            (b"GET / HTTP/1.1\r\nhost: a\r\n", None),
            (b"GET / HTTP/1.1\r\nhost: a\r\r\n", None),
        ] {
            assert_eq!(head_end(head), end, "{:?}", String::from_utf8_lossy(head));
            if let Some(end) = end {
                let mut headers = [httparse::EMPTY_HEADER; 4];
                let parsed = httparse::Request::new(&mut headers).parse(head);
                assert_eq!(parsed.ok(), Some(httparse::Status::Complete(end)));
            }
        }
    }

    #[test]
    fn heads_with_bare_lf_line_ends_are_followed() {
        // Both framing headers on a head whose lines end in `\n`.
        assert!(watch(&[
            b"POST /write HTTP/1.1\ncontent-length: 5\ntransfer-encoding: chunked\n\n"
        ]));
        // A bare-LF head, then a smuggling attempt: the second head is
        // where hyper reads it, not inside the first one.
        assert!(watch(&[
            b"GET /ping HTTP/1.1\nhost: a\n\nPOST /write HTTP/1.1\r\ncontent-length: 5\r\n\
              transfer-encoding: chunked\r\n\r\n0\r\n\r\n"
        ]));
        // A bare-LF head with a body ending in a CRLF pair: the body is
        // skipped by its length, and the next head is seen arriving.
        let (mut w, _) = FramingWatch::new(());
        w.observe(b"POST /ping HTTP/1.1\nhost: a\ncontent-length: 8\n\nxxxx\r\n\r\n");
        w.observe(b"GET /pi");
        w.track_progress();
        assert!(w.progress().arriving_for().is_some());
    }

    #[test]
    fn a_head_is_arriving_only_while_part_of_it_is_read() {
        let (mut w, _) = FramingWatch::new(());
        let progress = w.progress();
        let mut read = |bytes: &[u8]| {
            w.observe(bytes);
            w.track_progress();
            (progress.arriving_for().is_some(), progress.lost())
        };
        // Whole heads, CRLFs between requests and bodies are not heads
        // arriving.
        assert_eq!(
            read(b"POST /write HTTP/1.1\r\ncontent-length: 5\r\n\r\nab"),
            (false, false)
        );
        assert_eq!(read(b"cde\r\n"), (false, false));
        // A head in pieces is, until its blank line.
        assert_eq!(read(b"GET /ping HTTP/1.1\r\nhost: a"), (true, false));
        assert_eq!(read(b"\r\n"), (true, false));
        assert_eq!(read(b"\r\n"), (false, false));
        // Input the watch cannot follow leaves it unable to tell.
        assert_eq!(read(b"GET / HTTP/1.1\r\nbad header\r\n\r\n"), (false, true));
        let (mut h2, _) = FramingWatch::new(());
        h2.observe(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        h2.track_progress();
        assert!(!h2.progress().lost() && h2.progress().arriving_for().is_none());
    }

    fn watch(chunks: &[&[u8]]) -> bool {
        let (mut w, flag) = FramingWatch::new(());
        for c in chunks {
            w.observe(c);
        }
        flag.seen()
    }

    #[test]
    fn both_headers_are_seen_in_either_order_and_split_reads() {
        assert!(watch(&[
            b"POST /write HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        assert!(watch(&[
            b"POST /write HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
        ]));
        assert!(watch(&[
            b"POST /write HTTP/1.1\r\nTransfer-Enc",
            b"oding: chunked\r\nContent-Length: 5\r",
            b"\n\r\n"
        ]));
    }

    #[test]
    fn bodies_are_skipped_so_their_bytes_never_count_as_heads() {
        let body = b"x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let head = format!(
            "POST /write HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        assert!(!watch(&[head.as_bytes(), body]));
        let data = "x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let chunked = format!(
            "POST /w HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{data}\r\n0\r\n\r\n",
            data.len()
        );
        assert!(!watch(&[chunked.as_bytes()]));
        // The next request after a chunked one is still followed.
        let mut two = chunked.into_bytes();
        two.extend_from_slice(
            b"POST /w HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(watch(&[&two]));
    }

    #[test]
    fn http2_is_not_followed() {
        assert!(!watch(&[
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
    }

    fn request(body: &[u8], chunked: bool, both: bool) -> Vec<u8> {
        let mut r = b"POST /write?db=a HTTP/1.1\r\nHost: x\r\n".to_vec();
        if chunked {
            r.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            if both {
                r.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
            }
            r.extend_from_slice(b"\r\n");
            for piece in body.chunks(7) {
                r.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                r.extend_from_slice(piece);
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"0\r\n\r\n");
        } else {
            r.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            r.extend_from_slice(body);
        }
        r
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(256))]

        /// Pipelined well-framed requests, whatever their bodies hold and
        /// however reads split them, are never flagged; one ambiguous
        /// request among them always is.
        #[test]
        fn framing_is_followed_across_bodies_and_splits(
            bodies in proptest::collection::vec((proptest::collection::vec(proptest::num::u8::ANY, 0..200), proptest::bool::ANY), 1..6),
            cuts in proptest::collection::vec(1usize..64, 1..20),
            poison in proptest::option::of(0usize..6),
        ) {
            let mut stream = Vec::new();
            let mut poisoned = false;
            for (i, (body, chunked)) in bodies.iter().enumerate() {
                let both = poison == Some(i);
                poisoned |= both;
                stream.extend(request(body, *chunked || both, both));
            }
            let (mut w, flag) = FramingWatch::new(());
            let mut rest = &stream[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().unwrap_or(&1)).min(rest.len());
                w.observe(&rest[..n]);
                rest = &rest[n..];
            }
            proptest::prop_assert_eq!(flag.seen(), poisoned);
        }
    }
}
