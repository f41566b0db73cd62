//! Criterion micro-benchmarks of the per-request work fluxgate does before it
//! forwards anything (the decision cache's hit path is in `cache_hit.rs`):
//!
//! - `credentials/*`: reading the token from `Authorization: Token …`,
//!   `Bearer …` and `Basic base64(user:token)`.
//! - `classify/*`: routing a path, parsing the query string, and reading
//!   and planning (request → needs, and its canonical form) a v1 write, a v1
//!   InfluxQL query of three statements and a Flux query;
//!   `classify/request_v1_write` is the three together, which is what a
//!   write costs before the cache is asked.
//! - `influxql/*`: scanning a long multi-statement InfluxQL query (64
//!   statements, ~7 KiB), reported as throughput in bytes.
//!
//! - `hot_path/*`: pieces of every request's path measured apart: the
//!   framing watch following a request head as it is read
//!   (`framing_watch_head`, a new connection's first head;
//!   `framing_watch_next_head`, a later head on an open one), and a connection's memo answering for its
//!   token (`memo_recall`, the token compared in constant time).
//!
//! `cargo bench --bench micro` runs them; any criterion filter works
//! (`cargo bench --bench micro -- influxql`).
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use base64::Engine as _;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fluxgate::credentials::from_authorization;
use fluxgate::proxy::classify::influxql::parse_statements;
use fluxgate::proxy::classify::route::{Route, route};
use fluxgate::proxy::classify::{self, Plan};
use fluxgate::proxy::read::params::Params;
use fluxgate::proxy::read::{self, Write};
use http::{HeaderMap, Method};

/// A token shaped like fluxgate's (prefix + 64 base64url characters).
const TOKEN: &str = "fgdb_REblMk0vhRoZR2c-R5TZtRN21tFWxvuYYODIjQwRWotZ4_iVRtzHn1-55wPZ7Ur1";

const V1_QUERY: &str = "SELECT mean(\"usage_idle\") FROM \"telegraf\".\"autogen\".\"cpu\" \
     WHERE time > now() - 1h AND \"host\" = 'a' GROUP BY time(1m), \"host\" fill(null); \
     SELECT last(\"used_percent\") FROM \"metrics\"..\"mem\" WHERE time > now() - 5m; \
     SELECT max(\"bytes_recv\") INTO \"rollups\"..\"net_1h\" FROM \"net\" GROUP BY time(1h), *";

const FLUX: &str = r#"import "influxdata/influxdb/schema"
option task = {name: "downsample", every: 1h}
data = from(bucket: "telegraf/autogen")
  |> range(start: -1h)
  |> filter(fn: (r) => r._measurement == "cpu" and r._field == "usage_idle")
  |> aggregateWindow(every: 1m, fn: mean, createEmpty: false)
data |> yield(name: "mean")
other = from(bucket: "metrics") |> range(start: -5m) |> last()
other |> to(bucket: "rollups")"#;

/// The load benchmark's v1 query (`benches/load.rs`).
const LOAD_QUERY: &str =
    "SELECT mean(\"usage_idle\") FROM \"cpu\" WHERE time > now() - 1h GROUP BY time(1m), \"host\"";

fn long_influxql() -> String {
    let mut q = String::new();
    for i in 0..64 {
        q.push_str(&format!(
            "SELECT mean(\"value_{i}\") AS \"m\", max(\"value_{i}\") FROM \"db{d}\".\"autogen\".\"measurement_{i}\" \
             WHERE time > now() - {i}h AND \"tag\" =~ /^host-{i}[0-9]+$/ -- comment {i}\n\
             GROUP BY time(1m), \"host\";\n",
            d = i % 4
        ));
    }
    q
}

fn credentials(c: &mut Criterion) {
    let mut g = c.benchmark_group("credentials");
    let token = format!("Token {TOKEN}");
    let bearer = format!("Bearer {TOKEN}");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("telegraf:{TOKEN}"))
    );
    for (name, value) in [("token", &token), ("bearer", &bearer), ("basic", &basic)] {
        g.bench_function(name, |b| {
            b.iter(|| from_authorization(black_box(value.as_bytes())).unwrap());
        });
    }
    g.finish();
}

