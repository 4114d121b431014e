//! A strict JSON scanner for one record: RFC 8259, and nothing looser.
//!
//! arrow-json's tokenizer is built for analytics and is lenient: it takes any run of number
//! characters as a number (`01`, `1.2.3`, `-`), skips commas freely (`{"a":1 "b":2}`), and
//! keeps raw control characters inside strings. A loader that promises exact values must
//! refuse such text, so records are scanned here instead, in one pass that also finds what
//! the column decoders need.
//!
//! A record is a JSON object. Its fields are handed to the caller as (key, [`Value`]) pairs
//! in order, where a value is only its kind and where its text lies in the record: no value
//! is copied or converted here. Nested objects and arrays are validated to the end (with an
//! explicit stack, so no input can overflow the thread's stack) but not broken up: the
//! columns that take them (json, jsonb, text) want their exact text, as PostgreSQL keeps it.

use std::fmt;

mod nested;
mod strings;

pub(crate) use nested::scan_elements;
#[cfg(test)]
use strings::ordinary_run_swar;
pub(crate) use strings::unescape;
use strings::{STRING_BYTES, ordinary_run};

/// The deepest nesting of objects and arrays accepted. PostgreSQL, with its default
/// `max_stack_depth`, reads JSON at least this deep; deeper records are refused here, with a
/// message, rather than risking the server's (or anyone's) stack.
pub(crate) const MAX_DEPTH: usize = 10_000;

/// What kind of JSON value a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Kind {
    /// The record has no such field.
    #[default]
    Absent,
    Null,
    True,
    False,
    Number,
    String,
    Object,
    Array,
}

/// A field's value: its kind and where its text lies in the record (for a string, the text
/// between the quotes, escapes as written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Value {
    pub kind: Kind,
    /// A string with backslash escapes ([`unescape`] gives its text).
    pub escaped: bool,
    /// A string, or a nested value, holding the escape `\u0000`, which PostgreSQL cannot
    /// convert to text or store in jsonb.
    pub nul: bool,
    pub start: u32,
    pub end: u32,
}

impl Value {
    /// The value's text in `record`: a number as written, a string's contents with its
    /// escapes, a nested value's whole text.
    #[inline]
    pub(crate) fn text<'a>(&self, record: &'a str) -> &'a str {
        // Every span starts and ends next to an ASCII byte (a quote, a bracket, a digit), so
        // it lies on character boundaries: slicing costs two checks, not a pass over the
        // text. (A span of some other record yields "" rather than a panic.)
        record
            .get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    /// The value as JSON text: strings with their quotes.
    #[inline]
    pub(crate) fn json<'a>(&self, record: &'a str) -> &'a str {
        let (start, end) = match self.kind {
            Kind::String => (self.start as usize - 1, self.end as usize + 1),
            _ => (self.start as usize, self.end as usize),
        };
        record.get(start..end).unwrap_or_default()
    }
}

/// Why a record is not valid JSON, and where (a byte offset in the record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn error(offset: usize, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        offset,
        message: message.into(),
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// What [`scan_fields`] hands each field to: for each key, the place its value is to be
/// scanned into.
///
/// The scanner writes a value straight into the slot the caller picked for its key, rather
/// than returning it: a value handed back through a `Result` is assembled from narrow stores
/// on one of several paths and read back whole, which stalled the CPU on every field (the
/// loads could not be served from the pending stores).
pub(crate) trait Fields {
    type Error: From<SyntaxError>;

    /// The key the next field most likely has, as it would be written between its quotes
    /// *followed by the closing quote* (so `id"` for `"id"`), or `None` to make no guess.
    /// Records from one source list their fields in one order, so a caller that knows the
    /// order lets the scanner take most keys with one comparison: no scan of the key's
    /// text, no search for its column. Only keys written without escapes can be guessed.
    fn likely_key(&self) -> Option<&[u8]>;

