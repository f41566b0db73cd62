//! Tests of the InfluxQL classifier: sources, subqueries, statements,
//! admin statements and their needs, and properties over generated text.
use std::collections::BTreeSet;

use super::*;
use proptest::prelude::*;

fn parse_ok(q: &str) -> Vec<Statement> {
    parse_statements(q).unwrap_or_else(|e| panic!("{q:?}: {e}"))
}

fn data(q: &str) -> (Vec<DbRef>, Vec<DbRef>) {
    match parse_ok(q).as_slice() {
        [Statement::Data { reads, writes, .. }] => (reads.clone(), writes.clone()),
        other => panic!("{q:?}: expected one data statement, got {other:?}"),
    }
}

fn reads(q: &str) -> Vec<DbRef> {
    data(q).0
}

/// `"*|a"` is `[Default, Named("a")]`.
fn dbs(spec: &str) -> Vec<DbRef> {
    let one = |s: &str| DbRef::from_name(Some(s).filter(|s| *s != "*"));
    spec.split('|').filter(|s| !s.is_empty()).map(one).collect()
}

fn check_reads(cases: &[(&str, &str)]) {
    for (q, spec) in cases {
        assert_eq!(reads(q), dbs(spec), "{q}");
    }
}

fn err(q: &str) -> ScanError {
    parse_statements(q).expect_err(q)
}

/// Double-quoted InfluxQL identifier for any name without NUL or CR.
fn quote(name: &str) -> String {
    let body = name.replace('\\', r"\\").replace('"', "\\\"");
    format!("\"{}\"", body.replace('\n', r"\n"))
}

