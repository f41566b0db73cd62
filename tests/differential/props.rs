//! Property tests: generated odd requests for each reader, each sent to a
//! proxy that grants read on `x` only and to one that grants everything;
//! every one must be refused (nothing reaches the oracle) or forwarded in
//! canonical form meaning what the original meant and authorized for
//! exactly that. `PROPTEST_CASES` overrides the number of cases.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::flux::{READ_SECRET, READ_X, ast_reading, extern_reading};
use crate::gzip::member;
use crate::harness::{Case, Env, Grant};
use crate::multipart::{Part, body as multipart_body, part};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Runs `strategy`'s cases through both proxies.
fn check(strategy: impl Strategy<Value = Case>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let envs = rt.block_on(async {
        (
            Env::start(Grant::ReadX).await,
            Env::start(Grant::Everything).await,
        )
    });
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    });
    let result = runner.run(&strategy, |case| {
        for env in [&envs.0, &envs.1] {
            let outcome = rt.block_on(env.run(&case));
            let violations = outcome.violations();
            if !violations.is_empty() {
                return Err(TestCaseError::fail(format!(
                    "(grant {:?})\n{}",
                    env.authorizer.grant(),
                    outcome.report(&violations)
                )));
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------- forms

fn form_key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "q",
        "q",
        "q",
        "db",
        "db",
        "rp",
        "Q",
        "DB",
        "%71",
        "%64b",
        "q+",
        "",
        "p",
        "u",
        "epoch",
        "chunked",
        "chunk_size",
        "pretty",
        "params",
        "x",
        "q;x",
        "node_id",
        "async",
        "time_format",
    ])
}

fn form_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "SELECT+*+FROM+m",
            "SELECT+*+FROM+secret..cpu",
            "SELECT+*+FROM+x..m",
            "SELECT%20*%20FROM%20m",
            "SELECT+*+FROM+m%zz",
            "SELECT+*+FROM+m%",
            "SELECT+*+FROM+%22a%E2%82b%22..m",
            "SELECT+*+FROM+m%3BSELECT+*+FROM+secret..cpu",
            "SELECT+*+FROM+m;SELECT+*+FROM+secret..cpu",
            "SHOW+MEASUREMENTS",
            "DROP+DATABASE+secret",
            "x",
            "secret",
            "",
            "x%FF",
            "x;",
            "true",
            "%7B%22db%22%3A%7B%22identifier%22%3A%22secret%22%7D%7D",
        ])
        .prop_map(str::to_owned),
        "[a-z%+;=&]{0,8}",
    ]
}