    /// Where the value of a field whose key was [`Fields::likely_key`] goes.
    fn likely(&mut self) -> &mut Value;

    /// Where the value of any other field goes: its key's text between the quotes, and
    /// whether it has escapes.
    fn field(&mut self, key: &str, escaped: bool) -> &mut Value;

    /// The value of the field just given a slot is in it; `key` is its key as
    /// [`Fields::field`] had it, or `None` for the likely key.
    ///
    /// # Errors
    /// Whatever the caller refuses; the scan stops with it.
    fn filled(&mut self, key: Option<(&str, bool)>) -> Result<(), Self::Error>;
}

/// [`Fields`] for a closure that takes every field as (key, escaped, value).
struct EachField<F> {
    each: F,
    value: Value,
}

impl<E: From<SyntaxError>, F: FnMut(&str, bool, Value) -> Result<(), E>> Fields for EachField<F> {
    type Error = E;

    fn likely_key(&self) -> Option<&[u8]> {
        None
    }

    fn likely(&mut self) -> &mut Value {
        &mut self.value
    }

    fn field(&mut self, _: &str, _: bool) -> &mut Value {
        &mut self.value
    }

    fn filled(&mut self, key: Option<(&str, bool)>) -> Result<(), E> {
        let (key, escaped) = key.unwrap_or_default();
        (self.each)(key, escaped, self.value)
    }
}

/// Scans one record, which must be exactly one JSON object (surrounding whitespace aside),
/// calling `field` with each key (its text between the quotes, and whether it has escapes)
/// and value, in order.
///
/// # Errors
/// The first place the record departs from RFC 8259, or the first error `field` returns.
pub(crate) fn scan_record<E: From<SyntaxError>>(
    text: &str,
    field: impl FnMut(&str, bool, Value) -> Result<(), E>,
) -> Result<(), E> {
    let mut each = EachField {
        each: field,
        value: Value::default(),
    };
    scan_fields(text, 0, &mut each)
}

/// Scans the record that fills `text` from byte `from` to its end as [`scan_record`] does,
/// handing its fields to `fields`. Values' spans are positions in `text` (a batch of
/// records keeps them as they are); an error's offset counts from `from`.
///
/// # Errors
/// The first place the record departs from RFC 8259, or the first error `fields` returns.
pub(crate) fn scan_fields<F: Fields>(
    text: &str,
    from: usize,
    fields: &mut F,
) -> Result<(), F::Error> {
    let mut s = Scanner::new(text.as_bytes(), from);
    s.record(text, fields).map_err(|stop| match stop {
        Stop::Syntax(mut e) => {
            e.offset -= from;
            e.into()
        }
        Stop::Fields(e) => e,
    })
}

/// Why a scan stopped: the text, or the caller.
enum Stop<E> {
    Syntax(SyntaxError),
    Fields(E),
}

impl<E> From<SyntaxError> for Stop<E> {
    fn from(e: SyntaxError) -> Self {
        Stop::Syntax(e)
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Open objects (`true`) and arrays (`false`) of the nested value being scanned.
    stack: Vec<bool>,
}

impl<'a> Scanner<'a> {
    fn new(bytes: &'a [u8], at: usize) -> Scanner<'a> {
        Scanner {
            bytes,
            at,
            stack: Vec::new(),
        }
    }

    /// The record from the cursor to the end of the text, field by field into `fields`.
    fn record<F: Fields>(&mut self, text: &str, fields: &mut F) -> Result<(), Stop<F::Error>> {
        self.skip_space();
        match self.peek() {
            Some(b'{') => self.at += 1,
            Some(_) => return Err(self.fail("the record is not a JSON object").into()),
            None => return Err(self.fail("the record is empty").into()),
        }
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.at += 1;
        } else {
            loop {
                self.skip_space();
                if self.peek() != Some(b'"') {
                    return Err(self
                        .fail("expected a key (a string in double quotes)")
                        .into());
                }
                let likely = fields
                    .likely_key()
                    .is_some_and(|key| self.takes_quoted(key));
                let mut key = Value::default();
                if !likely {
                    self.string(&mut key)?;
                }
                self.skip_space();
                if self.peek() != Some(b':') {
                    return Err(self.fail("expected ':' after the key").into());
                }
                self.at += 1;
                self.skip_space();
                let (slot, key) = if likely {
                    (fields.likely(), None)
                } else {
                    let key = (key.text(text), key.escaped);
                    (fields.field(key.0, key.1), Some(key))
                };
                self.value(slot)?;
                fields.filled(key).map_err(Stop::Fields)?;
                self.skip_space();
                match self.peek() {
                    Some(b',') => self.at += 1,
                    Some(b'}') => {
                        self.at += 1;
                        break;
                    }
                    _ => return Err(self.fail("expected ',' or '}' after a value").into()),
                }
            }
        }
        self.skip_space();
        if self.at < self.bytes.len() {
            return Err(self.fail("more than one JSON value in the record").into());
        }
        Ok(())
    }

