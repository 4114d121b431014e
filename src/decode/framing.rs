//! Splits a byte stream into JSON records, remembering where each one started.
//!
//! arrow-json parses bytes without telling where a value began, so a malformed record could
//! only be reported as "somewhere in this batch". The framer finds record boundaries first
//! (newlines for NDJSON, top-level elements for a JSON array) and hands each record over with
//! its line and column, so every error can name the exact place. It copies only a record that
//! straddles two chunks; everything else is passed on as a slice of the chunk.
//!
//! A record longer than the limit fails the input, or, when the framer skips oversized
//! records (reject mode), is skipped without being buffered and stands in the record stream
//! as an empty record, so that it keeps its number and can be set aside by name.

use super::DecodeError;
use crate::base::snippet;

/// The layout of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Ndjson,
    /// A single JSON array whose elements are the records.
    JsonArray,
}

/// Where a record starts in the input, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

/// The start of an NDJSON line, and the rules the framer finds lines by (see
/// [`Framer::between_lines`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineStart {
    pub line: u64,
    pub max_record_bytes: usize,
    pub skip_oversized: bool,
}

impl LineStart {
    /// A framer for text that starts with this line, numbering it 1.
    pub(crate) fn framer(&self) -> Framer {
        let framer = Framer::new(Some(Format::Ndjson), self.max_record_bytes);
        if self.skip_oversized {
            framer.skipping_oversized()
        } else {
            framer
        }
    }
}

/// What a byte is to the array element being scanned.
enum ElementByte {
    Inside,
    /// Inside a string: a raw line break there is no line of the input's structure.
    InString,
    /// The element's last byte (the bracket closing an object or array).
    Last,
    /// The delimiter after a scalar element, which is not part of it.
    After,
}

#[derive(Debug, Clone, Copy)]
enum ArrayState {
    /// Before the opening `[`.
    Open,
    /// After `[`: an element or `]`.
    First,
    /// After `,`: an element must follow.
    Next,
    /// Inside an element.
    Element {
        depth: u32,
        in_string: bool,
        escaped: bool,
    },
    /// After an element: `,` or `]`.
    After,
    /// After the closing `]`: only whitespace may follow.
    Closed,
}

/// Turns chunks of bytes into records. See the module docs.
#[derive(Debug)]
pub struct Framer {
    format: Option<Format>,
    max_record_bytes: usize,
    /// Bytes of a record that started in an earlier chunk.
    carry: Vec<u8>,
    carry_start: Position,
    /// Line of the next byte to scan, and the absolute offset where that line began.
    line: u64,
    line_start: u64,
    offset: u64,
    array: ArrayState,
    /// Leading bytes seen before the format was known, for the "not JSON" message.
    seen_prefix: Vec<u8>,
    /// Skip records longer than the limit (emitting an empty record for each) instead of
    /// failing.
    skip_oversized: bool,
    /// The record being scanned is longer than the limit and is being skipped.
    skipping: bool,
}

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

impl Framer {
    /// `format: None` detects NDJSON or a JSON array from the first non-blank byte.
    pub fn new(format: Option<Format>, max_record_bytes: usize) -> Framer {
        Framer {
            format,
            max_record_bytes,
            carry: Vec::new(),
            carry_start: Position { line: 1, column: 1 },
            line: 1,
            line_start: 0,
            offset: 0,
            array: ArrayState::Open,
            seen_prefix: Vec::new(),
            skip_oversized: false,
            skipping: false,
        }
    }

    /// Skips records longer than the limit instead of failing: each stands in the stream as
    /// an empty record (which no other record is) at its position.
    pub(crate) fn skipping_oversized(mut self) -> Framer {
        self.skip_oversized = true;
        self
    }

    /// The detected or forced format, once known.
    pub(crate) fn format(&self) -> Option<Format> {
        self.format
    }

    /// The line the next byte is on.
    pub(crate) fn line(&self) -> u64 {
        self.line
    }