fn classification(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    g.bench_function("route_v1_write", |b| {
        b.iter(|| {
            route(
                black_box(&Method::POST),
                black_box("/write"),
                Default::default(),
            )
            .unwrap()
        });
    });
    g.bench_function("route_v3_query_sql", |b| {
        b.iter(|| {
            route(
                black_box(&Method::GET),
                black_box("/api/v3/query_sql"),
                Default::default(),
            )
            .unwrap()
        });
    });
    let write_qs = "db=telegraf&rp=autogen&precision=ns";
    g.bench_function("params_v1_write", |b| {
        b.iter(|| Params::parse(black_box(Some(write_qs))).unwrap());
    });
    let query_qs = format!(
        "db=telegraf&epoch=ms&q={}",
        percent_encoding::utf8_percent_encode(V1_QUERY, percent_encoding::NON_ALPHANUMERIC)
    );
    g.bench_function("params_v1_query", |b| {
        b.iter(|| Params::parse(black_box(Some(query_qs.as_str()))).unwrap());
    });

    let write_params = Params::parse(Some(write_qs)).unwrap();
    g.bench_function("plan_v1_write", |b| {
        b.iter(|| {
            let write = Write::read(Route::V1Write, black_box(&write_params), None);
            (
                classify::write(Route::V1Write, &write).unwrap(),
                write.canonical(),
            )
        });
    });
    let query_params = Params::parse(Some(&query_qs)).unwrap();
    let v1_query = || {
        let query = read::influxql(
            &Method::GET,
            &query_params,
            &HeaderMap::new(),
            Default::default(),
        )
        .unwrap();
        (classify::v1_query(&query).unwrap(), query.canonical())
    };
    g.bench_function("plan_v1_query_3_statements", |b| {
        b.iter(|| black_box(v1_query()));
    });
    // The load benchmark's v1 query, from its query string to its plan and
    // canonical form: everything v1 query does that a write does not.
    let load_qs = format!(
        "db=bench&epoch=ms&q={}",
        percent_encoding::utf8_percent_encode(LOAD_QUERY, percent_encoding::NON_ALPHANUMERIC)
    );
    let load_query = || {
        let params = Params::parse(Some(black_box(load_qs.as_str()))).unwrap();
        let query =
            read::influxql(&Method::GET, &params, &HeaderMap::new(), Default::default()).unwrap();
        (classify::v1_query(&query).unwrap(), query.canonical())
    };
    g.bench_function("request_v1_query_load", |b| {
        b.iter(|| black_box(load_query()));
    });
    let flux = serde_json::json!({ "query": FLUX, "type": "flux" }).to_string();
    let json_headers = HeaderMap::new();
    g.bench_function("plan_flux", |b| {
        b.iter(|| {
            let query = read::flux(&json_headers, black_box(flux.clone().into())).unwrap();
            (classify::flux(&query).unwrap(), query.to_json())
        });
    });
    g.bench_function("request_v1_write", |b| {
        let header = format!("Token {TOKEN}");
        b.iter(|| {
            let (_, r) = route(&Method::POST, black_box("/write"), Default::default()).unwrap();
            let params = Params::parse(black_box(Some(write_qs))).unwrap();
            let token = from_authorization(black_box(header.as_bytes())).unwrap();
            let write = Write::read(r, &params, None);
            let plan = classify::write(r, &write).unwrap();
            (token, plan, write.canonical())
        });
    });
    g.finish();
    // The plan is what it should be (guards against benchmarking an error path).
    assert!(matches!(v1_query().0, Plan::Needs(n) if n.len() == 3));
    assert!(matches!(load_query().0, Plan::Needs(n) if n.len() == 1));
}

