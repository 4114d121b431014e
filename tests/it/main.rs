//! The integration tests, as one test binary: each links the whole of apitap (DataFusion
//! included), so one binary links once instead of once per file. Every test runs the real
//! `apitap` binary against a real PostgreSQL (`DATABASE_URL`, set by scripts/test.sh) and
//! HTTP servers on 127.0.0.1.

mod common;

mod errors;
mod faults;
mod hostile;
mod http;
mod load;
mod merge;
mod oracle;
mod paging;
#[cfg(feature = "sql")]
mod pipelines;
#[cfg(feature = "sql")]
mod pipelines_config;
mod rejects;
mod replace;
mod roundtrip;
mod state;
mod types;
