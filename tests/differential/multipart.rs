//! `multipart/form-data` `/query` bodies. InfluxDB reads them with Go's
//! mime/multipart through Request.ParseMultipartForm: URL values come
//! before the parts' values (so the URL's first value wins), parts are
//! named by the *first* Content-Disposition header, `name*=` (RFC 2231)
//! beats `name=`, only `form-data` dispositions count, quoted-printable is
//! decoded, parts with a filename are files (the `q` file is read when no
//! `q` value is given), the boundary may be quoted, LF-only line ends are
//! accepted, and a preamble and an epilogue are ignored.

use crate::harness::{Case, Env, Grant, assert_all_grants, assert_forwarded_faithfully};

/// A part: raw header lines and a body.
#[derive(Debug, Clone)]
pub struct Part {
    pub headers: Vec<String>,
    pub body: Vec<u8>,
}

pub fn part(headers: &[&str], body: &[u8]) -> Part {
    Part {
        headers: headers.iter().map(|h| (*h).to_owned()).collect(),
        body: body.to_vec(),
    }
}

pub fn field(name: &str, body: &[u8]) -> Part {
    part(
        &[&format!("Content-Disposition: form-data; name=\"{name}\"")],
        body,
    )
}

/// Assembles a body with `boundary` and line ending `nl`.
pub fn body(boundary: &str, nl: &str, preamble: &str, parts: &[Part], epilogue: &str) -> Vec<u8> {
    let mut out = preamble.as_bytes().to_vec();
    for p in parts {
        out.extend_from_slice(format!("--{boundary}{nl}").as_bytes());
        for h in &p.headers {
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(nl.as_bytes());
        }
        out.extend_from_slice(nl.as_bytes());
        out.extend_from_slice(&p.body);
        out.extend_from_slice(nl.as_bytes());
    }
    out.extend_from_slice(format!("--{boundary}--{nl}").as_bytes());
    out.extend_from_slice(epilogue.as_bytes());
    out
}

fn case(name: &str, target: &str, content_type: &str, body: Vec<u8>) -> Case {
    Case::new(name, "POST", target)
        .header("Content-Type", content_type)
        .body(body)
}

fn simple(name: &str, parts: &[Part]) -> Case {
    case(
        name,
        "/query?db=x",
        "multipart/form-data; boundary=XX",
        body("XX", "\r\n", "", parts, ""),
    )
}

#[tokio::test]
async fn plain_multipart_queries_are_forwarded_faithfully() {
    let env = Env::start(Grant::ReadX).await;
    assert_forwarded_faithfully(
        &env,
        &case(
            "q and db as form-data fields",
            "/query",
            "multipart/form-data; boundary=XX",
            body(
                "XX",
                "\r\n",
                "",
                &[field("q", b"SELECT * FROM m"), field("db", b"x")],
                "",
            ),
        ),
    )
    .await;
}

#[tokio::test]
async fn quoted_printable_parts() {
    // Go decodes quoted-printable: `=27` closes the string literal, and the
    // rest becomes a second statement.
    let qp = part(&["Content-Disposition: form-data; name=\"q\"",
            "Content-Transfer-Encoding: quoted-printable"], b"SELECT * FROM m WHERE t = '=27; SELECT * FROM secret..cpu; SELECT * FROM m WHERE t = =27'");
    let qp_upper = part(
        &[
            "Content-Disposition: form-data; name=\"q\"",
            "Content-Transfer-Encoding: QUOTED-PRINTABLE",
        ],
        b"SELECT * FROM m WHERE t = '=27; DROP DATABASE secret; SELECT * FROM m WHERE t = =27'",
    );
    let b64 = part(
        &[
            "Content-Disposition: form-data; name=\"q\"",
            "Content-Transfer-Encoding: base64",
        ],
        b"U0VMRUNUICogRlJPTSBzZWNyZXQuLmNwdQ==",
    );
    assert_all_grants(&[
        simple("quoted-printable q", &[qp]),
        simple("QUOTED-PRINTABLE q, DROP", &[qp_upper]),
        simple("base64 q", &[b64]),
    ])
    .await;
}

#[tokio::test]
async fn repeated_and_extended_dispositions() {
    let first_wins = part(
        &[
            "Content-Disposition: form-data; name=\"q\"",
            "Content-Disposition: form-data; name=\"comment\"",
        ],
        b"SELECT * FROM secret..cpu",
    );
    let rfc2231 = part(
        &["Content-Disposition: form-data; name=\"comment\"; name*=UTF-8''q"],
        b"SELECT * FROM secret..cpu",
    );
    let continuation = part(
        &["Content-Disposition: form-data; name=\"comment\"; name*0=\"q\""],
        b"SELECT * FROM secret..cpu",
    );
    let dup_param = part(
        &["Content-Disposition: form-data; name=\"q\"; name=\"comment\""],
        b"SELECT * FROM secret..cpu",
    );
    assert_all_grants(&[
        simple(
            "repeated Content-Disposition",
            &[first_wins, field("q", b"SELECT * FROM m")],
        ),
        simple("RFC 2231 name*", &[rfc2231, field("q", b"SELECT * FROM m")]),
        simple(
            "RFC 2231 continuation",
            &[continuation, field("q", b"SELECT * FROM m")],
        ),
        simple(
            "duplicate name parameter",
            &[dup_param, field("q", b"SELECT * FROM m")],
        ),
    ])
    .await;
}

