//! One module run: the module's sources, fetched and decoded concurrently, flow through its
//! SQL (DataFusion) into the sink, all in one transaction.
//!
//! ```text
//! source A: fetch ─▶ decode ─┐
//!                            ├─▶ transform (DataFusion, streaming) ─▶ conform ─▶ encode ─▶ COPY
//! source B: fetch ─▶ decode ─┘
//! ```
//!
//! Each source is planned on its own sample (its columns are inferred, or typed by the
//! config's `columns`); the sink is planned on the SQL's output schema against the catalog,
//! exactly as `apitap load` plans records against it. A failing source fails the module with
//! the source's own error, never a truncated success.

use std::sync::Mutex;

use futures_util::StreamExt;

use super::*;
use crate::config::module::Module;
use crate::config::{Config, ModuleLoads, ModuleSource};
use crate::transform::{BatchStream, Transform, TransformError, conform, output_fields};

/// Errors of sources that ended a transform's input, by source name.
type Failures = Arc<Mutex<Vec<(String, LoadError)>>>;

/// Runs `module` once against `config`, with `${VAR}` from `env`.
///
/// # Errors
/// A config that does not resolve, any source failing, the SQL failing, or the sink failing;
/// the destination table is unchanged in every case.
pub(crate) async fn run_module(
    config: &Config,
    module: &Module,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    progress: Arc<Progress>,
) -> Result<LoadSummary, LoadError> {
    let mut started = start(config, module, env, progress.clone(), false).await?;
    let rejects = started.rejects.take();
    let (tx, rx) = mpsc::channel::<Flow>(4);
    let columns = started.plan.decode.columns.clone();
    let name = module.name.clone();
    let mut out = started.output;
    let failures = started.failures;
    let span = tracing::info_span!("transform.load", module = %module.name);
    let task = tokio::spawn(
        async move {
            let mut next_row = 1;
            while let Some(batch) = out.next().await {
                let batch = batch.map_err(|e| resolve(e, &failures, &name))?;
                let batch = conform(&batch, &columns).map_err(|e| resolve(e, &failures, &name))?;
                let rows = batch.num_rows() as u64;
                let decoded = Decoded {
                    batch,
                    first_record: next_row,
                    record_numbers: None,
                    rejected: Vec::new(),
                    children: Vec::new(),
                };
                if tx.send(Flow::Rows(decoded)).await.is_err() {
                    return Ok(());
                }
                next_row += rows;
            }
            Ok(())
        }
        .instrument(span),
    );
    let stages = Stages::single(task, format!("module {}", module.name));
    let sink = Sink {
        client: &mut started.client,
        write: &started.write,
        state: &started.state,
    };
    let helpers = Helpers {
        rejects,
        streams: Vec::new(),
    };
    write(sink, started.plan, rx, stages, progress, helpers).await
}

/// A module whose sources are open and whose SQL is running, planned against its target.
struct Started {
    client: tokio_postgres::Client,
    /// How the output is written.
    write: crate::sink::WriteSettings,
    /// The state the output's write keeps: the first source's (its incremental cursor is
    /// a column of the output).
    state: crate::sink::state::StateSettings,
    plan: Arc<LoadPlan>,
    output: BatchStream,
    failures: Failures,
    /// Each source's name and decoded columns.
    sources: Vec<(String, crate::schema::TableSchema)>,
    /// The output's columns, before they are fitted to the table.
    fields: crate::schema::TableSchema,
    /// The module's reject file, shared by its sources' decoders and its writer, when the
    /// first source says `on_error: reject`.
    rejects: Option<Arc<crate::rejects::RejectFile>>,
}

/// A source whose stages run, as the SQL reads it.
struct Input {
    name: String,
    schema: arrow_schema::SchemaRef,
    batches: mpsc::Receiver<Flow>,
    stages: Stages,
}