fn influxql(c: &mut Criterion) {
    let mut g = c.benchmark_group("influxql");
    let long = long_influxql();
    g.throughput(Throughput::Bytes(long.len() as u64));
    g.bench_function(format!("scan_64_statements_{}B", long.len()), |b| {
        b.iter(|| parse_statements(black_box(&long)).unwrap());
    });
    g.throughput(Throughput::Bytes(V1_QUERY.len() as u64));
    g.bench_function("scan_3_statements", |b| {
        b.iter(|| parse_statements(black_box(V1_QUERY)).unwrap());
    });
    g.throughput(Throughput::Bytes(LOAD_QUERY.len() as u64));
    g.bench_function("scan_load_query", |b| {
        b.iter(|| parse_statements(black_box(LOAD_QUERY)).unwrap());
    });
    g.finish();
    assert_eq!(parse_statements(&long).unwrap().len(), 64);
}

fn hot_path(c: &mut Criterion) {
    use std::task::{Context, Poll, Waker};
    use std::time::{Duration, Instant};

    use fluxgate::authz::memo::Memo;
    use fluxgate::authz::{CacheUse, Need, NeedDecision, Verdict};
    use fluxgate::credentials::Token;
    use fluxgate::proxy::framing::FramingWatch;
    use tokio::io::{AsyncRead, ReadBuf};

    let mut g = c.benchmark_group("hot_path");
    // The load benchmark's v1 query, as a client library sends it.
    let head = format!(
        "GET /query?db=bench&epoch=ms&q={} HTTP/1.1\r\nhost: 127.0.0.1:8086\r\n\
         authorization: Token {TOKEN}\r\nuser-agent: influxdb-client-python/1.49\r\n\
         accept: application/json\r\naccept-encoding: gzip\r\n\r\n",
        percent_encoding::utf8_percent_encode(
            "SELECT mean(\"usage_idle\") FROM \"cpu\" WHERE time > now() - 1h GROUP BY time(1m), \"host\"",
            percent_encoding::NON_ALPHANUMERIC
        )
    );
    let mut out = vec![0u8; 4096];
    let mut cx = Context::from_waker(Waker::noop());
    g.bench_function("framing_watch_head", |b| {
        b.iter(|| {
            let (mut watch, flag) = FramingWatch::new(black_box(head.as_bytes()));
            let mut buf = ReadBuf::new(&mut out);
            let read = std::pin::Pin::new(&mut watch).poll_read(&mut cx, &mut buf);
            assert!(matches!(read, Poll::Ready(Ok(()))));
            flag.seen()
        });
    });

    // The same head on a connection already open: what each request pays
    // (the watch, its flag and its head progress are made once per
    // connection).
    /// A connection that sends the same head on every read.
    struct Heads<'a>(&'a [u8]);
    impl AsyncRead for Heads<'_> {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            buf.put_slice(black_box(self.0));
            Poll::Ready(Ok(()))
        }
    }
    let (mut watch, flag) = FramingWatch::new(Heads(head.as_bytes()));
    g.bench_function("framing_watch_next_head", |b| {
        b.iter(|| {
            let mut buf = ReadBuf::new(&mut out);
            let read = std::pin::Pin::new(&mut watch).poll_read(&mut cx, &mut buf);
            assert!(matches!(read, Poll::Ready(Ok(()))));
            flag.seen()
        });
    });

    let token = Token::new(TOKEN.as_bytes().to_vec()).unwrap();
    let same = Token::new(TOKEN.as_bytes().to_vec()).unwrap();
    let needs = [Need::read("bench")];
    let now = Instant::now();
    let memo = Memo::new();
    memo.remember(
        1,
        &token,
        &needs,
        &Verdict {
            decisions: vec![NeedDecision::Allowed {
                subject: "a1b2c3d4-0000-4000-8000-000000000000".into(),
            }],
            expires_at: None,
            cache: CacheUse::Hit,
            reusable_until: Some(now + Duration::from_secs(3600)),
        },
        now,
    );
    g.bench_function("memo_recall", |b| {
        b.iter(|| memo.recall(1, black_box(&same), &needs, now).unwrap());
    });
    g.finish();
}

criterion_group!(benches, credentials, classification, influxql, hot_path);
criterion_main!(benches);
