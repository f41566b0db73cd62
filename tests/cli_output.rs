//! Fuzzes the management CLI's output paths (issue 18, finding 1): whatever
//! a token service sends — timestamps far outside 1970–9999 or invalid,
//! huge strings, control and format characters, unknown kinds — rendering
//! tables, blocks and JSON never panics, JSON stays valid and carries the
//! exact strings, and nothing printed for people holds a raw control or
//! format character.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::SystemTime;

use fluxgate::cli::output::{self, TokenView};
use fluxgate::cli::table;
use fluxgate::proto::tokens as pb;
use fluxgate::tokens::unicode::is_format;
use proptest::prelude::*;
use prost_types::Timestamp;

fn timestamp() -> impl Strategy<Value = Option<Timestamp>> {
    let seconds = prop_oneof![
        any::<i64>(),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(253_402_300_799),
        Just(253_402_300_800),
        Just(-1),
        Just(0),
        0i64..4_000_000_000,
    ];
    let nanos = prop_oneof![any::<i32>(), Just(999_999_999), Just(-1), Just(0)];
    proptest::option::of((seconds, nanos).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos }))
}

/// Text with a fair share of the characters that break terminals.
fn text() -> impl Strategy<Value = String> {
    let nasty = prop_oneof![
        any::<char>(),
        Just('\n'),
        Just('\r'),
        Just('\t'),
        Just('\u{1b}'),
        Just('\u{7f}'),
        Just('\u{9b}'),
        Just('\u{200b}'),
        Just('\u{202e}'),
        Just('\u{2066}'),
        Just('\u{feff}'),
        Just('\u{e0041}'),
        Just('…'),
        Just(','),
        Just(' '),
    ];
    prop_oneof![
        4 => proptest::collection::vec(nasty, 0..80).prop_map(|c| c.into_iter().collect()),
        1 => (any::<char>(), 1000usize..5_000).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

fn token_info() -> impl Strategy<Value = pb::TokenInfo> {
    let permission = (text(), any::<bool>(), any::<bool>()).prop_map(|(database, read, write)| {
        pb::DatabasePermission {
            database,
            read,
            write,
        }
    });
    (
        text(),
        prop_oneof![Just(1), Just(2), Just(3), any::<i32>()],
        text(),
        proptest::collection::vec(permission, 0..12),
        (timestamp(), timestamp(), timestamp(), timestamp()),
    )
        .prop_map(
            |(id, kind, description, permissions, (created, expires, revoked, updated))| {
                pb::TokenInfo {
                    id,
                    kind,
                    description,
                    permissions,
                    created_at: created,
                    expires_at: expires,
                    revoked_at: revoked,
                    updated_at: updated,
                }
            },
        )
}

fn render(f: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>) -> String {
    let mut buf = Vec::new();
    f(&mut buf).expect("rendering never fails");
    String::from_utf8(buf).expect("UTF-8")
}

/// Nothing a terminal would act on or that hides text.
fn for_people(text: &str) -> Result<(), TestCaseError> {
    let bad = text
        .chars()
        .find(|c| (c.is_control() && *c != '\n') || is_format(*c));
    prop_assert!(bad.is_none(), "raw {:?} in {:?}", bad, text);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_output_path_survives_anything(
        infos in proptest::collection::vec(token_info(), 0..4),
        secret in text(),
        width in 0usize..300,
    ) {
        let views: Vec<TokenView> = infos.iter().cloned().map(TokenView::from_wire).collect();
        let now = SystemTime::now();
        for view in &views {
            let table = render(|out| output::block(out, view, None, now, width));
            for_people(&table)?;
            let _ = render(|out| output::block(out, view, Some(&secret), now, width));
            let json = render(|out| output::json_token(out, view, Some(&secret)));
            for_people(&json)?;
            let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
            prop_assert_eq!(parsed["description"].as_str(), Some(view.description.as_str()));
            prop_assert_eq!(parsed["id"].as_str(), Some(view.id.as_str()));
            prop_assert_eq!(parsed["token"].as_str(), Some(secret.as_str()));
            for key in ["created_at", "updated_at", "expires_at", "revoked_at"] {
                let v = &parsed[key];
                prop_assert!(v.is_null() || v.is_string(), "{key}: {v}");
            }
        }
        let list = render(|out| output::json_tokens(out, &views));
        let parsed: serde_json::Value = serde_json::from_str(&list).expect("valid JSON");
        prop_assert_eq!(parsed.as_array().map(Vec::len), Some(views.len()));
        for table in [
            render(|out| table::database_table(out, &views, now, width)),
            render(|out| table::management_table(out, &views, now, width)),
        ] {
            for_people(&table)?;
        }
    }
}

#[test]
fn times_outside_rfc3339_print_as_their_side_of_the_range() {
    let info = |seconds| pb::TokenInfo {
        id: "t".into(),
        kind: 1,
        expires_at: Some(Timestamp { seconds, nanos: 0 }),
        ..Default::default()
    };
    for (seconds, shown) in [
        (253_402_300_800, "after 9999-12-31T23:59:59Z"),
        (i64::MAX, "after 9999-12-31T23:59:59Z"),
        (-1, "before 1970-01-01T00:00:00Z"),
        (i64::MIN, "before 1970-01-01T00:00:00Z"),
        (253_402_300_799, "9999-12-31T23:59:59.000Z"),
    ] {
        let view = TokenView::from_wire(info(seconds));
        let json = render(|out| output::json_token(out, &view, None));
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["expires_at"], shown, "{seconds}");
    }
}
