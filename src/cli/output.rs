//! Everything the command line writes: messages, logs, summaries, panics. Each goes through
//! the one redaction of [`crate::secrets`], so no credential reaches a terminal, a log
//! collector or a file, whatever text carried it there (an error body a server echoed, a
//! URL a library printed).

use std::io::Write as _;
use std::path::Path;

use crate::base::say;
use crate::base::secrets::redact;

/// What a failed or interrupted load left in its table (`the_table` names it: "the table",
/// "its table"), from its [`Ledger`](crate::progress::Ledger); `state_key` is where its
/// state is, when it keeps one.
pub(crate) fn left_in(
    the_table: &str,
    ledger: crate::progress::Ledger,
    state_key: Option<&str>,
) -> String {
    if ledger.committing {
        let state = state_key
            .map(|key| {
                format!(
                    " and SELECT cursor_value, resume FROM apitap._state WHERE key = '{}'",
                    key.replace('\'', "''")
                )
            })
            .unwrap_or_default();
        format!(
            "whether it was committed is unknown, as the answer to its COMMIT never came; look at {the_table}{state} before loading again"
        )
    } else if ledger.finished {
        format!("all {} rows are committed to {the_table}", ledger.rows)
    } else if ledger.commits > 0 {
        format!(
            "{} rows in {} commits are in {the_table}, and a rerun resumes after them",
            ledger.rows, ledger.commits
        )
    } else {
        format!("{the_table} is unchanged")
    }
}

/// Writes `values` as JSON lines to `path`, or to stdout for `-` (`--summary-json`),
/// redacted string by string: a URL or a message has every secret masked, while apitap's
/// own counts are written as they are. Redacting the text whole turned a count that holds
/// a secret's digits (`rows=${ROWS}` in a query, 1000 rows loaded) into `"rows":***`, which
/// is no longer JSON.
///
/// # Errors
/// The file cannot be written.
pub(crate) fn write_json_lines(path: &Path, values: &[serde_json::Value]) -> std::io::Result<()> {
    let mut text = String::new();
    for value in values {
        let mut value = value.clone();
        redact_strings(&mut value);
        text.push_str(&value.to_string());
        text.push('\n');
    }
    write_out(path, &text)
}

fn redact_strings(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) => {
            if let std::borrow::Cow::Owned(redacted) = redact(text) {
                *text = redacted;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_strings),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(redact_strings),
        _ => {}
    }
}

fn write_out(path: &Path, text: &str) -> std::io::Result<()> {
    if path.as_os_str() == "-" {
        std::io::stdout().write_all(text.as_bytes())
    } else {
        std::fs::write(path, text.as_bytes())
    }
}

/// The log writer: each event is formatted into a buffer, redacted, and written whole.
pub(crate) struct RedactingStderr;

/// One log event on its way to stderr.
pub(crate) struct EventWriter(Vec<u8>);

impl std::io::Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.0.is_empty() {
            let text = String::from_utf8_lossy(&self.0);
            std::io::stderr()
                .lock()
                .write_all(redact(&text).as_bytes())?;
            self.0.clear();
        }
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter(Vec::new())
    }
}

/// A panic prints its message and place, redacted, as one line: a panic is a bug, but its
/// message may quote a value, and that value may be a credential.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        say(&format!(
            "apitap: internal error (a bug; please report it): panicked{place}: {message}"
        ));
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_strings_are_redacted_and_numbers_kept() {
        crate::base::secrets::register("4242-summary-secret");
        let mut value = serde_json::json!({
            "source": "http://h/x?k=4242-summary-secret",
            "errors": ["said 4242-summary-secret"],
            "rows": 4242,
        });
        redact_strings(&mut value);
        assert_eq!(
            value,
            serde_json::json!({
                "source": "http://h/x?k=***",
                "errors": ["said ***"],
                "rows": 4242,
            })
        );
    }
}
