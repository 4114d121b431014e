//! Parsers from JSON text to PostgreSQL values, shared by the column decoders and inference.
//!
//! APIs send dates and times as strings; these parsers accept what PostgreSQL accepts for the
//! ISO 8601 / RFC 3339 forms APIs use, and nothing looser, so a value is never silently
//! reinterpreted. They allocate nothing.

/// Microseconds per second.
const MICROS: i64 = 1_000_000;

/// `infinity` and `-infinity` as stored by PostgreSQL (and passed through by the encoder).
pub const TIMESTAMP_INFINITY: i64 = i64::MAX;
pub const TIMESTAMP_NEG_INFINITY: i64 = i64::MIN;

/// A parsed timestamp: wall-clock microseconds since 1970-01-01 00:00 and the UTC offset
/// written with it, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub wall_micros: i64,
    pub offset_seconds: Option<i32>,
}

impl Timestamp {
    /// The instant in UTC; text without an offset is taken as UTC.
    pub fn utc_micros(self) -> i64 {
        match self.wall_micros {
            TIMESTAMP_INFINITY | TIMESTAMP_NEG_INFINITY => self.wall_micros,
            wall => wall - i64::from(self.offset_seconds.unwrap_or(0)) * MICROS,
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let part = self.bytes.get(self.at..self.at + n)?;
        let mut value = 0u32;
        for &b in part {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u32::from(b - b'0');
        }
        self.at += n;
        Some(value)
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.bytes.get(self.at) == Some(&b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}

/// Days from 1970-01-01 to the civil date, or `None` for an invalid date.
fn days_from_civil(year: i32, month: u32, day: u32) -> Option<i32> {
    let date = chrono::NaiveDate::from_ymd_opt(year, month, day)?;
    Some(date.num_days_from_ce() - 719_163)
}

use chrono::Datelike;

fn parse_date_part(c: &mut Cursor<'_>) -> Option<i32> {
    let year = c.digits(4)?;
    if !c.eat(b'-') {
        return None;
    }
    let month = c.digits(2)?;
    if !c.eat(b'-') {
        return None;
    }
    let day = c.digits(2)?;
    days_from_civil(year as i32, month, day)
}

/// `HH:MM[:SS[.fraction]]` → microseconds since midnight. Fractions beyond microseconds are
/// rounded, as PostgreSQL does.
fn parse_time_part(c: &mut Cursor<'_>) -> Option<i64> {
    let hour = c.digits(2)?;
    if !c.eat(b':') {
        return None;
    }
    let minute = c.digits(2)?;
    let mut second = 0;
    let mut micros = 0i64;
    if c.eat(b':') {
        second = c.digits(2)?;
        if c.eat(b'.') {
            let mut scale = 100_000i64;
            let mut any = false;
            while let Some(b) = c.peek().filter(u8::is_ascii_digit) {
                any = true;
                let d = i64::from(b - b'0');
                if scale > 0 {
                    micros += d * scale;
                    scale /= 10;
                } else if scale == 0 {
                    // The first digit past microseconds decides the rounding.
                    micros += i64::from(d >= 5);
                    scale = -1;
                }
                c.at += 1;
            }
            if !any {
                return None;
            }
        }
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some((i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)) * MICROS + micros)
}

/// `Z`, `+HH`, `+HHMM` or `+HH:MM` → seconds east of UTC.
fn parse_offset(c: &mut Cursor<'_>) -> Option<Option<i32>> {
    match c.peek() {
        None => Some(None),
        Some(b'Z' | b'z') => {
            c.at += 1;
            Some(Some(0))
        }
        Some(sign @ (b'+' | b'-')) => {
            c.at += 1;
            let hours = c.digits(2)?;
            c.eat(b':');
            let minutes = if c.done() { 0 } else { c.digits(2)? };
            if hours > 15 || minutes > 59 {
                return None;
            }
            let seconds = (hours * 3600 + minutes * 60) as i32;
            Some(Some(if sign == b'-' { -seconds } else { seconds }))
        }
        Some(_) => None,
    }
}

/// Parses `YYYY-MM-DD[(T| )HH:MM[:SS[.ffffff]]][Z|±HH[:MM]]`, or `infinity` / `-infinity`.
pub fn parse_timestamp(text: &str) -> Option<Timestamp> {
    match text {
        "infinity" | "+infinity" => {
            return Some(Timestamp {
                wall_micros: TIMESTAMP_INFINITY,
                offset_seconds: None,
            });
        }
        "-infinity" => {
            return Some(Timestamp {
                wall_micros: TIMESTAMP_NEG_INFINITY,
                offset_seconds: None,
            });
        }
        _ => {}
    }
    let mut c = Cursor {
        bytes: text.as_bytes(),
        at: 0,
    };
    let days = parse_date_part(&mut c)?;
    let mut micros_of_day = 0;
    if matches!(c.peek(), Some(b'T' | b't' | b' ')) {
        c.at += 1;
        micros_of_day = parse_time_part(&mut c)?;
    }
    let offset_seconds = parse_offset(&mut c)?;
    if !c.done() {
        return None;
    }
    Some(Timestamp {
        wall_micros: i64::from(days) * 86_400 * MICROS + micros_of_day,
        offset_seconds,
    })
}

/// What a string looks like, for schema inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringShape {
    /// A date and time with a UTC offset (RFC 3339).
    TimestampTz,
    /// A date and time without an offset.
    Timestamp,
    /// `YYYY-MM-DD`.
    Date,
    Other,
}

pub fn string_shape(text: &str) -> StringShape {
    if text.len() < 10 || !text.as_bytes()[0].is_ascii_digit() {
        return StringShape::Other;
    }
    if text.len() == 10 {
        return match parse_date(text) {
            Some(_) => StringShape::Date,
            None => StringShape::Other,
        };
    }
    match parse_timestamp(text) {
        Some(t) if t.offset_seconds.is_some() => StringShape::TimestampTz,
        Some(_) if text.len() > 10 => StringShape::Timestamp,
        _ => StringShape::Other,
    }
}

/// `YYYY-MM-DD` → days since 1970-01-01; `infinity` / `-infinity` → i32::MAX / i32::MIN.
pub fn parse_date(text: &str) -> Option<i32> {
    match text {
        "infinity" | "+infinity" => return Some(i32::MAX),
        "-infinity" => return Some(i32::MIN),
        _ => {}
    }
    let mut c = Cursor {
        bytes: text.as_bytes(),
        at: 0,
    };
    let days = parse_date_part(&mut c)?;
    c.done().then_some(days)
}

/// `HH:MM[:SS[.ffffff]]` → microseconds since midnight.
pub fn parse_time(text: &str) -> Option<i64> {
    let mut c = Cursor {
        bytes: text.as_bytes(),
        at: 0,
    };
    let micros = parse_time_part(&mut c)?;
    c.done().then_some(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_with_offsets_and_fractions() {
        let t = parse_timestamp("2024-02-29T23:59:59.123456+05:30").unwrap();
        assert_eq!(t.offset_seconds, Some(19_800));
        assert_eq!(t.utc_micros(), 1_709_251_199_123_456 - 19_800 * MICROS);
        let z = parse_timestamp("1970-01-01 00:00:00Z").unwrap();
        assert_eq!(z.utc_micros(), 0);
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:00.0000005")
                .unwrap()
                .wall_micros,
            1
        );
        assert_eq!(
            parse_timestamp("1969-12-31T23:59:59-0100")
                .unwrap()
                .utc_micros(),
            3_599 * MICROS
        );
        assert_eq!(parse_timestamp("2024-01-01").unwrap().offset_seconds, None);
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00+",
            "2024-1-01",
            "2024-01-01T00:00:00.Z",
            "2024-01-01x",
            "",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn dates_times_and_shapes() {
        assert_eq!(parse_date("2000-01-01"), Some(10_957));
        assert_eq!(parse_date("1969-12-31"), Some(-1));
        assert_eq!(parse_date("2000-01-01T00:00:00Z"), None);
        assert_eq!(
            parse_time("13:45:07.5"),
            Some((13 * 3600 + 45 * 60 + 7) * MICROS + 500_000)
        );
        assert_eq!(parse_time("13:45"), Some((13 * 3600 + 45 * 60) * MICROS));
        assert_eq!(string_shape("2024-05-06"), StringShape::Date);
        assert_eq!(
            string_shape("2024-05-06T01:02:03Z"),
            StringShape::TimestampTz
        );
        assert_eq!(string_shape("2024-05-06 01:02:03"), StringShape::Timestamp);
        assert_eq!(string_shape("2024-05-06 and more"), StringShape::Other);
        assert_eq!(string_shape("hello"), StringShape::Other);
    }
}
