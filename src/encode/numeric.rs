//! PostgreSQL's binary `numeric`: a decimal text as `numeric_send` writes it. The decode
//! stage encodes each numeric value once, as it reads it, so that a value numeric refuses is
//! found and named in the record it came from.

use bytes::BufMut;

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;
const NUMERIC_MAX_DSCALE: usize = 0x3FFF;

/// A decimal text numeric cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NumericError {
    #[error("{0:?} is not a number (numeric)")]
    Invalid(String),
    /// More than 131,072 digits before the decimal point or 16,383 after, as PostgreSQL's
    /// own numeric refuses.
    #[error(
        "{0:?} is out of range for numeric (at most 131072 digits before the decimal point and 16383 after)"
    )]
    OutOfRange(String),
}

/// A decimal number as written: sign, digits before and after the point, exponent.
struct Decimal<'a> {
    negative: bool,
    int_digits: &'a [u8],
    frac_digits: &'a [u8],
    exponent: i64,
}

/// Appends the binary send format of the decimal `text` (`-12.340`, `1e-3`, `NaN`,
/// `Infinity`) to `out`: ndigits, weight, sign, dscale, then base-10000 digits. `text` is
/// what PostgreSQL's `numeric_in` takes, without surrounding whitespace.
///
/// # Errors
/// Text that is not a decimal number, or one outside numeric's range.
pub(crate) fn encode_numeric(text: &str, out: &mut Vec<u8>) -> Result<(), NumericError> {
    if let Some(sign) = special(text) {
        header(out, 0, 0, sign, 0);
        return Ok(());
    }
    let out_of_range = || NumericError::OutOfRange(text.to_string());
    let decimal = parse(text)?;
    let (int_digits, frac_digits) = (decimal.int_digits, decimal.frac_digits);
    // value = 0.DIGITS × 10^point, where DIGITS = int ++ frac.
    let point = int_digits.len() as i64 + decimal.exponent;
    let dscale = (frac_digits.len() as i64 - decimal.exponent).max(0) as usize;
    if dscale > NUMERIC_MAX_DSCALE {
        return Err(out_of_range());
    }
    // Pad on the left so the decimal point falls on a base-10000 group boundary.
    let lead = (4 - point.rem_euclid(4)) % 4;
    let groups = groups(lead as usize, int_digits, frac_digits);
    let Some(first) = groups.iter().position(|&g| g != 0) else {
        header(out, 0, 0, NUMERIC_POS, dscale as u16);
        return Ok(());
    };
    let weight = (point + lead) / 4 - 1 - first as i64;
    let last = groups.iter().rposition(|&g| g != 0).unwrap_or(first);
    let groups = &groups[first..=last];
    let weight = i16::try_from(weight).map_err(|_| out_of_range())?;
    let sign = if decimal.negative {
        NUMERIC_NEG
    } else {
        NUMERIC_POS
    };
    header(out, groups.len() as u16, weight, sign, dscale as u16);
    for g in groups {
        out.put_i16(*g);
    }
    Ok(())
}

fn header(out: &mut Vec<u8>, ndigits: u16, weight: i16, sign: u16, dscale: u16) {
    out.put_u16(ndigits);
    out.put_i16(weight);
    out.put_u16(sign);
    out.put_u16(dscale);
}

/// The sign word of NaN and the infinities, spelled as `numeric_in` takes them.
fn special(text: &str) -> Option<u16> {
    let is = |words: &[&str]| words.iter().any(|w| text.eq_ignore_ascii_case(w));
    if is(&["nan"]) {
        Some(NUMERIC_NAN)
    } else if is(&["infinity", "+infinity", "inf", "+inf"]) {
        Some(NUMERIC_PINF)
    } else if is(&["-infinity", "-inf"]) {
        Some(NUMERIC_NINF)
    } else {
        None
    }
}

/// Splits `[+-]digits[.digits][(e|E)[+-]digits]` into its parts.
fn parse(text: &str) -> Result<Decimal<'_>, NumericError> {
    let invalid = || NumericError::Invalid(text.to_string());
    let out_of_range = || NumericError::OutOfRange(text.to_string());
    let bytes = text.as_bytes();
    let (negative, mut rest) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    let int_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let int_digits = &rest[..int_len];
    rest = &rest[int_len..];
    let mut frac_digits: &[u8] = &[];
    if let Some(after_point) = rest.strip_prefix(b".") {
        let frac_len = after_point
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        frac_digits = &after_point[..frac_len];
        rest = &after_point[frac_len..];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err(invalid());
    }
    let mut exponent: i64 = 0;
    if let Some(e) = rest.strip_prefix(b"e").or_else(|| rest.strip_prefix(b"E")) {
        let digits = e
            .strip_prefix(b"+")
            .or_else(|| e.strip_prefix(b"-"))
            .unwrap_or(e);
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(invalid());
        }
        let e = std::str::from_utf8(e).map_err(|_| invalid())?;
        // Digits too many for an i64 are far past numeric's range either way.
        exponent = e.parse::<i64>().map_err(|_| out_of_range())?;
        // No record is long enough to hold the digits that would bring such an exponent
        // back into range; this also keeps the arithmetic below far from overflow.
        if exponent.unsigned_abs() > 4_000_000_000 {
            return Err(out_of_range());
        }
        rest = &[];
    }
    if !rest.is_empty() {
        return Err(invalid());
    }
    Ok(Decimal {
        negative,
        int_digits,
        frac_digits,
        exponent,
    })
}

/// The base-10000 digits of `lead` zeros, then `int_digits` and `frac_digits`, padded on
/// the right to whole groups.
fn groups(lead: usize, int_digits: &[u8], frac_digits: &[u8]) -> Vec<i16> {
    let digits = std::iter::repeat_n(0u8, lead)
        .chain(int_digits.iter().chain(frac_digits).map(|d| d - b'0'));
    let total = lead + int_digits.len() + frac_digits.len();
    let mut groups: Vec<i16> = Vec::with_capacity(total.div_ceil(4));
    let mut acc = 0i16;
    for (i, d) in digits.enumerate() {
        acc = acc * 10 + i16::from(d);
        if i % 4 == 3 {
            groups.push(acc);
            acc = 0;
        }
    }
    if total % 4 != 0 {
        for _ in total % 4..4 {
            acc *= 10;
        }
        groups.push(acc);
    }
    groups
}
