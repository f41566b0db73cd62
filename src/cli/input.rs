//! Checks of what the user typed that need no token service: permissions
//! from `--read-database`/`--write-database`, the description, and expiry
//! from `--expires-at` (RFC 3339) or `--expires-in` (a duration), no later
//! than 9999-12-31T23:59:59Z. Failures are usage errors, reported before
//! any credential is looked up or any connection is made (the token
//! service applies the same rules).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use prost_types::Timestamp;

use super::error::CliError;
use crate::config::commands::ExpiryOptions;
use crate::proto::tokens as pb;
use crate::tokens::model::{
    MAX_PERMISSIONS, max_expiry, validate_database_name, validate_description,
};

/// The permission list for a create or update: one entry per database, read
/// and write merged. No database at all is a usage error: a token without
/// permission is useless, and `update` would otherwise strip every right.
pub fn permissions(
    read: &[String],
    write: &[String],
) -> Result<Vec<pb::DatabasePermission>, CliError> {
    if read.is_empty() && write.is_empty() {
        return Err(CliError::usage(
            "a database token needs at least one --read-database or --write-database (use '*' for every database)",
        ));
    }
    if read.len() + write.len() > MAX_PERMISSIONS {
        return Err(CliError::usage(format!(
            "too many databases: at most {MAX_PERMISSIONS} per token (use '*' for every database)"
        )));
    }
    let mut merged: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for (names, flag, is_read) in [
        (read, "--read-database", true),
        (write, "--write-database", false),
    ] {
        for name in names {
            validate_database_name(name)
                .map_err(|e| CliError::usage(format!("invalid {flag}: {e}")))?;
            let entry = merged.entry(name.as_str()).or_default();
            if is_read {
                entry.0 = true;
            } else {
                entry.1 = true;
            }
        }
    }
    Ok(merged
        .into_iter()
        .map(|(database, (read, write))| pb::DatabasePermission {
            database: database.to_owned(),
            read,
            write,
        })
        .collect())
}

/// Checks a description as the token service would.
pub fn description(text: &str) -> Result<(), CliError> {
    validate_description(text).map_err(|e| CliError::usage(format!("invalid description: {e}")))
}

/// The expiry asked for, if any; it must lie after `now` and no later than
/// 9999-12-31T23:59:59Z.
pub fn expiry(options: &ExpiryOptions, now: SystemTime) -> Result<Option<Timestamp>, CliError> {
    let at = match (&options.expires_at, &options.expires_in) {
        (Some(_), Some(_)) => {
            return Err(CliError::usage(
                "give either --expires-at or --expires-in, not both",
            ));
        }
        (None, None) => return Ok(None),
        (Some(at), None) => {
            let t = parse_rfc3339(at).map_err(|why| {
                CliError::usage(format!(
                    "invalid --expires-at {at:?}: {why} (example: 2027-01-01T00:00:00Z)"
                ))
            })?;
            if t <= now {
                return Err(CliError::usage(format!(
                    "--expires-at {at} is not in the future"
                )));
            }
            t
        }
        (None, Some(within)) => {
            let d = humantime::parse_duration(within.trim()).map_err(|e| {
                CliError::usage(format!(
                    "invalid --expires-in {within:?}: {e} (examples: 90d, 12h, 30m)"
                ))
            })?;
            if d.is_zero() {
                return Err(CliError::usage("--expires-in must be longer than zero"));
            }
            now.checked_add(d)
                .filter(|t| *t <= max_expiry())
                .ok_or_else(|| {
                    CliError::usage(format!(
                        "--expires-in {within} is too far away: the latest expiry accepted is 9999-12-31T23:59:59Z"
                    ))
                })?
        }
    };
    if at > max_expiry() {
        return Err(CliError::usage(
            "the expiry is too far away: the latest accepted is 9999-12-31T23:59:59Z",
        ));
    }
    Ok(Some(Timestamp::from(at)))
}

