//! Value types accepted by options: human durations and byte sizes, and
//! the bounded parsers of options whose extreme values would disable a
//! protection (a zero timeout, a zero limit) or make no sense (a 100-year
//! grace). A value out of range is refused with the allowed range, at
//! start-up and by `check-config`, whether it came from a flag, the
//! environment or the file.

use std::str::FromStr;
use std::time::Duration;

/// Whether and how the proxy follows the token change stream
/// (`--authz-watch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WatchMode {
    /// Follow it; fall back to none when the authorizer does not implement
    /// it (answers UNIMPLEMENTED).
    #[default]
    Auto,
    /// Follow it; without it the proxy is not ready (unless stale grace).
    Required,
    /// Do not follow it: every allow lives the disconnected TTL at most.
    Off,
}

/// A duration written the human way: `500ms`, `2s`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(Self)
            .map_err(|e| format!("{e} (examples: 500ms, 2s, 5m)"))
    }
}

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A size in bytes: `1048576`, `64KiB`, `1MiB`, `1GiB` (also KB/MB/GB as powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("{s:?} is not a size (examples: 1048576, 64KiB, 1MiB)"))?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} (use B, KiB, MiB, GiB)"
                ));
            }
        };
        number
            .checked_mul(multiplier)
            .map(Self)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `d` as the shortest human form (`10ms`, `5m`, `1h`).
fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn out_of_range(text: &str, zero: bool, min: &str, max: &str) -> String {
    if zero {
        format!("{text} would turn this protection off; allowed: {min} to {max}")
    } else {
        format!("{text} is out of range; allowed: {min} to {max}")
    }
}

/// Parses a duration between `MIN_MS` and `MAX_MS` milliseconds.
pub fn duration_between<const MIN_MS: u64, const MAX_MS: u64>(
    s: &str,
) -> Result<HumanDuration, String> {
    let d: HumanDuration = s.parse()?;
    let (min, max) = (Duration::from_millis(MIN_MS), Duration::from_millis(MAX_MS));
    if d.0 < min || d.0 > max {
        return Err(out_of_range(
            s.trim(),
            d.0.is_zero(),
            &human(min),
            &human(max),
        ));
    }
    Ok(d)
}

/// Parses a size between `MIN` and `MAX` bytes.
pub fn size_between<const MIN: u64, const MAX: u64>(s: &str) -> Result<ByteSize, String> {
    let size: ByteSize = s.parse()?;
    if size.0 < MIN || size.0 > MAX {
        return Err(out_of_range(
            s.trim(),
            size.0 == 0,
            &bytes(MIN),
            &bytes(MAX),
        ));
    }
    Ok(size)
}

/// Parses a count between `MIN` and `MAX`.
pub fn count_between<const MIN: u64, const MAX: u64>(s: &str) -> Result<u64, String> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    if n < MIN || n > MAX {
        return Err(out_of_range(
            s.trim(),
            n == 0,
            &MIN.to_string(),
            &MAX.to_string(),
        ));
    }
    Ok(n)
}

/// [`count_between`] as a `usize`.
pub fn usize_between<const MIN: u64, const MAX: u64>(s: &str) -> Result<usize, String> {
    let n = count_between::<MIN, MAX>(s)?;
    usize::try_from(n).map_err(|_| format!("{s} is too large for this machine"))
}

/// [`count_between`] as a `u32`.
pub fn u32_between<const MIN: u64, const MAX: u64>(s: &str) -> Result<u32, String> {
    let n = count_between::<MIN, MAX>(s)?;
    u32::try_from(n).map_err(|_| format!("{s} is too large"))
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => format!("{n}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("1MiB".parse::<ByteSize>().unwrap().0, 1 << 20);
        assert_eq!("512".parse::<ByteSize>().unwrap().0, 512);
        assert_eq!("2 KiB".parse::<ByteSize>().unwrap().0, 2048);
        assert!("MiB".parse::<ByteSize>().is_err());
        assert!("1XB".parse::<ByteSize>().is_err());
        assert!("99999999999999GiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(
            "2s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(2)
        );
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(250)
        );
        assert!("soon".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn bounded_values_name_the_range() {
        let e = duration_between::<10, 300_000>("0s").unwrap_err();
        assert_eq!(e, "0s would turn this protection off; allowed: 10ms to 5m");
        let e = duration_between::<1_000, 3_600_000>("100years").unwrap_err();
        assert!(e.contains("out of range; allowed: 1s to 1h"), "{e}");
        assert_eq!(
            duration_between::<10, 300_000>("2s").unwrap().0,
            Duration::from_secs(2)
        );
        let e = size_between::<1024, { 1 << 30 }>("0").unwrap_err();
        assert!(e.contains("allowed: 1KiB to 1GiB"), "{e}");
        assert!(size_between::<1024, { 1 << 30 }>("2GiB").is_err());
        assert_eq!(usize_between::<1, 10>("3").unwrap(), 3);
        assert!(
            usize_between::<1, 10>("0")
                .unwrap_err()
                .contains("turn this protection off")
        );
        assert!(count_between::<1, 10>("x").is_err());
    }
}
