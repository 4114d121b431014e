//! What the bar and the spinner look like.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{HumanBytes, ProgressStyle};

/// `1 retry`, `2 retries`.
pub(super) fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// What a bar's position counts.
#[derive(Clone, Copy)]
pub(super) enum Unit {
    Bytes,
    Pages,
    Records,
}

/// `⠋ SOURCE  120,000 rows written  45.1 MiB read  310,000 rows/s  00:00:03`: no total known.
pub(super) fn spinner_style(rows: &Arc<AtomicU64>) -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} {prefix}  {rows} rows written  {msg}  {rows_per_sec}  {elapsed_precise}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_spinner())
    .with_key("rows", rows_key(rows))
    .with_key(
        "rows_per_sec",
        |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(
                w,
                "{} rows/s",
                indicatif::HumanCount(state.per_sec() as u64)
            );
        },
    )
}

/// `SOURCE [=====>    ]  52%  40.2 MiB/77.0 MiB  200,000 rows written  ETA 3s  [retries…]`:
/// a total known.
pub(super) fn bar_style(rows: &Arc<AtomicU64>, unit: Unit) -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix} [{bar:24}] {percent:>3}%  {read}  {rows} rows written  ETA {eta}  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
    .with_key("rows", rows_key(rows))
    .with_key(
        "read",
        move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let (read, total) = (state.pos(), state.len().unwrap_or(0));
            let _ = match unit {
                Unit::Bytes => write!(w, "{}/{}", HumanBytes(read), HumanBytes(total)),
                Unit::Pages => write!(w, "{read}/{total} pages"),
                Unit::Records => write!(
                    w,
                    "{}/{} records fetched",
                    indicatif::HumanCount(read),
                    indicatif::HumanCount(total)
                ),
            };
        },
    )
}

/// The rows written, for a template.
fn rows_key(
    rows: &Arc<AtomicU64>,
) -> impl Fn(&indicatif::ProgressState, &mut dyn std::fmt::Write) + Send + Sync + Clone + 'static {
    let rows = rows.clone();
    move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{}", indicatif::HumanCount(rows.load(Ordering::Relaxed)));
    }
}
