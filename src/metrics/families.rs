//! Every series apitap exposes, its labels, and its name and help as registered.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BuildLabels {
    pub(super) version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ModuleLabels {
    pub(super) module: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SourceLabels {
    pub(super) module: String,
    pub(super) source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResponseLabels {
    pub(super) module: String,
    pub(super) source: String,
    /// `2xx` … `5xx`, or `error` when no response came (connect, timeout, reset).
    pub(super) status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StatementLabels {
    pub(super) module: String,
    pub(super) statement: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabels {
    pub(super) module: String,
    pub(super) outcome: &'static str,
}

pub(super) type FloatGauge = Gauge<f64, AtomicU64>;

/// Run durations from a second to a day.
#[derive(Clone)]
pub(super) struct DurationBuckets;

impl MetricConstructor<Histogram> for DurationBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new([
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0, 86400.0,
        ])
    }
}

/// Every series apitap exposes.
pub(super) struct Families {
    pub(super) rows_sent: Family<ModuleLabels, Counter>,
    pub(super) rows_committed: Family<ModuleLabels, Counter>,
    pub(super) copy_rows: Family<ModuleLabels, Counter>,
    pub(super) round_trips: Family<StatementLabels, Counter>,
    pub(super) rejected: Family<ModuleLabels, Counter>,
    pub(super) rows_per_second: Family<ModuleLabels, FloatGauge>,
    pub(super) bytes: Family<SourceLabels, Counter>,
    pub(super) pages: Family<SourceLabels, Counter>,
    pub(super) responses: Family<ResponseLabels, Counter>,
    pub(super) retries: Family<SourceLabels, Counter>,
    pub(super) throttle_waits: Family<SourceLabels, Counter>,
    pub(super) runs: Family<OutcomeLabels, Counter>,
    pub(super) run_duration: Family<ModuleLabels, Histogram, DurationBuckets>,
    pub(super) last_success: Family<ModuleLabels, FloatGauge>,
    pub(super) last_failed: Family<ModuleLabels, Gauge>,
    pub(super) in_flight: Family<ModuleLabels, Gauge>,
}

impl Default for Families {
    fn default() -> Families {
        Families {
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
        }
    }
}

impl Families {
    /// Registers every series in `registry`, with its name, help and unit.
    pub(super) fn register(&self, registry: &mut Registry) {
        let f = self;
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
    }
}