#[test]
fn select_sources() {
    check_reads(&[
        ("SELECT * FROM m", "*"),
        ("SELECT * FROM \"m\"", "*"),
        ("SELECT * FROM rp.m", "*"),
        ("SELECT * FROM db.rp.m", "db"),
        ("SELECT * FROM db..m", "db"),
        ("SELECT * FROM /cpu.*/", "*"),
        ("SELECT * FROM rp./re/", "*"),
        ("SELECT * FROM db.rp./re/", "db"),
        ("SELECT * FROM db../re/", "db"),
        ("SELECT * FROM \"my db\".\"autogen\".\"cpu\"", "my db"),
        ("SELECT * FROM \"a\".\"b\".\"c\"", "a"),
        ("SELECT * FROM \"select\"", "*"),
        ("SELECT \"from\" FROM \"where\"..\"into\"", "where"),
        ("SELECT * FROM a..m, b..m, m, a.rp.x, /x/", "*|a|b"),
        ("select * from Ab..m", "Ab"),
        ("SELECT * FROM \"\"..m", "*"),
        ("SELECT * FROM db. rp.m", "db"),
        (r#"SELECT * FROM "d\"b"..m"#, "d\"b"),
        (r#"SELECT * FROM "a\\b"..m"#, "a\\b"),
        ("SELECT * FROM \"dé;b ☃ '\"..m", "dé;b ☃ '"),
        ("SELECT * FROM /*x*/ secret..m", "secret"),
        ("SELECT * FROM secret.autogen./x/", "secret"),
        ("SELECT * FROM m, (SELECT * FROM n)", "*"),
    ]);
}

#[test]
fn subqueries_at_any_depth() {
    check_reads(&[
        (
            "SELECT max(v) FROM (SELECT mean(v) AS v FROM a..m GROUP BY time(1m)), b..m",
            "a|b",
        ),
        (
            "SELECT * FROM (SELECT * FROM (SELECT * FROM (SELECT * FROM x..m)), m)",
            "*|x",
        ),
    ]);
    let deep = format!(
        "SELECT * FROM {}m{}",
        "(SELECT * FROM ".repeat(99),
        ")".repeat(99)
    );
    assert_eq!(err(&deep), ScanError::TooDeep);
}

#[test]
fn into_targets_are_writes() {
    for (q, spec) in [
        ("SELECT * INTO m2 FROM a..m", "*"),
        ("SELECT * INTO rp.m2 FROM a..m", "*"),
        ("SELECT * INTO db.rp.m2 FROM a..m", "db"),
        ("SELECT * INTO db..m2 FROM a..m", "db"),
        ("SELECT * INTO db..:MEASUREMENT FROM a..m", "db"),
        ("SELECT * INTO \"w\".\"rp\".:MEASUREMENT FROM a..m", "w"),
        ("SELECT * INTO rp.:MEASUREMENT FROM a..m", "*"),
        (
            "SELECT * INTO x..m FROM (SELECT * INTO y..m FROM a..m)",
            "x|y",
        ),
        ("EXPLAIN ANALYZE SELECT * INTO b..x FROM a..m", "b"),
    ] {
        assert_eq!(data(q), (dbs("a"), dbs(spec)), "{q}");
    }
    assert_eq!(reads("explain SELECT * FROM a..m"), dbs("a"));
    assert!(matches!(
        err("SELECT * INTO :MEASUREMENT FROM m"),
        ScanError::Unexpected { .. }
    ));
}

#[test]
fn show_statements_read_their_database() {
    check_reads(&[
        ("SHOW MEASUREMENTS", "*"),
        ("SHOW MEASUREMENTS ON db", "db"),
        (
            "SHOW MEASUREMENTS ON db.rp WITH MEASUREMENT =~ /cpu/ LIMIT 5",
            "db",
        ),
        ("SHOW MEASUREMENTS ON db.* WHERE host = 'a'", "db"),
        ("SHOW MEASUREMENTS WITH MEASUREMENT = /a;b/", "*"),
        ("SHOW MEASUREMENTS WITH MEASUREMENT = x..m", "*|x"),
        ("SHOW MEASUREMENTS ON a WITH MEASUREMENT = x.rp.m", "a|x"),
        ("SHOW TAG KEYS ON a FROM b..m", "a|b"),
        (
            "SHOW TAG KEYS FROM m WITH KEY IN (a, \"b\") LIMIT 1 SLIMIT 2",
            "*",
        ),
        (
            "SHOW TAG VALUES ON db WITH KEY = \"host\" WHERE r =~ /us/",
            "db",
        ),
        ("SHOW TAG VALUES WITH KEY =~ /h;.*/", "*"),
        ("SHOW FIELD KEYS ON db FROM rp.m", "*|db"),
        ("SHOW SERIES", "*"),
        (
            "SHOW SERIES ON db FROM m WHERE a = 'b' LIMIT 1 OFFSET 1",
            "*|db",
        ),
        ("SHOW SERIES EXACT CARDINALITY ON db", "db"),
        ("SHOW SERIES CARDINALITY FROM x..m GROUP BY host", "*|x"),
        ("SHOW MEASUREMENT CARDINALITY", "*"),
        ("SHOW MEASUREMENT EXACT CARDINALITY ON db", "db"),
        ("SHOW TAG KEY CARDINALITY", "*"),
        ("SHOW TAG KEY EXACT CARDINALITY ON db FROM m", "*|db"),
        ("SHOW TAG VALUES CARDINALITY WITH KEY = host", "*"),
        (
            "SHOW TAG VALUES EXACT CARDINALITY ON db WITH KEY = host",
            "db",
        ),
        ("SHOW FIELD KEY CARDINALITY", "*"),
        ("SHOW FIELD KEY EXACT CARDINALITY ON db", "db"),
    ]);
    assert_eq!(parse_ok("show DATABASES"), [Statement::ShowDatabases]);
    assert_eq!(err("SHOW MEASUREMENTS ON *"), ScanError::WildcardDatabase);
    assert_eq!(err("SHOW MEASUREMENTS ON *.*"), ScanError::WildcardDatabase);
    assert!(matches!(err("SHOW FOO"), ScanError::Unsupported(_)));
    assert!(matches!(
        err("SHOW RETENTION"),
        ScanError::Unexpected { .. }
    ));
    assert!(matches!(
        err("SHOW FIELD VALUES"),
        ScanError::Unexpected { .. }
    ));
}

fn admin(q: &str) -> (String, Vec<(DbRef, Action)>) {
    match parse_ok(q).as_slice() {
        [Statement::Admin { what, needs }] => (what.clone(), needs.clone()),
        other => panic!("{q:?}: expected one admin statement, got {other:?}"),
    }
}

#[test]
fn admin_statements_name_their_database_and_action() {
    use Action::{Create, Delete, Read, ReadSchema, Write};
    let named = |s: &str| DbRef::Named(s.to_owned());
    type Case = (&'static str, &'static str, Vec<(DbRef, Action)>);
    let cases: Vec<Case> = vec![
        (
            "CREATE DATABASE x",
            "CREATE DATABASE",
            vec![(named("x"), Create)],
        ),
        (
            "create database \"x y\" WITH DURATION 1d NAME rp",
            "CREATE DATABASE",
            vec![(named("x y"), Create)],
        ),
        (
            "DROP DATABASE x",
            "DROP DATABASE",
            vec![(named("x"), Delete)],
        ),
        (
            "DROP MEASUREMENT m",
            "DROP MEASUREMENT",
            vec![(DbRef::Default, Delete)],
        ),
        (
            "DROP SERIES FROM m, /re;x/ WHERE host =~ /a;b/",
            "DROP SERIES",
            vec![(DbRef::Default, Delete)],
        ),
        (
            "DROP SERIES FROM other..m",
            "DROP SERIES",
            vec![(DbRef::Default, Delete), (named("other"), Delete)],
        ),
        ("DROP SHARD 1", "DROP SHARD", vec![(named("*"), Delete)]),
        (
            "DELETE FROM m WHERE time < now() - 1d",
            "DELETE",
            vec![(DbRef::Default, Delete)],
        ),
        (
            "DELETE WHERE host =~ /x;y/",
            "DELETE",
            vec![(DbRef::Default, Delete)],
        ),
        (
            "ALTER RETENTION POLICY rp ON db DURATION 2d",
            "ALTER RETENTION POLICY",
            vec![(named("db"), Create)],
        ),
        (
            "ALTER RETENTION POLICY DEFAULT ON \"d;b\" DEFAULT",
            "ALTER RETENTION POLICY",
            vec![(named("d;b"), Create)],
        ),
        (
            "CREATE RETENTION POLICY rp ON db DURATION 1d REPLICATION 1 DEFAULT",
            "CREATE RETENTION POLICY",
            vec![(named("db"), Create)],
        ),
        (
            "DROP RETENTION POLICY rp ON db",
            "DROP RETENTION POLICY",
            vec![(named("db"), Delete)],
        ),
        (
            "SHOW RETENTION POLICIES ON db",
            "SHOW RETENTION POLICIES",
            vec![(named("db"), ReadSchema)],
        ),
        (
            "SHOW RETENTION POLICIES",
            "SHOW RETENTION POLICIES",
            vec![(DbRef::Default, ReadSchema)],
        ),
        (
            "CREATE CONTINUOUS QUERY c ON db RESAMPLE EVERY 1h BEGIN SELECT mean(v) INTO a..m FROM /x;y/, s..n GROUP BY time(1h) END",
            "CREATE CONTINUOUS QUERY",
            vec![
                (named("db"), Create),
                (named("db"), Read),
                (named("s"), Read),
                (named("a"), Write),
            ],
        ),
        (
            "DROP CONTINUOUS QUERY cq ON db",
            "DROP CONTINUOUS QUERY",
            vec![(named("db"), Delete)],
        ),
        ("SHOW SHARDS", "SHOW SHARDS", vec![(named("*"), ReadSchema)]),
        (
            "SHOW SHARD GROUPS",
            "SHOW SHARD GROUPS",
            vec![(named("*"), ReadSchema)],
        ),
        (
            "show continuous queries",
            "SHOW CONTINUOUS QUERIES",
            vec![(named("*"), ReadSchema)],
        ),
    ];
    for (q, what, needs) in cases {
        assert_eq!(admin(q), (what.to_owned(), needs), "{q}");
    }
}

#[test]
fn user_and_server_statements_are_refused() {
    for (q, what) in [
        (
            "CREATE USER u WITH PASSWORD 'p;w' WITH ALL PRIVILEGES",
            "CREATE USER",
        ),
        ("DROP USER u", "DROP USER"),
        ("GRANT READ ON db TO u", "GRANT"),
        ("REVOKE ALL PRIVILEGES FROM u", "REVOKE"),
        ("SET PASSWORD FOR u = 'x'", "SET PASSWORD"),
        ("KILL QUERY 12 ON \"h\"", "KILL QUERY"),
        (
            "CREATE SUBSCRIPTION s ON db.rp DESTINATIONS ALL 'h;'",
            "CREATE SUBSCRIPTION",
        ),
        ("DROP SUBSCRIPTION s ON db.rp", "DROP SUBSCRIPTION"),
        ("SHOW USERS", "SHOW USERS"),
        ("SHOW GRANTS FOR u", "SHOW GRANTS"),
        ("SHOW QUERIES", "SHOW QUERIES"),
        ("SHOW STATS FOR 'x;y'", "SHOW STATS"),
        ("SHOW DIAGNOSTICS", "SHOW DIAGNOSTICS"),
        ("SHOW SUBSCRIPTIONS", "SHOW SUBSCRIPTIONS"),
    ] {
        match parse_ok(q).as_slice() {
            [Statement::Refused { what: got, .. }] => assert_eq!(got, what, "{q}"),
            other => panic!("{q}: {other:?}"),
        }
    }
    for q in [
        "CREATE TABLE x",
        "DROP",
        "ALTER USER u",
        "KILL ALL",
        "INSERT cpu v=1",
    ] {
        assert!(matches!(err(q), ScanError::Unsupported(_)), "{q}");
    }
    assert_eq!(err("DROP DATABASE 'x"), ScanError::UnterminatedString);
    assert!(matches!(
        err("DROP DATABASE 'x'"),
        ScanError::Unexpected { .. }
    ));
    assert_eq!(err("DROP DATABASE *"), ScanError::WildcardDatabase);
    assert!(matches!(
        err("DROP MEASUREMENT /'/; SELECT 1"),
        ScanError::Unexpected { .. }
    ));
    assert!(
        matches!(
            err("CREATE CONTINUOUS QUERY c ON db BEGIN SELECT * FROM m END"),
            ScanError::Unexpected { .. }
        ),
        "a continuous query must write somewhere"
    );
}

#[test]
fn retention_policies_named_with_a_database_are_kept() {
    let scoped = |q: &str| match parse_ok(q).as_slice() {
        [Statement::Data { scoped, .. }] => scoped
            .iter()
            .map(|s| (s.database.clone(), s.policy.clone(), s.write))
            .collect::<Vec<_>>(),
        other => panic!("{q}: {other:?}"),
    };
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        scoped("SELECT * FROM x.foo.m"),
        [("x".into(), some("foo"), false)]
    );
    assert_eq!(
        scoped("SELECT * FROM x.foo./re/"),
        [("x".into(), some("foo"), false)]
    );
    assert_eq!(scoped("SELECT * FROM x..m"), [("x".into(), None, false)]);
    assert!(
        scoped("SELECT * FROM foo.m").is_empty(),
        "no database named"
    );
    assert_eq!(
        scoped("SELECT * INTO y.bar.m FROM m"),
        [("y".into(), some("bar"), true)]
    );
    assert_eq!(
        scoped("SHOW MEASUREMENTS ON x.foo"),
        [("x".into(), some("foo"), false)]
    );
}

#[test]
fn statement_lists() {
    let got = parse_ok(";SELECT * FROM a..m; DROP DATABASE x;; SHOW DATABASES;");
    let want = [
        Statement::Data {
            reads: dbs("a"),
            writes: vec![],
            scoped: vec![Scoped {
                database: "a".into(),
                policy: None,
                write: false,
            }],
        },
        Statement::Admin {
            what: "DROP DATABASE".into(),
            needs: vec![(DbRef::Named("x".into()), Action::Delete)],
        },
        Statement::ShowDatabases,
    ];
    assert_eq!(got, want);
    assert_eq!(
        parse_ok("SELECT * FROM a..m -- x\r; SELECT * FROM b..m").len(),
        2
    );
    assert!(matches!(
        err("SELECT * FROM m SELECT * FROM n"),
        ScanError::Unexpected { .. }
    ));
}

#[test]
fn semicolons_inside_literals_and_comments_do_not_split() {
    check_reads(&[
        ("SELECT * FROM m WHERE t = 'a;b'", "*"),
        (r"SELECT * FROM m WHERE t = 'it\'s; DROP DATABASE x'", "*"),
        ("SELECT * FROM \"a;b\"", "*"),
        ("SELECT * FROM /a;b/", "*"),
        (r"SELECT * FROM m WHERE host =~ /a\/;b/", "*"),
        ("SELECT * FROM m /* ; DROP DATABASE x */", "*"),
        ("SELECT /;/ FROM m GROUP BY /;/", "*"),
        ("SELECT * FROM a..m -- ; DROP DATABASE x", "a"),
    ]);
}

#[test]
fn regex_and_division_follow_influxdb() {
    check_reads(&[
        ("SELECT a / 2 FROM m", "*"),
        ("SELECT a/b/c, (d + 1) % 2 FROM x..m", "x"),
        (r"SELECT * FROM m WHERE host =~ /a\/b/ AND x !~ /c/", "*"),
        // In a dotted expression name a `/` right after the dot divides.
        ("SELECT a./b/c FROM x..m", "x"),
        // Field, call-argument and GROUP BY positions take regexes, so a
        // quote inside them cannot open a string that hides `secret`.
        (
            "SELECT /'/ FROM secret..m WHERE a =~ /' FROM allowed..m/",
            "secret",
        ),
        ("SELECT count(/'/) FROM secret..m GROUP BY /'/", "secret"),
        ("SELECT top(v, /'/, 3) FROM secret..m", "secret"),
    ]);
}

#[test]
fn expressions_casts_and_params() {
    check_reads(&[
        ("SELECT \"value\"::float, *::tag, v::field FROM m", "*"),
        (
            "SELECT * FROM m WHERE h = $host AND v =~ $re AND w > -1 AND x = -(2 + 3)",
            "*",
        ),
        (
            "SELECT * FROM m WHERE a <> true OR b != false AND c >= 1.5 AND d <= .5",
            "*",
        ),
        ("SELECT DISTINCT host FROM m", "*"),
        (
            "SELECT COUNT(DISTINCT host), distinct(\"h\"), now() FROM m",
            "*",
        ),
        (
            "SELECT v FROM m WHERE time > '2020-01-01T00:00:00Z' ORDER BY time DESC",
            "*",
        ),
        (
            "SELECT non_negative_derivative(mean(\"rx\"), 1s) * 8 FROM net GROUP BY *",
            "*",
        ),
        (
            "SELECT mean(\"value\") FROM \"autogen\".\"cpu\" WHERE (\"host\" =~ /^(a|b)$/) \
             AND time >= 1700000000000ms and time <= now() GROUP BY time(10s), \"host\" \
             fill(null) ORDER BY time DESC LIMIT 100 SLIMIT 5 tz('Europe/Paris')",
            "*",
        ),
    ]);
}

#[test]
fn refusals() {
    for q in ["", "  \n", ";", ";;", "-- only a comment", "/* c */"] {
        assert_eq!(err(q), ScanError::Empty, "{q:?}");
    }
    assert_eq!(err("SELECT 1"), ScanError::MissingFrom);
    assert_eq!(err("SELECT * WHERE a = 1"), ScanError::MissingFrom);
    assert_eq!(err("SELECT * FROM a.b.c.d"), ScanError::TooManySegments);
    assert_eq!(
        err("SELECT * FROM m WHERE a = 'x"),
        ScanError::UnterminatedString
    );
    assert_eq!(err("SELECT * FROM \"m"), ScanError::UnterminatedIdent);
    assert_eq!(err("SELECT * FROM /m"), ScanError::UnterminatedRegex);
    assert_eq!(err("SELECT * FROM m /* x"), ScanError::UnterminatedComment);
    assert_eq!(
        err("SELECT * FROM m WHERE a ! b"),
        ScanError::IllegalChar('!')
    );
    assert_eq!(
        err("SELECT * FROM m -- \0\nSELECT"),
        ScanError::IllegalChar('\0')
    );
    assert_eq!(err("SELECT * FROM\"x\"..m"), ScanError::QuoteAfterWord);
    let deep = format!("SELECT {}1{} FROM m", "(".repeat(80), ")".repeat(80));
    assert_eq!(err(&deep), ScanError::TooDeep);
    for q in [
        "FOO",
        "\"select\" * FROM m",
        "SELECT * FROM",
        "SELECT * FROM 'm'",
        "SELECT * FROM m junk",
        "SELECT * FROM where",
        "SELECT * FROM m WHERE",
        "SELECT * FROM $db..m",
        "SELECT * FROM a.$rp.m",
        "SHOW MEASUREMENTS ON $db",
        "SELECT * FROM m WHERE a = 1 WHERE b = 2",
        "SELECT * FROM m; SELECT * FROM 'x",
        "SELECT * FROM m LIMIT x",
        "SELECT a / FROM m",
    ] {
        assert!(parse_statements(q).is_err(), "{q:?}");
    }
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z\"\\\\ ;'/.\n*-]{1,10}", "[^\u{0}\r]{1,10}"]
}

