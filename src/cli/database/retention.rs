//! Retention periods as influxctl takes them (`30d`, `1w2d`, `2mo`, `1y`,
//! `0`/`infinite`), as InfluxQL writes them, and as InfluxDB 1.x prints them.

use crate::cli::error::CliError;

/// A retention period as influxctl takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Keep data forever.
    Infinite,
    /// Keep data this many seconds.
    Seconds(u64),
}

impl Retention {
    /// Parses `0`, `infinite`, or segments of a number and a unit (`m`,
    /// `h`, `d`, `w`, `mo`, `y`).
    pub fn parse(text: &str) -> Result<Self, CliError> {
        let text = text.trim();
        if text == "0" || text.eq_ignore_ascii_case("infinite") || text.eq_ignore_ascii_case("inf")
        {
            return Ok(Retention::Infinite);
        }
        let bad = || {
            CliError::usage(format!(
                "invalid retention period {text:?}: use a number and a unit (m, h, d, w, mo, y), e.g. 30d, or 0 / infinite"
            ))
        };
        if text.is_empty() {
            return Err(bad());
        }
        let mut total: u64 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let seconds = match &rest[..unit_len] {
                "m" => 60,
                "h" => 3_600,
                "d" => 86_400,
                "w" => 7 * 86_400,
                "mo" => 30 * 86_400,
                "y" => 365 * 86_400,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total = number
                .checked_mul(seconds)
                .and_then(|s| total.checked_add(s))
                .ok_or_else(bad)?;
        }
        if total == 0 {
            return Ok(Retention::Infinite);
        }
        Ok(Retention::Seconds(total))
    }

    /// The InfluxQL duration literal.
    pub(super) fn influxql(self) -> String {
        match self {
            Retention::Infinite => "INF".to_owned(),
            Retention::Seconds(s) => format!("{s}s"),
        }
    }

    /// How people read it: the largest whole unit.
    pub(super) fn human(self) -> String {
        match self {
            Retention::Infinite => "infinite".to_owned(),
            Retention::Seconds(s) => {
                for (unit, size) in [
                    ("y", 365 * 86_400),
                    ("w", 7 * 86_400),
                    ("d", 86_400),
                    ("h", 3_600),
                    ("m", 60),
                ] {
                    if s % size == 0 {
                        return format!("{}{unit}", s / size);
                    }
                }
                format!("{s}s")
            }
        }
    }
}

/// A Go duration as InfluxDB 1.x prints it (`720h0m0s`, `0s` for forever).
pub(super) fn go_duration(text: &str) -> Retention {
    let mut seconds: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().unwrap_or(0);
        number.clear();
        seconds += match c {
            'h' => n * 3_600,
            'm' => n * 60,
            's' => n,
            _ => 0,
        };
    }
    if seconds == 0 {
        Retention::Infinite
    } else {
        Retention::Seconds(seconds)
    }
}
