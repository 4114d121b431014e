//! What the progress display counts into: the series of one module, one source and one run.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};

use super::families::{
    FloatGauge, ModuleLabels, OutcomeLabels, ResponseLabels, SourceLabels, StatementLabels,
};
use super::{Failure, Metrics};

/// A statement of the write that waits for the server's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Statement {
    Copy,
    Insert,
    Merge,
    Commit,
}

impl Statement {
    fn label(self) -> &'static str {
        match self {
            Statement::Copy => "copy",
            Statement::Insert => "insert",
            Statement::Merge => "merge",
            Statement::Commit => "commit",
        }
    }
}

/// The series one module's runs feed.
#[derive(Clone)]
pub(crate) struct ModuleMeter {
    metrics: Arc<Metrics>,
    module: String,
    pub(crate) rows_sent: Counter,
    pub(crate) rows_committed: Counter,
    pub(crate) copy_rows: Counter,
    pub(crate) rejected: Counter,
    pub(crate) rows_per_second: FloatGauge,
}

impl std::fmt::Debug for ModuleMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModuleMeter({})", self.module)
    }
}

impl ModuleMeter {
    /// The series of `module`, present from the start.
    pub(super) fn new(metrics: Arc<Metrics>, module: &str) -> ModuleMeter {
        let labels = ModuleLabels {
            module: module.to_string(),
        };
        let f = &metrics.families;
        // Present from the start, so a dashboard shows 0 rather than nothing.
        for outcome in ["success", "failure"] {
            let _ = f.runs.get_or_create(&OutcomeLabels {
                module: module.to_string(),
                outcome,
            });
        }
        let _ = f.in_flight.get_or_create(&labels);
        let _ = f.last_failed.get_or_create(&labels);
        ModuleMeter {
            metrics: metrics.clone(),
            module: module.to_string(),
            rows_sent: f.rows_sent.get_or_create(&labels).clone(),
            rows_committed: f.rows_committed.get_or_create(&labels).clone(),
            copy_rows: f.copy_rows.get_or_create(&labels).clone(),
            rejected: f.rejected.get_or_create(&labels).clone(),
            rows_per_second: f.rows_per_second.get_or_create(&labels).clone(),
        }
    }

    /// The series of one of the module's sources.
    pub(crate) fn source(&self, source: &str) -> SourceMeter {
        let labels = SourceLabels {
            module: self.module.clone(),
            source: source.to_string(),
        };
        let f = &self.metrics.families;
        SourceMeter {
            metrics: self.metrics.clone(),
            labels: labels.clone(),
            bytes: f.bytes.get_or_create(&labels).clone(),
            pages: f.pages.get_or_create(&labels).clone(),
            retries: f.retries.get_or_create(&labels).clone(),
            throttle_waits: f.throttle_waits.get_or_create(&labels).clone(),
        }
    }

    pub(crate) fn round_trip(&self, statement: Statement) {
        self.metrics
            .families
            .round_trips
            .get_or_create(&StatementLabels {
                module: self.module.clone(),
                statement: statement.label(),
            })
            .inc();
    }

    /// A run of the module starts; [`RunMeter::ended`] records how it went.
    pub(crate) fn run(&self) -> RunMeter {
        self.labelled(&self.metrics.families.in_flight).inc();
        self.rows_per_second.set(0.0);
        RunMeter {
            meter: self.clone(),
            started: Instant::now(),
            recorded: false,
        }
    }

    fn labelled<M: Clone>(&self, family: &Family<ModuleLabels, M, impl MetricConstructor<M>>) -> M {
        family
            .get_or_create(&ModuleLabels {
                module: self.module.clone(),
            })
            .clone()
    }
}

/// The series of one source of one module.
#[derive(Clone)]
pub(crate) struct SourceMeter {
    metrics: Arc<Metrics>,
    labels: SourceLabels,
    pub(crate) bytes: Counter,
    pub(crate) pages: Counter,
    pub(crate) retries: Counter,
    pub(crate) throttle_waits: Counter,
}

impl std::fmt::Debug for SourceMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SourceMeter({}, {})",
            self.labels.module, self.labels.source
        )
    }
}

impl SourceMeter {
    /// An HTTP request was answered with `status`, or not at all (`None`).
    pub(crate) fn response(&self, status: Option<u16>) {
        let status_class = match status {
            Some(100..=199) => "1xx",
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(_) => "5xx",
            None => "error",
        };
        self.metrics
            .families
            .responses
            .get_or_create(&ResponseLabels {
                module: self.labels.module.clone(),
                source: self.labels.source.clone(),
                status_class,
            })
            .inc();
    }
}

/// One run of a module, from start to end.
pub(crate) struct RunMeter {
    meter: ModuleMeter,
    started: Instant,
    recorded: bool,
}

impl RunMeter {
    /// The run ended as `result` says; a failure is recorded with its message.
    pub(crate) fn ended<T, E: std::error::Error>(self, result: &Result<T, E>) {
        match result {
            Ok(_) => self.succeeded(),
            Err(error) => self.failed(crate::base::error_chain(error)),
        }
    }

    pub(crate) fn succeeded(mut self) {
        self.record(None);
    }

    /// The run failed with `message`, the one it printed.
    pub(crate) fn failed(mut self, message: String) {
        self.record(Some(message));
    }

    fn record(&mut self, failure: Option<String>) {
        self.recorded = true;
        let meter = &self.meter;
        let f = &meter.metrics.families;
        let seconds = self.started.elapsed().as_secs_f64();
        meter.labelled(&f.run_duration).observe(seconds);
        let outcome_label = match failure {
            None => "success",
            Some(_) => "failure",
        };
        f.runs
            .get_or_create(&OutcomeLabels {
                module: meter.module.clone(),
                outcome: outcome_label,
            })
            .inc();
        let now = chrono::Utc::now();
        let mut failing = meter.metrics.failing.lock().ok();
        match failure {
            None => {
                meter
                    .labelled(&f.last_success)
                    .set(now.timestamp_millis() as f64 / 1000.0);
                meter.labelled(&f.last_failed).set(0);
                if let Some(failing) = failing.as_mut() {
                    failing.remove(&meter.module);
                }
            }
            Some(error) => {
                meter.labelled(&f.last_failed).set(1);
                if let Some(failing) = failing.as_mut() {
                    failing.insert(meter.module.clone(), Failure { at: now, error });
                }
            }
        }
    }
}

impl Drop for RunMeter {
    /// Ended or dropped, the run is no longer in flight; dropped before it ended (apitap
    /// interrupted), it failed.
    fn drop(&mut self) {
        if !self.recorded {
            self.record(Some("interrupted before it ended".into()));
        }
        let f = &self.meter.metrics.families;
        self.meter.labelled(&f.in_flight).dec();
        self.meter.rows_per_second.set(0.0);
    }
}
