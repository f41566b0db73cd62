//! What a request means to the database, computed from the oracle's reading
//! with fluxgate's own public classifiers (the InfluxQL statement parser and
//! the Flux analyzer): the parsers are not under test here, the readers are.
//! Also the comparable view of a reading used by the fidelity check.

use std::collections::{BTreeMap, BTreeSet};

use fluxgate::authz::{Action, Need};
use fluxgate::proxy::classify::flux;
use fluxgate::proxy::classify::influxql::{DbRef, Statement, parse_statements};
use serde_json::{Value, json};

use crate::common::oracle::{BoundParam, RawStr, Reading};

/// What the database does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meaning {
    /// It refuses the request before doing anything (missing query, bad
    /// parameters, invalid body…).
    Rejected(String),
    /// It acts on exactly these (database, action) pairs.
    Needs(BTreeSet<Need>),
    /// `SHOW DATABASES` alone.
    ShowDatabases,
    /// It runs a statement no token may run through the proxy (users,
    /// privileges, query management…).
    Refused(String),
    /// It does something these tests cannot pin down: never acceptable for
    /// a forwarded request.
    Unknown(String),
}

pub fn meaning(r: &Reading) -> Meaning {
    match r.endpoint.as_str() {
        "v1_query" => v1_query(r),
        "v1_write" => {
            let w = r.v1_write.as_ref().expect("v1_write reading");
            write_need(&w.db)
        }
        "v2_query" => flux_query(r),
        "v2_write" => {
            let w = r.v2_write.as_ref().expect("v2_write reading");
            // 2.x and 3.x read `bucket` as the bucket's name; 1.8 maps it to
            // database/retention policy (bucket2dbrp). Both must have been
            // authorized, whichever database sits behind the proxy.
            let mut needs = match write_need(&w.bucket) {
                Meaning::Needs(n) => n,
                other => return other,
            };
            if w.error_1_8.is_none() {
                match write_need(&w.db_1_8) {
                    Meaning::Needs(n) => needs.extend(n),
                    other => return other,
                }
            }
            Meaning::Needs(needs)
        }
        "v3_query" => v3_query(r),
        "v3_write" => {
            let w = r.v3_write.as_ref().expect("v3_write reading");
            if let Some(e) = &w.url_error {
                return Meaning::Rejected(e.clone());
            }
            write_need(w.url.get("db").unwrap_or(&RawStr::default()))
        }
        _ => Meaning::Needs(BTreeSet::new()),
    }
}

fn write_need(db: &RawStr) -> Meaning {
    match db.utf8() {
        Some("") => Meaning::Rejected("database is required".into()),
        Some(db) => Meaning::Needs([Need::write(db)].into()),
        None => Meaning::Unknown(format!("database name {db} is not UTF-8")),
    }
}

fn v1_query(r: &Reading) -> Meaning {
    let q = r.v1_query.as_ref().expect("v1_query reading");
    if q.q_source.is_empty() {
        return Meaning::Rejected("missing required parameter \"q\"".into());
    }
    if let Some(e) = &q.params_error {
        return Meaning::Rejected(e.clone());
    }
    let text = match substitute(&q.q_text, q.params.as_ref()) {
        Ok(t) => t,
        Err(Substitution::Fails(why)) => return Meaning::Rejected(why),
    };
    let Some(db) = q.db.utf8() else {
        return Meaning::Unknown(format!("default database {} is not UTF-8", q.db));
    };
    match influxql(&text, db) {
        // A bound value of the wrong kind for its position (an identifier
        // after `=~`, a string after FROM) is a parse error in influxql too:
        // the substitution, not the reading, is what broke the query.
        Meaning::Unknown(_) if text != q.q_text && parse_statements(&q.q_text).is_ok() => {
            Meaning::Rejected("a bound parameter does not fit its position".into())
        }
        m => m,
    }
}

fn v3_query(r: &Reading) -> Meaning {
    let q = r.v3_query.as_ref().expect("v3_query reading");
    if let Some(e) = &q.error {
        return Meaning::Rejected(e.clone());
    }
    let (Some(db), Some(text)) = (q.db.utf8(), q.q.utf8()) else {
        return Meaning::Unknown("v3 db or q not UTF-8".into());
    };
    if db.is_empty() || text.is_empty() {
        return Meaning::Rejected("missing db or q".into());
    }
    if r.path.utf8() == Some("/api/v3/query_sql") {
        return Meaning::Needs([Need::read(db)].into());
    }
    // InfluxDB 3 runs InfluxQL in the request's database.
    match influxql(text, db) {
        Meaning::Needs(mut needs) => {
            needs.insert(Need::read(db));
            Meaning::Needs(needs)
        }
        other => other,
    }
}

