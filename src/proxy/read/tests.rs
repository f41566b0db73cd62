//! Tests of reading decided requests and of their canonical forms.

use http::HeaderValue;

use super::*;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn url(q: &str) -> Params<'_> {
    Params::parse(Some(q)).unwrap()
}

/// A urlencoded POST to `/query`, as forwarded.
fn post_form(query: &str, body: &str) -> Result<Canonical, Rejection> {
    influxql(
        &Method::POST,
        &url(query),
        &headers(&[("content-type", FORM)]),
        Bytes::from(body.to_owned()),
    )
    .map(|r| r.canonical())
}

#[test]
fn influxql_get_is_rebuilt_in_the_query_string() {
    let params = url("db=x&q=+SELECT+*+FROM+m+&epoch=ms&u=me&p=secret&junk=1");
    let r = influxql(
        &Method::GET,
        &params,
        &HeaderMap::new(),
        Bytes::from_static(b"q=ignored"),
    )
    .unwrap();
    assert_eq!(r.q, "SELECT * FROM m");
    assert_eq!(r.get("db"), Some("x"));
    let c = r.canonical();
    assert_eq!(c.query, "q=SELECT+*+FROM+m&db=x&epoch=ms");
    assert_eq!(c.body, None);
}

#[test]
fn influxql_post_is_rebuilt_as_a_form_body() {
    let c = post_form("db=x", "q=SELECT+1+FROM+m&rp=autogen").unwrap();
    assert_eq!(c.query, "");
    assert_eq!(
        c.body,
        Some((
            Bytes::from_static(b"q=SELECT+1+FROM+m&db=x&rp=autogen"),
            FORM
        ))
    );
    // Empty body (the Python client with gzip=True): the URL's values.
    let params = url("db=x&q=SELECT+1+FROM+m");
    let r = influxql(
        &Method::POST,
        &params,
        &headers(&[("content-encoding", "gzip")]),
        Bytes::new(),
    )
    .unwrap();
    assert_eq!(r.q, "SELECT 1 FROM m");
}

#[test]
fn influxql_ambiguities_are_refused() {
    // q in both places, even equal; differing db; credentials in the body.
    assert!(post_form("q=SELECT+1", "q=SELECT+1").is_err());
    assert!(post_form("db=x", "db=y&q=SELECT+1").is_err());
    assert!(post_form("", "q=SELECT+1&p=t").is_err());
    assert!(post_form("", "q=SELECT+1&q=SELECT+2").is_err());
    assert!(post_form("", "q=SELECT+1&db=%ff").is_err());
    assert!(post_form("", "q=%20%20").is_err(), "blank q");
    // A multipart value and a file both naming q.
    let body = "--B\r\nContent-Disposition: form-data; name=q\r\n\r\n \r\n--B\r\nContent-Disposition: form-data; name=q; filename=q.iql\r\n\r\nSELECT * FROM secret..m\r\n--B--";
    let r = influxql(
        &Method::POST,
        &url("db=x"),
        &headers(&[("content-type", "multipart/form-data; boundary=B")]),
        Bytes::from(body),
    )
    .map(|r| r.canonical());
    assert!(r.is_err());
    // A multipart file q alone is the query.
    let body = "--B\r\nContent-Disposition: form-data; name=q; filename=q.iql\r\n\r\nSELECT * FROM m\r\n--B\r\nContent-Disposition: form-data; name=db\r\n\r\nx\r\n--B--";
    let params = url("");
    let r = influxql(
        &Method::POST,
        &params,
        &headers(&[("content-type", "multipart/form-data; boundary=B")]),
        Bytes::from(body),
    )
    .unwrap();
    assert_eq!((&*r.q, r.get("db")), ("SELECT * FROM m", Some("x")));
    // Unknown media types, JSON, and a body without a type.
    for ct in ["application/json", "text/csv"] {
        assert!(
            influxql(
                &Method::POST,
                &url(""),
                &headers(&[("content-type", ct)]),
                Bytes::from_static(b"{}")
            )
            .is_err()
        );
    }
    assert!(
        influxql(
            &Method::POST,
            &url(""),
            &HeaderMap::new(),
            Bytes::from_static(b"q=1")
        )
        .is_err()
    );
}

#[test]
fn flux_requests() {
    let r = flux(
        &headers(&[("content-type", "application/vnd.flux")]),
        Bytes::from_static(b"from(bucket: \"x\")"),
    )
    .unwrap();
    // The operator's organization, never the caller's.
    let c = flux_canonical(Some("ours"), &r);
    assert_eq!(c.query, "org=ours");
    assert_eq!(flux_canonical(None, &r).query, "");
    assert_eq!(
        c.body,
        Some((
            Bytes::from_static(br#"{"query":"from(bucket: \"x\")","type":"flux"}"#),
            JSON
        ))
    );
    assert!(flux(&HeaderMap::new(), Bytes::new()).is_err());
    assert!(
        flux(
            &headers(&[("content-type", "text/csv")]),
            Bytes::from_static(b"x")
        )
        .is_err()
    );
}

#[test]
fn v3_queries() {
    let get = v3(
        &Method::GET,
        &url("db=x&q=SELECT+1&format=csv&params=%7B%22a%22%3A1%7D"),
        &HeaderMap::new(),
        Bytes::new(),
    )
    .unwrap();
    assert_eq!(
        v3_canonical(&Method::GET, &get).query,
        "db=x&q=SELECT+1&format=csv&params=%7B%22a%22%3A1%7D"
    );
    let post = v3(
        &Method::POST,
        &url("db=x"),
        &headers(&[("content-type", "application/json")]),
        Bytes::from_static(br#"{"q": "SELECT 1", "db": "x"}"#),
    )
    .unwrap();
    assert_eq!(
        v3_canonical(&Method::POST, &post).body,
        Some((Bytes::from_static(br#"{"db":"x","q":"SELECT 1"}"#), JSON))
    );
    assert!(
        v3(
            &Method::POST,
            &url("db=y"),
            &HeaderMap::new(),
            Bytes::from_static(br#"{"q": "SELECT 1", "db": "x"}"#)
        )
        .is_err()
    );
    assert!(
        v3(
            &Method::GET,
            &url("db=x&q=1&params=%5B%5D"),
            &HeaderMap::new(),
            Bytes::new()
        )
        .is_err()
    );
    assert!(v3(&Method::GET, &url("q=1"), &HeaderMap::new(), Bytes::new()).is_err());
}

#[test]
fn writes_keep_only_their_parameters() {
    let canonical = |route, query, org| Write::read(route, &url(query), org).canonical().query;
    assert_eq!(
        canonical(
            Route::V1Write,
            "db=a+b&rp=autogen&precision=ns&u=me&p=secret&junk=1&consistency=",
            Some("ours"),
        ),
        "db=a+b&rp=autogen&precision=ns"
    );
    // A v2 write goes to the operator's organization, never the caller's.
    assert_eq!(
        canonical(
            Route::V2Write,
            "org=theirs&orgID=1&bucket=x%2Fr&precision=s",
            Some("ours"),
        ),
        "bucket=x%2Fr&precision=s&org=ours"
    );
    assert_eq!(
        canonical(Route::V2Write, "org=theirs&bucket=x", None),
        "bucket=x"
    );
}

#[test]
fn every_forwarded_query_key_is_single_valued() {
    // So a repeat, or a URL and a body that disagree, is refused for each
    // one before anything is forwarded.
    for key in super::INFLUXQL_KEYS {
        assert!(params::SINGLE_VALUED.contains(key), "{key}");
    }
}
