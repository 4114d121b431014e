//! Live progress and the final figures of a load. The only user of indicatif.
//!
//! Stages bump lock-free counters; a bar on stderr (when it is a terminal, or when asked)
//! reads them. While the size of the input is unknown it is a spinner with the rows
//! written; once a total is known — a file's size, an HTTP body's `Content-Length`, a paged
//! API's `total_pages` or `total` — it becomes a bar with the percentage read and an ETA, the
//! rows written to PostgreSQL beside it (the two sides differ while batches are in flight).
//! With `--progress always` and no terminal, a plain line is printed every few seconds
//! instead, which is what CI logs and `nohup` runs want.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// When to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal.
    Auto,
    /// A bar on a terminal, else a line every few seconds.
    Always,
    Never,
}

/// How much input a load will read, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    /// Bytes of the file or body as read (before decompression).
    Bytes(u64),
    /// Pages of a paged API (`total_pages_path`).
    Pages(u64),
    /// Records of a paged API (`total_path`).
    Records(u64),
}

/// Counters shared by the stages of one load.
#[derive(Debug)]
pub struct Progress {
    rows: Arc<AtomicU64>,
    bytes: AtomicU64,
    /// Bytes of the input as read, before decompression.
    input_bytes: AtomicU64,
    /// Where a paged source stands, counted from its first page (a resumed backfill
    /// included): pages and records fetched.
    paged: (AtomicU64, AtomicU64),
    /// The input's size, once known; the bar's length.
    total: std::sync::Mutex<Option<Total>>,
    retries: AtomicU64,
    pages: AtomicU64,
    rejected: AtomicU64,
    throttle_waits: AtomicU64,
    started: Instant,
    bar: Option<ProgressBar>,
    done: Arc<AtomicBool>,
    ledger: std::sync::Mutex<Ledger>,
}

/// What a load has made durable so far, so that a failure or an interrupt says truthfully
/// what is in the table: nothing, some `--commit-every` commits, everything, or — when the
/// connection went during COMMIT — no one knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Transactions committed.
    pub commits: u64,
    /// Rows in them.
    pub rows: u64,
    /// A COMMIT was sent and its answer never came.
    pub committing: bool,
    /// The last transaction, with the end of the input, committed.
    pub finished: bool,
}

impl Progress {
    /// Starts showing progress for a load labelled `label` (the source).
    pub fn start(mode: ProgressMode, label: &str) -> Arc<Progress> {
        Progress::start_in(mode, label, &indicatif::MultiProgress::new())
    }