/// The needs of InfluxQL `text` run with default database `db`.
pub fn influxql(text: &str, db: &str) -> Meaning {
    let statements = match parse_statements(text) {
        Ok(s) => s,
        Err(e) => return Meaning::Unknown(format!("InfluxQL {text:?}: {e}")),
    };
    let mut needs = BTreeSet::new();
    let resolve = |r: &DbRef| match r {
        DbRef::Named(n) => Some(n.clone()),
        DbRef::Default if db.is_empty() => None,
        DbRef::Default => Some(db.to_owned()),
    };
    for statement in &statements {
        match statement {
            Statement::Refused { what, .. } => return Meaning::Refused(what.clone()),
            Statement::ShowDatabases if statements.len() == 1 => return Meaning::ShowDatabases,
            Statement::ShowDatabases => {
                needs.insert(Need {
                    database: "*".into(),
                    action: Action::Read,
                });
            }
            // Administrative statements act on databases too (CREATE,
            // DELETE, READ_SCHEMA; `*` for every database).
            Statement::Admin { needs: admin, .. } => {
                for (d, action) in admin {
                    if let Some(database) = resolve(d) {
                        needs.insert(Need {
                            database,
                            action: *action,
                        });
                    }
                }
            }
            // A statement naming no database fails there ("database name
            // required"); the ones before it have run.
            Statement::Data { reads, writes, .. } => {
                for d in reads.iter().filter_map(resolve) {
                    needs.insert(Need::read(d));
                }
                for d in writes.iter().filter_map(resolve) {
                    needs.insert(Need::write(d));
                }
            }
        }
    }
    Meaning::Needs(needs)
}

/// Why a query with bound parameters does not run.
enum Substitution {
    Fails(String),
}

/// The query text with every bound parameter InfluxDB would substitute
/// replaced by its value, written as InfluxQL. influxql's parser replaces
/// a `$name` token by its bound value at the scanner (parser.go `scan`), so
/// an `{"identifier": …}` value can stand wherever an identifier can:
/// `FROM $db..m` reads the database the parameter names.
fn substitute(
    text: &str,
    params: Option<&BTreeMap<String, BoundParam>>,
) -> Result<String, Substitution> {
    let Some(params) = params.filter(|p| !p.is_empty()) else {
        return Ok(text.to_owned());
    };
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    // Whether a `/` here starts a regex: only right after `=~` / `!~`
    // (the parser asks the scanner for a regex only there).
    let mut regex_next = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' => {
                let end = quoted_end(&chars, i);
                out.extend(&chars[i..end]);
                i = end;
                regex_next = false;
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map_or(chars.len(), |p| i + p);
                out.extend(&chars[i..end]);
                i = end;
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                let end = (i + 2..chars.len().saturating_sub(1))
                    .find(|&k| chars[k] == '*' && chars[k + 1] == '/')
                    .map_or(chars.len(), |k| k + 2);
                out.extend(&chars[i..end]);
                i = end;
            }
            '/' if regex_next => {
                let mut k = i + 1;
                while k < chars.len() && chars[k] != '/' {
                    k += if chars[k] == '\\' { 2 } else { 1 };
                }
                let end = (k + 1).min(chars.len());
                out.extend(&chars[i..end]);
                i = end;
                regex_next = false;
            }
            '=' | '!' if chars.get(i + 1) == Some(&'~') => {
                out.push(c);
                out.push('~');
                i += 2;
                regex_next = true;
            }
            '$' => {
                // scanner.go: `$` then scanIdent(false): bare identifier
                // characters, and a quoted identifier replaces them.
                let mut k = i + 1;
                let mut name = String::new();
                while k < chars.len() {
                    let ch = chars[k];
                    if ch.is_ascii_alphanumeric() || ch == '_' {
                        name.push(ch);
                        k += 1;
                    } else if ch == '"' {
                        let end = quoted_end(&chars, k);
                        name = unquote(&chars[k..end]);
                        k = end;
                        break;
                    } else {
                        break;
                    }
                }
                match params.get(&name) {
                    Some(p) => out.push_str(&render(p)?),
                    None => out.extend(&chars[i..k]),
                }
                i = k;
                regex_next = false;
            }
            c if c.is_whitespace() => {
                out.push(c);
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
                regex_next = false;
            }
        }
    }
    Ok(out)
}

/// Index just past the quoted token starting at `start` (backslash escapes).
fn quoted_end(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut k = start + 1;
    while k < chars.len() {
        match chars[k] {
            '\\' => k += 2,
            c if c == quote => return k + 1,
            _ => k += 1,
        }
    }
    chars.len()
}

fn unquote(token: &[char]) -> String {
    let inner = &token[1..token.len().saturating_sub(1).max(1)];
    let mut s = String::new();
    let mut it = inner.iter();
    while let Some(&c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => s.push('\n'),
                Some(&o) => s.push(o),
                None => {}
            }
        } else {
            s.push(c);
        }
    }
    s
}

