//! The reference reader (tests/oracle, Go): built once per test process
//! with the local Go toolchain (no network), started on 127.0.0.1:0, stopped
//! by PID when dropped. It reads every request the way InfluxDB does and
//! records a [`Reading`] of it; this module holds the readings' shape.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use base64::Engine as _;
use serde::Deserialize;

/// Where the oracle's sources are.
fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle")
}

/// Builds the oracle once per test process into the target directory and
/// returns the binary's path. Panics with the build output when Go is
/// missing or the build fails (`.ci/run` installs Debian's `golang-go`).
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let out_dir = tmp.join("oracle");
        std::fs::create_dir_all(&out_dir).expect("create oracle dir");
        // One file per process, renamed into place: test binaries running
        // at once never see a half-written executable.
        let staging = out_dir.join(format!("oracle.{}", std::process::id()));
        let output = Command::new("go")
            .args(["build", "-trimpath", "-o"])
            .arg(&staging)
            .arg(".")
            .current_dir(source_dir())
            .env("GOCACHE", tmp.join("go-cache"))
            .env("GOPATH", tmp.join("go-path"))
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("CGO_ENABLED", "0")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run `go build` for tests/oracle ({e}); install Go (Debian: golang-go), as .ci/run does")
            });
        assert!(
            output.status.success(),
            "go build of tests/oracle failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let bin = out_dir.join("oracle");
        std::fs::rename(&staging, &bin).expect("install oracle binary");
        bin
    })
}

/// A running oracle.
pub struct Oracle {
    pub addr: SocketAddr,
    child: Child,
}

