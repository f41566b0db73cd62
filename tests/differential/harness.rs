//! The differential harness: the proxy in-process in front of the oracle,
//! a recording authorizer, a byte-exact HTTP/1.1 client, and the three
//! checks every forwarded request must pass (security, canonical form,
//! fidelity). A refused request must leave the oracle untouched.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fluxgate::authz::{Action, Authorizer, AuthzError, CacheUse, Need, NeedDecision, Verdict};
use fluxgate::credentials::Token;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::canonical;
use crate::common::oracle::{Oracle, Reading};
use crate::common::proxy::ProxyServer;
use crate::meaning::{self, Meaning};

/// The caller's token in every case; it must never reach the upstream.
pub const TOKEN: &str = "fgdb_differential_caller_token";

/// What the recording authorizer grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Exactly read on database `x`.
    ReadX,
    /// Everything (still recording).
    Everything,
}

/// An [`Authorizer`] that records every need asked and grants per [`Grant`].
#[derive(Debug)]
pub struct Recording {
    grant: Grant,
    asked: Mutex<Vec<(Need, bool)>>,
}

impl Recording {
    pub fn new(grant: Grant) -> Self {
        Self {
            grant,
            asked: Mutex::new(Vec::new()),
        }
    }

    pub fn grant(&self) -> Grant {
        self.grant
    }

    /// Every (need, granted) since the last call.
    pub fn take(&self) -> Vec<(Need, bool)> {
        std::mem::take(&mut *self.asked.lock())
    }
}

#[async_trait]
impl Authorizer for Recording {
    async fn check(&self, _token: &Token, needs: &[Need]) -> Result<Verdict, AuthzError> {
        let subject: Arc<str> = Arc::from("differential");
        let mut decisions = Vec::with_capacity(needs.len());
        let mut asked = self.asked.lock();
        for need in needs {
            let granted = match self.grant {
                Grant::Everything => true,
                Grant::ReadX => need.action == Action::Read && need.database == "x",
            };
            asked.push((need.clone(), granted));
            decisions.push(if granted {
                NeedDecision::Allowed {
                    subject: Arc::clone(&subject),
                }
            } else {
                NeedDecision::Forbidden {
                    subject: Arc::clone(&subject),
                }
            });
        }
        Ok(Verdict {
            decisions,
            expires_at: None,
            cache: CacheUse::None,
            reusable_until: None,
        })
    }

    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// How the case carries the caller's credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Token <TOKEN>` is added.
    Header,
    /// The case carries its own (e.g. `p=` in the URL).
    InCase,
}

/// One request, sent byte for byte.
#[derive(Clone)]
pub struct Case {
    pub name: String,
    pub method: String,
    /// Request target as sent (path and query, already encoded).
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub auth: Auth,
}

impl Case {
    pub fn new(name: impl Into<String>, method: &str, target: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            method: method.to_owned(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
            auth: Auth::Header,
        }
    }

    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// The request on the wire (`Connection: close`, `Content-Length`).
    pub fn raw(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(format!("{} {} HTTP/1.1\r\n", self.method, self.target).as_bytes());
        out.extend_from_slice(b"Host: 127.0.0.1\r\n");
        if self.auth == Auth::Header {
            out.extend_from_slice(format!("Authorization: Token {TOKEN}\r\n").as_bytes());
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        if !self.body.is_empty() || self.method == "POST" {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.name, shown(&self.raw()))
    }
}

/// A response read off the wire.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends `raw` on a fresh connection and reads the response to EOF.
pub async fn exchange(addr: SocketAddr, raw: &[u8]) -> Reply {
    let work = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(raw).await.expect("send request");
        let mut got = Vec::new();
        // A server may close as soon as it has answered; what was read is
        // what counts.
        let _ = stream.read_to_end(&mut got).await;
        got
    };
    let got = tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .expect("no response within 20 s");
    parse_reply(&got)
}

fn parse_reply(got: &[u8]) -> Reply {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(got) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => {
            return Reply {
                status: 0,
                body: got.to_vec(),
            };
        }
    };
    let chunked = response.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
    });
    let status = response.code.unwrap_or(0);
    let rest = &got[head_len..];
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Reply { status, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim().to_owned();
        let Ok(size) = usize::from_str_radix(&size_text, 16) else {
            return out;
        };
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
}

/// The oracle, and a proxy in front of it deciding with a [`Recording`].
pub struct Env {
    pub oracle: Oracle,
    pub authorizer: Arc<Recording>,
    pub proxy: ProxyServer,
}

impl Env {
    pub async fn start(grant: Grant) -> Self {
        let oracle = Oracle::start();
        let authorizer = Arc::new(Recording::new(grant));
        let proxy = ProxyServer::start(
            Arc::clone(&authorizer) as Arc<dyn Authorizer>,
            &oracle.url(),
        )
        .await;
        Self {
            oracle,
            authorizer,
            proxy,
        }
    }

    /// Sends `case` to the oracle directly, then through the proxy.
    pub async fn run(&self, case: &Case) -> Outcome {
        let raw = case.raw();
        let direct_reply = exchange(self.oracle.addr, &raw).await;
        let direct = serde_json::from_slice::<Reading>(&direct_reply.body).ok();
        let before = self.oracle.count().await;
        self.authorizer.take();
        let reply = exchange(self.proxy.addr, &raw).await;
        let asked = self.authorizer.take();
        let mut forwarded = self.oracle.readings_since(before).await;
        assert!(
            forwarded.len() <= 1,
            "{}: one request reached the upstream {} times",
            case.name,
            forwarded.len()
        );
        Outcome {
            case: case.clone(),
            reply,
            asked,
            direct,
            forwarded: forwarded.pop(),
        }
    }
}