/// `key=value` pairs joined by `sep`.
fn join(pairs: Vec<(&str, String, bool)>, sep: &str) -> String {
    pairs
        .into_iter()
        .map(|(k, v, eq)| {
            if eq || !v.is_empty() {
                format!("{k}={v}")
            } else {
                k.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(sep)
}

/// A plausible base (some of `q=SELECT * FROM m`, `db=x`) with up to three
/// generated pairs inserted anywhere.
fn pairs() -> impl Strategy<Value = String> {
    (
        prop::sample::subsequence(vec![("q", "SELECT+*+FROM+m"), ("db", "x")], 0..=2),
        prop::collection::vec(
            (
                form_key(),
                form_value(),
                any::<bool>(),
                any::<prop::sample::Index>(),
            ),
            0..3,
        ),
        prop::sample::select(vec!["&", "&", "&", "&&", ";"]),
    )
        .prop_map(|(base, extra, sep)| {
            let mut pairs: Vec<(&str, String, bool)> = base
                .into_iter()
                .map(|(k, v)| (k, v.to_owned(), true))
                .collect();
            for (k, v, eq, at) in extra {
                let at = at.index(pairs.len() + 1);
                pairs.insert(at, (k, v, eq));
            }
            join(pairs, sep)
        })
}

fn form_case() -> impl Strategy<Value = Case> {
    (
        pairs(),
        pairs(),
        any::<bool>(),
        prop::sample::select(vec![
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; charset=utf-8",
            "Application/X-WWW-Form-Urlencoded",
            "text/plain",
        ]),
    )
        .prop_map(|(url, body, get, ct)| {
            let target = format!("/query?{url}");
            if get {
                Case::new("generated GET form", "GET", target)
            } else {
                Case::new("generated POST form", "POST", target)
                    .header("Content-Type", ct)
                    .body(body)
            }
        })
}

#[test]
fn generated_forms() {
    check(form_case());
}

// ---------------------------------------------------------------- gzip

fn smuggle() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![
        b"&q=SELECT+*+FROM+secret..cpu&".to_vec(),
        b"&db=secret&".to_vec(),
        b"\0\0\0\0".to_vec(),
        b"".to_vec(),
    ])
}

fn gzip_case() -> impl Strategy<Value = Case> {
    let segment = prop_oneof![
        (
            prop::sample::select(vec![
                "q=SELECT+*+FROM+m",
                "q=SELECT+*+FROM+m&db=x",
                "db=x",
                ""
            ]),
            prop::option::of(smuggle()),
            prop::option::of(smuggle()),
            prop::option::of(smuggle()),
        )
            .prop_map(|(form, name, comment, extra)| {
                // FNAME / FCOMMENT are NUL-terminated: keep NULs out.
                let clean = |v: Option<Vec<u8>>| {
                    v.map(|b| b.into_iter().filter(|&c| c != 0).collect::<Vec<u8>>())
                };
                member(
                    form.as_bytes(),
                    clean(name).as_deref(),
                    clean(comment).as_deref(),
                    extra.as_deref(),
                )
            }),
        smuggle(),
    ];
    (
        prop::collection::vec(segment, 0..3),
        prop::collection::vec(
            prop::sample::select(vec![
                "gzip",
                "gzip",
                "GZIP",
                "Gzip",
                "x-gzip",
                "gzip, identity",
                "identity",
                " gzip",
                "",
            ]),
            0..3,
        ),
        prop::sample::select(vec![
            "/query?db=x",
            "/query?db=x&q=SELECT+*+FROM+m",
            "/query",
        ]),
    )
        .prop_map(|(segments, encodings, target)| {
            let mut case = Case::new("generated gzip body", "POST", target)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(segments.concat());
            for e in encodings {
                case = case.header("Content-Encoding", e);
            }
            case
        })
}

#[test]
fn generated_gzip_bodies() {
    check(gzip_case());
}

// ---------------------------------------------------------------- multipart

fn multipart_part() -> impl Strategy<Value = Part> {
    (
        prop::sample::select(vec!["form-data", "form-data", "FORM-DATA", "attachment", "inline"]),
        prop::sample::select(vec![
            "name=\"q\"",
            "name=q",
            "name=\"db\"",
            "name=\"comment\"; name*=UTF-8''q",
            "name=\"comment\"; name*0=\"q\"",
            "name=\"q\"; filename=\"q.txt\"",
            "name=\"q\"; name=\"x\"",
        ]),
        prop::option::of(prop::sample::select(vec![
            "Content-Disposition: form-data; name=\"comment\"",
            "Content-Disposition: form-data; name=\"q\"",
        ])),
        prop::sample::select(vec!["", "quoted-printable", "QUOTED-PRINTABLE", "base64", "7bit"]),
        prop::sample::select(vec![
            "SELECT * FROM m",
            "SELECT * FROM secret..cpu",
            "x",
            "SELECT * FROM m WHERE t = '=27; SELECT * FROM secret..cpu; SELECT * FROM m WHERE t = =27'",
            "SELECT * FROM m=3B SELECT * FROM secret..cpu",
            "   ",
        ]),
        any::<bool>(),
    )
        .prop_map(|(disposition, params, repeated, cte, value, disposition_first)| {
            let cd = format!("Content-Disposition: {disposition}; {params}");
            let mut headers: Vec<String> = Vec::new();
            if let Some(r) = repeated {
                if disposition_first {
                    headers.push(cd.clone());
                    headers.push(r.to_owned());
                } else {
                    headers.push(r.to_owned());
                    headers.push(cd.clone());
                }
            } else {
                headers.push(cd);
            }
            if !cte.is_empty() {
                headers.push(format!("Content-Transfer-Encoding: {cte}"));
            }
            let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
            part(&refs, value.as_bytes())
        })
}

fn multipart_case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(multipart_part(), 1..4),
        prop::sample::select(vec![
            ("XX", "multipart/form-data; boundary=XX"),
            ("a b", "multipart/form-data; boundary=\"a b\""),
            ("XX", "Multipart/Form-Data; boundary=XX"),
            ("XX", "multipart/form-data; boundary=XX; boundary=YY"),
            ("XX", "multipart/mixed; boundary=XX"),
        ]),
        prop::sample::select(vec!["\r\n", "\r\n", "\n"]),
        prop::sample::select(vec![
            "",
            "--XX\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\nSELECT * FROM secret..cpu\r\n",
        ]),
        prop::sample::select(vec![
            "",
            "--XX\r\nContent-Disposition: form-data; name=\"db\"\r\n\r\nsecret\r\n--XX--\r\n",
        ]),
        prop::sample::select(vec!["/query?db=x", "/query", "/query?db=x&q=SELECT+*+FROM+m"]),
    )
        .prop_map(|(parts, (boundary, ct), nl, preamble, epilogue, target)| {
            Case::new("generated multipart body", "POST", target)
                .header("Content-Type", ct)
                .body(multipart_body(boundary, nl, preamble, &parts, epilogue))
        })
}

