//! Live progress and the final figures of a load. The only user of indicatif.
//!
//! Stages bump lock-free counters; a bar on stderr (when it is a terminal, or when asked)
//! reads them. While the size of the input is unknown it is a spinner with the rows
//! written; once a total is known — a file's size, an HTTP body's `Content-Length`, a paged
//! API's `total_pages` or `total` — it becomes a bar with the percentage read and an ETA, the
//! rows written to PostgreSQL beside it (the two sides differ while batches are in flight).
//! With `--progress always` and no terminal, a plain line is printed every few seconds
//! instead, which is what CI logs and `nohup` runs want.
//!
//! With metrics on, every count is also added to the module's Prometheus series
//! ([`crate::metrics`]); each source of a module counts through its own [`Progress::for_source`]
//! view, so the source-side series carry the source's name.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget};

use crate::base::options::ProgressMode;
use crate::metrics::{ModuleMeter, SourceMeter, Statement};

mod styles;
#[cfg(feature = "sql")]
mod total;

use styles::{Unit, bar_style, plural, spinner_style};
#[cfg(feature = "sql")]
pub(crate) use total::RunTotal;

/// How much input a load will read, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Total {
    /// Bytes of the file or body as read (before decompression).
    Bytes(u64),
    /// Pages of a paged API (`total_pages_path`).
    Pages(u64),
    /// Records of a paged API (`total_path`).
    Records(u64),
}

/// How rows went to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SentWith {
    Copy,
    Insert,
}

/// Counters shared by the stages of one load.
#[derive(Debug)]
pub(crate) struct Progress {
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
    /// Why each paged source stopped paging: the source's name and the reason.
    paging_stops: std::sync::Mutex<Vec<(String, String)>>,
    /// The module's series, when metrics are on.
    meter: Option<ModuleMeter>,
    /// A source's view ([`Progress::for_source`]): the load's progress, which does all the
    /// counting and showing, and the source's own series.
    source: Option<(Arc<Progress>, Option<SourceMeter>)>,
    /// The source a view counts for, as messages name it.
    source_name: String,
}

