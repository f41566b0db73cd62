//! `Content-Encoding` on query bodies. InfluxDB 1.x never decodes a
//! `/query` body (serveQuery hands r.Body to Go's form parser raw), so what
//! the proxy decodes to decide must not be what it forwards: the forwarded
//! request is rebuilt, or refused. Writes keep their encoding (the body
//! streams untouched; serveWrite gunzips only an exact `gzip`).

use std::io::Write as _;

use flate2::{Compression, GzBuilder};

use crate::harness::{Case, Env, Grant, assert_all_grants, assert_forwarded_faithfully};

const FORM: &str = "application/x-www-form-urlencoded";

/// One gzip member of `data`, with optional header fields.
pub fn member(
    data: &[u8],
    name: Option<&[u8]>,
    comment: Option<&[u8]>,
    extra: Option<&[u8]>,
) -> Vec<u8> {
    let mut b = GzBuilder::new();
    if let Some(n) = name {
        b = b.filename(n);
    }
    if let Some(c) = comment {
        b = b.comment(c);
    }
    if let Some(e) = extra {
        b = b.extra(e);
    }
    let mut w = b.write(Vec::new(), Compression::default());
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

pub fn gz(data: &[u8]) -> Vec<u8> {
    member(data, None, None, None)
}

fn gz_form(name: &str, encoding: &str, body: Vec<u8>) -> Case {
    Case::new(name, "POST", "/query?db=x")
        .header("Content-Type", FORM)
        .header("Content-Encoding", encoding)
        .body(body)
}

const SMUGGLED: &[u8] = b"&q=SELECT+*+FROM+secret..cpu&";

#[tokio::test]
async fn form_after_the_gzip_member_is_not_read_by_the_database_only() {
    // The headline: the proxy gunzips the member and sees
    // `SELECT * FROM m`; Go's form parser reads the raw bytes and finds the
    // second q after the member.
    let mut body = gz(b"q=SELECT+*+FROM+m");
    body.extend_from_slice(SMUGGLED);
    assert_all_grants(&[
        gz_form("q after the member", "gzip", body.clone()),
        gz_form("q after the member, GZIP", "GZIP", body.clone()),
        gz_form("q after the member, x-gzip", "x-gzip", body.clone()),
        gz_form("q after the member, gzip list", "gzip, identity", body),
    ])
    .await;
}

#[tokio::test]
async fn form_in_gzip_header_fields() {
    let q = b"q=SELECT+*+FROM+m";
    assert_all_grants(&[
        gz_form("q in FNAME", "gzip", member(q, Some(SMUGGLED), None, None)),
        gz_form(
            "q in FCOMMENT",
            "gzip",
            member(q, None, Some(SMUGGLED), None),
        ),
        gz_form("q in FEXTRA", "gzip", member(q, None, None, Some(SMUGGLED))),
        gz_form(
            "q in FNAME, GZIP",
            "GZIP",
            member(q, Some(SMUGGLED), None, None),
        ),
    ])
    .await;
}

#[tokio::test]
async fn several_members_and_trailing_bytes() {
    let mut two = gz(b"q=SELECT+*+FROM+m");
    two.extend(gz(b"&db=secret"));
    let mut trailing = gz(b"q=SELECT+*+FROM+m&db=x");
    trailing.extend_from_slice(b"\0\0\0\0");
    assert_all_grants(&[
        gz_form("two members", "gzip", two),
        gz_form("trailing zero bytes", "gzip", trailing),
        gz_form("not gzip at all", "gzip", b"q=SELECT+*+FROM+m".to_vec()),
        gz_form("identity", "identity", b"q=SELECT+*+FROM+m".to_vec()),
        gz_form("deflate", "deflate", b"q=SELECT+*+FROM+m".to_vec()),
    ])
    .await;
}

#[tokio::test]
async fn empty_body_with_gzip_declared_is_an_empty_body() {
    // The Python `influxdb` client with gzip=True declares gzip on every
    // request, including POST /query with the query in the URL and no body;
    // InfluxDB answers 200 (issue 13, last item).
    let env = Env::start(Grant::Everything).await;
    for (name, target) in [
        (
            "SELECT through POST, empty gzip body",
            "/query?db=x&q=SELECT+*+FROM+m",
        ),
        (
            "SELECT INTO through POST, empty gzip body",
            "/query?db=x&q=SELECT+*+INTO+x..m2+FROM+m",
        ),
    ] {
        let case = Case::new(name, "POST", target)
            .header("Content-Encoding", "gzip")
            .header("Content-Type", FORM);
        assert_forwarded_faithfully(&env, &case).await;
    }
}

#[tokio::test]
async fn gzip_form_bodies_read_as_influxdb_reads_them() {
    // A well-formed gzip form body: InfluxDB does not decode it, so it sees
    // no q in the body. Forwarding it decoded would make the database run a
    // query it never would have; either refuse, or keep the meaning.
    assert_all_grants(&[gz_form(
        "well-formed gzip form body",
        "gzip",
        gz(b"q=SELECT+*+FROM+m&db=x"),
    )])
    .await;
}

#[tokio::test]
async fn write_bodies_keep_their_encoding() {
    let env = Env::start(Grant::Everything).await;
    let mut two = gz(b"m v=1 1\n");
    two.extend(gz(b"m v=2 2\n"));
    for case in [
        Case::new("gzip write", "POST", "/write?db=x")
            .header("Content-Encoding", "gzip")
            .body(gz(b"m v=1 1\n")),
        Case::new("two-member gzip write", "POST", "/write?db=x")
            .header("Content-Encoding", "gzip")
            .body(two),
        Case::new("v2 gzip write", "POST", "/api/v2/write?bucket=x&org=o")
            .header("Content-Encoding", "gzip")
            .body(gz(b"m v=1 1\n")),
    ] {
        assert_forwarded_faithfully(&env, &case).await;
    }
}
