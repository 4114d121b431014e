//! ApiTap: JSON from HTTP APIs, files or stdin into PostgreSQL through binary COPY.
//!
//! A load is a one-way pipeline of stages joined by bounded channels, so memory stays flat
//! however large the input and every stage runs while the others do:
//!
//! ```text
//! source ──bytes──▶ decode ──RecordBatch──▶ encode ──COPY bytes──▶ sink
//! (HTTP, file,      (a strict JSON scanner,  (Arrow → binary       (tokio-postgres,
//!  stdin, gz/zst)    typed per column)         COPY, no IO)          one transaction)
//! ```
//!
//! [`base`] is the bottom layer every stage shares; [`load`] resolves a load described by the
//! command line ([`cli`]) or a YAML source ([`config`]) into the parts the stages take;
//! [`schema`] holds the target table's shape; [`pipeline`] wires the stages; [`sink`] does all
//! PostgreSQL IO; [`cli`] is the command line on top. ARCHITECTURE.md has the module map.

pub mod base;
pub mod cli;
#[cfg(feature = "sql")]
pub(crate) mod config;
pub mod decode;
pub mod demo;
pub mod encode;
pub(crate) mod load;
pub(crate) mod metrics;
pub(crate) mod pipeline;
pub(crate) mod progress;
pub(crate) mod rejects;
pub mod schema;
pub(crate) mod sink;
pub mod source;
#[cfg(feature = "sql")]
pub(crate) mod transform;
