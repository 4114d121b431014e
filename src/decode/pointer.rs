//! Records inside a JSON document: the array at a JSON pointer (`/data`, `/response/items`).
//!
//! APIs wrap their records: `{"data": [...], "next_cursor": "…", "total": 1234}`. The scanner
//! walks the document's structure byte by byte without building values: it hands each element
//! of the records array over as a slice (like the framer does for NDJSON lines) and keeps the
//! raw text of the few other values pagination needs (a cursor, a next URL, a total). Values
//! nobody asked for are skipped at the speed of a byte loop.

use std::fmt;

use super::DecodeError;
use super::framing::Position;

/// An RFC 6901 JSON pointer: `""` is the whole document, `/a/0/b` walks keys and indexes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct JsonPointer {
    tokens: Vec<String>,
}

impl JsonPointer {
    /// # Errors
    /// Text that is neither empty nor starts with `/`, or a bad `~` escape.
    pub(crate) fn parse(text: &str) -> Result<JsonPointer, PointerError> {
        let error = |problem: &'static str| PointerError {
            text: text.to_string(),
            problem,
        };
        if text.is_empty() {
            return Ok(JsonPointer::default());
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(error(
                "must start with '/' (for example /data or /response/items)",
            ));
        };
        let tokens = rest
            .split('/')
            .map(|t| {
                if t.replace("~0", "").replace("~1", "").contains('~') {
                    return Err(error("has a '~' not followed by 0 or 1"));
                }
                Ok(t.replace("~1", "/").replace("~0", "~"))
            })
            .collect::<Result<_, _>>()?;
        Ok(JsonPointer { tokens })
    }
}

/// Text that is not an RFC 6901 JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("JSON pointer {text:?} {problem}")]
pub(crate) struct PointerError {
    pub text: String,
    pub problem: &'static str,
}

impl JsonPointer {
    /// The reference tokens, unescaped (`/a~1b/0` → `["a/b", "0"]`).
    pub(crate) fn tokens(&self) -> &[String] {
        &self.tokens
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in &self.tokens {
            write!(f, "/{}", t.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

/// What the scan found besides the records.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Scanned<'a> {
    /// Raw JSON text of each captured pointer's value, in the order asked; `None` if absent.
    pub captured: Vec<Option<&'a [u8]>>,
    /// Number of records handed over.
    pub records: u64,
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    line: u64,
    line_start: usize,
}

/// Scans `doc`, calling `emit` for each element of the array at `records`, and returns the
/// values at `captures`.
///
/// # Errors
/// Malformed JSON, or no array at `records`, or whatever `emit` returns.
pub(crate) fn scan_document<'a, E: From<DecodeError>>(
    doc: &'a [u8],
    records: &JsonPointer,
    captures: &[&JsonPointer],
    emit: &mut impl FnMut(&[u8], Position) -> Result<(), E>,
) -> Result<Scanned<'a>, E> {
    let mut scanner = Scanner {
        bytes: doc,
        at: 0,
        line: 1,
        line_start: 0,
    };
    let mut scanned = Scanned {
        captured: vec![None; captures.len()],
        records: 0,
    };
    let mut found = false;
    let mut path: Vec<String> = Vec::new();
    scanner.skip_ws();
    if scanner.peek() == Some(b'<') {
        return Err(E::from(DecodeError::NotJson {
            looks_like: "HTML or XML",
            start: crate::base::snippet(&doc[scanner.at..]),
        }));
    }
    scanner.value(&mut path, records, captures, &mut scanned, &mut found, emit)?;
    scanner.skip_ws();
    if scanner.at != doc.len() {
        return Err(scanner
            .error("unexpected data after the JSON document")
            .into());
    }
    if !found {
        return Err(E::from(DecodeError::Structure {
            line: 1,
            message: format!("the document has no array at {records}"),
        }));
    }
    Ok(scanned)
}

impl<'a> Scanner<'a> {
    fn error(&self, message: &str) -> DecodeError {
        DecodeError::Structure {
            line: self.line,
            message: format!("{message} (column {})", self.at - self.line_start + 1),
        }
    }

