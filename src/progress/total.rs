//! The total line of `apitap run`, under its modules' bars.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Progress, ProgressMode};

/// The last line under the modules' bars of `apitap run`: modules done, failed and running,
/// and the rows all of them wrote.
pub(crate) struct RunTotal {
    bar: Option<ProgressBar>,
    rows: Arc<std::sync::Mutex<Vec<Arc<AtomicU64>>>>,
    done: AtomicU64,
    failed: AtomicU64,
    modules: u64,
}

impl RunTotal {
    /// The total line of `modules` modules, below their bars (only where bars are shown).
    pub(crate) fn start(
        mode: ProgressMode,
        modules: usize,
        bars: &indicatif::MultiProgress,
    ) -> RunTotal {
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
    pub(crate) fn started(&self, progress: &Progress) {
        if let Ok(mut rows) = self.rows.lock() {
            rows.push(progress.rows.clone());
        }
        self.refresh();
    }

    /// A module ended.
    pub(crate) fn ended(&self, ok: bool) {
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

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