/// Parses an RFC 3339 date-time with a mandatory `Z` or `±HH:MM` offset (a
/// time without one would be ambiguous: local or UTC?).
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let text = text.trim();
    if !text.is_ascii() {
        return Err("not an RFC 3339 date-time".to_owned());
    }
    let (local, offset_secs): (&str, i64) = if let Some(local) =
        text.strip_suffix('Z').or_else(|| text.strip_suffix('z'))
    {
        (local, 0)
    } else if text.len() > 6 && matches!(text.as_bytes()[text.len() - 6], b'+' | b'-') {
        let (local, offset) = text.split_at(text.len() - 6);
        (local, parse_offset(offset)?)
    } else {
        return Err("missing time zone: end with Z for UTC or an offset like +02:00".to_owned());
    };
    // humantime takes the local part as UTC; RFC 3339 allows a lower-case t.
    let local = local.replacen('t', "T", 1);
    if local.len() < 19 || local.as_bytes()[10] != b'T' {
        return Err("expected YYYY-MM-DDTHH:MM:SS followed by Z or an offset".to_owned());
    }
    let utc_as_if = humantime::parse_rfc3339_weak(&local).map_err(|e| e.to_string())?;
    let shift = Duration::from_secs(offset_secs.unsigned_abs());
    // Local time = UTC + offset, so UTC = local - offset.
    let utc = if offset_secs >= 0 {
        utc_as_if.checked_sub(shift)
    } else {
        utc_as_if.checked_add(shift)
    };
    utc.ok_or_else(|| "time out of range".to_owned())
}

fn parse_offset(offset: &str) -> Result<i64, String> {
    let bad = || format!("invalid offset {offset:?}: expected +HH:MM or -HH:MM");
    let bytes = offset.as_bytes();
    if bytes.len() != 6 || bytes[3] != b':' {
        return Err(bad());
    }
    let hours: i64 = offset[1..3].parse().map_err(|_| bad())?;
    let minutes: i64 = offset[4..6].parse().map_err(|_| bad())?;
    if hours > 23 || minutes > 59 {
        return Err(bad());
    }
    let secs = hours * 3600 + minutes * 60;
    Ok(if bytes[0] == b'-' { -secs } else { secs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t: SystemTime) -> u64 {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .expect("after epoch")
            .as_secs()
    }

    #[test]
    fn rfc3339_with_offsets() {
        let z = parse_rfc3339("2027-01-01T00:00:00Z").expect("Z");
        assert_eq!(secs(z), 1_798_761_600);
        let plus = parse_rfc3339("2027-01-01T02:00:00+02:00").expect("+02:00");
        assert_eq!(plus, z);
        let minus = parse_rfc3339("2026-12-31T19:30:00-04:30").expect("-04:30");
        assert_eq!(minus, z);
        let frac = parse_rfc3339("2027-01-01t00:00:00.5z").expect("fraction");
        assert_eq!(secs(frac), secs(z));
        for bad in [
            "2027-01-01",
            "2027-01-01T00:00:00",
            "2027-01-01T00:00:00+2",
            "2027-13-01T00:00:00Z",
            "tomorrow",
            "2027-01-01T00:00:00+24:00",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expiry_options() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let opts = |at: Option<&str>, within: Option<&str>| ExpiryOptions {
            expires_at: at.map(str::to_owned),
            expires_in: within.map(str::to_owned),
        };
        assert_eq!(expiry(&opts(None, None), now).expect("none"), None);
        let in_90d = expiry(&opts(None, Some("90d")), now)
            .expect("90d")
            .expect("some");
        assert_eq!(in_90d.seconds, 1_000_000 + 90 * 86_400);
        assert!(expiry(&opts(None, Some("soon")), now).is_err());
        assert!(expiry(&opts(None, Some("0s")), now).is_err());
        assert!(expiry(&opts(Some("1970-01-01T00:00:00Z"), None), now).is_err());
        assert!(expiry(&opts(Some("2027-01-01T00:00:00Z"), Some("1d")), now).is_err());
        // The crash of issue 18: a token nobody could print.
        let e = expiry(&opts(None, Some("9000years")), SystemTime::now()).unwrap_err();
        assert!(e.to_string().contains("9999-12-31T23:59:59Z"), "{e}");
        assert!(expiry(&opts(Some("9999-12-31T23:59:59Z"), None), now).is_ok());
    }

    #[test]
    fn descriptions_are_checked_before_connecting() {
        assert!(description("telegraf east").is_ok());
        assert!(description("two\nlines").is_err());
        assert!(description("\u{1b}[2J").is_err());
    }

    #[test]
    fn permissions_merge_and_require_one() {
        let p = permissions(&["b".into(), "a".into()], &["a".into(), "*".into()]).expect("valid");
        let flat: Vec<_> = p
            .iter()
            .map(|p| (p.database.as_str(), p.read, p.write))
            .collect();
        assert_eq!(
            flat,
            vec![("*", false, true), ("a", true, true), ("b", true, false)]
        );
        assert!(permissions(&[], &[]).is_err());
        assert!(permissions(&[String::new()], &[]).is_err());
    }
}
