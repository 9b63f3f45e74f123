//! Time as the cache, the token checks and the fleet need it: Unix
//! seconds, Kubernetes' RFC 3339 timestamps, jitter. A leaf: no crate
//! imports.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A uniformly random duration in [0, `window`]: jitter, so that a fleet
/// of nodes does not act in the same second.
pub fn random_within(window: Duration) -> Duration {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 4];
    let r = SystemRandom::new()
        .fill(&mut bytes)
        .map_or(0, |()| u32::from_le_bytes(bytes));
    window.mul_f64(f64::from(r) / f64::from(u32::MAX))
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp as Kubernetes writes
/// them (`2026-11-24T12:00:00Z`, optional fraction).
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<u64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    if !text.ends_with('Z') {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let y = if month <= 2 {
        year.checked_sub(1)?
    } else {
        year
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_table() {
        let cases = [
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2026-11-24T12:00:00Z", Some(1_795_521_600)),
            ("2000-02-29T23:59:59Z", Some(951_868_799)),
            ("2026-11-24T12:00:00.123456Z", Some(1_795_521_600)),
            ("2026-11-24T12:00:00+01:00", None),
            ("2026-13-24T12:00:00Z", None),
            ("garbage", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_rfc3339(text), want, "{text}");
        }
    }
}