fn render((db, m): &(Option<String>, String)) -> String {
    let db = db.as_deref().map(|db| format!("{}..", quote(db)));
    format!("SELECT * FROM {}{}", db.unwrap_or_default(), quote(m))
}

const FIELDS: &[&str] = &[
    "*",
    "mean(\"v\")",
    "a / 2",
    "/re;/",
    "\"f\" AS x, count(/'/)",
];

const TEMPLATES: &[&str] = &[
    "SELECT @ mean(\"v\") @ AS @ x @ , @ /re/ @ FROM @ \"d b\"..m @ , @ rp.m2 @ WHERE @ h @ =~ \
     @ /a\\/b/ @ AND @ v @ / @ 2 @ > @ - @ 1 @ GROUP @ BY @ time(1m) @ , @ /t/ @ fill(none)",
    "SELECT @ * @ INTO @ w..:MEASUREMENT @ FROM @ ( @ SELECT @ a @ FROM @ x.rp./re/ @ ) @ , @ y..m",
    "SHOW @ TAG @ VALUES @ ON @ db @ FROM @ z..m @ WITH @ KEY @ IN @ ( @ a @ , @ \"b\" @ )",
    "SELECT @ * @ FROM @ a..m @ ; @ DROP @ DATABASE @ x @ ; @ SHOW @ DATABASES @ ;",
    "EXPLAIN @ SELECT @ count(/x/) @ FROM @ m @ WHERE @ a @ = @ 's;t' @ LIMIT @ 1 @ tz('UTC')",
];

