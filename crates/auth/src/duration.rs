//! Go duration strings (`time.ParseDuration`), as Kuma takes them for `validFor`.
//!
//! Kuma's token endpoints and `kumactl --valid-for` accept `"24h"`, `"8760h"`,
//! `"30m"`, `"1h30m"`, `"1.5h"`, `"300ms"`. The error texts mirror Go's so that the
//! API's `invalid_parameters[].reason` reads the same as Kuma's.

use std::time::Duration;

/// Why a Go duration string was refused. Never retryable: the input is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not of the form `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or too large to represent.
    #[error("time: invalid duration {0:?}")]
    Invalid(String),
    /// A number without a unit, such as `"10"` (only `"0"` may omit it).
    #[error("time: missing unit in duration {0:?}")]
    MissingUnit(String),
    /// A unit other than `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`.
    #[error("time: unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole input.
        input: String,
    },
    /// Go accepts negative durations; a validity period cannot be negative.
    #[error("duration {0:?} must not be negative")]
    Negative(String),
}

/// Why a `validFor` value was refused, with Kuma's wording for each case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidForError {
    /// The field was missing or empty.
    #[error("cannot be empty")]
    Empty,
    /// The duration parsed to zero (`"0"`, `"0s"`).
    #[error("cannot be empty or nil")]
    Zero,
    /// The text is not a Go duration.
    #[error("is invalid: {0}")]
    Invalid(#[source] DurationError),
}

/// Parses a Go duration string (`"24h"`, `"1h30m"`, `"1.5s"`, `"0"`).
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(input.to_owned());
    let mut s = input;
    let negative = match s.as_bytes().first() {
        Some(b'-') => {
            s = &s[1..];
            true
        }
        Some(b'+') => {
            s = &s[1..];
            false
        }
        _ => false,
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let first = s.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(invalid());
        }
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &s[..int_len];
        s = &s[int_len..];
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &rest[..frac_len];
            s = &rest[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(s.len(), |(i, _)| i);
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(input.to_owned()));
        }
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => {
                return Err(DurationError::UnknownUnit {
                    unit: unit.to_owned(),
                    input: input.to_owned(),
                });
            }
        };
        let int_value: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut nanos = int_value.checked_mul(nanos_per_unit).ok_or_else(invalid)?;
        // Fractions are truncated to whole nanoseconds, as Go does.
        let mut scale = nanos_per_unit;
        for digit in frac_part.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            nanos += u128::from(digit - b'0') * scale;
        }
        total = total.checked_add(nanos).ok_or_else(invalid)?;
        // Go's time.Duration is an int64 of nanoseconds.
        if total > i64::MAX as u128 {
            return Err(invalid());
        }
    }
    if negative && total != 0 {
        return Err(DurationError::Negative(input.to_owned()));
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| invalid())?;
    let sub = u32::try_from(total % 1_000_000_000).map_err(|_| invalid())?;
    Ok(Duration::new(secs, sub))
}

/// Parses the `validFor` of a token request the way Kuma's user-token endpoint does:
/// required, a Go duration, and not zero.
pub fn parse_valid_for(input: &str) -> Result<Duration, ValidForError> {
    if input.is_empty() {
        return Err(ValidForError::Empty);
    }
    let duration = parse_go_duration(input).map_err(ValidForError::Invalid)?;
    if duration.is_zero() {
        return Err(ValidForError::Zero);
    }
    Ok(duration)
}

/// Formats a duration the way Go's `Duration.String()` does for whole seconds
/// (`"87600h0m0s"`, `"30m0s"`, `"1.5s"`), for messages and round trips.
pub fn format_go_duration(duration: Duration) -> String {
    let total = duration.as_nanos();
    if total == 0 {
        return "0s".to_owned();
    }
    if total < 1_000_000_000 {
        let (value, unit) = if total < 1_000 {
            (total as f64, "ns")
        } else if total < 1_000_000 {
            (total as f64 / 1e3, "µs")
        } else {
            (total as f64 / 1e6, "ms")
        };
        return format!("{value}{unit}");
    }
    let secs = duration.as_secs();
    let hours = secs / 3600;
    let minutes = (secs % 3600) / 60;
    let seconds = secs % 60;
    let frac = duration.subsec_nanos();
    let seconds_text = if frac == 0 {
        seconds.to_string()
    } else {
        let digits = format!("{frac:09}");
        format!("{seconds}.{}", digits.trim_end_matches('0'))
    };
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds_text}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds_text}s")
    } else {
        format!("{seconds_text}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_durations_kuma_users_write() {
        let cases = [
            ("24h", Duration::from_secs(24 * 3600)),
            ("8760h", Duration::from_secs(8760 * 3600)),
            ("30m", Duration::from_secs(1800)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("90s", Duration::from_secs(90)),
            ("300ms", Duration::from_millis(300)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("+5m", Duration::from_secs(300)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("-0", Duration::ZERO),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_go_duration(input), Ok(expected), "{input}");
        }
    }

    #[test]
    fn rejects_what_go_rejects_with_gos_messages() {
        assert_eq!(
            parse_go_duration("abc").unwrap_err().to_string(),
            r#"time: invalid duration "abc""#
        );
        assert_eq!(
            parse_go_duration("10").unwrap_err().to_string(),
            r#"time: missing unit in duration "10""#
        );
        assert_eq!(
            parse_go_duration("10d").unwrap_err().to_string(),
            r#"time: unknown unit "d" in duration "10d""#
        );
        for input in ["", "-", "+", ".", "h", "1h.", "1h-2m", " 1h"] {
            assert!(
                parse_go_duration(input).is_err(),
                "{input:?} should be refused"
            );
        }
        // int64 nanoseconds overflow at about 2562047h, as in Go.
        assert!(matches!(
            parse_go_duration("2562048h"),
            Err(DurationError::Invalid(_))
        ));
        assert!(parse_go_duration("2562047h").is_ok());
        assert_eq!(
            parse_go_duration("-1h"),
            Err(DurationError::Negative("-1h".into()))
        );
    }

    #[test]
    fn valid_for_follows_kumas_validation_wording() {
        assert_eq!(parse_valid_for(""), Err(ValidForError::Empty));
        assert_eq!(
            parse_valid_for("").unwrap_err().to_string(),
            "cannot be empty"
        );
        assert_eq!(parse_valid_for("0s"), Err(ValidForError::Zero));
        assert_eq!(
            parse_valid_for("0").unwrap_err().to_string(),
            "cannot be empty or nil"
        );
        assert_eq!(
            parse_valid_for("1x").unwrap_err().to_string(),
            r#"is invalid: time: unknown unit "x" in duration "1x""#
        );
        assert_eq!(parse_valid_for("24h"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(
            format_go_duration(Duration::from_secs(87_600 * 3600)),
            "87600h0m0s"
        );
        assert_eq!(format_go_duration(Duration::from_secs(1800)), "30m0s");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
        for input in ["24h", "1h30m", "45s", "1.25s"] {
            let parsed = parse_go_duration(input).unwrap();
            assert_eq!(parse_go_duration(&format_go_duration(parsed)), Ok(parsed));
        }
    }
}