#[test]
fn generated_multipart_bodies() {
    check(multipart_case());
}

// ---------------------------------------------------------------- JSON

fn flux_entry() -> impl Strategy<Value = String> {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let query_values = vec![
        q(READ_X),
        q(READ_SECRET),
        q(""),
        "null".to_owned(),
        q(r#"from(bucket: "x/y") |> range(start: -1h)"#),
    ];
    let ext = extern_reading("secret").to_string();
    let ast = ast_reading("secret").to_string();
    prop_oneof![
        (
            prop::sample::select(vec![
                "query",
                "query",
                "Query",
                "QUERY",
                "\\u0071uery",
                "qu\\u0065ry"
            ]),
            prop::sample::select(query_values),
        )
            .prop_map(|(k, v)| format!("\"{k}\":{v}")),
        (
            prop::sample::select(vec!["type", "TYPE", "Type"]),
            prop::sample::select(vec!["\"flux\"", "\"influxql\"", "\"FLUX\""]),
        )
            .prop_map(|(k, v)| format!("\"{k}\":{v}")),
        (
            prop::sample::select(vec!["extern", "Extern"]),
            prop::sample::select(vec!["null".to_owned(), "{}".to_owned(), ext]),
        )
            .prop_map(|(k, v)| format!("\"{k}\":{v}")),
        prop::sample::select(vec!["ast", "AST", "a\\u017ft"])
            .prop_map(move |k| format!("\"{k}\":{ast}")),
        prop::sample::select(vec![
            r#""dialect":{"header":true,"annotations":["datatype"]}"#,
            r#""now":"2020-01-01T00:00:00Z""#,
            r#""foo":1"#,
            r#""prefernocontent":true"#,
            r#""bucket":"secret""#,
            r#""buc\u212Aet":"secret""#,
        ])
        .prop_map(str::to_owned),
    ]
}

fn json_case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(flux_entry(), 0..4),
        any::<prop::sample::Index>(),
        prop::sample::select(vec!["", "", "", "\u{feff}"]),
        prop::sample::select(vec![
            "",
            "",
            " ",
            "garbage",
            "{\"query\":\"from(bucket: \\\"secret\\\")\"}",
        ]),
        prop::sample::select(vec![
            "application/json",
            "application/json",
            "text/plain",
            "application/json; charset=utf-8",
            "",
        ]),
        prop::sample::select(vec![false, false, false, true]),
    )
        .prop_map(|(mut entries, at, bom, trailing, ct, gzip)| {
            let base = format!("\"query\":{}", serde_json::to_string(READ_X).unwrap());
            entries.insert(at.index(entries.len() + 1), base);
            let text = format!("{bom}{{{}}}{trailing}", entries.join(","));
            let body = if gzip {
                member(text.as_bytes(), None, None, None)
            } else {
                text.into_bytes()
            };
            let mut case =
                Case::new("generated Flux JSON", "POST", "/api/v2/query?org=o").body(body);
            if !ct.is_empty() {
                case = case.header("Content-Type", ct);
            }
            if gzip {
                case = case.header("Content-Encoding", "gzip");
            }
            case
        })
}