/// Opens the module's sources, starts its SQL and plans the load of its output. A
/// `preview` connects read-only, takes no lock and writes no reject file.
async fn start(
    config: &Config,
    module: &Module,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    progress: Arc<Progress>,
    preview: bool,
) -> Result<Started, LoadError> {
    let ModuleLoads {
        connect,
        mut sources,
        write,
        rejects,
    } = config.module_loads(module, env)?;
    let client = if preview {
        let client = connect.connect_read_only().await?;
        for source in &mut sources {
            read_state(&client, &mut source.load).await?;
        }
        client
    } else {
        let mut client = connect.connect().await?;
        let mut loads: Vec<&mut Load> = sources.iter_mut().map(|s| &mut s.load).collect();
        lock_and_read_state(&mut client, &mut loads, &write).await?;
        client
    };
    let state = sources[0].load.state.clone();
    let rejects = rejects.as_ref().map(|options| {
        let name = format!("module {}", module.name);
        if preview {
            crate::rejects::RejectFile::preview(options, name, progress.clone())
        } else {
            crate::rejects::RejectFile::new(options, name, progress.clone())
        }
    });
    let server_is_local = connect.server_is_local();
    for source in &mut sources {
        let decode = &mut source.load.decode;
        decode.threads = Some(decode_threads(
            decode.threads,
            server_is_local,
            write.copy_streams,
        ));
    }
    let opened = futures_util::future::try_join_all(sources.iter().map(|source| {
        let load = &source.load;
        let progress = progress.for_source(&source.name);
        open_source(&load.source, &load.decode, progress, rejects.clone())
    }))
    .await?;
    // Sources read timestamps without an offset in the target session's zone, as a load does.
    let dates = crate::sink::plan::catalog::session_dates(&client, &write.table).await?;
    let (inputs, source_columns) = start_inputs(&sources, opened, &dates).await?;
    let batch_size = sources[0].load.decode.batch_size;
    let (failures, out_schema, output) = run_sql(module, batch_size, inputs).await?;
    let fields = output_fields(&out_schema).map_err(|error| LoadError::Transform {
        module: module.name.clone(),
        error,
    })?;
    let planned = Planned {
        fields: &fields,
        sample: None,
        sample_limit: sources[0].load.decode.sample,
        source_name: &format!("module {}", module.name),
    };
    let plan = plan_load(&client, &write, planned).await?;
    Ok(Started {
        client,
        write,
        state,
        plan,
        output,
        failures,
        sources: source_columns,
        fields,
        rejects,
    })
}

/// Plans each opened source on its sample (typed by the config's `columns` where given)
/// and lets its batches flow; the inputs, and each source's decoded columns.
async fn start_inputs(
    sources: &[ModuleSource],
    opened: Vec<OpenedSource>,
    dates: &crate::sink::plan::catalog::SessionDates,
) -> Result<(Vec<Input>, Vec<(String, crate::schema::TableSchema)>), LoadError> {
    let mut inputs = Vec::with_capacity(opened.len());
    let mut source_columns = Vec::with_capacity(opened.len());
    for (source, opened) in sources.iter().zip(opened) {
        let mut fields = opened.sample.infer();
        // A type is given by column name, or for a flattened field by its path (`user.id`).
        for (name, pg_type) in &source.column_types {
            let named = |c: &&mut crate::schema::Column| c.name == *name || c.field_path() == *name;
            match fields.columns.iter_mut().find(named) {
                Some(column) => column.pg_type = *pg_type,
                None => fields
                    .columns
                    .push(crate::schema::Column::new(name.clone(), *pg_type)),
            }
        }
        let sample = source.load.decode.sample;
        let plan = LoadPlan::for_source(&source.name, fields, sample, dates.clone());
        let plan = Arc::new(plan);
        let schema = plan.decode.arrow_schema();
        source_columns.push((source.name.clone(), plan.decode.clone()));
        let (batches, stages) = opened.start(plan).await?;
        let name = source.name.clone();
        inputs.push(Input {
            name,
            schema,
            batches,
            stages,
        });
    }
    Ok((inputs, source_columns))
}

/// Registers each input with DataFusion (collected first where the SQL reads it twice) and
/// starts the module's SQL.
async fn run_sql(
    module: &Module,
    batch_size: usize,
    inputs: Vec<Input>,
) -> Result<(Failures, arrow_schema::SchemaRef, BatchStream), LoadError> {
    let module_error = |error: TransformError| LoadError::Transform {
        module: module.name.clone(),
        error,
    };
    let transform = Transform::new(batch_size);
    let tables: Vec<_> = inputs
        .iter()
        .map(|input| (input.name.clone(), input.schema.clone()))
        .collect();
    let scans = transform
        .scans(&module.sql, &tables)
        .await
        .map_err(module_error)?;
    let failures: Failures = Arc::default();
    for input in inputs {
        let Input {
            name,
            schema,
            batches,
            stages,
        } = input;
        let stream = source_stream(name.clone(), batches, stages, failures.clone());
        if scans.get(&name).copied().unwrap_or(0) > 1 {
            transform
                .register_collected(&name, &schema, stream)
                .await
                .map_err(|e| resolve(e, &failures, &module.name))?;
        } else {
            transform
                .register_stream(&name, &schema, stream)
                .map_err(module_error)?;
        }
    }
    let (out_schema, output) = transform.execute(&module.sql).await.map_err(module_error)?;
    Ok((failures, out_schema, output))
}

