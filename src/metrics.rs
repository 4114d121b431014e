//! Prometheus metrics and a health check, for loads and pipelines that run unattended.
//! The only user of prometheus-client.
//!
//! `--metrics-listen ADDR` serves `/metrics` (OpenMetrics text) and `/healthz` while the
//! process runs; `--metrics-file PATH` writes the same text when it ends, for one-shot runs
//! from cron read by node_exporter's textfile collector. The stages never see this module:
//! they count in [`crate::progress::Progress`], which mirrors its counts into the series of
//! the [`ModuleMeter`] and [`SourceMeter`] it was started with, so the bar, the summary
//! and the metrics cannot disagree.
//!
//! Series are labelled by `module` (an `apitap run` module; `load` for `apitap load`), and
//! the source side also by `source` (the YAML source's name; for `apitap load`, the source
//! as printed, credentials masked). README "Running on a schedule" lists them all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The metrics endpoint could not start, or the metrics file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("could not listen on {addr} for --metrics-listen")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write --metrics-file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    module: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    module: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    module: String,
    source: String,
    /// `2xx` … `5xx`, or `error` when no response came (connect, timeout, reset).
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatementLabels {
    module: String,
    statement: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    module: String,
    outcome: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Run durations from a second to a day.
#[derive(Clone)]
struct DurationBuckets;

impl MetricConstructor<Histogram> for DurationBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new([
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0, 86400.0,
        ])
    }
}

/// Every series apitap exposes.
struct Families {
    rows_sent: Family<ModuleLabels, Counter>,
    rows_committed: Family<ModuleLabels, Counter>,
    copy_rows: Family<ModuleLabels, Counter>,
    round_trips: Family<StatementLabels, Counter>,
    rejected: Family<ModuleLabels, Counter>,
    rows_per_second: Family<ModuleLabels, FloatGauge>,
    bytes: Family<SourceLabels, Counter>,
    pages: Family<SourceLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    retries: Family<SourceLabels, Counter>,
    throttle_waits: Family<SourceLabels, Counter>,
    runs: Family<OutcomeLabels, Counter>,
    run_duration: Family<ModuleLabels, Histogram, DurationBuckets>,
    last_success: Family<ModuleLabels, FloatGauge>,
    last_failed: Family<ModuleLabels, Gauge>,
    in_flight: Family<ModuleLabels, Gauge>,
}

