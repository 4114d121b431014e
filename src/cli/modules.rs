//! What `apitap run` and `apitap check` do: render the modules, run their SQL over the
//! config's sources (DataFusion) into their tables, on a schedule if asked.

use std::io::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use futures_util::StreamExt;

use super::pipelines::{CheckArgs, PipelineFiles, RunArgs};
use super::{Outcome, interrupted};
use crate::config::module::{Module, discover, render};
use crate::config::schedule::Schedule;
use crate::config::{Config, load_dotenv, process_env};
use crate::pipeline::Preview;
use crate::pipeline::run::{preview_module, run_module, run_on_schedule};
use crate::pipeline::{LoadError, LoadSummary};
use crate::progress::{Progress, RunTotal};

/// Reads the config and renders the modules; any mistake in either stops everything.
fn load(files: &PipelineFiles) -> anyhow::Result<(Config, Vec<Module>)> {
    load_dotenv()?;
    let config = Config::load(&files.yaml_config)?;
    let paths = discover(&files.modules)?;
    if paths.is_empty() {
        anyhow::bail!("no modules: {} has no .sql files", files.modules.display());
    }
    let mut modules = Vec::with_capacity(paths.len());
    for path in &paths {
        let module = render(&files.modules, path)?;
        for source in &module.sources {
            config
                .source(source)
                .with_context(|| format!("module {}", module.name))?;
        }
        config
            .target(module.sink.name.as_deref())
            .with_context(|| format!("module {}", module.name))?;
        crate::transform::Transform::new(1)
            .parse(&module.sql)
            .with_context(|| format!("module {} ({})", module.name, module.path.display()))?;
        modules.push(module);
    }
    if let Some(unknown) = files
        .only
        .iter()
        .find(|name| !modules.iter().any(|m| &&m.name == name))
    {
        let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
        anyhow::bail!(
            "no module is named {unknown:?} (modules: {})",
            names.join(", ")
        );
    }
    crate::config::module::separate_reject_files(&config, &mut modules);
    if !files.only.is_empty() {
        modules.retain(|m| files.only.contains(&m.name));
    }
    Ok((config, modules))
}

pub(super) async fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    let (config, modules) = load(&args.files)?;
    let metrics = args.metrics.start().await?;
    let outcome = run_modules(&args, config, modules, metrics.as_ref()).await;
    args.metrics.finish(metrics.as_ref(), outcome)
}

async fn run_modules(
    args: &RunArgs,
    config: Config,
    modules: Vec<Module>,
    metrics: Option<&Arc<crate::metrics::Metrics>>,
) -> anyhow::Result<Outcome> {
    let config = Arc::new(config);
    // Every module's series exist from the start, at 0, before its first run.
    let meters: std::collections::HashMap<String, crate::metrics::ModuleMeter> = metrics
        .map(|metrics| {
            modules
                .iter()
                .map(|m| (m.name.clone(), metrics.module(&m.name)))
                .collect()
        })
        .unwrap_or_default();
    let bars = indicatif::MultiProgress::new();
    // Modules run on a schedule come and go; the total line is for a run of them all.
    let total = (!args.schedule && modules.len() > 1)
        .then(|| RunTotal::start(args.progress, modules.len(), &bars));
    let run_one = |module: Module| {
        let config = config.clone();
        let total = total.as_ref();
        // The total line stays on top; each module's line goes below it.
        let meter = meters.get(&module.name).cloned();
        let progress = Progress::start_in(
            args.progress,
            &format!("module {}", module.name),
            &bars,
            meter.clone(),
        );
        async move {
            if let Some(total) = total {
                total.started(&progress);
            }
            let run = meter.as_ref().map(|m| m.run());
            let result = run_module(&config, &module, &process_env, progress.clone()).await;
            progress.finish();
            if let Some(total) = total {
                total.ended(result.is_ok());
            }
            if let Some(run) = run {
                run.ended(&result);
            }
            let result = result.map_err(|error| Failed {
                error,
                left: crate::cli::output::left_in("its table", progress.ledger(), None),
            });
            (module, result)
        }
    };
    let work = async {
        if args.schedule {
            run_scheduled(args, &modules, &run_one).await;
            Vec::new()
        } else {
            futures_util::stream::iter(modules.iter().cloned().map(run_one))
                .buffer_unordered(usize::from(args.jobs))
                .collect::<Vec<_>>()
                .await
        }
    };
    let results = tokio::select! {
        results = work => results,
        () = interrupted() => {
            crate::base::say("apitap: interrupted; modules still running were rolled back");
            return Ok(Outcome::Interrupted);
        }
    };
    if let Some(total) = &total {
        total.finish();
    }
    conclude(args, &results)
}