    /// Like [`Progress::start`], one bar among others (modules running at once).
    pub fn start_in(
        mode: ProgressMode,
        label: &str,
        bars: &indicatif::MultiProgress,
    ) -> Arc<Progress> {
        let terminal = std::io::stderr().is_terminal();
        let rows = Arc::new(AtomicU64::new(0));
        let bar = match (mode, terminal) {
            (ProgressMode::Never, _) | (ProgressMode::Auto, false) => None,
            (_, true) => {
                let bar = bars.add(ProgressBar::with_draw_target(
                    None,
                    ProgressDrawTarget::stderr(),
                ));
                bar.set_style(spinner_style(&rows));
                bar.set_prefix(label.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                Some(bar)
            }
            (ProgressMode::Always, false) => None,
        };
        let progress = Arc::new(Progress {
            rows,
            bytes: AtomicU64::new(0),
            input_bytes: AtomicU64::new(0),
            paged: (AtomicU64::new(0), AtomicU64::new(0)),
            total: std::sync::Mutex::new(None),
            retries: AtomicU64::new(0),
            pages: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            throttle_waits: AtomicU64::new(0),
            started: Instant::now(),
            bar,
            done: Arc::new(AtomicBool::new(false)),
            ledger: std::sync::Mutex::new(Ledger::default()),
        });
        if mode == ProgressMode::Always && !terminal {
            let reporter = progress.clone();
            let label = label.to_string();
            std::thread::spawn(move || {
                while !reporter.done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(2));
                    if !reporter.done.load(Ordering::Relaxed) {
                        let read = reporter
                            .read_so_far()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default();
                        crate::cli::output::say(&format!(
                            "apitap: {label}: {}{read}",
                            reporter.figures().line()
                        ));
                    }
                }
            });
        }
        progress
    }

    /// Counts bytes read from the source (after decompression).
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        self.refresh_message();
    }

    /// Counts bytes of the input as read, before decompression: the bar's position when
    /// the total is in bytes.
    pub fn add_input_bytes(&self, n: u64) {
        self.input_bytes.fetch_add(n, Ordering::Relaxed);
        self.refresh_position();
    }

    /// The input is read again from its start (a body requested again after a cut).
    pub fn restart_input(&self) {
        self.input_bytes.store(0, Ordering::Relaxed);
    }

    /// The input's size is known: the spinner becomes a bar with a percentage and an ETA. A
    /// later total (a paged API that corrects its count) replaces it.
    pub fn set_total(&self, total: Total) {
        let Ok(mut known) = self.total.lock() else {
            return;
        };
        if *known == Some(total) {
            return;
        }
        let first = known.is_none();
        *known = Some(total);
        drop(known);
        if let Some(bar) = &self.bar {
            let (length, unit) = match total {
                Total::Bytes(n) => (n, Unit::Bytes),
                Total::Pages(n) => (n, Unit::Pages),
                Total::Records(n) => (n, Unit::Records),
            };
            bar.set_length(length);
            if first {
                bar.set_style(bar_style(&self.rows, unit));
            }
        }
        self.refresh_position();
        self.refresh_message();
    }

    /// `52% of 77.0 MiB read`, once the input's size is known.
    pub fn read_so_far(&self) -> Option<String> {
        let total = self.total.lock().ok().and_then(|t| *t)?;
        let (read, length, what) = match total {
            Total::Bytes(n) => (
                self.input_bytes.load(Ordering::Relaxed),
                n,
                HumanBytes(n).to_string(),
            ),
            Total::Pages(n) => (
                self.paged.0.load(Ordering::Relaxed),
                n,
                format!("{n} pages"),
            ),
            Total::Records(n) => (
                self.paged.1.load(Ordering::Relaxed),
                n,
                format!("{n} records"),
            ),
        };
        let percent = (u128::from(read.min(length)) * 100)
            .checked_div(u128::from(length))
            .unwrap_or(100);
        Some(format!("{percent}% of {what} read"))
    }

    /// Moves the bar to what was read, in the unit of its total.
    fn refresh_position(&self) {
        let Some(bar) = &self.bar else {
            return;
        };
        let Some(total) = self.total.lock().ok().and_then(|t| *t) else {
            return;
        };
        let (read, length) = match total {
            Total::Bytes(n) => (self.input_bytes.load(Ordering::Relaxed), n),
            Total::Pages(n) => (self.paged.0.load(Ordering::Relaxed), n),
            Total::Records(n) => (self.paged.1.load(Ordering::Relaxed), n),
        };
        bar.set_position(read.min(length));
    }

    /// The HTTP side of the bar: bytes in (while no total says how far along), pages,
    /// retries, throttle waits.
    fn refresh_message(&self) {
        if let Some(bar) = &self.bar {
            let f = self.figures();
            let has_total = self.total.lock().is_ok_and(|t| t.is_some());
            let mut parts = Vec::new();
            if !has_total {
                parts.push(format!("{} read", HumanBytes(f.bytes)));
                if f.pages > 0 {
                    parts.push(plural(f.pages, "page", "pages"));
                }
            }
            if f.retries > 0 {
                parts.push(plural(f.retries, "retry", "retries"));
            }
            if f.throttle_waits > 0 {
                parts.push(plural(f.throttle_waits, "throttle wait", "throttle waits"));
            }
            let message = parts.join("  ");
            bar.set_message(message);
        }
    }

    /// Counts a request retried after a transient failure.
    pub fn add_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.refresh_message();
    }

    /// Counts a request that waited for the rate limit or a rate-limit window.
    pub fn add_throttle_wait(&self) {
        self.throttle_waits.fetch_add(1, Ordering::Relaxed);
        self.refresh_message();
    }

    /// Counts records set aside by `--on-error reject`.
    pub fn add_rejected(&self, n: u64) {
        self.rejected.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a page fetched.
    pub fn add_page(&self) {
        self.pages.fetch_add(1, Ordering::Relaxed);
        self.refresh_message();
    }

    /// Where a paged source stands: `pages` and `records` fetched since its first page.
    pub fn paged_to(&self, pages: u64, records: u64) {
        self.paged.0.store(pages, Ordering::Relaxed);
        self.paged.1.store(records, Ordering::Relaxed);
        self.refresh_position();
    }

    /// Counts rows sent to PostgreSQL.
    pub fn add_rows(&self, n: u64) {
        self.rows.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            // The spinner's position is the rows (its rate is rows/s); a bar's is the input.
            if self.total.lock().is_ok_and(|t| t.is_none()) {
                bar.inc(n);
            }
        }
    }

    /// A COMMIT is about to be sent.
    pub fn commit_sent(&self) {
        self.update_ledger(|l| l.committing = true);
    }

    /// The COMMIT answered: committed, `rows` in all so far, `last` if it ended the load.
    pub fn committed(&self, rows: u64, last: bool) {
        self.update_ledger(|l| {
            *l = Ledger {
                commits: l.commits + 1,
                rows,
                committing: false,
                finished: last,
            }
        });
    }

    /// The server answered the COMMIT with an error: it rolled back.
    pub fn commit_refused(&self) {
        self.update_ledger(|l| l.committing = false);
    }

    pub fn ledger(&self) -> Ledger {
        self.ledger.lock().map(|l| *l).unwrap_or_default()
    }

    fn update_ledger(&self, change: impl FnOnce(&mut Ledger)) {
        if let Ok(mut ledger) = self.ledger.lock() {
            change(&mut ledger);
        }
    }

    pub fn figures(&self) -> Figures {
        Figures {
            rows: self.rows.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            pages: self.pages.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            throttle_waits: self.throttle_waits.load(Ordering::Relaxed),
            seconds: self.started.elapsed().as_secs_f64(),
        }
    }

    /// Stops the display; the figures stay readable.
    pub fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The last line under the modules' bars of `apitap run`: modules done, failed and running,
