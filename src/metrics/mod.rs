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
//! as printed, credentials masked). docs/scheduling.md lists them all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;

mod families;
mod meters;

use families::Families;
pub(crate) use meters::{ModuleMeter, RunMeter, SourceMeter, Statement};

/// The metrics endpoint could not start, or the metrics file could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MetricsError {
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

/// The registry of one process and the health of its modules.
pub(crate) struct Metrics {
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
    pub(crate) fn new() -> Arc<Metrics> {
        let families = Families::default();
        let mut registry = Registry::with_prefix("apitap");
        families.register(&mut registry);
        Arc::new(Metrics {
            registry,
            families,
            failing: Mutex::new(BTreeMap::new()),
        })
    }

    /// The series of `module` (`load` for `apitap load`).
    pub(crate) fn module(self: &Arc<Self>, module: &str) -> ModuleMeter {
        ModuleMeter::new(self.clone(), module)
    }

    /// The exposition: OpenMetrics text, as Prometheus scrapes it.
    pub(crate) fn text(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        redact_exposition(&text)
    }

    /// `/healthz`: healthy unless a module's last run failed; the body says which and why.
    pub(crate) fn health(&self) -> (bool, String) {
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
    pub(crate) async fn serve(
        self: &Arc<Self>,
        addr: SocketAddr,
    ) -> Result<SocketAddr, MetricsError> {
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
    pub(crate) fn write_file(&self, path: &Path) -> Result<(), MetricsError> {
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
            .failed("HTTP 500 from https://api/orders".into());
        users.run().succeeded();
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
        orders.run().succeeded();
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