#[test]
fn generated_flux_json() {
    check(json_case());
}

fn v3_case() -> impl Strategy<Value = Case> {
    let entry = (
        prop::sample::select(vec![
            "db", "db", "Db", "\\u0064b", "q", "q", "Q", "format", "params", "x",
        ]),
        prop::sample::select(vec![
            "\"x\"",
            "\"secret\"",
            "\"SELECT 1\"",
            "\"SELECT * FROM m\"",
            "{\"h\":\"a\"}",
            "null",
        ]),
    )
        .prop_map(|(k, v)| format!("\"{k}\":{v}"));
    (
        prop::collection::vec(entry, 0..4),
        prop::sample::select(vec!["/api/v3/query_sql", "/api/v3/query_influxql"]),
        prop::sample::select(vec!["", "", "\u{feff}"]),
        prop::sample::select(vec!["", "", "{}", "x"]),
        any::<bool>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut entries, path, bom, trailing, gzip, at)| {
            entries.insert(
                at.index(entries.len() + 1),
                "\"db\":\"x\",\"q\":\"SELECT * FROM m\"".to_owned(),
            );
            let text = format!("{bom}{{{}}}{trailing}", entries.join(","));
            let body = if gzip {
                member(text.as_bytes(), None, None, None)
            } else {
                text.into_bytes()
            };
            let mut case = Case::new("generated v3 JSON", "POST", path)
                .header("Content-Type", "application/json")
                .body(body);
            if gzip {
                case = case.header("Content-Encoding", "gzip");
            }
            case
        })
}

#[test]
fn generated_v3_json() {
    check(v3_case());
}

// ---------------------------------------------------------------- params

fn params_case() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(vec![
            "SELECT * FROM $p..cpu",
            "SELECT * FROM $p",
            "SELECT * FROM \"$p\"",
            "SELECT * FROM $\"p\"..cpu",
            "SHOW MEASUREMENTS ON $p",
            "SHOW TAG KEYS ON $p FROM m",
            "SELECT * FROM m WHERE h = $p",
            "SELECT * FROM m WHERE h =~ $p",
            "SELECT * INTO $p..m FROM m",
            "SELECT * FROM x.$p.m",
            "SELECT * FROM m -- $p",
        ]),
        prop::sample::select(vec![
            r#"{"identifier":"secret"}"#,
            r#"{"ident":"secret"}"#,
            r#"{"identifier":"x"}"#,
            r#"{"IDENTIFIER":"secret"}"#,
            r#""secret""#,
            r#"{"string":"secret"}"#,
            r#"{"regex":".*"}"#,
            "1",
            "1.5",
            r#"{"identifier":"secret","string":"x"}"#,
        ]),
        prop::sample::select(vec!["p", "P", "q"]),
        any::<bool>(),
    )
        .prop_map(|(query, value, name, get)| {
            let params = format!("{{\"{name}\":{value}}}");
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("db", "x")
                .append_pair("q", query)
                .append_pair("params", &params)
                .finish();
            if get {
                Case::new(
                    "generated bound parameters",
                    "GET",
                    format!("/query?{form}"),
                )
            } else {
                Case::new("generated bound parameters", "POST", "/query")
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(form)
            }
        })
}

#[test]
fn generated_bound_parameters() {
    check(params_case());
}