    /// Where NDJSON input stands when the framer is between two lines (no part of a line
    /// held back, none being skipped): from there on, the lines can be found by someone
    /// else ([`super::ParallelDecoder::push_lines`]) and numbered as this framer would.
    pub(crate) fn between_lines(&self) -> Option<LineStart> {
        let between =
            self.format == Some(Format::Ndjson) && self.carry.is_empty() && !self.skipping;
        between.then_some(LineStart {
            line: self.line,
            max_record_bytes: self.max_record_bytes,
            skip_oversized: self.skip_oversized,
        })
    }

    /// Scans `chunk` and calls `emit` for every record completed in it.
    ///
    /// # Errors
    /// Input that is not JSON, a broken array structure, a record longer than the limit, or
    /// whatever `emit` returns.
    pub(crate) fn push<E: From<DecodeError>>(
        &mut self,
        mut chunk: &[u8],
        emit: &mut impl FnMut(&[u8], Position) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.offset == 0 && self.seen_prefix.is_empty() {
            // A BOM is only ever at the very start; editors and Windows tools add one.
            if let Some(rest) = chunk.strip_prefix(UTF8_BOM) {
                chunk = rest;
            }
        }
        if self.format.is_none() {
            let Some(first) = chunk.iter().position(|b| !b.is_ascii_whitespace()) else {
                self.scan_blank(chunk);
                return Ok(());
            };
            self.format = Some(detect(&chunk[first..])?);
            // Blanks before the first record belong to no line, however the input is cut
            // into chunks.
            self.scan_blank(&chunk[..first]);
            chunk = &chunk[first..];
        }
        match self.format {
            Some(Format::Ndjson) => self.push_lines(chunk, emit),
            Some(Format::JsonArray) => self.push_array(chunk, emit),
            None => unreachable!("format detected above"),
        }
    }

    /// Emits the last record, and checks that the input ended where a record may end.
    ///
    /// # Errors
    /// An unterminated JSON array, or whatever `emit` returns.
    pub fn finish<E: From<DecodeError>>(
        &mut self,
        emit: &mut impl FnMut(&[u8], Position) -> Result<(), E>,
    ) -> Result<(), E> {
        match self.format {
            Some(Format::Ndjson) => {
                if self.skipping {
                    self.skipping = false;
                    emit(&[], self.carry_start)?;
                }
                if !self.carry.is_empty() {
                    let record = std::mem::take(&mut self.carry);
                    let trimmed = trim_line(&record);
                    if !trimmed.is_empty() {
                        emit(trimmed, self.carry_start)?;
                    }
                }
                Ok(())
            }
            Some(Format::JsonArray) => match self.array {
                ArrayState::Closed => Ok(()),
                _ => Err(E::from(DecodeError::Structure {
                    line: self.line,
                    message: "the input ended before the JSON array was closed with ']'".into(),
                })),
            },
            None => Ok(()),
        }
    }

    fn position_at(&self, absolute: u64) -> Position {
        Position {
            line: self.line,
            column: absolute - self.line_start + 1,
        }
    }

    fn scan_blank(&mut self, chunk: &[u8]) {
        for (i, &b) in chunk.iter().enumerate() {
            if b == b'\n' {
                self.line += 1;
                self.line_start = self.offset + i as u64 + 1;
            }
        }
        self.offset += chunk.len() as u64;
    }

    /// Whether a record of `len` bytes starting at `start` fits; a longer one fails, unless
    /// oversized records are skipped (then `false`).
    fn fits(&self, len: usize, start: Position) -> Result<bool, DecodeError> {
        if len <= self.max_record_bytes {
            return Ok(true);
        }
        if self.skip_oversized {
            return Ok(false);
        }
        Err(DecodeError::RecordTooLarge {
            line: start.line,
            limit: self.max_record_bytes,
        })
    }

