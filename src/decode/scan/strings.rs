//! The string-scanning loops of the scanner: the run of ordinary bytes inside a string
//! (its hottest loop) and the unescaping of a string's contents.

/// What a byte means inside a string: 0 ordinary, 1 the end quote, 2 a backslash, 3 a
/// control character (which JSON requires to be escaped).
pub(super) static STRING_BYTES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = 3;
        b += 1;
    }
    table[b'"' as usize] = 1;
    table[b'\\' as usize] = 2;
    table
};

/// Where the run of ordinary string bytes from `at` ends: at the first quote, backslash or
/// control character (or the end). Most of a record's bytes are string contents, so this
/// loop is the scanner's hottest: sixteen bytes at a time where SSE2 is (every x86-64), eight
/// elsewhere and for the tail.
pub(super) fn ordinary_run(bytes: &[u8], at: usize) -> usize {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    // SAFETY: the function only needs SSE2, which this build's target has (the cfg above):
    // it is part of the x86-64 baseline. Rust asks for `unsafe` here only because it does
    // not count a target's default features as enabled in the caller.
    let at = unsafe { wide::ordinary_run(bytes, at) };
    ordinary_run_swar(bytes, at)
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod wide {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };

    /// Like [`super::ordinary_run`], sixteen bytes at a time, stopping early (at the first
    /// special byte, or with fewer than sixteen bytes left). Safe code throughout: loads go
    /// through zerocopy, and the intrinsics are safe inside a function with their feature.
    #[target_feature(enable = "sse2")]
    pub(super) fn ordinary_run(bytes: &[u8], mut at: usize) -> usize {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let below_space = _mm_set1_epi8(0x1f);
        while let Some(chunk) = bytes.get(at..).and_then(<[u8]>::first_chunk::<16>) {
            let v: __m128i = zerocopy::transmute!(*chunk);
            // max(v, 0x1f) == 0x1f exactly when v <= 0x1f (unsigned): a control character.
            let special = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                _mm_cmpeq_epi8(_mm_max_epu8(v, below_space), below_space),
            );
            let mask = _mm_movemask_epi8(special);
            if mask != 0 {
                return at + mask.trailing_zeros() as usize;
            }
            at += 16;
        }
        at
    }
}

/// [`ordinary_run`] eight bytes at a time in a u64: in a word, a byte is flagged when it is a
/// quote or a backslash or below 0x20. Borrows can flag bytes above a flagged one, never
/// below it, so the lowest flag (the earliest byte, little-endian) is always a real one.
pub(super) fn ordinary_run_swar(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    let zero_bytes = |w: u64| w.wrapping_sub(ONES) & !w;
    while let Some(chunk) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(*chunk);
        let special = (zero_bytes(w ^ (ONES * u64::from(b'"')))
            | zero_bytes(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGHS;
        if special != 0 {
            return at + (special.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while at < bytes.len() && STRING_BYTES[bytes[at] as usize] == 0 {
        at += 1;
    }
    at
}

/// Appends the text of a JSON string's contents (between the quotes), escapes resolved, to
/// `out`. The contents must have passed the scanner.
pub(crate) fn unescape(contents: &str, out: &mut String) {
    let mut rest = contents;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let bytes = rest.as_bytes();
        let (c, used) = match bytes[i + 1] {
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'n' => ('\n', 2),
            b'r' => ('\r', 2),
            b't' => ('\t', 2),
            b'u' => {
                let unit = |at: usize| u32::from_str_radix(&rest[at..at + 4], 16).unwrap_or(0xFFFD);
                let high = unit(i + 2);
                if (0xD800..0xDC00).contains(&high) {
                    let low = unit(i + 8);
                    let c = char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00));
                    (c.unwrap_or('\u{FFFD}'), 12)
                } else {
                    (char::from_u32(high).unwrap_or('\u{FFFD}'), 6)
                }
            }
            other => (char::from(other), 2),
        };
        out.push(c);
        rest = &rest[i + used..];
    }
    out.push_str(rest);
}