fn escape(s: &str, quote: char) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A bound value written back as the InfluxQL token it becomes.
fn render(p: &BoundParam) -> Result<String, Substitution> {
    let v = p.value.lossy();
    Ok(match p.kind.as_str() {
        "identifier" => format!("\"{}\"", escape(&v, '"')),
        "string" => format!("'{}'", escape(&v, '\'')),
        "regex" => format!("/{}/", v.replace('/', "\\/")),
        "number" | "integer" | "duration" => v,
        "boolean" => v.to_ascii_uppercase(),
        _ => return Err(Substitution::Fails(format!("bound parameter error: {v}"))),
    })
}

fn flux_query(r: &Reading) -> Meaning {
    let f = r.flux_query.as_ref().expect("flux reading");
    if let Some(e) = f.media_type_error.as_ref().or(f.decode_error.as_ref()) {
        return Meaning::Rejected(e.clone());
    }
    if let Some(e) = &f.validate_error {
        return Meaning::Rejected(e.clone());
    }
    if f.r#type.utf8() != Some("flux") {
        return Meaning::Unknown(format!(
            "query type {} (2.x runs InfluxQL on {})",
            f.r#type, f.bucket
        ));
    }
    if f.compiler == "ast" {
        return Meaning::Unknown(format!(
            "the database executes the JSON AST {}",
            f.ast.lossy()
        ));
    }
    if let Some(why) = extern_effect(f.extern_value.as_ref()) {
        return Meaning::Unknown(format!("extern {}: {why}", f.extern_raw.lossy()));
    }
    let Some(query) = f.query.utf8() else {
        return Meaning::Unknown("Flux query is not UTF-8".into());
    };
    let access = match flux::analyze(query) {
        Ok(a) => a,
        Err(e) => return Meaning::Unknown(format!("Flux {query:?}: {e}")),
    };
    let mut needs = BTreeSet::new();
    for (buckets, make) in [
        (&access.reads, Need::read as fn(String) -> Need),
        (&access.writes, Need::write as fn(String) -> Need),
    ] {
        for bucket in buckets {
            // 2.x: the bucket by its full name; 1.8: "db/rp" is database db.
            needs.insert(make(bucket.clone()));
            if let Some((db, _)) = bucket.split_once('/') {
                needs.insert(make(db.to_owned()));
            }
        }
    }
    Meaning::Needs(needs)
}

/// Node types a benign `extern` (what the official clients send: `option`
/// statements with literal values, `import "profiler"`) is made of.
const EXTERN_NODES: &[&str] = &[
    "File",
    "PackageClause",
    "ImportDeclaration",
    "OptionStatement",
    "VariableAssignment",
    "MemberAssignment",
    "Identifier",
    "MemberExpression",
    "ArrayExpression",
    "ObjectExpression",
    "Property",
    "UnaryExpression",
    "StringLiteral",
    "IntegerLiteral",
    "UnsignedIntegerLiteral",
    "FloatLiteral",
    "BooleanLiteral",
    "DateTimeLiteral",
    "DurationLiteral",
    "RegexpLiteral",
];

/// None when `extern` cannot make the database do anything beyond the
/// query (no extern, or only option assignments of literals); otherwise why.
fn extern_effect(ext: Option<&Value>) -> Option<String> {
    let ext = ext?;
    if ext.is_null() {
        return None;
    }
    let mut why = None;
    walk(ext, &mut |node| {
        let Some(kind) = node.get("type").and_then(Value::as_str) else {
            return;
        };
        if !EXTERN_NODES.contains(&kind) {
            why.get_or_insert(format!("node {kind} is executable"));
        }
        if kind == "ImportDeclaration" {
            let path = node.pointer("/path/value").and_then(Value::as_str);
            if path != Some("profiler") {
                why.get_or_insert(format!("imports {path:?}"));
            }
        }
    });
    why
}

fn walk(v: &Value, f: &mut impl FnMut(&Value)) {
    match v {
        Value::Object(m) => {
            f(v);
            for child in m.values() {
                walk(child, f);
            }
        }
        Value::Array(a) => a.iter().for_each(|c| walk(c, f)),
        _ => {}
    }
}

fn raw(r: &RawStr) -> Value {
    match r.utf8() {
        Some(s) => Value::String(s.to_owned()),
        None => json!({ "bytes": r.0 }),
    }
}