    fn push_lines<E: From<DecodeError>>(
        &mut self,
        chunk: &[u8],
        emit: &mut impl FnMut(&[u8], Position) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut start = 0;
        for newline in memchr::memchr_iter(b'\n', chunk) {
            let line_start = Position {
                line: self.line,
                column: 1,
            };
            // A line is too long by its length as written, blanks included: a line read in
            // pieces is measured before its end is known, and a line must be too long or
            // not whatever the pieces (and decode workers that find lines themselves,
            // which cut an over-long line short, see the same).
            if self.skipping {
                // The end of a line too long to keep: it stands in as an empty record.
                self.skipping = false;
                emit(&[], self.carry_start)?;
            } else if self.carry.is_empty() {
                let line = &chunk[start..newline];
                let record = trim_line(line);
                if !self.fits(line.len(), line_start)? {
                    emit(&[], line_start)?;
                } else if !record.is_empty() {
                    emit(record, line_start)?;
                }
            } else {
                self.carry.extend_from_slice(&chunk[start..newline]);
                let line = std::mem::take(&mut self.carry);
                let record = trim_line(&line);
                if !self.fits(line.len(), self.carry_start)? {
                    emit(&[], self.carry_start)?;
                } else if !record.is_empty() {
                    emit(record, self.carry_start)?;
                }
                self.carry = line;
                self.carry.clear();
            }
            self.line += 1;
            self.line_start = self.offset + newline as u64 + 1;
            start = newline + 1;
        }
        let tail = &chunk[start..];
        if !tail.is_empty() && !self.skipping {
            if self.carry.is_empty() {
                self.carry_start = Position {
                    line: self.line,
                    column: 1,
                };
            }
            self.carry.extend_from_slice(tail);
            if !self.fits(self.carry.len(), self.carry_start)? {
                // Too long to keep: skip the rest of the line without buffering it.
                self.skipping = true;
                self.carry.clear();
            }
        }
        self.offset += chunk.len() as u64;
        Ok(())
    }

