//! The oracle itself, pinned to InfluxDB behaviour these tests rely on
//! (each also confirmed against the real influxd by
//! tests/python/test_bypass_influxdb.py's control test): if Go or the
//! oracle changed, the differential verdicts would silently change too.

use crate::common::oracle::{Oracle, Reading};
use crate::gzip::{gz, member};
use crate::harness::{Case, exchange};
use crate::multipart::{Part, body, field, part};

async fn read(oracle: &Oracle, case: Case) -> Reading {
    let reply = exchange(oracle.addr, &case.raw()).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    serde_json::from_slice(&reply.body).unwrap()
}

fn q(r: &Reading) -> String {
    r.v1_query.as_ref().unwrap().q.lossy()
}

#[tokio::test]
async fn reads_v1_query_forms_as_influxdb() {
    let o = Oracle::start();
    let form = |body: &str| {
        Case::new("", "POST", "/query?q=URL")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
    };
    // urlencoded body values come before the URL's; first value wins.
    assert_eq!(q(&read(&o, form("q=BODY&q=SECOND")).await), "BODY");
    // a pair holding ';' or a bad escape is skipped.
    assert_eq!(q(&read(&o, form("q=A;&x=1")).await), "URL");
    assert_eq!(q(&read(&o, form("q=A%zz")).await), "URL");
    // the body is read raw whatever Content-Encoding says.
    let mut smuggled = gz(b"q=INSIDE");
    smuggled.extend_from_slice(b"&q=AFTER&");
    let r = read(
        &o,
        form("").header("Content-Encoding", "gzip").body(smuggled),
    )
    .await;
    assert_eq!(q(&r), "AFTER");
    let fname = member(b"q=INSIDE", Some(b"&q=FNAME&"), None, None);
    assert_eq!(
        q(&read(&o, form("").header("Content-Encoding", "gzip").body(fname)).await),
        "FNAME"
    );
    // GET ignores the body.
    let get = Case::new("", "GET", "/query?q=URL").body("q=BODY");
    assert_eq!(q(&read(&o, get).await), "URL");
    // invalid UTF-8: bytes kept; the InfluxQL scanner view has one U+FFFD per byte.
    let r = read(&o, Case::new("", "GET", "/query?q=a%E2%82b")).await;
    let v = r.v1_query.unwrap();
    assert_eq!(v.q.0, b"a\xe2\x82b");
    assert_eq!(v.q_text, "a\u{FFFD}\u{FFFD}b");
    // pretty only from the URL.
    let r = read(&o, form("q=A&pretty=true")).await;
    assert!(!r.v1_query.unwrap().pretty);
}

#[tokio::test]
async fn reads_multipart_as_influxdb() {
    let o = Oracle::start();
    let mp = |target: &str, parts: Vec<Part>| {
        Case::new("", "POST", target)
            .header("Content-Type", "multipart/form-data; boundary=XX")
            .body(body("XX", "\r\n", "", &parts, ""))
    };
    // URL values first for multipart.
    assert_eq!(
        q(&read(&o, mp("/query?q=URL", vec![field("q", b"PART")])).await),
        "URL"
    );
    // quoted-printable decoded; first Content-Disposition wins; name* wins;
    // non-form-data skipped; a file q is read when no q value is given.
    let qp = part(
        &[
            "Content-Disposition: form-data; name=\"q\"",
            "Content-Transfer-Encoding: quoted-printable",
        ],
        b"A=3DB",
    );
    assert_eq!(q(&read(&o, mp("/query", vec![qp])).await), "A=B");
    let two = part(
        &[
            "Content-Disposition: form-data; name=\"q\"",
            "Content-Disposition: form-data; name=\"c\"",
        ],
        b"FIRST",
    );
    assert_eq!(q(&read(&o, mp("/query", vec![two])).await), "FIRST");
    let star = part(
        &["Content-Disposition: form-data; name=\"c\"; name*=UTF-8''q"],
        b"STAR",
    );
    assert_eq!(q(&read(&o, mp("/query", vec![star])).await), "STAR");
    let attachment = part(
        &["Content-Disposition: attachment; name=\"q\""],
        b"ATTACHED",
    );
    let r = read(&o, mp("/query", vec![attachment])).await;
    assert_eq!(r.v1_query.unwrap().q_source, "");
    let file = part(
        &["Content-Disposition: form-data; name=\"q\"; filename=\"f\""],
        b"  FILE ",
    );
    let r = read(&o, mp("/query", vec![file])).await;
    let v = r.v1_query.unwrap();
    assert_eq!(
        (v.q_source.as_str(), v.q.lossy().as_str()),
        ("multipart_file", "  FILE ")
    );
}

#[tokio::test]
async fn reads_flux_json_and_params_as_influxdb() {
    let o = Oracle::start();
    let flux = |body: &str| {
        Case::new("", "POST", "/api/v2/query")
            .header("Content-Type", "application/json")
            .body(body.to_owned())
    };
    let r = read(&o, flux(r#"{"query":"A","QUERY":"B"} trailing"#)).await;
    let f = r.flux_query.unwrap();
    assert_eq!((f.query.lossy().as_str(), f.decode_error), ("B", None));
    let r = read(&o, flux(r#"{"query":"","a\u017ft":{"type":"Package"}}"#)).await;
    assert_eq!(r.flux_query.unwrap().compiler, "ast");
    let r = read(&o, flux("\u{feff}{\"query\":\"A\"}")).await;
    assert!(r.flux_query.unwrap().decode_error.is_some());
    // bound parameters: {"identifier": …} binds an identifier.
    let r = read(
        &o,
        Case::new(
            "",
            "GET",
            "/query?q=x&params=%7B%22d%22%3A%7B%22identifier%22%3A%22s%22%7D%2C%22n%22%3A1%7D",
        ),
    )
    .await;
    let params = r.v1_query.unwrap().params.unwrap();
    assert_eq!(params["d"].kind, "identifier");
    assert_eq!(params["n"].kind, "integer");
}
