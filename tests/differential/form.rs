//! `/query` and write parameters read from query strings and
//! `application/x-www-form-urlencoded` bodies (Go: `url.ParseQuery` and
//! `Request.ParseForm`; body values before URL values, first value wins,
//! a pair holding `;` or a malformed `%` escape is skipped, invalid UTF-8
//! kept byte for byte until the InfluxQL scanner makes one U+FFFD per byte).

use crate::harness::{Auth, Case, Env, Grant, assert_all_grants, assert_forwarded_faithfully};

const FORM: &str = "application/x-www-form-urlencoded";

fn post(name: &str, target: &str, body: &str) -> Case {
    Case::new(name, "POST", target)
        .header("Content-Type", FORM)
        .body(body)
}

#[tokio::test]
async fn plain_queries_are_forwarded_faithfully() {
    let env = Env::start(Grant::ReadX).await;
    for case in [
        Case::new("GET", "GET", "/query?db=x&q=SELECT+*+FROM+m"),
        Case::new(
            "GET with epoch and rp",
            "GET",
            "/query?q=SELECT+*+FROM+m&db=x&rp=autogen&epoch=ms",
        ),
        post("POST form", "/query", "q=SELECT+*+FROM+m&db=x"),
        post(
            "POST form, db in the URL",
            "/query?db=x",
            "q=SELECT+%2A+FROM+%22m%22",
        ),
        post(
            "POST chunked",
            "/query",
            "q=SELECT+*+FROM+m&db=x&chunked=true&chunk_size=100",
        ),
        post(
            "POST params",
            "/query",
            "q=SELECT+*+FROM+m+WHERE+h%3D%24h&db=x&params=%7B%22h%22%3A%22a%22%7D",
        ),
    ] {
        assert_forwarded_faithfully(&env, &case).await;
    }
}

#[tokio::test]
async fn pretty_stays_where_influxdb_reads_it() {
    // 1.x reads `pretty` from the URL only (response_writer.go
    // NewResponseWriter): moving it into a POST body silently drops it.
    // InfluxDB 3 reads a body's `pretty` as well, 1.x does not: one only in
    // the body, or unlike the URL's, is refused rather than read one way.
    let env = Env::start(Grant::Everything).await;
    for case in [
        post(
            "POST, pretty in the URL",
            "/query?pretty=true",
            "q=SELECT+*+FROM+m&db=x",
        ),
        post(
            "POST, pretty in both, alike",
            "/query?pretty=true",
            "q=SELECT+*+FROM+m&db=x&pretty=true",
        ),
    ] {
        assert_forwarded_faithfully(&env, &case).await;
    }
    for case in [
        post(
            "POST, pretty in the body",
            "/query?q=SELECT+*+FROM+m&db=x",
            "pretty=true",
        ),
        post(
            "POST, pretty in both, unlike",
            "/query?pretty=false",
            "q=SELECT+*+FROM+m&db=x&pretty=true",
        ),
        post(
            "POST, pretty empty in the URL",
            "/query?pretty=",
            "q=SELECT+*+FROM+m&db=x&pretty=true",
        ),
    ] {
        let outcome = env.run(&case).await;
        assert_eq!(outcome.reply.status, 400, "{}", outcome.report(&[]));
        assert!(outcome.forwarded.is_none(), "{}", outcome.report(&[]));
    }
}