/// What a load has made durable so far, so that a failure or an interrupt says truthfully
/// what is in the table: nothing, some `--commit-every` commits, everything, or — when the
/// connection went during COMMIT — no one knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ledger {
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
    /// Starts showing progress for a load labelled `label` (the source), counting into
    /// `meter` too when metrics are on.
    pub(crate) fn start(
        mode: ProgressMode,
        label: &str,
        meter: Option<ModuleMeter>,
    ) -> Arc<Progress> {
        Progress::start_in(mode, label, &indicatif::MultiProgress::new(), meter)
    }

    /// Like [`Progress::start`], one bar among others (modules running at once).
    pub(crate) fn start_in(
        mode: ProgressMode,
        label: &str,
        bars: &indicatif::MultiProgress,
        meter: Option<ModuleMeter>,
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
        let progress = Arc::new(Progress::counting(rows, bar, meter, None));
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
                        crate::base::say(&format!(
                            "apitap: {label}: {}{read}",
                            reporter.figures().line()
                        ));
                    }
                }
            });
        }
        progress
    }

    fn counting(
        rows: Arc<AtomicU64>,
        bar: Option<ProgressBar>,
        meter: Option<ModuleMeter>,
        source: Option<(Arc<Progress>, Option<SourceMeter>)>,
    ) -> Progress {
        Progress {
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
            paging_stops: std::sync::Mutex::new(Vec::new()),
            meter,
            source,
            source_name: String::new(),
        }
    }

    /// The view of one source of this load: it counts here, and into the source's own
    /// series when metrics are on.
    pub(crate) fn for_source(self: &Arc<Self>, source: &str) -> Arc<Progress> {
        let load = self.load().clone();
        let meter = load.meter.as_ref().map(|m| m.source(source));
        let mut view = Progress::counting(Arc::default(), None, None, Some((load, meter)));
        view.source_name = source.to_string();
        Arc::new(view)
    }

    /// The progress of the whole load: itself, or the one a source view counts into.
    fn load(self: &Arc<Self>) -> &Arc<Progress> {
        match &self.source {
            Some((load, _)) => load,
            None => self,
        }
    }

    /// The load's counters (a source view keeps none of its own).
    fn counters(&self) -> &Progress {
        match &self.source {
            Some((load, _)) => load,
            None => self,
        }
    }

    fn source_meter(&self) -> Option<&SourceMeter> {
        self.source.as_ref().and_then(|(_, meter)| meter.as_ref())
    }

    /// Counts bytes read from the source (after decompression).
    pub(crate) fn add_bytes(&self, n: u64) {
        let load = self.counters();
        load.bytes.fetch_add(n, Ordering::Relaxed);
        load.refresh_message();
        if let Some(meter) = self.source_meter() {
            meter.bytes.inc_by(n);
        }
    }

    /// Counts bytes of the input as read, before decompression: the bar's position when
    /// the total is in bytes.
    pub(crate) fn add_input_bytes(&self, n: u64) {
        let load = self.counters();
        load.input_bytes.fetch_add(n, Ordering::Relaxed);
        load.refresh_position();
    }

    /// The input is read again from its start (a body requested again after a cut).
    pub(crate) fn restart_input(&self) {
        self.counters().input_bytes.store(0, Ordering::Relaxed);
    }

    /// The input's size is known: the spinner becomes a bar with a percentage and an ETA. A
    /// later total (a paged API that corrects its count) replaces it.
    pub(crate) fn set_total(&self, total: Total) {
        let load = self.counters();
        let Ok(mut known) = load.total.lock() else {
            return;
        };
        if *known == Some(total) {
            return;
        }
        let first = known.is_none();
        *known = Some(total);
        drop(known);
        if let Some(bar) = &load.bar {
            let (length, unit) = match total {
                Total::Bytes(n) => (n, Unit::Bytes),
                Total::Pages(n) => (n, Unit::Pages),
                Total::Records(n) => (n, Unit::Records),
            };
            bar.set_length(length);
            if first {
                bar.set_style(bar_style(&load.rows, unit));
            }
        }
        load.refresh_position();
        load.refresh_message();
    }

    /// `52% of 77.0 MiB read`, once the input's size is known.
    pub(crate) fn read_so_far(&self) -> Option<String> {
        let load = self.counters();
        let total = load.total.lock().ok().and_then(|t| *t)?;
        let (read, length, what) = match total {
            Total::Bytes(n) => (
                load.input_bytes.load(Ordering::Relaxed),
                n,
                HumanBytes(n).to_string(),
            ),
            Total::Pages(n) => (
                load.paged.0.load(Ordering::Relaxed),
                n,
                format!("{n} pages"),
            ),
            Total::Records(n) => (
                load.paged.1.load(Ordering::Relaxed),
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

    /// Counts an HTTP request answered with `status`, or not answered (`None`): for the
    /// metrics only.
    pub(crate) fn add_http_response(&self, status: Option<u16>) {
        if let Some(meter) = self.source_meter() {
            meter.response(status);
        }
    }

    /// Counts a request retried after a transient failure.
    pub(crate) fn add_retry(&self) {
        let load = self.counters();
        load.retries.fetch_add(1, Ordering::Relaxed);
        load.refresh_message();
        if let Some(meter) = self.source_meter() {
            meter.retries.inc();
        }
    }

    /// Counts a request that waited for the rate limit or a rate-limit window.
    pub(crate) fn add_throttle_wait(&self) {
        let load = self.counters();
        load.throttle_waits.fetch_add(1, Ordering::Relaxed);
        load.refresh_message();
        if let Some(meter) = self.source_meter() {
            meter.throttle_waits.inc();
        }
    }

    /// Counts records set aside by `--on-error reject`.
    pub(crate) fn add_rejected(&self, n: u64) {
        let load = self.counters();
        load.rejected.fetch_add(n, Ordering::Relaxed);
        if let Some(meter) = &load.meter {
            meter.rejected.inc_by(n);
        }
    }

    /// Counts a page fetched.
    pub(crate) fn add_page(&self) {
        let load = self.counters();
        load.pages.fetch_add(1, Ordering::Relaxed);
        load.refresh_message();
        if let Some(meter) = self.source_meter() {
            meter.pages.inc();
        }
    }

    /// Where a paged source stands: `pages` and `records` fetched since its first page.
    pub(crate) fn paged_to(&self, pages: u64, records: u64) {
        let load = self.counters();
        load.paged.0.store(pages, Ordering::Relaxed);
        load.paged.1.store(records, Ordering::Relaxed);
        load.refresh_position();
    }

    /// Counts rows sent to PostgreSQL.
    pub(crate) fn add_rows(&self, n: u64, how: SentWith) {
        let load = self.counters();
        let rows = load.rows.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(bar) = &load.bar {
            // The spinner's position is the rows (its rate is rows/s); a bar's is the input.
            if load.total.lock().is_ok_and(|t| t.is_none()) {
                bar.inc(n);
            }
        }
        if let Some(meter) = &load.meter {
            meter.rows_sent.inc_by(n);
            if how == SentWith::Copy {
                meter.copy_rows.inc_by(n);
            }
            let seconds = load.started.elapsed().as_secs_f64();
            if seconds > 0.0 {
                meter.rows_per_second.set(rows as f64 / seconds);
            }
        }
    }

    /// A statement of the write got its answer: for the metrics' round trips.
    pub(crate) fn round_trip(&self, statement: Statement) {
        if let Some(meter) = &self.counters().meter {
            meter.round_trip(statement);
        }
    }

    /// A COMMIT is about to be sent.
    pub(crate) fn commit_sent(&self) {
        self.update_ledger(|l| l.committing = true);
    }

    /// The COMMIT answered: committed, `rows` in all so far, `last` if it ended the load.
    pub(crate) fn committed(&self, rows: u64, last: bool) {
        let mut before = 0;
        self.update_ledger(|l| {
            before = l.rows;
            *l = Ledger {
                commits: l.commits + 1,
                rows,
                committing: false,
                finished: last,
            }
        });
        self.round_trip(Statement::Commit);
        if let Some(meter) = &self.counters().meter {
            meter.rows_committed.inc_by(rows.saturating_sub(before));
        }
    }

    /// The server answered the COMMIT with an error: it rolled back.
    pub(crate) fn commit_refused(&self) {
        self.update_ledger(|l| l.committing = false);
        self.round_trip(Statement::Commit);
    }

    pub(crate) fn ledger(&self) -> Ledger {
        self.counters()
            .ledger
            .lock()
            .map(|l| *l)
            .unwrap_or_default()
    }

    fn update_ledger(&self, change: impl FnOnce(&mut Ledger)) {
        if let Ok(mut ledger) = self.counters().ledger.lock() {
            change(&mut ledger);
        }
    }

    pub(crate) fn figures(&self) -> Figures {
        let load = self.counters();
        Figures {
            rows: load.rows.load(Ordering::Relaxed),
            bytes: load.bytes.load(Ordering::Relaxed),
            retries: load.retries.load(Ordering::Relaxed),
            pages: load.pages.load(Ordering::Relaxed),
            rejected: load.rejected.load(Ordering::Relaxed),
            throttle_waits: load.throttle_waits.load(Ordering::Relaxed),
            seconds: load.started.elapsed().as_secs_f64(),
        }
    }

    /// This view's paged source stopped paging, and `why` (for the summary).
    pub(crate) fn paging_stopped(&self, why: String) {
        if let Ok(mut stops) = self.counters().paging_stops.lock() {
            stops.push((self.source_name.clone(), why));
        }
    }

    /// Why each paged source stopped paging, as (source, reason).
    pub(crate) fn paging_stops(&self) -> Vec<(String, String)> {
        let stops = self.counters().paging_stops.lock();
        stops.map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops the display; the figures stay readable.
    pub(crate) fn finish(&self) {
        let load = self.counters();
        load.done.store(true, Ordering::Relaxed);
        if let Some(bar) = &load.bar {
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
pub(crate) struct Figures {
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
    pub(crate) fn rows_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.rows as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// `1000000 rows, 412.3 MiB, 2.41 s, 415000 rows/s[, 100 pages][, 2 retries]`.
    pub(crate) fn line(&self) -> String {
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