    fn push_array<E: From<DecodeError>>(
        &mut self,
        chunk: &[u8],
        emit: &mut impl FnMut(&[u8], Position) -> Result<(), E>,
    ) -> Result<(), E> {
        // Where the current element began in this chunk; `None` while it began in an earlier
        // one and its bytes so far are in `carry`.
        let mut element_start: Option<usize> = None;
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            if !matches!(self.array, ArrayState::Element { .. }) {
                if self.between_elements(b, i).map_err(E::from)? {
                    // An element starts here: scan this byte as its first.
                    element_start = Some(i);
                } else {
                    i += 1;
                }
                continue;
            }
            match self.element_byte(b) {
                ElementByte::InString => i += 1,
                ElementByte::Inside => {
                    if b == b'\n' {
                        self.line += 1;
                        self.line_start = self.offset + i as u64 + 1;
                    }
                    i += 1;
                }
                ElementByte::Last => {
                    self.emit_element(chunk, element_start, i + 1, emit)?;
                    element_start = None;
                    self.array = ArrayState::After;
                    i += 1;
                }
                ElementByte::After => {
                    // A scalar ends at its delimiter, which is scanned again after it.
                    self.emit_element(chunk, element_start, i, emit)?;
                    element_start = None;
                    self.array = ArrayState::After;
                }
            }
        }
        if let ArrayState::Element { .. } = self.array
            && !self.skipping
        {
            let from = element_start.unwrap_or(0);
            self.carry.extend_from_slice(&chunk[from..]);
            if !self.fits(self.carry.len(), self.carry_start)? {
                // Too long to keep: scan the rest of the element without buffering it.
                self.skipping = true;
                self.carry.clear();
            }
        }
        self.offset += chunk.len() as u64;
        Ok(())
    }

    /// Byte `b` of an element being scanned: whether it is inside the element, its last
    /// byte, or the delimiter after a scalar element.
    fn element_byte(&mut self, b: u8) -> ElementByte {
        let ArrayState::Element {
            depth,
            in_string,
            escaped,
        } = &mut self.array
        else {
            return ElementByte::Inside;
        };
        if *in_string {
            if *escaped {
                *escaped = false;
            } else if b == b'\\' {
                *escaped = true;
            } else if b == b'"' {
                *in_string = false;
            }
            return ElementByte::InString;
        }
        match b {
            b'"' => *in_string = true,
            b'{' | b'[' => *depth += 1,
            b'}' | b']' if *depth > 0 => {
                *depth -= 1;
                if *depth == 0 {
                    return ElementByte::Last;
                }
            }
            b',' | b']' | b' ' | b'\t' | b'\r' | b'\n' if *depth == 0 => return ElementByte::After,
            _ => {}
        }
        ElementByte::Inside
    }

    /// Byte `b`, at `at` in the chunk, outside any element: the array's brackets, commas and
    /// white space. Returns whether an element starts at it.
    fn between_elements(&mut self, b: u8, at: usize) -> Result<bool, DecodeError> {
        if b == b'\n' {
            self.line += 1;
            self.line_start = self.offset + at as u64 + 1;
            return Ok(false);
        }
        if b.is_ascii_whitespace() {
            return Ok(false);
        }
        let unexpected = |what: &str| DecodeError::Structure {
            line: self.line,
            message: format!("expected {what}, found {:?}", char::from(b)),
        };
        match (self.array, b) {
            (ArrayState::Open, b'[') => self.array = ArrayState::First,
            (ArrayState::Open, _) => return Err(unexpected("'[' to open the array")),
            (ArrayState::First | ArrayState::After, b']') => self.array = ArrayState::Closed,
            (ArrayState::After, b',') => self.array = ArrayState::Next,
            (ArrayState::After, _) => {
                return Err(unexpected("',' or ']' after an array element"));
            }
            (ArrayState::Next, b']') => return Err(unexpected("an element after ','")),
            (ArrayState::First | ArrayState::Next, _) => {
                self.carry_start = self.position_at(self.offset + at as u64);
                self.carry.clear();
                self.array = ArrayState::Element {
                    depth: 0,
                    in_string: false,
                    escaped: false,
                };
                return Ok(true);
            }
            (ArrayState::Closed, _) => {
                return Err(DecodeError::Structure {
                    line: self.line,
                    message: "unexpected data after the end of the JSON array".into(),
                });
            }
            (ArrayState::Element { .. }, _) => {}
        }
        Ok(false)
    }

    fn emit_element<E: From<DecodeError>>(
        &mut self,
        chunk: &[u8],
        start_in_chunk: Option<usize>,
        end: usize,
        emit: &mut impl FnMut(&[u8], Position) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.skipping {
            self.skipping = false;
            return emit(&[], self.carry_start);
        }
        match start_in_chunk {
            Some(start) => {
                let record: &[u8] = if self.fits(end - start, self.carry_start)? {
                    &chunk[start..end]
                } else {
                    &[]
                };
                emit(record, self.carry_start)
            }
            None => {
                self.carry.extend_from_slice(&chunk[..end]);
                if !self.fits(self.carry.len(), self.carry_start)? {
                    self.carry.clear();
                    return emit(&[], self.carry_start);
                }
                let record = std::mem::take(&mut self.carry);
                let result = emit(&record, self.carry_start);
                self.carry = record;
                self.carry.clear();
                result
            }
        }
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    line.trim_ascii()
}

fn detect(start: &[u8]) -> Result<Format, DecodeError> {
    match start[0] {
        b'[' => Ok(Format::JsonArray),
        b'{' => Ok(Format::Ndjson),
        b'<' => Err(DecodeError::NotJson {
            looks_like: "HTML or XML",
            start: snippet(start),
        }),
        _ => Err(DecodeError::NotJson {
            looks_like: "neither NDJSON nor a JSON array",
            start: snippet(start),
        }),
    }
}

#[cfg(test)]
mod tests;