    /// Whether the string at the cursor (on its opening quote) is exactly `quoted`'s text
    /// and closing quote; if so, moves past it. `quoted` must hold no quote before its last
    /// byte, nor a backslash or control character, so that equal bytes are an equal key.
    fn takes_quoted(&mut self, quoted: &[u8]) -> bool {
        let from = self.at + 1;
        let Some(here) = self.bytes.get(from..from + quoted.len()) else {
            return false;
        };
        // Keys are short: a plain loop beats a call to memcmp.
        if here.iter().zip(quoted).any(|(a, b)| a != b) {
            return false;
        }
        self.at = from + quoted.len();
        true
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while self.at < self.bytes.len() && is_space(self.bytes[self.at]) {
            self.at += 1;
        }
    }

    fn fail(&self, message: &str) -> SyntaxError {
        match self.peek() {
            None => error(
                self.at,
                "the record ends before its JSON value is complete (NDJSON needs one whole value per line)",
            ),
            Some(b) if b.is_ascii_graphic() => {
                error(self.at, format!("{message}, found {:?}", char::from(b)))
            }
            Some(b) => error(self.at, format!("{message}, found byte 0x{b:02x}")),
        }
    }

    /// One value at the cursor (after whitespace), scalar or nested, written into `out`.
    // Inlined (like `string`) into the field loop: the decode bench is 2% faster.
    #[inline(always)]
    fn value(&mut self, out: &mut Value) -> Result<(), SyntaxError> {
        let start = self.at;
        let scalar = |kind, s: &Self| Value {
            kind,
            start: start as u32,
            end: s.at as u32,
            ..Value::default()
        };
        match self.peek() {
            Some(b'"') => self.string(out)?,
            Some(b'-' | b'0'..=b'9') => {
                self.number()?;
                *out = scalar(Kind::Number, self);
            }
            Some(b't') => {
                self.literal("true")?;
                *out = scalar(Kind::True, self);
            }
            Some(b'f') => {
                self.literal("false")?;
                *out = scalar(Kind::False, self);
            }
            Some(b'n') => {
                self.literal("null")?;
                *out = scalar(Kind::Null, self);
            }
            Some(b'{' | b'[') => *out = self.nested()?,
            _ => return Err(self.fail("expected a value")),
        }
        Ok(())
    }