/// and the rows all of them wrote.
pub struct RunTotal {
    bar: Option<ProgressBar>,
    rows: Arc<std::sync::Mutex<Vec<Arc<AtomicU64>>>>,
    done: AtomicU64,
    failed: AtomicU64,
    modules: u64,
}

impl RunTotal {
    /// The total line of `modules` modules, below their bars (only where bars are shown).
    pub fn start(mode: ProgressMode, modules: usize, bars: &indicatif::MultiProgress) -> RunTotal {
        let rows: Arc<std::sync::Mutex<Vec<Arc<AtomicU64>>>> = Arc::default();
        let shown = match mode {
            ProgressMode::Never => false,
            _ => std::io::stderr().is_terminal(),
        };
        let bar = shown.then(|| {
            let bar = bars.add(ProgressBar::with_draw_target(
                None,
                ProgressDrawTarget::stderr(),
            ));
            let all = rows.clone();
            let style = ProgressStyle::with_template(
                "total  {msg}  {all_rows} rows written  {elapsed_precise}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key(
                "all_rows",
                move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let sum: u64 = all
                        .lock()
                        .map(|r| r.iter().map(|n| n.load(Ordering::Relaxed)).sum())
                        .unwrap_or(0);
                    let _ = write!(w, "{}", indicatif::HumanCount(sum));
                },
            );
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        let total = RunTotal {
            bar,
            rows,
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            modules: modules as u64,
        };
        total.refresh();
        total
    }

    /// A module started, showing `progress`.
    pub fn started(&self, progress: &Progress) {
        if let Ok(mut rows) = self.rows.lock() {
            rows.push(progress.rows.clone());
        }
        self.refresh();
    }

    /// A module ended.
    pub fn ended(&self, ok: bool) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.refresh();
    }

    fn refresh(&self) {
        if let Some(bar) = &self.bar {
            let done = self.done.load(Ordering::Relaxed);
            let failed = self.failed.load(Ordering::Relaxed);
            let started = self.rows.lock().map(|r| r.len() as u64).unwrap_or(0);
            let mut message = format!("{done}/{} modules done", self.modules);
            if failed > 0 {
                message.push_str(&format!(", {failed} failed"));
            }
            message.push_str(&format!(", {} running", started.saturating_sub(done)));
            bar.set_message(message);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `1 retry`, `2 retries`.
fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// What a bar's position counts.
#[derive(Clone, Copy)]
enum Unit {
    Bytes,
    Pages,
    Records,
}

/// `⠋ SOURCE  120,000 rows written  45.1 MiB read  310,000 rows/s  00:00:03`: no total known.
fn spinner_style(rows: &Arc<AtomicU64>) -> ProgressStyle {
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
fn bar_style(rows: &Arc<AtomicU64>, unit: Unit) -> ProgressStyle {
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

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Rows, bytes and time of a load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    pub rows: u64,
    pub bytes: u64,
    /// HTTP requests retried.
    pub retries: u64,
    /// Pages fetched (0 for a single request, a file or stdin).
    pub pages: u64,
    /// Requests that waited for the rate limit or a rate-limit window.
    pub throttle_waits: u64,
    /// Records set aside by `--on-error reject`.
    pub rejected: u64,
    pub seconds: f64,
}

impl Figures {
    pub fn rows_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.rows as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// `1000000 rows, 412.3 MiB, 2.41 s, 415000 rows/s[, 100 pages][, 2 retries]`.
    pub fn line(&self) -> String {
        let count = |n: u64, one: &str, many: &str| match n {
            0 => String::new(),
            1 => format!(", 1 {one}"),
            n => format!(", {n} {many}"),
        };
        let pages = count(self.pages, "page", "pages");
        let retries = count(self.retries, "retry", "retries");
        let waits = count(self.throttle_waits, "throttle wait", "throttle waits");
        let rejected = count(self.rejected, "record rejected", "records rejected");
        format!(
            "{} rows, {}, {:.2} s, {:.0} rows/s{pages}{retries}{waits}{rejected}",
            self.rows,
            HumanBytes(self.bytes),
            self.seconds,
            self.rows_per_second()
        )
    }
}