impl Oracle {
    pub fn start() -> Self {
        let mut child = Command::new(binary())
            .args(["-addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start oracle");
        let stdout = child.stdout.take().expect("oracle stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read oracle address");
        let addr = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("oracle printed {line:?}, not an address"));
        Self { addr, child }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The readings numbered `since` and up.
    pub async fn readings_since(&self, since: usize) -> Vec<Reading> {
        let raw = get(self.addr, &format!("/__oracle/requests?since={since}")).await;
        serde_json::from_slice(&raw).unwrap_or_else(|e| {
            panic!(
                "oracle readings do not decode ({e}): {}",
                String::from_utf8_lossy(&raw)
            )
        })
    }

    /// How many requests the oracle has read.
    pub async fn count(&self) -> usize {
        self.readings_since(0).await.len()
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        // Ours, by PID (Child::kill signals exactly this process).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain GET over one HTTP/1.1 connection; returns the body.
async fn get(addr: SocketAddr, target: &str) -> Vec<u8> {
    use http_body_util::{BodyExt as _, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("http://{addr}{target}").parse().expect("uri");
    let response = client.get(uri).await.expect("oracle GET");
    assert_eq!(response.status(), 200, "oracle GET {target}");
    response
        .into_body()
        .collect()
        .await
        .expect("oracle body")
        .to_bytes()
        .to_vec()
}

/// A Go string as the oracle reports it: a JSON string when valid UTF-8,
/// else `{"invalid_utf8_b64": …}`. Kept as the exact bytes.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(from = "RawRepr")]
pub struct RawStr(pub Vec<u8>);

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRepr {
    Text(String),
    Bytes { invalid_utf8_b64: String },
}

impl From<RawRepr> for RawStr {
    fn from(r: RawRepr) -> Self {
        match r {
            RawRepr::Text(s) => RawStr(s.into_bytes()),
            RawRepr::Bytes { invalid_utf8_b64 } => RawStr(
                base64::engine::general_purpose::STANDARD
                    .decode(invalid_utf8_b64)
                    .expect("oracle base64"),
            ),
        }
    }
}

impl RawStr {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value when it is valid UTF-8.
    pub fn utf8(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// For messages only.
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl std::fmt::Debug for RawStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for RawStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.utf8() {
            Some(s) => write!(f, "{s:?}"),
            None => write!(f, "bytes{:?}", self.0),
        }
    }
}

/// One request as the oracle read it (tests/oracle/main.go `Reading`).
#[derive(Debug, Clone, Deserialize)]
pub struct Reading {
    pub seq: usize,
    pub method: String,
    pub request_uri: RawStr,
    pub path: RawStr,
    pub raw_query: RawStr,
    pub proto: String,
    pub headers: BTreeMap<String, Vec<RawStr>>,
    pub trailers: BTreeMap<String, Vec<RawStr>>,
    pub body_b64: String,
    pub body_len: usize,
    #[serde(default)]
    pub body_error: Option<String>,
    pub endpoint: String,
    #[serde(default)]
    pub v1_query: Option<V1Query>,
    #[serde(default)]
    pub v1_write: Option<V1Write>,
    #[serde(default)]
    pub flux_query: Option<FluxQuery>,
    #[serde(default)]
    pub v2_write: Option<V2Write>,
    #[serde(default)]
    pub v3_query: Option<V3Query>,
    #[serde(default)]
    pub v3_write: Option<V3Write>,
}

impl Reading {
    /// The raw body bytes.
    pub fn body(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.body_b64)
            .expect("oracle body base64")
    }

    /// Every value of header `name` (canonical Go form, e.g. `Content-Type`).
    pub fn header(&self, name: &str) -> &[RawStr] {
        self.headers.get(name).map(Vec::as_slice).unwrap_or(&[])
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct V1Query {
    pub q: RawStr,
    pub q_source: String,
    pub q_text: String,
    #[serde(default)]
    pub q_error: Option<String>,
    pub db: RawStr,
    pub rp: RawStr,
    pub epoch: RawStr,
    pub chunked: bool,
    pub chunk_size: i64,
    pub r#async: bool,
    pub node_id: u64,
    pub pretty: bool,
    pub time_format: RawStr,
    pub params_raw: RawStr,
    pub params: Option<BTreeMap<String, BoundParam>>,
    #[serde(default)]
    pub params_error: Option<String>,
    pub u: RawStr,
    pub p: RawStr,
    pub form: BTreeMap<String, Vec<RawStr>>,
    pub post_form: BTreeMap<String, Vec<RawStr>>,
    #[serde(default)]
    pub form_error: Option<String>,
    pub multipart: bool,
    #[serde(default)]
    pub files: Option<BTreeMap<String, Vec<MultipartFile>>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct MultipartFile {
    pub filename: RawStr,
    pub content: RawStr,
}

/// A bound parameter as influxql binds it: `kind` is identifier, string,
/// regex, number, integer, boolean, duration or error.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct BoundParam {
    pub kind: String,
    pub value: RawStr,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct WriteBody {
    pub gzip: bool,
    pub sha256: String,
    pub len: usize,
    pub lines: usize,
    #[serde(default)]
    pub decode_error: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct V1Write {
    pub db: RawStr,
    pub rp: RawStr,
    pub precision: RawStr,
    pub consistency: RawStr,
    pub u: RawStr,
    pub p: RawStr,
    pub body: WriteBody,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct FluxQuery {
    #[serde(default)]
    pub media_type: String,
    #[serde(default)]
    pub media_type_error: Option<String>,
    #[serde(default)]
    pub media_type_error_1_8: Option<String>,
    #[serde(default)]
    pub decode_error: Option<String>,
    #[serde(default)]
    pub r#type: RawStr,
    #[serde(default)]
    pub query: RawStr,
    #[serde(default, rename = "extern")]
    pub extern_raw: RawStr,
    #[serde(default)]
    pub extern_value: Option<serde_json::Value>,
    #[serde(default)]
    pub ast: RawStr,
    #[serde(default)]
    pub ast_value: Option<serde_json::Value>,
    #[serde(default)]
    pub dialect: Option<serde_json::Value>,
    #[serde(default)]
    pub now: String,
    #[serde(default)]
    pub bucket: RawStr,
    #[serde(default)]
    pub prefer_no_content: bool,
    #[serde(default)]
    pub prefer_no_content_with_error: bool,
    #[serde(default)]
    pub validate_error: Option<String>,
    #[serde(default)]
    pub compiler: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct V2Write {
    pub bucket: RawStr,
    pub org: RawStr,
    pub precision: RawStr,
    pub db_1_8: RawStr,
    pub rp_1_8: RawStr,
    #[serde(default)]
    pub error_1_8: Option<String>,
    pub body: WriteBody,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct V3Query {
    #[serde(default)]
    pub db: RawStr,
    #[serde(default)]
    pub q: RawStr,
    #[serde(default)]
    pub format: RawStr,
    #[serde(default)]
    pub params: RawStr,
    #[serde(default)]
    pub error: Option<String>,
    pub url: BTreeMap<String, RawStr>,
    #[serde(default)]
    pub url_error: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct V3Write {
    pub url: BTreeMap<String, RawStr>,
    #[serde(default)]
    pub url_error: Option<String>,
    pub body: WriteBody,
}