/// The registry of one process and the health of its modules.
pub struct Metrics {
    registry: Registry,
    families: Families,
    /// Each module's last run that failed, while its next one has not succeeded.
    failing: Mutex<BTreeMap<String, Failure>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// A module's last run failed: when, and why (the message the run printed, which never
/// holds a credential).
#[derive(Debug, Clone)]
struct Failure {
    at: chrono::DateTime<chrono::Utc>,
    error: String,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let families = Families {
            rows_sent: Family::default(),
            rows_committed: Family::default(),
            copy_rows: Family::default(),
            round_trips: Family::default(),
            rejected: Family::default(),
            rows_per_second: Family::default(),
            bytes: Family::default(),
            pages: Family::default(),
            responses: Family::default(),
            retries: Family::default(),
            throttle_waits: Family::default(),
            runs: Family::default(),
            run_duration: Family::new_with_constructor(DurationBuckets),
            last_success: Family::default(),
            last_failed: Family::default(),
            in_flight: Family::default(),
        };
        let mut registry = Registry::with_prefix("apitap");
        let f = &families;
        // A gauge at 1 rather than OpenMetrics' info type, which the Prometheus text format
        // of node_exporter's textfile collector does not know.
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "The apitap version serving these metrics",
            build,
        );
        registry.register(
            "rows_sent",
            "Rows sent to PostgreSQL (COPY or INSERT); a run that fails rolls them back",
            f.rows_sent.clone(),
        );
        registry.register(
            "rows_committed",
            "Rows in transactions PostgreSQL committed",
            f.rows_committed.clone(),
        );
        registry.register(
            "copy_rows",
            "Rows sent with binary COPY (the rest went as INSERT)",
            f.copy_rows.clone(),
        );
        registry.register(
            "server_round_trips",
            "Writes that waited for PostgreSQL's answer, by statement: copy (a COPY command), insert (an INSERT batch), merge (a staged segment applied), commit",
            f.round_trips.clone(),
        );
        registry.register(
            "rejected_records",
            "Records set aside in the reject file (--on-error reject)",
            f.rejected.clone(),
        );
        registry.register(
            "rows_per_second",
            "Rows sent per second by the run in flight, averaged since it started; 0 between runs",
            f.rows_per_second.clone(),
        );
        registry.register_with_unit(
            "source",
            "Bytes read from the source, after decompression",
            Unit::Bytes,
            f.bytes.clone(),
        );
        registry.register(
            "source_pages",
            "Pages fetched from a paged API",
            f.pages.clone(),
        );
        registry.register(
            "http_responses",
            "HTTP requests to the source by the class of their answer (error: no answer)",
            f.responses.clone(),
        );
        registry.register(
            "http_retries",
            "HTTP requests retried after a transient failure",
            f.retries.clone(),
        );
        registry.register(
            "throttle_waits",
            "Requests that waited for the rate limit or a rate-limit window",
            f.throttle_waits.clone(),
        );
        registry.register("runs", "Runs by outcome (success, failure)", f.runs.clone());
        registry.register_with_unit(
            "run_duration",
            "How long runs took, successful or not",
            Unit::Seconds,
            f.run_duration.clone(),
        );
        registry.register_with_unit(
            "last_success_timestamp",
            "When the last successful run ended (Unix time)",
            Unit::Seconds,
            f.last_success.clone(),
        );
        registry.register(
            "last_run_failed",
            "1 when the module's last run failed, else 0",
            f.last_failed.clone(),
        );
        registry.register("runs_in_flight", "Runs going on now", f.in_flight.clone());
        Arc::new(Metrics {
            registry,
            families,
            failing: Mutex::new(BTreeMap::new()),
        })
    }

    /// The series of `module` (`load` for `apitap load`).
    pub fn module(self: &Arc<Self>, module: &str) -> ModuleMeter {
        let labels = ModuleLabels {
            module: module.to_string(),
        };
        let f = &self.families;
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
            metrics: self.clone(),
            module: module.to_string(),
            rows_sent: f.rows_sent.get_or_create(&labels).clone(),
            rows_committed: f.rows_committed.get_or_create(&labels).clone(),
            copy_rows: f.copy_rows.get_or_create(&labels).clone(),
            rejected: f.rejected.get_or_create(&labels).clone(),
            rows_per_second: f.rows_per_second.get_or_create(&labels).clone(),
        }
    }

    /// The exposition: OpenMetrics text, as Prometheus scrapes it.
    pub fn text(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        redact_exposition(&text)
    }

    /// `/healthz`: healthy unless a module's last run failed; the body says which and why.
    pub fn health(&self) -> (bool, String) {
        let failing = self.failing.lock().map(|f| f.clone()).unwrap_or_default();
        if failing.is_empty() {
            return (true, "ok\n".to_string());
        }
        let lines: String = failing
            .iter()
            .map(|(module, failure)| {
                format!(
                    "module {module}: last run failed at {}: {}\n",
                    failure.at.format("%Y-%m-%dT%H:%M:%SZ"),
                    failure.error
                )
            })
            .collect();
        (false, crate::base::secrets::redact(&lines).into_owned())
    }

    /// Serves `/metrics` and `/healthz` on `addr` until the process ends; the address bound
    /// (port 0 picks a free one).
    ///
    /// # Errors
    /// The address cannot be bound (in use, not local, not allowed).
    pub async fn serve(self: &Arc<Self>, addr: SocketAddr) -> Result<SocketAddr, MetricsError> {
        let listen_failed = |source| MetricsError::Listen { addr, source };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(listen_failed)?;
        let bound = listener.local_addr().map_err(listen_failed)?;
        let router = endpoint::router(self.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::warn!(%error, "the metrics endpoint stopped");
            }
        });
        Ok(bound)
    }

    /// Writes the exposition to `path` (through a temporary file renamed over it, so a
    /// collector never reads half a file).
    ///
    /// # Errors
    /// The file cannot be written or renamed.
    pub fn write_file(&self, path: &Path) -> Result<(), MetricsError> {
        let write_failed = |source| MetricsError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        std::fs::write(&temporary, prometheus_text(&self.text())).map_err(write_failed)?;
        std::fs::rename(&temporary, path).map_err(write_failed)
    }
}

/// The exposition in the Prometheus text format (0.0.4) that node_exporter's textfile
/// collector parses, from prometheus-client's OpenMetrics text: a counter's HELP and TYPE
/// name its `_total` samples, and the OpenMetrics-only `# UNIT` and `# EOF` lines go.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|comment| {
            let rest = line.strip_prefix(comment)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{comment}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => text.push_str(&line),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

mod endpoint {
    //! The HTTP side: two GET routes, nothing else.

    use std::sync::Arc;

    use axum::Router;
    use axum::extract::State;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;

    use super::Metrics;

    pub(super) fn router(metrics: Arc<Metrics>) -> Router {
        Router::new()
            .route("/metrics", get(metrics_text))
            .route("/healthz", get(health))
            .with_state(metrics)
    }

    async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            metrics.text(),
        )
    }

    async fn health(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
        let (healthy, body) = metrics.health();
        let status = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
    }
}

