//! Live progress and the final figures of a load. The only user of indicatif.
//!
//! Stages bump lock-free counters; a bar on stderr (when it is a terminal, or when asked)
//! reads them. With `--progress always` and no terminal, a plain line is printed every few
//! seconds instead, which is what CI logs and `nohup` runs want.

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

/// Counters shared by the stages of one load.
#[derive(Debug)]
pub struct Progress {
    rows: AtomicU64,
    bytes: AtomicU64,
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
        let bar = match (mode, terminal) {
            (ProgressMode::Never, _) | (ProgressMode::Auto, false) => None,
            (_, true) => {
                let bar = bars.add(ProgressBar::with_draw_target(
                    None,
                    ProgressDrawTarget::stderr(),
                ));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {prefix}  {human_pos} rows  {msg}  {rows_per_sec}  {elapsed_precise}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_spinner())
                    .with_key(
                        "rows_per_sec",
                        |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = write!(w, "{} rows/s", indicatif::HumanCount(state.per_sec() as u64));
                        },
                    ),
                );
                bar.set_prefix(label.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                Some(bar)
            }
            (ProgressMode::Always, false) => None,
        };
        let progress = Arc::new(Progress {
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
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
                        crate::cli::output::say(&format!(
                            "apitap: {label}: {}",
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

    /// The HTTP side of the bar: bytes in, pages, retries, throttle waits.
    fn refresh_message(&self) {
        if let Some(bar) = &self.bar {
            let f = self.figures();
            let mut message = format!("{}", HumanBytes(f.bytes));
            if f.pages > 0 {
                message.push_str(&format!("  {} pages", f.pages));
            }
            if f.retries > 0 {
                message.push_str(&format!("  {} retries", f.retries));
            }
            if f.throttle_waits > 0 {
                message.push_str(&format!("  {} throttle waits", f.throttle_waits));
            }
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

    /// Counts rows sent to PostgreSQL.
    pub fn add_rows(&self, n: u64) {
        self.rows.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(n);
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