    fn position(&self) -> Position {
        Position {
            line: self.line,
            column: (self.at - self.line_start + 1) as u64,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b'\n' => {
                    self.at += 1;
                    self.line += 1;
                    self.line_start = self.at;
                }
                b' ' | b'\t' | b'\r' => self.at += 1,
                _ => break,
            }
        }
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), DecodeError> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected {what}")))
        }
    }

    /// At an opening quote: moves past the string and returns its raw contents.
    fn string(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.at + 1;
        let mut i = start;
        loop {
            if i >= self.bytes.len() {
                return Err(self.error("unterminated string"));
            }
            match memchr::memchr2(b'"', b'\\', &self.bytes[i..]) {
                Some(n) if self.bytes[i + n] == b'\\' => i += n + 2,
                Some(n) => {
                    self.at = i + n + 1;
                    return Ok(&self.bytes[start..i + n]);
                }
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    /// Skips one value of any kind, containers included.
    fn skip_value(&mut self) -> Result<(), DecodeError> {
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{' | b'[') => {
                let mut depth = 0u32;
                while let Some(b) = self.peek() {
                    match b {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.at += 1;
                                return Ok(());
                            }
                        }
                        b'\n' => {
                            self.line += 1;
                            self.line_start = self.at + 1;
                        }
                        _ => {}
                    }
                    self.at += 1;
                }
                Err(self.error("the document ended inside an object or array"))
            }
            Some(_) => {
                let start = self.at;
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                        break;
                    }
                    self.at += 1;
                }
                if self.at == start {
                    return Err(self.error("expected a value"));
                }
                Ok(())
            }
            None => Err(self.error("expected a value")),
        }
    }

    /// Scans the value at `path`: the records array, a captured value, a container on the
    /// way to one of those, or something to skip.
    fn value<E: From<DecodeError>>(
        &mut self,
        path: &mut Vec<String>,
        records: &JsonPointer,
        captures: &[&JsonPointer],
        scanned: &mut Scanned<'a>,
        found: &mut bool,
        emit: &mut impl FnMut(&[u8], Position) -> Result<(), E>,
    ) -> Result<(), E> {
        if *path == records.tokens {
            *found = true;
            return self.records(scanned, emit);
        }
        if let Some(i) = captures.iter().position(|c| c.tokens == *path) {
            let start = self.at;
            self.skip_value()?;
            scanned.captured[i] = Some(&self.bytes[start..self.at]);
            return Ok(());
        }
        let leads_somewhere = |p: &[String]| {
            records.tokens.starts_with(p) || captures.iter().any(|c| c.tokens.starts_with(p))
        };
        if !leads_somewhere(path) {
            return self.skip_value().map_err(E::from);
        }
        match self.peek() {
            Some(b'{') => {
                self.at += 1;
                self.skip_ws();
                if self.peek() == Some(b'}') {
                    self.at += 1;
                    return Ok(());
                }
                loop {
                    self.skip_ws();
                    if self.peek() != Some(b'"') {
                        return Err(self.error("expected a key").into());
                    }
                    let raw = self.string()?;
                    let key = if raw.contains(&b'\\') {
                        let quoted = [&b"\""[..], raw, b"\""].concat();
                        serde_json::from_slice::<String>(&quoted)
                            .map_err(|_| self.error("invalid escape in a key"))?
                    } else {
                        String::from_utf8_lossy(raw).into_owned()
                    };
                    self.expect(b':', "':' after a key")?;
                    self.skip_ws();
                    path.push(key);
                    self.value(path, records, captures, scanned, found, emit)?;
                    path.pop();
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(());
                        }
                        _ => return Err(self.error("expected ',' or '}' in an object").into()),
                    }
                }
            }
            Some(b'[') => {
                self.at += 1;
                let mut index = 0usize;
                loop {
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        self.at += 1;
                        return Ok(());
                    }
                    path.push(index.to_string());
                    self.value(path, records, captures, scanned, found, emit)?;
                    path.pop();
                    index += 1;
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(());
                        }
                        _ => return Err(self.error("expected ',' or ']' in an array").into()),
                    }
                }
            }
            _ => self.skip_value().map_err(E::from),
        }
    }

    fn records<E: From<DecodeError>>(
        &mut self,
        scanned: &mut Scanned<'a>,
        emit: &mut impl FnMut(&[u8], Position) -> Result<(), E>,
    ) -> Result<(), E> {
        match self.peek() {
            Some(b'[') => self.at += 1,
            // A JSON null where the records would be: an empty page, as many APIs send it.
            Some(b'n') => return self.skip_value().map_err(E::from),
            _ => return Err(self.error("expected an array of records").into()),
        }
        loop {
            self.skip_ws();
            if self.peek() == Some(b']') {
                self.at += 1;
                return Ok(());
            }
            let at = self.position();
            let start = self.at;
            self.skip_value()?;
            emit(&self.bytes[start..self.at], at)?;
            scanned.records += 1;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected ',' or ']' between records").into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records as (text, line, column), and the captured values as text.
    type ScanResult = Result<(Vec<(String, u64, u64)>, Vec<Option<String>>), String>;

    fn scan(doc: &str, records: &str, captures: &[&str]) -> ScanResult {
        let records = JsonPointer::parse(records).unwrap();
        let captures: Vec<JsonPointer> = captures
            .iter()
            .map(|c| JsonPointer::parse(c).unwrap())
            .collect();
        let refs: Vec<&JsonPointer> = captures.iter().collect();
        let mut out = Vec::new();
        let scanned = scan_document(
            doc.as_bytes(),
            &records,
            &refs,
            &mut |r: &[u8], p: Position| {
                out.push((String::from_utf8_lossy(r).into_owned(), p.line, p.column));
                Ok::<(), DecodeError>(())
            },
        )
        .map_err(|e| e.to_string())?;
        assert_eq!(scanned.records as usize, out.len());
        let captured = scanned
            .captured
            .iter()
            .map(|c| c.map(|b| String::from_utf8_lossy(b).into_owned()))
            .collect();
        Ok((out, captured))
    }

    #[test]
    fn finds_records_and_captures_around_them() {
        let doc = r#"{
  "meta": {"skip": [1, {"x": "]}"}], "next": "c2\"x"},
  "response": {"items": [
    {"id": 1, "s": "a,b"},
    {"id": 2}
  ], "total": 42},
  "has_more": true
}"#;
        let (records, captured) = scan(
            doc,
            "/response/items",
            &["/meta/next", "/response/total", "/has_more", "/missing"],
        )
        .unwrap();
        assert_eq!(
            records,
            vec![
                (r#"{"id": 1, "s": "a,b"}"#.into(), 4, 5),
                (r#"{"id": 2}"#.into(), 5, 5)
            ]
        );
        assert_eq!(
            captured,
            vec![
                Some(r#""c2\"x""#.into()),
                Some("42".into()),
                Some("true".into()),
                None
            ]
        );
    }

    #[test]
    fn pointers_follow_rfc_6901() {
        let (records, _) =
            scan(r#"{"a/b": {"m~n": [[], [{"k": 1}]]}}"#, "/a~1b/m~0n/1", &[]).unwrap();
        assert_eq!(records, vec![(r#"{"k": 1}"#.into(), 1, 23)]);
        let (records, _) = scan(r#"[{"k": 1}, {"k": 2}]"#, "", &[]).unwrap();
        assert_eq!(records.len(), 2);
        assert!(JsonPointer::parse("data").is_err());
        assert_eq!(
            JsonPointer::parse("/a~1b/m~0n").unwrap().to_string(),
            "/a~1b/m~0n"
        );
    }

    #[test]
    fn html_is_not_a_document() {
        assert_eq!(
            scan("\n <html><body>Log in</body></html>", "/data", &[]).unwrap_err(),
            "the input is not JSON (it looks like HTML or XML): <html><body>Log in</body></html>"
        );
    }

    #[test]
    fn missing_or_broken_documents_are_errors() {
        assert_eq!(
            scan(r#"{"items": []}"#, "/data", &[]).unwrap_err(),
            "line 1: the document has no array at /data"
        );
        assert_eq!(scan(r#"{"data": null}"#, "/data", &[]).unwrap().0.len(), 0);
        assert_eq!(
            scan("{\"data\": [{\"a\": 1}\n {\"a\": 2}]}", "/data", &[]).unwrap_err(),
            "line 2: expected ',' or ']' between records (column 2)"
        );
        assert_eq!(
            scan(r#"{"data": {"a": 1}}"#, "/data", &[]).unwrap_err(),
            "line 1: expected an array of records (column 10)"
        );
        assert!(scan(r#"{"data": [1, 2"#, "/data", &[]).is_err());
        assert!(scan(r#"{"data": []} x"#, "/data", &[]).is_err());
    }

    use proptest::prelude::*;

    proptest! {
        /// No document, however broken or deep, makes the scanner panic or recurse without
        /// bound (it descends only along the pointers it looks for).
        #[test]
        fn no_document_makes_the_scanner_panic(
            doc in "[\\[\\]{}\":, 0-9a-z\\\\]{0,200}",
            depth in 0usize..50_000,
        ) {
            let records = JsonPointer::parse("/data").unwrap();
            let next = JsonPointer::parse("/next/cursor").unwrap();
            let mut emit = |_: &[u8], _: Position| Ok::<(), DecodeError>(());
            let _ = scan_document(doc.as_bytes(), &records, &[&next], &mut emit);
            let deep = format!("{{\"data\": [], \"next\": {}{}}}", "[".repeat(depth), "]".repeat(depth));
            let _ = scan_document(deep.as_bytes(), &records, &[&next], &mut emit);
        }
    }
}
