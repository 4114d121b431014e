//! The integration tests, as one test binary: each links the whole of apitap (DataFusion
//! included), so one binary links once instead of once per file. Every test runs the real
//! `apitap` binary against a real PostgreSQL (`DATABASE_URL`, set by scripts/test.sh) and
//! HTTP servers on 127.0.0.1.

mod certs;
mod citus;
mod common;
mod compressed;
mod concurrency;
mod contracts;
mod decode_threads;
mod docs;
mod endings;

mod errors;
mod faults;
mod hostile;
mod hostile_api;
mod http;
mod layers;
mod libpq;
mod load;
mod merge;
mod merge_empty;
mod metrics;
#[cfg(feature = "sql")]
mod metrics_prometheus;
mod nested;
mod oracle;
mod paging;
mod pgtls;
#[cfg(feature = "sql")]
mod pipelines;
#[cfg(feature = "sql")]
mod pipelines_config;
mod preview;
mod progress;
mod redirects;
mod rejects;
mod replace;
mod roundtrip;
mod scaling;
mod secrets;
mod shell;
mod state;
mod streams;
mod types;
