//! Parsing of durations and byte sizes given on the command line.

use std::time::Duration;

/// Parses a duration as KES configurations write it: `500ms`, `10s`, `2m`, `1h30m`.
pub fn duration(s: &str) -> Result<Duration, String> {
    keyhost_config::parse_duration(s)
}

/// Parses `64MiB`, `512KiB`, `1GiB` or a plain number of bytes.
pub fn size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: usize = number
        .parse()
        .map_err(|_| format!("'{s}' is not a size; write e.g. 64MiB"))?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => {
            return Err(format!("'{s}': unknown unit '{other}'; use KiB, MiB or GiB"));
        }
    };
    n.checked_mul(factor).ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert!(duration("ten").is_err());
        assert!(duration("10").is_err(), "a unit is required");
        assert!(duration("5d").is_err());
        assert_eq!(size("64MiB"), Ok(64 << 20));
        assert_eq!(size("4096"), Ok(4096));
        assert!(size("1PB").is_err());
    }
}
