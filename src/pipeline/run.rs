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
use crate::config::{Config, ConfigError};
use crate::transform::{BatchStream, Transform, TransformError, conform, output_fields};

/// Errors of sources that ended a transform's input, by source name.
type Failures = Arc<Mutex<Vec<(String, LoadError)>>>;

/// Runs `module` once against `config`, with `${VAR}` from `env`.
///
/// # Errors
/// A config that does not resolve, any source failing, the SQL failing, or the sink failing;
/// the destination table is unchanged in every case.
pub async fn run_module(
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
    write(
        &mut started.client,
        &started.sink,
        started.plan,
        rx,
        stages,
        progress,
        Helpers {
            rejects,
            streams: Vec::new(),
        },
    )
    .await
}

/// A module whose sources are open and whose SQL is running, planned against its target.
struct Started {
    client: tokio_postgres::Client,
    /// The load the output makes: table, mode, keys.
    sink: LoadRequest,
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

/// Opens the module's sources, starts its SQL and plans the load of its output. A
/// `preview` connects read-only, takes no lock and writes no reject file.
async fn start(
    config: &Config,
    module: &Module,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    progress: Arc<Progress>,
    preview: bool,
) -> Result<Started, LoadError> {
    let target = config.target(module.sink.name.as_deref())?;
    let connect = target.connect_options(env)?;
    let first = config.source(&module.sources[0])?;
    let table_text = module
        .sink
        .table
        .clone()
        .or_else(|| first.table_destination_name.clone())
        .ok_or_else(|| {
            LoadError::Config(ConfigError::Resolve {
                what: format!("module {}", module.name),
                reason: format!(
                    "no destination table: add table=\"schema.name\" to sink(…), or table_destination_name to source {:?}",
                    first.name
                ),
            })
        })?;
    let table_text = crate::base::expand::expand(&table_text, env, "the destination table")
        .map_err(|error| ConfigError::Setting {
            what: format!("module {}", module.name),
            error,
        })?;
    let table = target.table(&table_text)?;
    let mut sources = Vec::with_capacity(module.sources.len());
    for name in &module.sources {
        let source = config.source(name)?;
        let mut request = source.to_request(table.clone(), env)?;
        // Each module keeps its own state of a source: two modules reading one incremental
        // source each get every record. The source's name was the key before.
        request.state_key = format!("{}/{}", module.name, source.name);
        request.legacy_state_key = Some(source.name.clone());
        sources.push((source, request));
    }

    // The sink takes its settings from the first source, as the original did, unless the
    // module's sink(…) says otherwise.
    let mut sink = sources[0].1.clone();
    if let Some(mode) = module.sink.mode {
        sink.mode = mode;
    }
    if let Some(keys) = &module.sink.keys {
        sink.merge_keys = keys.columns();
    }
    if let Some(distribute) = &module.sink.distribute {
        sink.distribute = Some(distribute.clone());
    }
    if let (Some(rejects), Some(path)) = (&mut sink.rejects, &module.reject_file) {
        rejects.path = path.clone();
    }
    if sink.mode != Mode::Merge {
        sink.merge_keys.clear();
    } else if sink.merge_keys.is_empty() {
        return Err(LoadError::Config(ConfigError::Resolve {
            what: format!("module {}", module.name),
            reason: "mode merge needs key columns: sink(key=\"id\") or primary_key_in_dest".into(),
        }));
    }
    if sources.len() > 1 && sources.iter().any(|(_, r)| r.incremental.is_some()) {
        return Err(LoadError::Config(ConfigError::Resolve {
            what: format!("module {}", module.name),
            reason: "cursor_field (incremental loading) works in modules that read one source"
                .into(),
        }));
    }
    let requests: Vec<_> = sources.iter().map(|(_, request)| request.clone()).collect();
    let (client, mut requests) = if preview {
        let client = connect.connect_read_only().await?;
        let requests = read_state(&client, &requests).await?;
        (client, requests)
    } else {
        let mut client = connect.connect().await?;
        let requests = lock_and_read_state(&mut client, &requests, &sink).await?;
        (client, requests)
    };
    for request in &mut requests {
        request.decode_threads = Some(decode_threads(
            request.decode_threads,
            connect.server_is_local(),
            sink.copy_streams,
        ));
    }

    let rejects = sink.rejects.as_ref().map(|options| {
        let name = format!("module {}", module.name);
        if preview {
            crate::rejects::RejectFile::preview(options, name, progress.clone())
        } else {
            crate::rejects::RejectFile::new(options, name, progress.clone())
        }
    });
    let opened = futures_util::future::try_join_all(requests.iter().zip(&sources).map(
        |(request, (source, _))| {
            open_source(request, progress.for_source(&source.name), rejects.clone())
        },
    ));
    let opened = opened.await?;
    // Sources read timestamps without an offset in the target session's zone, as a load does.
    let time_zone = crate::sink::plan::catalog::session_time_zone(&client, &table).await?;

    let transform = Transform::new(sink.batch_size);
    let mut inputs = Vec::with_capacity(opened.len());
    let mut source_columns = Vec::with_capacity(opened.len());
    for (((config, _), request), source) in sources.iter().zip(&requests).zip(opened) {
        let mut fields = source.sample.infer();
        for (name, pg_type) in config.column_types()? {
            match fields.columns.iter_mut().find(|c| c.name == name) {
                Some(column) => column.pg_type = pg_type,
                None => fields
                    .columns
                    .push(crate::schema::Column::new(name, pg_type)),
            }
        }
        let plan = Arc::new(LoadPlan::for_source(
            &config.name,
            fields,
            request.sample,
            time_zone.clone(),
        ));
        let schema = plan.decode.arrow_schema();
        source_columns.push((config.name.clone(), plan.decode.clone()));
        let (batches, stages) = source.start(plan).await?;
        inputs.push((config.name.clone(), schema, batches, stages));
    }
    let tables: Vec<_> = inputs
        .iter()
        .map(|(name, schema, ..)| (name.clone(), schema.clone()))
        .collect();
    let module_error = |error: TransformError| LoadError::Transform {
        module: module.name.clone(),
        error,
    };
    let scans = transform
        .scans(&module.sql, &tables)
        .await
        .map_err(module_error)?;
    let failures: Failures = Arc::default();
    for (name, schema, batches, stages) in inputs {
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
    let fields = output_fields(&out_schema).map_err(module_error)?;
    let plan = plan_load(&client, &sink, &fields, None).await?;
    Ok(Started {
        client,
        sink,
        plan,
        output,
        failures,
        sources: source_columns,
        fields,
        rejects,
    })
}

/// Samples each source as a run would, runs the SQL, plans the load and shows the first
/// `rows` output rows, writing nothing.
///
/// # Errors
/// As [`run_module`], for the part it does.
pub async fn preview_module(
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
    let mut preview = Preview::of_plan(&started.plan, &started.sink, &|_| {
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
pub async fn run_on_schedule<F, Fut>(schedule: &crate::config::schedule::Schedule, mut job: F)
where
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
