//! Parsers from JSON string text to PostgreSQL values, shared by the column decoders and
//! inference, following what PostgreSQL's own input functions do with the same text
//! (`boolin`, `uuid_in`, `timestamp_in`, …) for the forms APIs send: ISO 8601 / RFC 3339
//! dates and times, the boolean words, UUIDs with or without braces and hyphens.
//!
//! Where PostgreSQL accepts more (free-form dates like `January 5, 2024`, zone names, the
//! words `now` and `today`), these parsers refuse, and docs/types.md lists it; they never accept
//! text PostgreSQL refuses, and never give it another meaning. They allocate nothing.

/// Microseconds per second.
const MICROS: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS;

/// `infinity` and `-infinity` as stored by PostgreSQL (and passed through by the encoder).
pub(crate) const TIMESTAMP_INFINITY: i64 = i64::MAX;
pub(crate) const TIMESTAMP_NEG_INFINITY: i64 = i64::MIN;

/// The largest UTC offset PostgreSQL takes: 15:59:59.
const MAX_OFFSET_SECONDS: i32 = 15 * 3600 + 59 * 60 + 59;

/// A parsed timestamp: wall-clock microseconds since 1970-01-01 00:00 and the UTC offset
/// written with it, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timestamp {
    pub wall_micros: i64,
    pub offset_seconds: Option<i32>,
}

impl Timestamp {
    /// The instant in UTC; text without an offset is read in `zone` (the session's TimeZone,
    /// as PostgreSQL reads it), or as UTC. `None` when it has no offset and the zone is one
    /// apitap cannot apply.
    pub(crate) fn utc_micros(self, zone: Option<&SessionZone>) -> Option<i64> {
        Some(match self.wall_micros {
            TIMESTAMP_INFINITY | TIMESTAMP_NEG_INFINITY => self.wall_micros,
            wall => match (self.offset_seconds, zone) {
                (Some(offset), _) => wall - i64::from(offset) * MICROS,
                (None, Some(zone)) => wall - i64::from(zone.offset_of_local(wall)?) * MICROS,
                (None, None) => wall,
            },
        })
    }
}

/// The session's TimeZone, for timestamps written without an offset into `timestamptz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionZone {
    Fixed(i32),
    Named(chrono_tz::Tz),
    /// A setting apitap cannot apply (a POSIX rule with DST, say); such timestamps are
    /// refused rather than read in another zone.
    Unsupported(String),
}

impl SessionZone {
    /// Reads PostgreSQL's `TimeZone` setting: an IANA name, or a fixed offset as PostgreSQL
    /// shows one (`<+05:30>-05:30`, POSIX sign).
    pub(crate) fn parse(setting: &str) -> SessionZone {
        SessionZone::known(setting).unwrap_or_else(|| SessionZone::Unsupported(setting.to_string()))
    }

    fn known(setting: &str) -> Option<SessionZone> {
        if let Ok(tz) = setting.parse::<chrono_tz::Tz>() {
            return Some(SessionZone::Named(tz));
        }
        if matches!(
            setting.to_ascii_uppercase().as_str(),
            "UTC" | "GMT" | "Z" | "ZULU"
        ) {
            return Some(SessionZone::Fixed(0));
        }
        // `<+05:30>-05:30`: the part after `>` is a POSIX offset, west positive.
        let posix = setting.rsplit_once('>').map_or(setting, |(_, p)| p);
        let mut c = Cursor::new(posix);
        let sign = match c.peek() {
            Some(b'-') => 1,
            Some(b'+') => -1,
            _ => -1,
        };
        if matches!(c.peek(), Some(b'-' | b'+')) {
            c.at += 1;
        }
        let hours = c.digits_between(1, 2)?;
        let minutes = if c.eat(b':') { c.digits(2)? } else { 0 };
        c.done().then_some(SessionZone::Fixed(
            sign * (hours * 3600 + minutes * 60) as i32,
        ))
    }