#[tokio::test]
async fn dispositions_other_than_form_data() {
    let attachment = part(
        &["Content-Disposition: attachment; name=\"q\""],
        b"SELECT * FROM m",
    );
    let inline_db = part(&["Content-Disposition: inline; name=\"db\""], b"x");
    let upper = part(
        &["Content-Disposition: FORM-DATA; name=\"q\""],
        b"SELECT * FROM m",
    );
    let no_disposition = part(&["Content-Type: text/plain"], b"SELECT * FROM m");
    assert_all_grants(&[
        case(
            "attachment q, URL q",
            "/query?db=x&q=SELECT+*+FROM+secret..cpu",
            "multipart/form-data; boundary=XX",
            body("XX", "\r\n", "", &[attachment], ""),
        ),
        case(
            "inline db",
            "/query",
            "multipart/form-data; boundary=XX",
            body(
                "XX",
                "\r\n",
                "",
                &[field("q", b"SELECT * FROM m"), inline_db],
                "",
            ),
        ),
        simple("FORM-DATA in capitals", &[upper]),
        simple(
            "no disposition",
            &[no_disposition, field("q", b"SELECT * FROM m")],
        ),
    ])
    .await;
}

#[tokio::test]
async fn file_parts() {
    let file_q = part(
        &["Content-Disposition: form-data; name=\"q\"; filename=\"q.txt\""],
        b"SELECT * FROM secret..cpu",
    );
    let blank_q = field("q", b"   ");
    let file_q2 = part(
        &["Content-Disposition: form-data; name=\"q\"; filename=\"q.txt\""],
        b"SELECT * FROM secret..cpu",
    );
    assert_all_grants(&[
        simple("q as a file part", &[file_q]),
        simple("blank q value, q file", &[blank_q, file_q2]),
    ])
    .await;
}

#[tokio::test]
async fn odd_boundaries_preambles_and_epilogues() {
    let parts = || [field("q", b"SELECT * FROM m")];
    let in_epilogue = body(
        "XX",
        "\r\n",
        "",
        &parts(),
        "--XX\r\nContent-Disposition: form-data; name=\"db\"\r\n\r\nsecret\r\n--XX--\r\n",
    );
    let in_preamble = body(
        "XX",
        "\r\n",
        "--XY\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\nSELECT * FROM secret..cpu\r\n",
        &parts(),
        "",
    );
    assert_all_grants(&[
        case(
            "quoted boundary with a space",
            "/query?db=x",
            "multipart/form-data; boundary=\"a b\"",
            body("a b", "\r\n", "", &parts(), ""),
        ),
        case(
            "LF-only line ends",
            "/query?db=x",
            "multipart/form-data; boundary=XX",
            body("XX", "\n", "", &parts(), ""),
        ),
        case(
            "part in the epilogue",
            "/query?db=x",
            "multipart/form-data; boundary=XX",
            in_epilogue,
        ),
        case(
            "part in the preamble",
            "/query?db=x",
            "multipart/form-data; boundary=XX",
            in_preamble,
        ),
        case(
            "two boundary parameters",
            "/query?db=x",
            "multipart/form-data; boundary=XX; boundary=YY",
            body("XX", "\r\n", "", &parts(), ""),
        ),
        case(
            "media type in capitals",
            "/query?db=x",
            "Multipart/Form-Data; boundary=XX",
            body("XX", "\r\n", "", &parts(), ""),
        ),
        case(
            "multipart/mixed",
            "/query?db=x",
            "multipart/mixed; boundary=XX",
            body("XX", "\r\n", "", &parts(), ""),
        ),
    ])
    .await;
}

#[tokio::test]
async fn parts_must_agree_with_the_url() {
    // Go reads the URL's value first for a multipart body, InfluxDB 3 the
    // part's: a parameter unlike in both, or a `pretty` only in a part, is
    // refused; alike, it is forwarded.
    let env = Env::start(Grant::Everything).await;
    let multipart = |name: &str, target: &str, key: &str, value: &[u8]| {
        case(
            name,
            target,
            "multipart/form-data; boundary=XX",
            body(
                "XX",
                "\r\n",
                "",
                &[
                    field("q", b"SELECT * FROM m"),
                    field("db", b"x"),
                    field(key, value),
                ],
                "",
            ),
        )
    };
    for refused in [
        multipart("epoch unlike", "/query?epoch=ms", "epoch", b"ns"),
        multipart("async unlike", "/query?async=false", "async", b"true"),
        multipart("pretty in a part", "/query", "pretty", b"true"),
    ] {
        let outcome = env.run(&refused).await;
        assert_eq!(outcome.reply.status, 400, "{}", outcome.report(&[]));
        assert!(outcome.forwarded.is_none(), "{}", outcome.report(&[]));
    }
    assert_forwarded_faithfully(
        &env,
        &multipart("epoch alike", "/query?epoch=ms", "epoch", b"ms"),
    )
    .await;
}

#[tokio::test]
async fn url_values_come_first_for_multipart() {
    // ParseMultipartForm appends the parts' values after the URL's: for a
    // multipart body the URL's q is the one InfluxDB runs.
    assert_all_grants(&[case(
        "q in the URL and in a part",
        "/query?db=x&q=SELECT+*+FROM+secret..cpu",
        "multipart/form-data; boundary=XX",
        body("XX", "\r\n", "", &[field("q", b"SELECT * FROM m")], ""),
    )])
    .await;
}