#[tokio::test]
async fn parameters_in_the_url_and_the_body_must_agree() {
    // Go reads a urlencoded body's value first and a multipart body's URL
    // value first: a parameter given unlike in both is refused.
    let env = Env::start(Grant::Everything).await;
    for key in [
        "epoch",
        "chunked",
        "chunk_size",
        "async",
        "node_id",
        "time_format",
    ] {
        let value = match key {
            "epoch" => "ms",
            "time_format" => "rfc3339",
            _ => "1",
        };
        for url in [format!("/query?{key}="), format!("/query?{key}=0")] {
            let case = post(
                "a parameter unlike in the URL and the body",
                &url,
                &format!("q=SELECT+*+FROM+m&db=x&{key}={value}"),
            );
            let outcome = env.run(&case).await;
            assert_eq!(outcome.reply.status, 400, "{}", outcome.report(&[]));
            assert!(outcome.forwarded.is_none(), "{}", outcome.report(&[]));
        }
        let alike = post(
            "a parameter alike in the URL and the body",
            &format!("/query?{key}={value}"),
            &format!("q=SELECT+*+FROM+m&db=x&{key}={value}"),
        );
        assert_forwarded_faithfully(&env, &alike).await;
        // Twice in one place: InfluxDB 3 refuses what Go reads the first of.
        for (url, body) in [
            (
                format!("/query?{key}={value}&{key}={value}"),
                "q=SELECT+*+FROM+m&db=x".to_owned(),
            ),
            (
                "/query".to_owned(),
                format!("q=SELECT+*+FROM+m&db=x&{key}={value}&{key}=0"),
            ),
        ] {
            let outcome = env.run(&post("a parameter twice", &url, &body)).await;
            assert_eq!(outcome.reply.status, 400, "{}", outcome.report(&[]));
            assert!(outcome.forwarded.is_none(), "{}", outcome.report(&[]));
        }
    }
}

#[tokio::test]
async fn credentials_never_reach_the_database() {
    assert_all_grants(&[
        Case::new(
            "p in the URL",
            "GET",
            "/query?db=x&q=SELECT+*+FROM+m&u=me&p=fgdb_differential_caller_token",
        )
        .auth(Auth::InCase),
        post("u in the body", "/query", "q=SELECT+*+FROM+m&db=x&u=admin"),
        post("p in the body", "/query", "q=SELECT+*+FROM+m&db=x&p=secret"),
        Case::new(
            "write, p in the URL",
            "POST",
            "/write?db=x&p=fgdb_differential_caller_token",
        )
        .auth(Auth::InCase)
        .body("m v=1"),
    ])
    .await;
}

#[tokio::test]
async fn body_and_url_cannot_disagree() {
    assert_all_grants(&[
        post(
            "q in URL and body",
            "/query?q=SELECT+*+FROM+secret..cpu&db=x",
            "q=SELECT+*+FROM+m",
        ),
        post(
            "db in URL and body",
            "/query?db=secret",
            "q=SELECT+*+FROM+m&db=x",
        ),
        post(
            "repeated q in body",
            "/query?db=x",
            "q=SELECT+*+FROM+m&q=SELECT+*+FROM+secret..cpu",
        ),
        post(
            "encoded key q",
            "/query?db=x",
            "q=SELECT+*+FROM+m&%71=SELECT+*+FROM+secret..cpu",
        ),
        post(
            "case-variant key",
            "/query?db=x",
            "Q=SELECT+*+FROM+secret..cpu&q=SELECT+*+FROM+m",
        ),
    ])
    .await;
}

#[tokio::test]
async fn pairs_go_skips_are_not_read_either() {
    // Go 1.17+ skips a pair holding ";" and a pair with a malformed "%"
    // escape (url.ParseQuery); a proxy that reads them sees other values.
    assert_all_grants(&[
        post(
            "semicolon in q pair, q in URL",
            "/query?q=SELECT+*+FROM+secret..cpu",
            "q=SELECT+*+FROM+x..m;&db=x",
        ),
        post("semicolon in db pair", "/query", "q=SELECT+*+FROM+m&db=x;"),
        post(
            "semicolon separator",
            "/query",
            "db=x;q=SELECT+*+FROM+secret..cpu&q=SELECT+*+FROM+m",
        ),
        post(
            "bad percent in q pair",
            "/query?q=SELECT+*+FROM+secret..cpu",
            "q=SELECT+*+FROM+x..m+--%zz&db=x",
        ),
        post("bad percent in db", "/query", "q=SELECT+*+FROM+m&db=x%"),
        post("empty pairs", "/query", "&&q=SELECT+*+FROM+m&&db=x&="),
    ])
    .await;
}

