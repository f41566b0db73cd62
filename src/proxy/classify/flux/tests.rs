//! The analyzer's rules, case by case: what each Flux construct needs, and
//! what is refused.

use super::*;
use proptest::prelude::*;

fn ok(q: &str) -> FluxAccess {
    analyze(q).unwrap_or_else(|e| panic!("{q:?}: {e}"))
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn err(q: &str) -> FluxError {
    analyze(q).expect_err(q)
}

/// Flux string literal for any text (`$` as `\x24` so it never interpolates).
fn quote(s: &str) -> String {
    let body = s
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('$', r"\x24");
    format!("\"{body}\"")
}

const RANGE: &str = "|> range(start: -1h)";

#[test]
fn typical_queries() {
    let cases: &[(&str, &[&str])] = &[
        (
            "from(bucket: \"telegraf/autogen\") |> range(start: -1h) \
             |> filter(fn: (r) => r._measurement == \"cpu\")",
            &["telegraf/autogen"],
        ),
        (
            "from(bucket: \"b\")\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n  \
             |> filter(fn: (r) => r[\"_measurement\"] == \"cpu\" and r[\"host\"] =~ /^a$/)\n  \
             |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)\n  \
             |> map(fn: (r) => ({r with host: \"x\", _value: r._value / 2.0 / 3.0}))\n  \
             |> yield(name: \"mean\")",
            &["b"],
        ),
        (
            "import \"strings\"\nimport \"influxdata/influxdb/schema\"\n\
             schema.tagValues(bucket: \"b\", tag: \"host\")",
            &["b"],
        ),
        (
            "import \"influxdata/influxdb/v1\"\nv1.measurements(bucket:\"m\")",
            &["m"],
        ),
        (
            "import \"influxdata/influxdb\"\ninfluxdb.from(bucket: \"x\")",
            &["x"],
        ),
        (
            "a = from(bucket: \"a\") |> range(start: 2021-01-01T00:00:00Z, stop: 2021-01-02T00:00:00.5+01:00)\n\
             b = from(bucket: \"b\") |> range(start: -1h30m)\n\
             join(tables: {a: a, b: b}, on: [\"_time\"])",
            &["a", "b"],
        ),
        (
            "import \"array\"\narray.from(rows: [{v: 1}]) \
             |> union(tables: [from(bucket: \"x\"), from(bucket: \"y\",)])",
            &["x", "y"],
        ),
        ("from(\"bucket\": \"q\")", &["q"]),
        ("// from(bucket: \"secret\")\nfrom(bucket: \"a\")", &["a"]),
        (
            "from(bucket: \"a\") |> filter(fn: (r) => r.x == \"from(bucket: \\\"s\\\")\")",
            &["a"],
        ),
        (
            "from(bucket: \"a\") |> filter(fn: (r) => r.x =~ /from\\(bucket: \"s\"\\)/ or r.b == 1)",
            &["a"],
        ),
        (
            "from(bucket: \"a\") |> map(fn: (r) => ({r with s: \"v=${r._value}\"}))",
            &["a"],
        ),
        (
            "from(bucket: \"a\") |> map(fn: (r) => ({r with s: \"${string(v: \
             (from(bucket: \"b\") |> findRecord(fn: (key) => true, idx: 0))._value)}\"}))",
            &["a", "b"],
        ),
        ("from(bucket: \"a$b\")", &["a$b"]),
        ("from(bucket: \"x$\\\")", &["x$\\"]),
        ("from(bucket: \"a\\\"b\\\\c\\x41\\${}\")", &["a\"b\\cA${}"]),
        ("from(bucket: \"ünï cödé ☃\")", &["ünï cödé ☃"]),
    ];
    for (q, want) in cases {
        assert_eq!(
            ok(q),
            FluxAccess {
                reads: names(want),
                writes: vec![]
            },
            "{q}"
        );
    }
}

#[test]
fn writes() {
    let q = format!("from(bucket: \"a\") {RANGE} |> to(bucket: \"b\")");
    assert_eq!(
        ok(&q),
        FluxAccess {
            reads: names(&["a"]),
            writes: names(&["b"])
        }
    );
    let q = format!(
        "import \"experimental\"\nimport \"influxdata/influxdb\"\nfrom(bucket: \"a\") {RANGE} \
         |> experimental.to(bucket: \"c\") |> influxdb.wideTo(bucket: \"w\")"
    );
    assert_eq!(ok(&q).writes, names(&["c", "w"]));
    let refused = [
        (
            "from(bucket: \"a\") |> to()",
            FluxError::WriteWithoutBucket("to".into()),
        ),
        (
            "t = to\nfrom(bucket: \"a\") |> t(bucket: \"b\")",
            FluxError::WriteFunctionAsValue("to".into()),
        ),
        (
            "import \"experimental\"\nf = experimental.to",
            FluxError::WriteFunctionAsValue("to".into()),
        ),
        (
            "from(bucket: \"a\") |> to(bucket: \"b\", orgID: \"x\")",
            FluxError::ForbiddenArgument("orgID".into()),
        ),
        (
            "import \"array\"\narray.from(rows: [{a: 1}]) |> to(bucket: \"b\")",
            FluxError::NoBucket,
        ),
    ];
    for (q, e) in refused {
        assert_eq!(err(q), e, "{q}");
    }
}

#[test]
fn non_literal_buckets_are_refused() {
    for q in [
        "b = \"x\"\nfrom(bucket: b)",
        "from(bucket: \"a\" + \"b\")",
        "from(bucket: \"${b}\")",
        "from(bucket)",
        "from(bucket: v.bucket)",
        "f = (bucket=\"x\") => from(bucket: bucket)",
        "x = {bucket: y}",
    ] {
        assert_eq!(err(q), FluxError::BucketNotLiteral, "{q}");
    }
    assert_eq!(
        err("from(bucket: \"a\", \"${k}\": \"h\")"),
        FluxError::DynamicKey
    );
    assert_eq!(err("from()"), FluxError::FromWithoutBucket);
    assert_eq!(err("from(start: -1h)"), FluxError::FromWithoutBucket);
}

#[test]
fn remote_and_id_targets_are_refused() {
    for arg in [
        "bucketID: \"0a1b\"",
        "host: \"https://x\"",
        "org: \"o\"",
        "orgID: \"1\"",
        "token: \"t\"",
        "\"host\": \"h\"",
        "token",
    ] {
        let q = format!("from(bucket: \"a\", {arg})");
        assert!(matches!(err(&q), FluxError::ForbiddenArgument(_)), "{q}");
    }
    assert_eq!(
        err("from(bucketID: \"1\")"),
        FluxError::ForbiddenArgument("bucketID".into())
    );
    let q = "import \"influxdata/influxdb/v1\"\nv1.json(file: \"/etc/passwd\")";
    assert_eq!(err(q), FluxError::ForbiddenArgument("file".into()));
}

#[test]
fn words_flux_versions_read_differently_are_refused() {
    // `in` is an identifier since Flux 0.184: `in / (…) / 1.0` divides
    // there and was a regex before.
    let q = "in = 1.0\nleak = in /(from(bucket: \"secret\"))._value/ 1.0\nfrom(bucket: \"x\")";
    assert_eq!(err(q), FluxError::ChangedKeyword("in"));
    for word in ["in", "empty", "test"] {
        let q = format!("{word} = 1\nfrom(bucket: \"x\")");
        assert_eq!(err(&q), FluxError::ChangedKeyword(word), "{q}");
    }
}

#[test]
fn packages_only_as_package_dot_member() {
    let refused = [
        "import \"influxdata/influxdb\"\nb = influxdb[\"buckets\"]()",
        "import \"influxdata/influxdb\"\nfrom(bucket: \"x\") |> influxdb[\"to\"](bucket: \"s\")",
        "import \"experimental\"\nfrom(bucket: \"x\") |> experimental[\"to\"](bucket: \"s\")",
        "import \"influxdata/influxdb\"\nr = influxdb\nr.buckets()",
        "import \"influxdata/influxdb\"\nr = {p: influxdb}\nr.p.buckets()",
        "import \"influxdata/influxdb/v1\"\nf = (p) => p.databases()\nf(p: v1)",
    ];
    for q in refused {
        assert!(
            matches!(
                analyze(q),
                Err(FluxError::PackageAsValue(_) | FluxError::IndexedFunction(_))
            ),
            "{q}: {:?}",
            analyze(q)
        );
    }
    // Records are still indexed by their columns.
    ok("from(bucket: \"x\") |> map(fn: (r) => ({r with v: r[\"_value\"] * 2.0}))");
    ok(
        "import \"strings\"\nfrom(bucket: \"x\") |> map(fn: (r) => ({r with h: strings.toUpper(v: r.host)}))",
    );
    ok(
        "from(bucket: \"x\") |> filter(fn: (r) => contains(value: r.host, set: [\"to\", \"from\"]))",
    );
}

#[test]
fn listing_is_refused() {
    assert_eq!(err("buckets()").to_string(), "buckets() is not allowed");
    assert_eq!(
        err("b = buckets\nb()"),
        FluxError::ForbiddenFunction("buckets".into())
    );
    let q = "import \"influxdata/influxdb\"\ninfluxdb.buckets()";
    assert_eq!(err(q), FluxError::ForbiddenFunction("buckets".into()));
    let q = "import \"influxdata/influxdb/v1\"\nv1.databases()";
    assert_eq!(err(q), FluxError::ForbiddenFunction("databases".into()));
    // Digits never swallow a following identifier.
    let q = "from(bucket: \"a\")\nx = 1buckets()";
    assert_eq!(err(q), FluxError::ForbiddenFunction("buckets".into()));
}

#[test]
fn imports() {
    assert_eq!(
        err("import \"sql\"\nfrom(bucket: \"a\")").to_string(),
        "import \"sql\" is not allowed"
    );
    for path in [
        "http",
        "csv",
        "socket",
        "influxdata/influxdb/secrets",
        "experimental/http",
        "experimental/mqtt",
        "experimental/influxdb",
        "influxdata/influxdb/sample",
        "strings/x",
    ] {
        let q = format!("import s \"{path}\"\nfrom(bucket: \"a\")");
        assert_eq!(err(&q), FluxError::ForbiddenImport(path.into()), "{q}");
    }
    assert_eq!(err("import \"${x}\""), FluxError::BadImport);
    assert_eq!(err("import x"), FluxError::BadImport);
    assert_eq!(
        err("import \"array\"\narray.from(rows: [{a: 1}])"),
        FluxError::NoBucket
    );
    assert_eq!(
        err("import arr \"array\"\narr.from(rows: [])"),
        FluxError::NoBucket
    );
}

#[test]
fn lexing_feeds_the_checks() {
    // After `import "p"` a statement starts, so `/` opens a regex there
    // and the quote inside it cannot start a string hiding the `from`.
    assert_eq!(
        ok("import \"strings\"\n/\"/\nfrom(bucket: \"a\")").reads,
        names(&["a"])
    );
    assert_eq!(
        ok("x = 4 / 2 / 1\nfrom(bucket: \"a\")").reads,
        names(&["a"])
    );
    let q = "from(bucket: \"a\") |> filter(fn: (r) => r.x =~ /\"/ and r.y == \"z\")";
    assert_eq!(ok(q).reads, names(&["a"]));
    for (q, e) in [
        ("", FluxError::NoBucket),
        ("x = 1 // from(bucket: \"a\")", FluxError::NoBucket),
        ("from(bucket: \"a\") |> range(", FluxError::Unbalanced),
        ("from(bucket: \"a\"))", FluxError::Unbalanced),
        ("from(bucket: \"a\", x: [1)]", FluxError::Unbalanced),
        (
            "builtin x : int",
            FluxError::Unsupported("builtin and test statements"),
        ),
        ("from(bucket: 'a')", FluxError::IllegalChar('\'')),
    ] {
        assert_eq!(err(q), e, "{q}");
    }
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z\"\\\\${}/ \n]{1,10}",
        "\\PC{1,10}",
        any::<String>().prop_filter("non-empty", |s| !s.is_empty())
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn never_panics(s in any::<String>()) {
        let _ = analyze(&s);
    }

    #[test]
    fn never_panics_on_flux_like_text(s in "[a-z(){}\\[\\]:,.|>=~\"\\\\$/ \n0-9-]{0,60}") {
        let _ = analyze(&s);
    }

    #[test]
    fn bucket_names_round_trip(read in name(), write in name()) {
        let q = format!("from(bucket: {}) {RANGE} |> to(bucket: {})", quote(&read), quote(&write));
        prop_assert_eq!(ok(&q), FluxAccess { reads: vec![read], writes: vec![write] });
    }
}