/// The parts of a reading that decide what the database does, for the
/// fidelity comparison: credentials, transport and framing are left out.
pub fn view(r: &Reading) -> Value {
    match r.endpoint.as_str() {
        "v1_query" => {
            let q = r.v1_query.as_ref().expect("v1_query");
            let params: BTreeMap<_, _> = q
                .params
                .iter()
                .flatten()
                .map(|(k, p)| (k.clone(), json!([p.kind, raw(&p.value)])))
                .collect();
            json!({
                "endpoint": r.endpoint,
                // ExecutionOptions.ReadOnly is r.Method == "GET".
                "read_only": r.method == "GET",
                "q": if q.q_source.is_empty() { Value::Null } else { raw(&RawStr(trim(&q.q.0).to_vec())) },
                "db": raw(&q.db), "rp": raw(&q.rp), "epoch": raw(&q.epoch),
                "chunked": q.chunked, "chunk_size": q.chunk_size, "async": q.r#async,
                "node_id": q.node_id, "pretty": q.pretty, "time_format": raw(&q.time_format),
                "params": params, "params_error": q.params_error.is_some(),
            })
        }
        "v1_write" => {
            let w = r.v1_write.as_ref().expect("v1_write");
            json!({
                "endpoint": r.endpoint, "db": raw(&w.db), "rp": raw(&w.rp),
                "precision": raw(&w.precision), "consistency": raw(&w.consistency),
                "body": [w.body.sha256, w.body.len, w.body.decode_error.is_some()],
            })
        }
        "v2_query" => {
            let f = r.flux_query.as_ref().expect("flux");
            json!({
                "endpoint": r.endpoint,
                "rejected": f.media_type_error.is_some() || f.decode_error.is_some() || f.validate_error.is_some(),
                "type": raw(&f.r#type), "query": raw(&f.query), "compiler": f.compiler,
                "extern": f.extern_value.as_ref().map(normalize_ast), "ast": f.ast_value, "dialect": f.dialect,
                "now": f.now, "bucket": raw(&f.bucket),
                "prefer_no_content": f.prefer_no_content,
                "prefer_no_content_with_error": f.prefer_no_content_with_error,
            })
        }
        "v2_write" => {
            let w = r.v2_write.as_ref().expect("v2_write");
            // The organization is not the caller's to choose: the proxy sends
            // the operator's (--upstream-org) or none (tests/attacks/organizations.rs).
            json!({
                "endpoint": r.endpoint, "bucket": raw(&w.bucket),
                "precision": raw(&w.precision),
                "body": [w.body.sha256, w.body.len, w.body.decode_error.is_some()],
            })
        }
        "v3_query" => {
            let q = r.v3_query.as_ref().expect("v3_query");
            let params: Value = q
                .params
                .utf8()
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or_else(|| raw(&q.params));
            json!({
                "endpoint": r.endpoint, "path": raw(&r.path),
                "rejected": q.error.is_some(), "db": raw(&q.db), "q": raw(&q.q),
                "format": raw(&q.format), "params": params,
            })
        }
        "v3_write" => {
            let w = r.v3_write.as_ref().expect("v3_write");
            let url: BTreeMap<_, _> = w.url.iter().map(|(k, v)| (k.clone(), raw(v))).collect();
            json!({
                "endpoint": r.endpoint, "url": url, "rejected": w.url_error.is_some(),
                "body": [w.body.sha256, w.body.len, w.body.decode_error.is_some()],
            })
        }
        other => json!({ "endpoint": other, "method": r.method, "path": raw(&r.path) }),
    }
}

/// A Flux JSON AST with what cannot change its meaning taken out: entries
/// that are null, empty arrays or empty objects (Go decodes them as absent),
/// and the root's `"type": "File"` (the root is decoded as a File anyway).
fn normalize_ast(v: &Value) -> Value {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .filter(|(_, v)| match v {
                        Value::Null => false,
                        Value::Array(a) => !a.is_empty(),
                        Value::Object(o) => !o.is_empty(),
                        _ => true,
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    let mut out = strip(v);
    if let Value::Object(m) = &mut out
        && m.get("type").and_then(Value::as_str) == Some("File")
    {
        m.remove("type");
    }
    out
}

/// Go's strings.TrimSpace (Unicode White_Space) on bytes that may not be
/// UTF-8: invalid bytes are never space.
fn trim(b: &[u8]) -> &[u8] {
    let char_at = |i: usize| -> Option<(char, usize)> {
        (1..=4).find_map(|n| {
            let s = std::str::from_utf8(b.get(i..i + n)?).ok()?;
            Some((s.chars().next()?, n))
        })
    };
    let char_before = |end: usize| -> Option<(char, usize)> {
        (1..=4.min(end)).find_map(|n| {
            let s = std::str::from_utf8(&b[end - n..end]).ok()?;
            Some((s.chars().next()?, n))
        })
    };
    let mut start = 0;
    while let Some((c, n)) = char_at(start).filter(|(c, _)| c.is_whitespace()) {
        let _ = c;
        start += n;
    }
    let mut end = b.len();
    while end > start {
        match char_before(end) {
            Some((c, n)) if c.is_whitespace() => end -= n,
            _ => break,
        }
    }
    &b[start..end]
}