/// Runs each module at the times its schedule says, forever; a module without a schedule
/// runs once.
async fn run_scheduled<F, Fut>(args: &RunArgs, modules: &[Module], run_one: &F)
where
    F: Fn(Module) -> Fut,
    Fut: std::future::Future<Output = (Module, Result<LoadSummary, Failed>)>,
{
    let runs = modules.iter().cloned().map(|module| async move {
        let schedule = match module.schedule.as_deref().map(Schedule::parse) {
            Some(Ok(schedule)) => schedule,
            // Modules are validated when rendered; an unscheduled one runs once.
            _ => {
                let (module, result) = run_one(module).await;
                report(args, &module, &result);
                return;
            }
        };
        run_on_schedule(&schedule, || {
            let module = module.clone();
            async move {
                let (module, result) = run_one(module).await;
                report(args, &module, &result);
            }
        })
        .await;
    });
    futures_util::future::join_all(runs).await;
}

/// Reports each module's outcome, writes the JSON summary, and fails if any module failed.
fn conclude(
    args: &RunArgs,
    results: &[(Module, Result<LoadSummary, Failed>)],
) -> anyhow::Result<Outcome> {
    let mut failed = Vec::new();
    for (module, result) in results {
        report(args, module, result);
        if result.is_err() {
            failed.push(module.name.as_str());
        }
    }
    if let Some(path) = &args.summary_json {
        let lines: Vec<serde_json::Value> = results
            .iter()
            .map(|(module, result)| summary_json(module, result))
            .collect();
        super::output::write_json_lines(path, &lines)
            .with_context(|| format!("could not write --summary-json {}", path.display()))?;
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "{} of {} modules failed: {}",
            failed.len(),
            results.len(),
            failed.join(", ")
        );
    }
    Ok(Outcome::Done)
}

/// A module that failed, and what it left in its table.
struct Failed {
    error: LoadError,
    left: String,
}

fn report(args: &RunArgs, module: &Module, result: &Result<LoadSummary, Failed>) {
    match result {
        Ok(summary) if !args.quiet => {
            crate::base::say(&format!(
                "apitap: module {}: loaded {} into {}{}: {}",
                module.name,
                module.sources.join(" + "),
                summary.table,
                if summary.created_table {
                    " (created)"
                } else {
                    ""
                },
                summary.figures.line()
            ));
            for (source, why) in &summary.paging_stopped {
                crate::base::say(&format!(
                    "apitap: module {}: source {source}: paging stopped: {why}",
                    module.name
                ));
            }
            if !summary.added_columns.is_empty() {
                crate::base::say(&format!(
                    "apitap: module {}: added column(s) for new fields: {}",
                    module.name,
                    summary.added_columns.join(", ")
                ));
            }
        }
        Ok(_) => {}
        Err(Failed { error, left }) => crate::base::say(&format!(
            "apitap: module {} failed; {left}: {error}",
            module.name
        )),
    }
}

fn summary_json(module: &Module, result: &Result<LoadSummary, Failed>) -> serde_json::Value {
    match result {
        Ok(summary) => serde_json::json!({
            "module": module.name,
            "ok": true,
            "table": summary.table.to_string(),
            "created_table": summary.created_table,
            "rows": summary.figures.rows,
            "bytes": summary.figures.bytes,
            "seconds": (summary.figures.seconds * 1000.0).round() / 1000.0,
            "pages": summary.figures.pages,
            "paging_stopped": summary
                .paging_stopped
                .iter()
                .cloned()
                .collect::<std::collections::BTreeMap<String, String>>(),
            "retries": summary.figures.retries,
            "cursor": summary.cursor,
            "added_columns": summary.added_columns,
            "peak_rss_bytes": super::peak_rss_bytes(),
        }),
        Err(Failed { error, left }) => serde_json::json!({
            "module": module.name,
            "ok": false,
            "error": error.to_string(),
            "left": left,
        }),
    }
}

pub(super) async fn check(args: CheckArgs) -> anyhow::Result<Outcome> {
    let (config, modules) = load(&args.files)?;
    let mut out = std::io::stdout().lock();
    for module in &modules {
        writeln!(
            out,
            "module {} ({}): sources {}; target {}; schedule {}",
            module.name,
            module.path.display(),
            module.sources.join(", "),
            config.target(module.sink.name.as_deref())?.name,
            module
                .schedule
                .as_deref()
                .unwrap_or("none (runs when asked)"),
        )?;
        let Some(rows) = args.preview else {
            continue;
        };
        let preview: Preview = preview_module(&config, module, &process_env, rows)
            .await
            .with_context(|| format!("previewing module {}", module.name))?;
        write!(out, "{preview}")?;
    }
    writeln!(out, "ok: {} module(s) checked", modules.len())?;
    Ok(Outcome::Done)
}
