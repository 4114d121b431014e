//! `apitap run` and `apitap check`: SQL modules over the sources of a YAML config. Their
//! flags are here; what they do is in `modules.rs`, which a build without the `sql` feature
//! (no DataFusion) leaves out, answering with how to get them instead.

use std::path::PathBuf;

use clap::Args;

#[cfg(not(feature = "sql"))]
use super::Outcome;
use crate::base::options::ProgressMode;

#[cfg(feature = "sql")]
pub(super) use super::modules::{check, run};

/// Where the config and modules are; shared by `run` and `check`.
#[derive(Debug, Args, Clone)]
pub(crate) struct PipelineFiles {
    /// Folder of SQL modules (`*.sql`, searched recursively).
    #[arg(
        short = 'm',
        long = "modules",
        value_name = "DIR",
        default_value = "pipelines"
    )]
    pub modules: PathBuf,

    /// The YAML config with the sources and targets.
    #[arg(
        short = 'y',
        long = "yaml-config",
        value_name = "FILE",
        default_value = "pipelines.yaml"
    )]
    pub yaml_config: PathBuf,

    /// Only these modules (by file name without .sql; repeatable).
    #[arg(long = "module", value_name = "NAME")]
    pub only: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub files: PipelineFiles,

    /// Modules run at once, each in its own transaction.
    #[arg(long, short = 'j', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: u16,

    /// Keep running, firing each module on its schedule("…") (UTC); modules without one run
    /// once at the start.
    #[arg(long)]
    pub schedule: bool,

    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,

    /// Write one JSON summary per module (JSON lines) to this file, or `-` for stdout.
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,

    /// Print only failures.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    #[command(flatten)]
    pub metrics: super::metrics::MetricsArgs,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub files: PipelineFiles,

    /// Also fetch this many records per source and show the schemas, the DDL a run would
    /// execute and the first output rows. Nothing is written.
    #[arg(long, value_name = "N")]
    pub preview: Option<usize>,
}

/// What a build without SQL modules says when asked to run them.
#[cfg(not(feature = "sql"))]
const WITHOUT_SQL: &str = "this apitap was built without SQL modules (the `sql` feature, which \
     brings DataFusion), so it has `apitap load` but not `run` or `check`; install the full \
     build with `cargo install --path .` (default features) to run pipelines";

#[cfg(not(feature = "sql"))]
pub async fn run(_: RunArgs) -> anyhow::Result<Outcome> {
    anyhow::bail!(WITHOUT_SQL)
}

#[cfg(not(feature = "sql"))]
pub async fn check(_: CheckArgs) -> anyhow::Result<Outcome> {
    anyhow::bail!(WITHOUT_SQL)
}