    /// The UTC offset (seconds east) of a wall-clock time in this zone, resolved as
    /// PostgreSQL resolves it: a time skipped by a DST change takes the offset in force
    /// before the change; a time that happens twice takes the offset after it.
    pub(crate) fn offset_of_local(&self, wall_micros: i64) -> Option<i32> {
        use chrono::{Offset, TimeZone};
        let tz = match self {
            SessionZone::Fixed(offset) => return Some(*offset),
            SessionZone::Named(tz) => tz,
            SessionZone::Unsupported(_) => return None,
        };
        let naive = chrono::DateTime::from_timestamp_micros(wall_micros)?.naive_utc();
        Some(match tz.offset_from_local_datetime(&naive) {
            chrono::LocalResult::Single(offset) => offset.fix().local_minus_utc(),
            chrono::LocalResult::Ambiguous(_, after) => after.fix().local_minus_utc(),
            chrono::LocalResult::None => {
                // PostgreSQL looks up the offset a day before and takes it across the gap.
                let before = naive - chrono::Duration::days(1);
                tz.offset_from_utc_datetime(&before).fix().local_minus_utc()
            }
        })
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Cursor<'a> {
        Cursor {
            bytes: text.as_bytes(),
            at: 0,
        }
    }

    fn digits(&mut self, n: usize) -> Option<u32> {
        self.digits_between(n, n)
    }

    /// `min` to `max` decimal digits.
    fn digits_between(&mut self, min: usize, max: usize) -> Option<u32> {
        let mut value = 0u32;
        let mut n = 0;
        while n < max {
            match self.bytes.get(self.at) {
                Some(b) if b.is_ascii_digit() => {
                    value = value * 10 + u32::from(b - b'0');
                    self.at += 1;
                    n += 1;
                }
                _ => break,
            }
        }
        (n >= min && !self.peek().is_some_and(|b| b.is_ascii_digit())).then_some(value)
    }

    /// Exactly `n` digits, whatever follows (for the basic ISO forms, `YYYYMMDD`).
    fn digits_prefix(&mut self, n: usize) -> Option<u32> {
        let part = self.bytes.get(self.at..self.at + n)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.at += n;
        Some(part.iter().fold(0, |v, b| v * 10 + u32::from(b - b'0')))
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

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.at += 1;
        }
    }

    fn done(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn rest_eq_ignore_case(&self, word: &str) -> bool {
        self.bytes[self.at..].eq_ignore_ascii_case(word.as_bytes())
    }
}

/// Days from 1970-01-01 to the civil date, or `None` for a date that does not exist (or year
/// 0, which PostgreSQL refuses). Howard Hinnant's `days_from_civil`, for the proleptic
/// Gregorian calendar PostgreSQL uses.
fn days_from_civil(year: i32, month: u32, day: u32) -> Option<i64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if year == 0 || day == 0 || day > month_days {
        return None;
    }
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// `YYYY-MM-DD` (month and day of one or two digits) or `YYYYMMDD` → days since 1970-01-01.
fn parse_date_part(c: &mut Cursor<'_>) -> Option<i64> {
    let basic = c.bytes.len() >= c.at + 8
        && c.bytes[c.at..c.at + 8].iter().all(u8::is_ascii_digit)
        && !c.bytes.get(c.at + 8).is_some_and(u8::is_ascii_digit);
    let (year, month, day) = if basic {
        (c.digits_prefix(4)?, c.digits_prefix(2)?, c.digits(2)?)
    } else {
        let year = c.digits(4)?;
        if !c.eat(b'-') {
            return None;
        }
        let month = c.digits_between(1, 2)?;
        if !c.eat(b'-') {
            return None;
        }
        (year, month, c.digits_between(1, 2)?)
    };
    days_from_civil(year as i32, month, day)
}

/// `H[H]:M[M][:S[S][.fraction]]`, or `HHMM[SS[.fraction]]` → microseconds since midnight, as
/// PostgreSQL computes them: the fraction is read as a double and rounded to microseconds
/// half to even (`rint`), and a leap second (60) or 24:00 carries into what follows, up to
/// the end of the day.
fn parse_time_part(c: &mut Cursor<'_>) -> Option<i64> {
    let run = c.bytes[c.at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let (hour, minute, second, has_seconds) = if run == 4 || run == 6 {
        let hour = c.digits_prefix(2)?;
        let minute = c.digits_prefix(2)?;
        let second = if run == 6 { c.digits_prefix(2)? } else { 0 };
        (hour, minute, second, run == 6)
    } else {
        let hour = c.digits_between(1, 2)?;
        if !c.eat(b':') {
            return None;
        }
        let minute = c.digits_between(1, 2)?;
        let has_seconds = c.eat(b':');
        let second = if has_seconds {
            c.digits_between(1, 2)?
        } else {
            0
        };
        (hour, minute, second, has_seconds)
    };
    let mut fraction = 0i64;
    // A fraction belongs to the seconds; PostgreSQL reads `10:00.5` as minutes and seconds,
    // which is not refused here but not guessed at either.
    if has_seconds && c.eat(b'.') {
        let start = c.at;
        while c.peek().is_some_and(|b| b.is_ascii_digit()) {
            c.at += 1;
        }
        if c.at == start {
            return None;
        }
        fraction = fraction_micros(&c.bytes[start..c.at])?;
    }
    if hour > 24 || minute > 59 || second > 60 {
        return None;
    }
    // 24:00:00 and a leap second are allowed, but nothing past the end of the day.
    let micros =
        (i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)) * MICROS + fraction;
    (micros <= MICROS_PER_DAY).then_some(micros)
}