#[tokio::test]
async fn invalid_utf8_is_never_reinterpreted() {
    // A truncated sequence is one U+FFFD for Rust's lossy decoding, one per
    // byte for Go's rune reader: the names differ.
    assert_all_grants(&[
        Case::new(
            "truncated UTF-8 in a quoted database",
            "GET",
            "/query?q=SELECT+*+FROM+%22a%E2%82b%22..m&db=x",
        ),
        Case::new(
            "invalid byte in db",
            "GET",
            "/query?q=SELECT+*+FROM+m&db=x%FF",
        ),
        post(
            "invalid bytes in the body",
            "/query",
            "q=SELECT+*+FROM+%22%F0%9F%22..m&db=x",
        ),
        Case::new("invalid UTF-8 in write db", "POST", "/write?db=x%E2%82").body("m v=1"),
    ])
    .await;
}

#[tokio::test]
async fn bound_parameters_cannot_name_other_databases() {
    // influxql binds {"identifier": …} values as identifiers at the scanner
    // (Debian's influxd 1.6.7 is built with influxql 1.1.0, which has them).
    let params = |p: &str| form_urlencoded::byte_serialize(p.as_bytes()).collect::<String>();
    let ident = params(r#"{"db":{"identifier":"secret"}}"#);
    assert_all_grants(&[
        Case::new(
            "identifier param as database",
            "GET",
            format!("/query?db=x&q=SELECT+*+FROM+%24db..cpu&params={ident}"),
        ),
        Case::new(
            "identifier param as ON database",
            "GET",
            format!("/query?db=x&q=SHOW+MEASUREMENTS+ON+%24db&params={ident}"),
        ),
        post(
            "identifier param, POST",
            "/query",
            &format!("db=x&q=SELECT+*+FROM+%24db..cpu&params={ident}"),
        ),
        Case::new(
            "identifier param as measurement is fine",
            "GET",
            format!(
                "/query?db=x&q=SELECT+*+FROM+%24m&params={}",
                params(r#"{"m":{"identifier":"cpu"}}"#)
            ),
        ),
        Case::new(
            "identifier param in INTO",
            "GET",
            format!("/query?db=x&q=SELECT+*+INTO+%24db..m+FROM+m&params={ident}"),
        ),
        post(
            "string param used as password",
            "/query",
            &format!(
                "db=x&q=CREATE+USER+evil+WITH+PASSWORD+%24pw+WITH+ALL+PRIVILEGES&params={}",
                params(r#"{"pw":"pw"}"#)
            ),
        ),
    ])
    .await;
}

#[tokio::test]
async fn write_parameters_are_rebuilt() {
    assert_all_grants(&[
        Case::new("plain write", "POST", "/write?db=x&precision=s").body("m v=1 1\n"),
        Case::new("repeated db", "POST", "/write?db=x&db=secret").body("m v=1\n"),
        Case::new("unknown write parameter", "POST", "/write?db=x&foo=bar").body("m v=1\n"),
        Case::new(
            "v2 bucket",
            "POST",
            "/api/v2/write?bucket=x&org=o&precision=s",
        )
        .body("m v=1 1\n"),
        Case::new(
            "v2 bucket with a slash",
            "POST",
            "/api/v2/write?bucket=x/anything&org=o",
        )
        .body("m v=1\n"),
        Case::new("v3 write", "POST", "/api/v3/write_lp?db=x&precision=second").body("m v=1 1\n"),
    ])
    .await;
}

#[tokio::test]
async fn influxql_text_bodies() {
    // `application/vnd.influxql`: InfluxDB 3's v1 /query reads such a body as
    // the query (iox_v1_query_api handler.rs `influxql_body`); 1.x ignores it
    // (Go's ParseForm reads urlencoded bodies only) and answers 400 `missing
    // required parameter "q"`. fluxgate accepts it on purpose (BRIEF §4, for
    // InfluxDB 3's clients) and forwards the canonical form, so in front of
    // 1.x the authorized query runs where 1.x alone would have refused it:
    // every rule holds but fidelity to 1.x. A query also in the URL is
    // ambiguous and refused.
    let influxql = |name: &str, target: &str| {
        Case::new(name, "POST", target)
            .header("Content-Type", "application/vnd.influxql")
            .body("SELECT * FROM m")
    };
    for grant in [Grant::ReadX, Grant::Everything] {
        let env = Env::start(grant).await;
        let accepted = env.run(&influxql("vnd.influxql body", "/query?db=x")).await;
        let violations: Vec<String> = accepted
            .violations()
            .into_iter()
            .filter(|v| !v.starts_with("FIDELITY"))
            .collect();
        assert!(violations.is_empty(), "{}", accepted.report(&violations));
        let forwarded = accepted.forwarded.as_ref().expect("forwarded");
        assert_eq!(forwarded.body(), b"q=SELECT+*+FROM+m&db=x");
        let ambiguous = env
            .run(&influxql(
                "vnd.influxql body, q in the URL",
                "/query?db=x&q=SELECT+*+FROM+secret..cpu",
            ))
            .await;
        assert!(ambiguous.forwarded.is_none(), "{}", ambiguous.report(&[]));
    }
}

#[tokio::test]
async fn parameters_influxdb_reads_beyond_the_canonical_set() {
    // serveQuery also reads `async` (run in the background, answer 204)
    // and `node_id` through FormValue: dropping them changes what the
    // database does; carry them or refuse.
    assert_all_grants(&[
        Case::new(
            "async=true",
            "GET",
            "/query?q=SELECT+*+FROM+m&db=x&async=true",
        ),
        post(
            "async=true in the body",
            "/query",
            "q=SELECT+*+FROM+m&db=x&async=true",
        ),
        Case::new("node_id", "GET", "/query?q=SELECT+*+FROM+m&db=x&node_id=2"),
        Case::new(
            "unknown parameter",
            "GET",
            "/query?q=SELECT+*+FROM+m&db=x&foo=bar",
        ),
    ])
    .await;
    // `time_format` (1.12.3 and later) is carried: dropped, the answer's
    // timestamps would change form.
    let env = Env::start(Grant::Everything).await;
    for case in [
        Case::new(
            "time_format",
            "GET",
            "/query?q=SELECT+*+FROM+m&db=x&time_format=rfc3339",
        ),
        post(
            "time_format in the body",
            "/query",
            "q=SELECT+*+FROM+m&db=x&time_format=rfc3339",
        ),
    ] {
        assert_forwarded_faithfully(&env, &case).await;
    }
}

#[tokio::test]
async fn admin_statements_are_authorized_for_what_they_do() {
    // A management token (here: a proxy granting everything) may run
    // database administration; what it was authorized for must be what the
    // statement does. User and privilege statements are never forwarded.
    let administration = [
        post("CREATE DATABASE", "/query", "q=CREATE+DATABASE+y"),
        post("DROP MEASUREMENT", "/query", "q=DROP+MEASUREMENT+m&db=x"),
        post(
            "DROP SERIES on a named database",
            "/query",
            "q=DROP+SERIES+FROM+%22secret%22..%22cpu%22&db=x",
        ),
        post(
            "CREATE RETENTION POLICY",
            "/query",
            "q=CREATE+RETENTION+POLICY+r+ON+x+DURATION+1d+REPLICATION+1",
        ),
        Case::new(
            "SHOW MEASUREMENTS ON",
            "GET",
            "/query?q=SHOW+MEASUREMENTS+ON+x",
        ),
        post(
            "admin after a SELECT",
            "/query",
            "q=SELECT+*+FROM+m%3B+DROP+DATABASE+secret&db=x",
        ),
    ];
    let never = [
        post(
            "CREATE USER",
            "/query",
            "q=CREATE+USER+evil+WITH+PASSWORD+%27pw%27+WITH+ALL+PRIVILEGES",
        ),
        post("GRANT", "/query", "q=GRANT+ALL+TO+evil"),
        post("KILL QUERY", "/query", "q=KILL+QUERY+1"),
    ];
    assert_all_grants(&administration).await;
    assert_all_grants(&never).await;
    let env = Env::start(Grant::Everything).await;
    for case in &administration {
        assert!(
            env.run(case).await.forwarded.is_some(),
            "{} was not forwarded",
            case.name
        );
    }
    for case in &never {
        assert!(
            env.run(case).await.forwarded.is_none(),
            "{} was forwarded",
            case.name
        );
    }
}