/// What happened to one case.
#[derive(Debug)]
pub struct Outcome {
    pub case: Case,
    pub reply: Reply,
    pub asked: Vec<(Need, bool)>,
    /// The oracle's reading of the original request (None: Go's server
    /// itself refused it as malformed HTTP).
    pub direct: Option<Reading>,
    /// The oracle's reading of what the proxy forwarded, if anything.
    pub forwarded: Option<Reading>,
}

impl Outcome {
    /// The needs the proxy had granted.
    pub fn granted(&self) -> BTreeSet<Need> {
        self.asked
            .iter()
            .filter(|(_, granted)| *granted)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Every way the outcome breaks the rules; empty when it holds.
    pub fn violations(&self) -> Vec<String> {
        let Some(fwd) = &self.forwarded else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let granted = self.granted();
        match meaning::meaning(fwd) {
            Meaning::Rejected(_) => {}
            Meaning::Needs(needs) => {
                let missing: Vec<Need> = needs.difference(&granted).cloned().collect();
                // The token probe (CREATE on `*` or the request's database,
                // asked before a body is read) is granted for a management
                // token without granting anything by itself: a CREATE the
                // request does not need is not an authorization of it.
                let granted: BTreeSet<Need> = granted
                    .into_iter()
                    .filter(|n| n.action != Action::Create || needs.contains(n))
                    .collect();
                if !missing.is_empty() {
                    out.push(format!(
                        "SECURITY: the database acts on {missing:?}, which the proxy never authorized (granted {granted:?})"
                    ));
                } else if needs != granted {
                    out.push(format!(
                        "authorized needs {granted:?} differ from the needs of what was forwarded {needs:?}"
                    ));
                }
            }
            Meaning::ShowDatabases => {}
            Meaning::Refused(what) => out.push(format!(
                "SECURITY: forwarded {what}, which no token may run through the proxy"
            )),
            Meaning::Unknown(why) => out.push(format!(
                "SECURITY: forwarded a request whose effect cannot be established: {why}"
            )),
        }
        out.extend(canonical::check(fwd));
        match &self.direct {
            Some(direct) => {
                let (a, b) = (meaning::view(direct), meaning::view(fwd));
                if a != b {
                    out.push(format!(
                        "FIDELITY: the database reads the forwarded request differently from the original:\n      original:  {a}\n      forwarded: {b}"
                    ));
                }
            }
            None => out.push(
                "forwarded a request the database's HTTP server itself refuses as malformed"
                    .to_owned(),
            ),
        }
        out
    }

    /// A report of the case for a failure message.
    pub fn report(&self, violations: &[String]) -> String {
        let mut s = format!(
            "case {:?}\n  sent: {}\n  proxy answered {} {}\n",
            self.case.name,
            shown(&self.case.raw()),
            self.reply.status,
            shown(&self.reply.body[..self.reply.body.len().min(120)])
        );
        if let Some(f) = &self.forwarded {
            s.push_str(&format!(
                "  forwarded: {} {} content-type={:?} content-encoding={:?} body={}\n",
                f.method,
                f.request_uri,
                f.header("Content-Type"),
                f.header("Content-Encoding"),
                shown(&f.body()[..f.body().len().min(400)])
            ));
            s.push_str(&format!(
                "  oracle read (forwarded): {}\n",
                meaning::view(f)
            ));
        }
        if let Some(d) = &self.direct {
            s.push_str(&format!(
                "  oracle read (original):  {}\n",
                meaning::view(d)
            ));
        }
        s.push_str(&format!("  proxy asked: {:?}\n", self.asked));
        for v in violations {
            s.push_str(&format!("  - {v}\n"));
        }
        s
    }
}

/// Bytes for a message: text when printable, escaped otherwise.
pub fn shown(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Runs every case and panics with the report of each one that breaks a
/// rule (all of them, not just the first: the list is a to-do list).
pub async fn assert_all(env: &Env, cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let outcome = env.run(case).await;
        let violations = outcome.violations();
        if !violations.is_empty() {
            failures.push(outcome.report(&violations));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases broke the rules:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Runs `cases` against a fresh environment for each grant.
pub async fn assert_all_grants(cases: &[Case]) {
    for grant in [Grant::ReadX, Grant::Everything] {
        let env = Env::start(grant).await;
        assert_all(&env, cases).await;
    }
}

/// The report of `case` when it does not reach the database faithfully
/// (through a proxy that grants it), `None` when it does.
pub async fn unfaithful(env: &Env, case: &Case) -> Option<String> {
    let outcome = env.run(case).await;
    let mut violations = outcome.violations();
    if outcome.forwarded.is_none() {
        violations.push(format!(
            "refused a request the database accepts (status {})",
            outcome.reply.status
        ));
    }
    (!violations.is_empty()).then(|| outcome.report(&violations))
}

/// Asserts that `case` reaches the database (through the permissive proxy)
/// and reads there as it reads directly: for requests the official clients
/// send, which must keep working.
pub async fn assert_forwarded_faithfully(env: &Env, case: &Case) {
    if let Some(report) = unfaithful(env, case).await {
        panic!("{report}");
    }
}