const TRIVIA: &[&str] = &[
    " ",
    "\n",
    "\t",
    "\r\n",
    "/* c; */",
    "-- c; DROP DATABASE x\n",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn never_panics(s in any::<String>()) {
        let _ = parse_statements(&s);
    }

    #[test]
    fn never_panics_on_query_like_text(s in "[a-zA-Z \"'/\\\\*;.,:$()=~!<>+%-]{0,60}") {
        let _ = parse_statements(&s);
    }

    #[test]
    fn named_database_round_trips(db in name(), m in name(), f in prop::sample::select(FIELDS)) {
        let q = format!("SELECT {f} FROM {}..{}", quote(&db), quote(&m));
        prop_assert_eq!(reads(&q), vec![DbRef::Named(db)]);
    }

    #[test]
    fn statement_lists_union_reads(
        srcs in prop::collection::vec((prop::option::of(name()), name()), 1..6),
    ) {
        let got = parse_ok(&srcs.iter().map(render).collect::<Vec<_>>().join(";"));
        prop_assert_eq!(got.len(), srcs.len());
        let mut union = BTreeSet::new();
        for (stmt, (db, _)) in got.iter().zip(&srcs) {
            let want = vec![DbRef::from_name(db.as_deref())];
            let matches = matches!(stmt, Statement::Data { reads, writes, .. } if *reads == want && writes.is_empty());
            prop_assert!(matches, "{:?}", stmt);
            union.extend(want);
        }
        let all = srcs.iter().map(|(db, _)| DbRef::from_name(db.as_deref()));
        prop_assert_eq!(union, all.collect::<BTreeSet<_>>());
    }

    /// `@` marks every place InfluxQL allows whitespace or comments.
    #[test]
    fn trivia_between_tokens_is_irrelevant(
        t in prop::sample::select(TEMPLATES),
        picks in prop::collection::vec(prop::sample::select(TRIVIA), 40),
    ) {
        let plain = parse_ok(&t.replace('@', " "));
        let mut q = String::new();
        for (i, chunk) in t.split('@').enumerate() {
            q.push_str(chunk);
            q.push_str(picks[i % picks.len()]);
        }
        prop_assert_eq!(parse_ok(&q), plain);
    }
}