    fn literal(&mut self, word: &str) -> Result<(), SyntaxError> {
        let end = self.at + word.len();
        if self.bytes.get(self.at..end) != Some(word.as_bytes())
            || self
                .bytes
                .get(end)
                .is_some_and(|b| b.is_ascii_alphanumeric())
        {
            return Err(error(
                self.at,
                "expected a value (true, false, null, a number, a string, an object or an array)",
            ));
        }
        self.at = end;
        Ok(())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, ending where a value may end.
    fn number(&mut self) -> Result<(), SyntaxError> {
        let start = self.at;
        let digits = |s: &mut Self| {
            let from = s.at;
            while s.at < s.bytes.len() && s.bytes[s.at].is_ascii_digit() {
                s.at += 1;
            }
            s.at - from
        };
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.at += 1;
                if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return Err(error(
                        start,
                        "a number must not start with 0 followed by digits",
                    ));
                }
            }
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(error(start, "a number needs a digit after its '-'")),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if digits(self) == 0 {
                return Err(error(
                    start,
                    "a number needs digits after its decimal point",
                ));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if digits(self) == 0 {
                return Err(error(start, "a number needs digits in its exponent"));
            }
        }
        match self.peek() {
            None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') => Ok(()),
            Some(_) => Err(error(
                start,
                format!(
                    "{:?} is not a JSON number",
                    String::from_utf8_lossy(
                        &self.bytes[start..(self.at + 1).min(self.bytes.len())]
                    )
                ),
            )),
        }
    }

    /// A string at the cursor (on its opening quote), written into `out`; the value spans
    /// its contents.
    #[inline(always)]
    fn string(&mut self, out: &mut Value) -> Result<(), SyntaxError> {
        self.at += 1;
        let start = self.at;
        let mut escaped = false;
        let mut nul = false;
        loop {
            // The common case: a run of ordinary bytes.
            self.at = ordinary_run(self.bytes, self.at);
            match self.bytes.get(self.at).map(|&b| STRING_BYTES[b as usize]) {
                Some(1) => break,
                Some(2) => {
                    escaped = true;
                    nul |= self.escape()?;
                }
                Some(_) => {
                    let b = self.bytes[self.at];
                    return Err(error(
                        self.at,
                        format!(
                            "a control character (U+{b:04X}) inside a string; JSON requires it escaped (\\u{b:04x})"
                        ),
                    ));
                }
                None => return Err(error(start - 1, "a string that is never closed")),
            }
        }
        let end = self.at;
        self.at += 1;
        *out = Value {
            kind: Kind::String,
            escaped,
            nul,
            start: start as u32,
            end: end as u32,
        };
        Ok(())
    }

    /// One escape at the cursor (on its backslash); returns whether it is `\u0000`.
    fn escape(&mut self) -> Result<bool, SyntaxError> {
        let at = self.at;
        match self.bytes.get(at + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.at += 2;
                Ok(false)
            }
            Some(b'u') => {
                let unit = self.hex4(at + 2)?;
                self.at = at + 6;
                match unit {
                    0xD800..=0xDBFF => {
                        if self.bytes.get(self.at..self.at + 2) != Some(b"\\u") {
                            return Err(error(
                                at,
                                "a UTF-16 high surrogate escape not followed by its low surrogate",
                            ));
                        }
                        let low = self.hex4(self.at + 2)?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(error(
                                at,
                                "a UTF-16 high surrogate escape not followed by its low surrogate",
                            ));
                        }
                        self.at += 6;
                        Ok(false)
                    }
                    0xDC00..=0xDFFF => Err(error(
                        at,
                        "a UTF-16 low surrogate escape without its high surrogate",
                    )),
                    unit => Ok(unit == 0),
                }
            }
            Some(&b) => Err(error(
                at,
                format!(
                    "invalid escape \\{} in a string",
                    char::from(b).escape_default()
                ),
            )),
            None => Err(error(at, "a string that is never closed")),
        }
    }

    fn hex4(&self, at: usize) -> Result<u32, SyntaxError> {
        let digits = self
            .bytes
            .get(at..at + 4)
            .ok_or_else(|| error(at - 2, "a \\u escape needs four hex digits"))?;
        let mut unit = 0;
        for &d in digits {
            let v = (d as char)
                .to_digit(16)
                .ok_or_else(|| error(at - 2, "a \\u escape needs four hex digits"))?;
            unit = unit * 16 + v;
        }
        Ok(unit)
    }
}

#[cfg(test)]
mod tests;