/// The microseconds of a fraction of a second, from its digits after the point, as
/// PostgreSQL computes them: `rint(strtod(".digits") * 1000000)`. Up to six digits that is
/// the digits themselves, scaled (the double's error is far below the half a microsecond
/// rounding could turn on), so only longer fractions pay for parsing a double.
fn fraction_micros(digits: &[u8]) -> Option<i64> {
    if digits.len() <= 6 {
        let value = digits
            .iter()
            .fold(0i64, |v, &d| v * 10 + i64::from(d - b'0'));
        return Some(value * 10i64.pow(6 - digits.len() as u32));
    }
    let text = std::str::from_utf8(digits).ok()?;
    let value: f64 = format!(".{text}").parse().ok()?;
    Some((value * 1_000_000.0).round_ties_even() as i64)
}

/// An optional UTC offset after optional spaces: `Z`, `UTC`, `GMT`, `±HH`, `±HHMM`,
/// `±HH:MM`, `±HH:MM:SS` → seconds east of UTC.
fn parse_offset(c: &mut Cursor<'_>) -> Option<Option<i32>> {
    c.skip_spaces();
    if c.done() {
        return Some(None);
    }
    match c.peek() {
        Some(b'Z' | b'z') if c.at + 1 == c.bytes.len() => {
            c.at += 1;
            Some(Some(0))
        }
        Some(sign @ (b'+' | b'-')) => {
            c.at += 1;
            let start = c.at;
            let run = c.digits_between(1, 4)?;
            let (hours, minutes, seconds) = match c.at - start {
                // ±HHMM (or ±HMM).
                3 | 4 => (run / 100, run % 100, 0),
                _ if c.eat(b':') => {
                    let minutes = c.digits(2)?;
                    let seconds = if c.eat(b':') { c.digits(2)? } else { 0 };
                    (run, minutes, seconds)
                }
                _ => (run, 0, 0),
            };
            if minutes > 59 || seconds > 59 {
                return None;
            }
            let total = (hours * 3600 + minutes * 60 + seconds) as i32;
            if total > MAX_OFFSET_SECONDS {
                return None;
            }
            Some(Some(if sign == b'-' { -total } else { total }))
        }
        _ if c.rest_eq_ignore_case("utc") || c.rest_eq_ignore_case("gmt") => {
            c.at = c.bytes.len();
            Some(Some(0))
        }
        _ => None,
    }
}

/// A timestamp as PostgreSQL's `timestamp_in`/`timestamptz_in` read the ISO forms:
/// `YYYY-MM-DD` (or `YYYYMMDD`), then optionally `T` or spaces and a time, then optionally
/// spaces and an offset; or `infinity` / `-infinity` / `epoch`. `text` is already trimmed.
pub(crate) fn parse_timestamp(text: &str) -> Option<Timestamp> {
    if let Some(special) = special_timestamp(text) {
        return Some(special);
    }
    let mut c = Cursor::new(text);
    let days = parse_date_part(&mut c)?;
    let mut micros_of_day = 0;
    let mark = c.at;
    if c.eat(b'T') || c.eat(b't') || c.peek() == Some(b' ') {
        c.skip_spaces();
        match parse_time_part(&mut c) {
            Some(micros) => micros_of_day = micros,
            None => c.at = mark,
        }
    }
    let offset_seconds = parse_offset(&mut c)?;
    if !c.done() {
        return None;
    }
    Some(Timestamp {
        wall_micros: days * MICROS_PER_DAY + micros_of_day,
        offset_seconds,
    })
}

fn special_timestamp(text: &str) -> Option<Timestamp> {
    let wall_micros =
        if text.eq_ignore_ascii_case("infinity") || text.eq_ignore_ascii_case("+infinity") {
            TIMESTAMP_INFINITY
        } else if text.eq_ignore_ascii_case("-infinity") {
            TIMESTAMP_NEG_INFINITY
        } else if text.eq_ignore_ascii_case("epoch") {
            return Some(Timestamp {
                wall_micros: 0,
                offset_seconds: Some(0),
            });
        } else {
            return None;
        };
    Some(Timestamp {
        wall_micros,
        offset_seconds: None,
    })
}

