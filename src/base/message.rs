//! How messages are put together and printed: an error with its causes on one line, a short
//! printable snippet of bytes, and the one way a line reaches stderr (redacted).

use std::io::Write as _;

use super::secrets::redact;

/// An error and its causes on one line: reqwest and io errors keep the useful part
/// ("Connection refused") in their sources.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The start of `bytes` as one printable line, for a message about a body or a record: at
/// most 120 bytes, control characters as spaces, `…` where it was cut.
pub(crate) fn snippet(bytes: &[u8]) -> String {
    let end = bytes.len().min(120);
    let text = String::from_utf8_lossy(&bytes[..end]);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if bytes.len() > end {
        format!("{}…", text.trim_end())
    } else {
        text.trim_end().to_string()
    }
}

/// Prints one line on stderr, redacted.
pub fn say(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{}", redact(text));
}