/// A statement of the write that waits for the server's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statement {
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
pub struct ModuleMeter {
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
    /// The series of one of the module's sources.
    pub fn source(&self, source: &str) -> SourceMeter {
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
    pub fn run(&self) -> RunMeter {
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
pub struct SourceMeter {
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
pub struct RunMeter {
    meter: ModuleMeter,
    started: Instant,
    recorded: bool,
}

impl RunMeter {
    /// The run ended: `Ok`, or failed with the message it printed.
    pub fn ended(mut self, outcome: Result<(), String>) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Result<(), String>) {
        self.recorded = true;
        let meter = &self.meter;
        let f = &meter.metrics.families;
        let seconds = self.started.elapsed().as_secs_f64();
        meter.labelled(&f.run_duration).observe(seconds);
        let outcome_label = if outcome.is_ok() {
            "success"
        } else {
            "failure"
        };
        f.runs
            .get_or_create(&OutcomeLabels {
                module: meter.module.clone(),
                outcome: outcome_label,
            })
            .inc();
        let now = chrono::Utc::now();
        let mut failing = meter.metrics.failing.lock().ok();
        match outcome {
            Ok(()) => {
                meter
                    .labelled(&f.last_success)
                    .set(now.timestamp_millis() as f64 / 1000.0);
                meter.labelled(&f.last_failed).set(0);
                if let Some(failing) = failing.as_mut() {
                    failing.remove(&meter.module);
                }
            }
            Err(error) => {
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
            self.record(Err("interrupted before it ended".into()));
        }
        let f = &self.meter.metrics.families;
        self.meter.labelled(&f.in_flight).dec();
        self.meter.rows_per_second.set(0.0);
    }
}

/// The exposition with secrets masked in its labels (a source named by its URL) and
/// comments, never in a sample's value: a count holding a secret's digits (`rows=${ROWS}` in
/// a query, that many rows loaded) masked as `***` made the whole exposition one Prometheus
/// refuses to read.
fn redact_exposition(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let named = if line.starts_with('#') {
            line.len()
        } else {
            line.rfind('}').map_or(0, |end| end + 1)
        };
        let (named, value) = line.split_at(named);
        out.push_str(&crate::base::secrets::redact(named));
        out.push_str(value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_masks_labels_and_keeps_values() {
        crate::base::secrets::register("61616161-metrics-secret");
        crate::base::secrets::register("61616161");
        let text = "# HELP x Rows of 61616161-metrics-secret.\nx_total{source=\"http://h/?k=61616161-metrics-secret\"} 61616161\nup 61616161\n# EOF\n";
        assert_eq!(
            redact_exposition(text),
            "# HELP x Rows of ***.\nx_total{source=\"http://h/?k=***\"} 61616161\nup 61616161\n# EOF\n"
        );
    }

    #[test]
    fn the_metrics_file_is_in_the_prometheus_text_format() {
        let openmetrics = "# HELP apitap_rows_sent Rows sent.\n# TYPE apitap_rows_sent counter\napitap_rows_sent_total{module=\"load\"} 5\n# HELP apitap_source_bytes Bytes.\n# TYPE apitap_source_bytes counter\n# UNIT apitap_source_bytes bytes\napitap_source_bytes_total{module=\"load\",source=\"x\"} 115\n# HELP apitap_runs_in_flight Runs.\n# TYPE apitap_runs_in_flight gauge\napitap_runs_in_flight{module=\"load\"} 0\n# EOF\n";
        assert_eq!(
            prometheus_text(openmetrics),
            "# HELP apitap_rows_sent_total Rows sent.\n# TYPE apitap_rows_sent_total counter\napitap_rows_sent_total{module=\"load\"} 5\n# HELP apitap_source_bytes_total Bytes.\n# TYPE apitap_source_bytes_total counter\napitap_source_bytes_total{module=\"load\",source=\"x\"} 115\n# HELP apitap_runs_in_flight Runs.\n# TYPE apitap_runs_in_flight gauge\napitap_runs_in_flight{module=\"load\"} 0\n"
        );
    }

    #[test]
    fn health_names_each_failing_module_until_it_recovers() {
        let metrics = Metrics::new();
        let orders = metrics.module("orders");
        let users = metrics.module("users");
        assert_eq!(metrics.health(), (true, "ok\n".to_string()));
        orders
            .run()
            .ended(Err("HTTP 500 from https://api/orders".into()));
        users.run().ended(Ok(()));
        let (healthy, body) = metrics.health();
        assert!(!healthy);
        assert!(
            body.starts_with("module orders: last run failed at ")
                && body.ends_with(": HTTP 500 from https://api/orders\n")
                && body.lines().count() == 1,
            "{body}"
        );
        let text = metrics.text();
        for line in [
            "apitap_last_run_failed{module=\"orders\"} 1",
            "apitap_last_run_failed{module=\"users\"} 0",
            "apitap_runs_total{module=\"orders\",outcome=\"failure\"} 1",
            "apitap_runs_in_flight{module=\"orders\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        orders.run().ended(Ok(()));
        assert_eq!(metrics.health(), (true, "ok\n".to_string()));
        // A run dropped before it ended (apitap interrupted) failed.
        drop(users.run());
        let (healthy, body) = metrics.health();
        assert!(
            !healthy && body.starts_with("module users: last run failed at "),
            "{body}"
        );
        assert!(body.ends_with(": interrupted before it ended\n"), "{body}");
        assert!(
            metrics
                .text()
                .lines()
                .any(|l| l == "apitap_runs_total{module=\"users\",outcome=\"failure\"} 1"),
            "{}",
            metrics.text()
        );
    }
}