/// What a string looks like, for schema inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StringShape {
    /// A date and time with a UTC offset (RFC 3339).
    TimestampTz,
    /// A date and time without an offset.
    Timestamp,
    /// `YYYY-MM-DD`.
    Date,
    Other,
}

pub(crate) fn string_shape(text: &str) -> StringShape {
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

/// A date as PostgreSQL's `date_in` reads the ISO forms: `YYYY-MM-DD`, or a timestamp whose
/// time and offset are ignored; `infinity` / `-infinity` → i32::MAX / i32::MIN. Days since
/// 1970-01-01.
pub(crate) fn parse_date(text: &str) -> Option<i32> {
    if text.eq_ignore_ascii_case("infinity") || text.eq_ignore_ascii_case("+infinity") {
        return Some(i32::MAX);
    }
    if text.eq_ignore_ascii_case("-infinity") {
        return Some(i32::MIN);
    }
    let stamp = parse_timestamp(text)?;
    if stamp.wall_micros == TIMESTAMP_INFINITY || stamp.wall_micros == TIMESTAMP_NEG_INFINITY {
        return None;
    }
    let mut c = Cursor::new(text);
    let days = if text.eq_ignore_ascii_case("epoch") {
        0
    } else {
        parse_date_part(&mut c)?
    };
    i32::try_from(days).ok()
}

/// A time of day as PostgreSQL's `time_in` reads the ISO forms: `[T]H[H]:MM[:SS[.fraction]]`
/// or `HHMM[SS]`, with an offset (ignored), or after a date and a space (ignored); or
/// `allballs`. Up to 24:00:00. Microseconds since midnight.
pub(crate) fn parse_time(text: &str) -> Option<i64> {
    if text.eq_ignore_ascii_case("allballs") {
        return Some(0);
    }
    let mut c = Cursor::new(text);
    if parse_date_part(&mut c).is_some() {
        // time_in takes a date before the time only with a space between them.
        if c.peek() != Some(b' ') {
            return None;
        }
        c.skip_spaces();
    } else {
        c.at = 0;
        if !c.eat(b'T') {
            c.eat(b't');
        }
    }
    let micros = parse_time_part(&mut c)?;
    parse_offset(&mut c)?;
    c.done().then_some(micros)
}

/// A boolean as PostgreSQL's `boolin` reads text: any unique prefix of `true`, `false`,
/// `yes`, `no`; `on`, `off` (at least two letters); `1`, `0`; any case, with surrounding
/// whitespace.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    let value = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let len = value.len();
    if len == 0 {
        return None;
    }
    // PostgreSQL: pg_strncasecmp(value, word, max(len, at_least)) == 0.
    let prefix_of = |word: &str, at_least: usize| {
        len >= at_least
            && len <= word.len()
            && word.as_bytes()[..len].eq_ignore_ascii_case(value.as_bytes())
    };
    match value.as_bytes()[0].to_ascii_lowercase() {
        b't' if prefix_of("true", 1) => Some(true),
        b'f' if prefix_of("false", 1) => Some(false),
        b'y' if prefix_of("yes", 1) => Some(true),
        b'n' if prefix_of("no", 1) => Some(false),
        b'o' if prefix_of("on", 2) => Some(true),
        b'o' if prefix_of("off", 2) => Some(false),
        b'1' if len == 1 => Some(true),
        b'0' if len == 1 => Some(false),
        _ => None,
    }
}

/// A UUID as PostgreSQL's `uuid_in` reads it: 32 hex digits, optionally in braces, with a
/// hyphen allowed after any group of four digits but the last.
pub(crate) fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let mut bytes = text.as_bytes();
    let braces = bytes.first() == Some(&b'{');
    if braces {
        bytes = &bytes[1..];
    }
    let mut out = [0u8; 16];
    let mut at = 0;
    for (i, byte) in out.iter_mut().enumerate() {
        let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
        let (high, low) = (hex(bytes.get(at))?, hex(bytes.get(at + 1))?);
        *byte = (high << 4 | low) as u8;
        at += 2;
        if bytes.get(at) == Some(&b'-') && i % 2 == 1 && i < 15 {
            at += 1;
        }
    }
    if braces {
        if bytes.get(at) != Some(&b'}') {
            return None;
        }
        at += 1;
    }
    (at == bytes.len()).then_some(out)
}

#[cfg(test)]
mod tests;