/// Samples each source as a run would, runs the SQL, plans the load and shows the first
/// `rows` output rows, writing nothing.
///
/// # Errors
/// As [`run_module`], for the part it does.
pub(crate) async fn preview_module(
    config: &Config,
    module: &Module,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    rows: usize,
) -> Result<Preview, LoadError> {
    let progress = Progress::start(
        crate::base::options::ProgressMode::Never,
        &module.name,
        None,
    );
    // The sources sample as many records as a run would, so the schemas shown are the ones a
    // run would infer; only the rows shown are limited to `rows`.
    let mut started = start(config, module, env, progress, true).await?;
    let mut preview = Preview::of_plan(&started.plan, &started.write, &|_| {
        "the type of the SQL's output column".to_string()
    });
    while preview.rows.len() < rows {
        let Some(batch) = started.output.next().await else {
            break;
        };
        let batch = batch.map_err(|e| resolve(e, &started.failures, &module.name))?;
        super::preview::json_lines(&batch, &mut preview.rows, rows)?;
    }
    preview.sources = std::mem::take(&mut started.sources);
    preview.output = Some(started.fields.clone());
    if let Some(rejects) = &started.rejects {
        preview.set_aside = rejects.previewed();
    }
    Ok(preview)
}

/// Calls `job` at every time `schedule` matches, from now on, forever. A run that is still
/// going when the next time comes is not overlapped: the next run is the first match after it
/// ends.
///
/// The wall clock is read once; after that, time is tokio's, so tests can pause and advance
/// it.
pub(crate) async fn run_on_schedule<F, Fut>(
    schedule: &crate::config::schedule::Schedule,
    mut job: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let wall_start = chrono::Utc::now();
    let clock_start = tokio::time::Instant::now();
    let now = || {
        wall_start
            + chrono::Duration::from_std(clock_start.elapsed()).unwrap_or(chrono::Duration::zero())
    };
    loop {
        let current = now();
        let Some(next) = schedule.next_after(current) else {
            tracing::warn!("the schedule has no future times; stopping");
            return;
        };
        let wait = (next - current).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        job().await;
    }
}

/// The error to report for a transform failure: the failing source's own, if a source
/// ended it.
fn resolve(error: TransformError, failures: &Failures, module: &str) -> LoadError {
    if let TransformError::Source(name) = &error
        && let Ok(mut failures) = failures.lock()
        && let Some(i) = failures.iter().position(|(n, _)| n == name)
    {
        return failures.swap_remove(i).1;
    }
    LoadError::Transform {
        module: module.to_string(),
        error,
    }
}

/// A source's decoded batches as a stream that, once they run out, ends with an error if the
/// source's stages failed (keeping the error for [`resolve`]).
fn source_stream(
    name: String,
    batches: mpsc::Receiver<Flow>,
    stages: Stages,
    failures: Failures,
) -> BatchStream {
    let state = (batches, Some(stages));
    Box::pin(futures_util::stream::unfold(
        state,
        move |(mut batches, stages)| {
            let name = name.clone();
            let failures = failures.clone();
            async move {
                // Modules commit once, so no commit points come through.
                while let Some(flow) = batches.recv().await {
                    if let Flow::Rows(decoded) = flow {
                        return Some((Ok(decoded.batch), (batches, stages)));
                    }
                }
                let stages = stages?;
                match stages.join().await {
                    Ok(()) => None,
                    Err(error) => {
                        if let Ok(mut failures) = failures.lock() {
                            failures.push((name.clone(), error));
                        }
                        Some((Err(TransformError::Source(name)), (batches, None)))
                    }
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schedule::Schedule;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_schedule_fires_on_time_and_never_overlaps_itself() {
        let every_minute = Schedule::parse("0 * * * * *").unwrap();
        let runs = Arc::new(AtomicU32::new(0));
        let running = Arc::new(AtomicU32::new(0));
        let job = {
            let runs = runs.clone();
            let running = running.clone();
            move || {
                let runs = runs.clone();
                let running = running.clone();
                async move {
                    assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "runs overlapped");
                    runs.fetch_add(1, Ordering::SeqCst);
                    // Longer than the gap between fire times: the run in between is skipped.
                    if runs.load(Ordering::SeqCst) == 3 {
                        tokio::time::sleep(Duration::from_secs(90)).await;
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                }
            }
        };
        let scheduler = tokio::spawn(async move { run_on_schedule(&every_minute, job).await });
        tokio::time::sleep(Duration::from_secs(10 * 60)).await;
        scheduler.abort();
        // Ten minutes hold ten fire times; the third run's 90 s swallow one of them.
        assert_eq!(runs.load(Ordering::SeqCst), 9);
    }
}
