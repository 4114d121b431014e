//! Nested objects and arrays, validated to their end with an explicit stack (no recursion,
//! so no input can overflow the thread's stack) but not broken up: the columns that take
//! them want their exact text.

use super::{Kind, MAX_DEPTH, Scanner, SyntaxError, Value, error};

impl Scanner<'_> {
    /// An object or array at the cursor, validated to its end without recursion.
    pub(super) fn nested(&mut self) -> Result<Value, SyntaxError> {
        let start = self.at;
        let mut nul = false;
        self.stack.clear();
        loop {
            // At the start of an element: after `[`, `{` or `,` (or `:` for object values).
            let b = self.bytes.get(self.at).copied();
            match b {
                Some(b'{' | b'[') => {
                    if self.stack.len() >= MAX_DEPTH {
                        return Err(error(
                            self.at,
                            format!("nested deeper than {MAX_DEPTH} levels"),
                        ));
                    }
                    self.stack.push(b == Some(b'{'));
                    self.at += 1;
                    self.skip_space();
                    if let Some(closing @ (b'}' | b']')) = self.peek() {
                        let object = self.stack.last() == Some(&true);
                        if (closing == b'}') != object {
                            return Err(self.fail("mismatched bracket"));
                        }
                        self.at += 1;
                        self.stack.pop();
                        if self.stack.is_empty() {
                            break;
                        }
                        if !self.after_element()? {
                            break;
                        }
                        if self.stack.last() == Some(&true) {
                            self.key(&mut nul)?;
                        }
                        continue;
                    }
                    if self.stack.last() == Some(&true) {
                        self.key(&mut nul)?;
                    }
                    continue;
                }
                _ => {
                    let mut value = Value::default();
                    self.value(&mut value)?;
                    nul |= value.nul;
                }
            }
            if !self.after_element()? {
                break;
            }
            if self.stack.last() == Some(&true) {
                self.key(&mut nul)?;
            }
        }
        Ok(Value {
            kind: if self.bytes[start] == b'{' {
                Kind::Object
            } else {
                Kind::Array
            },
            escaped: false,
            nul,
            start: start as u32,
            end: self.at as u32,
        })
    }

    /// After an element of the open container: `,` (another element follows; the cursor is
    /// left on it, after whitespace) or the closing bracket (closes it, and those it ends).
    /// Returns false when the outermost container closed.
    fn after_element(&mut self) -> Result<bool, SyntaxError> {
        loop {
            self.skip_space();
            let object = self.stack.last() == Some(&true);
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.skip_space();
                    return Ok(true);
                }
                Some(b'}') if object => {}
                Some(b']') if !object => {}
                _ => {
                    return Err(self.fail(if object {
                        "expected ',' or '}' after a value"
                    } else {
                        "expected ',' or ']' after an element"
                    }));
                }
            }
            self.at += 1;
            self.stack.pop();
            if self.stack.is_empty() {
                return Ok(false);
            }
        }
    }

    /// A key and its colon, inside a nested object.
    fn key(&mut self, nul: &mut bool) -> Result<(), SyntaxError> {
        self.skip_space();
        if self.peek() != Some(b'"') {
            return Err(self.fail("expected a key (a string in double quotes)"));
        }
        let mut key = Value::default();
        self.string(&mut key)?;
        *nul |= key.nul;
        self.skip_space();
        if self.peek() != Some(b':') {
            return Err(self.fail("expected ':' after the key"));
        }
        self.at += 1;
        self.skip_space();
        Ok(())
    }
}

/// Hands each element of the array that starts at byte `from` of `text` to `each`, in order,
/// with its span in `text`: a scalar's as [`super::scan_record`] gives it, a nested value
/// whole. The array is validated as it is walked.
///
/// # Errors
/// Where the array departs from RFC 8259 (an offset from `from`), or the first error `each`
/// returns.
pub(crate) fn scan_elements<E: From<SyntaxError>>(
    text: &str,
    from: usize,
    mut each: impl FnMut(Value) -> Result<(), E>,
) -> Result<(), E> {
    let mut s = Scanner::new(text.as_bytes(), from);
    let relative = |mut e: SyntaxError| {
        e.offset -= from;
        E::from(e)
    };
    s.skip_space();
    if s.peek() != Some(b'[') {
        return Err(relative(s.fail("expected an array")));
    }
    s.at += 1;
    s.skip_space();
    if s.peek() == Some(b']') {
        return Ok(());
    }
    loop {
        s.skip_space();
        let mut value = Value::default();
        s.value(&mut value).map_err(relative)?;
        each(value)?;
        s.skip_space();
        match s.peek() {
            Some(b',') => s.at += 1,
            Some(b']') => return Ok(()),
            _ => return Err(relative(s.fail("expected ',' or ']' after an element"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elements(text: &str) -> Result<Vec<(Kind, String)>, SyntaxError> {
        let mut out = Vec::new();
        scan_elements::<SyntaxError>(text, 0, |v| {
            out.push((v.kind, v.json(text).to_string()));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn elements_come_in_order_with_their_text() {
        assert_eq!(elements("[]").unwrap(), vec![]);
        assert_eq!(
            elements(r#" [1, "a\"b", {"x": [2]}, [3, 4], null, true] "#).unwrap(),
            vec![
                (Kind::Number, "1".into()),
                (Kind::String, r#""a\"b""#.into()),
                (Kind::Object, r#"{"x": [2]}"#.into()),
                (Kind::Array, "[3, 4]".into()),
                (Kind::Null, "null".into()),
                (Kind::True, "true".into()),
            ]
        );
        assert!(elements("[1 2]").is_err());
        assert!(elements("[1,]").is_err());
        assert!(elements("{}").is_err());
    }
}
