//! One load, end to end: the stages wired with bounded channels.
//!
//! ```text
//! fetch (async)  ─Bytes (8)─▶  decode (blocking)  ─Flow (4)─▶  encode (blocking)
//!                                                     ─Encoded (4)─▶  sink::write (async)
//! ```
//!
//! Bounded channels give back-pressure: if PostgreSQL is slower than the source, the fetch
//! stops reading and TCP flow control slows the server down; memory holds at most a few
//! chunks and batches per stage.
//!
//! The table's columns must be known before the first record is decoded, so the decode
//! stage first gathers `--sample` records and hands them to the planner, which reads the
//! catalog (or infers a new table) and sends back the [`LoadPlan`]; the sampled records are
//! then decoded like any other.
//!
//! This module only wires the stages; every statement and every byte sent to PostgreSQL is
//! in [`crate::sink`], which commits only after the stages here all ended cleanly
//! ([`Encoded::End`]), so a failure anywhere leaves the table exactly as it was.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::base::SettingError;
use crate::base::options::{Mode, ReplaceWith};
use crate::decode::DecodeSettings;
use crate::decode::pointer::{JsonPointer, scan_document};
use crate::decode::{
    DecodeError, DecodeOptions, Decoded, Decoder, Format, Framer, Position, Sample,
};
use crate::encode::repeats::RepeatedKeys;
use crate::encode::{CopyEncoder, EncodeError};
use crate::load::Load;
use crate::progress::{Figures, Progress};
use crate::rejects::{RejectError, RejectFile};
use crate::schema::TableName;
use crate::sink::state::StateSettings;
use crate::sink::write::{Encoded, Refusable, RowsPath, WriteOptions};
use crate::sink::{
    ConnectOptions, LoadPlan, PlanOptions, SinkError, WriteSettings, describe_target,
    has_unique_key,
};
use crate::source::paginate::{PageFacts, Pager, PagingError};
use crate::source::{Body, Http, Source, SourceError, SourceSettings, fetch_page, redact_url};

mod cursor;
mod decode_stage;
mod encode_stage;
mod family;
mod fetch;
mod preview;
#[cfg(feature = "sql")]
pub(crate) mod run;
mod stages;
mod state;

#[cfg(feature = "sql")]
pub(crate) use preview::Preview;
pub(crate) use preview::preview_load;

use cursor::cursor_tracker;
use decode_stage::DecodeStage;
pub(crate) use decode_stage::decode_threads;
use fetch::{Chunk, fetch, fetch_pages};
pub(crate) use stages::Stages;
use stages::joined;
pub(crate) use state::{lock_and_read_state, read_state};

/// What flows from the decode stage to the encode stage.
pub(crate) enum Flow {
    Rows(Decoded),
    /// Every row before this came from pages before a commit point; the pager's position
    /// after them, as JSON.
    Checkpoint(String),
}

/// What a finished load did.
#[derive(Debug, Clone)]
pub(crate) struct LoadSummary {
    pub table: TableName,
    /// The highest cursor value loaded and stored (incremental loads).
    pub cursor: Option<String>,
    /// Columns added for new fields (`--schema evolve`).
    pub added_columns: Vec<String>,
    /// Columns widened for sampled values their types could not hold, as `name: old → new`.
    pub widened_columns: Vec<String>,
    /// Fields dropped (`--schema discard`), as far as the sample showed them.
    pub discarded_fields: Vec<String>,
    /// Fields loaded into a column of another name, as (field, column).
    pub renamed_fields: Vec<(String, String)>,
    /// Why each paged source stopped paging, as (source, reason).
    pub paging_stopped: Vec<(String, String)>,
    pub figures: Figures,
    pub created_table: bool,
    /// `--nested tables`: what each child table got.
    pub child_tables: Vec<ChildSummary>,
}

/// What a load did to one child table (`--nested tables`).
#[derive(Debug, Clone)]
pub(crate) struct ChildSummary {
    pub table: TableName,
    pub rows: u64,
    pub created_table: bool,
    pub added_columns: Vec<String>,
}

/// Why a load failed. The table is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{source_name}: {error}")]
    Decode {
        source_name: String,
        error: DecodeError,
    },
    #[error("{source_name}: {error}")]
    Encode {
        source_name: String,
        error: EncodeError,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Rejects(#[from] RejectError),
    #[error("{source_name}: the records have no fields to load into {table}")]
    NoFields {
        source_name: String,
        table: TableName,
    },
    #[error(transparent)]
    Pagination(#[from] PagingError),
    /// Settings of a load that cannot go together once the source is known.
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Setting(#[from] SettingError),
    #[cfg(feature = "sql")]
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[cfg(feature = "sql")]
    #[error("module {module}: {error}")]
    Transform {
        module: String,
        error: crate::transform::TransformError,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Runs one load. See the module docs.
///
/// # Errors
/// Any failure of any stage; the transaction is rolled back and the table left unchanged.
pub(crate) async fn load(
    load: &Load,
    connect: &ConnectOptions,
    progress: Arc<Progress>,
) -> Result<LoadSummary, LoadError> {
    let mut client = connect.connect().await?;
    let mut load = load.clone();
    let write_settings = load.write.clone();
    lock_and_read_state(&mut client, &mut [&mut load], &write_settings).await?;
    load.decode.threads = Some(decode_threads(
        load.decode.threads,
        connect.server_is_local(),
        load.write.copy_streams,
    ));
    let source_name = load.source_name();
    let rejects = load
        .rejects
        .as_ref()
        .map(|options| RejectFile::new(options, source_name.clone(), progress.clone()));
    let stream_count = if load.write.copy_streams > 1 {
        load.write.copy_streams
    } else {
        0
    };
    let (source, streams) = tokio::try_join!(
        open_source(
            &load.source,
            &load.decode,
            progress.for_source(&source_name),
            rejects.clone(),
        ),
        futures_util::future::try_join_all(
            (0..stream_count).map(|_| async { connect.connect().await.map_err(LoadError::from) })
        ),
    )?;
    let plan = plan_sampled(&client, &load, &source).await?;
    let (batches, stages) = source.start(plan.clone()).await?;
    let helpers = Helpers { rejects, streams };
    let sink = Sink {
        client: &mut client,
        write: &load.write,
        state: &load.state,
    };
    write(sink, plan, batches, stages, progress, helpers).await
}

/// A source whose fetch and decode stages are running and have taken their sample; they
/// wait for the plan that says which columns to decode.
pub(crate) struct OpenedSource {
    pub sample: Sample,
    plan_tx: oneshot::Sender<Arc<LoadPlan>>,
    batches: mpsc::Receiver<Flow>,
    stages: Stages,
}

impl OpenedSource {
    /// Hands the plan to the decode stage; from here on, batches flow.
    pub(crate) async fn start(
        self,
        plan: Arc<LoadPlan>,
    ) -> Result<(mpsc::Receiver<Flow>, Stages), LoadError> {
        if self.plan_tx.send(plan).is_err() {
            return Err(self.stages.first_error().await);
        }
        Ok((self.batches, self.stages))
    }
}

/// Opens the source and starts its fetch and decode stages; returns once the sample is
/// taken.
pub(crate) async fn open_source(
    source: &SourceSettings,
    decode: &DecodeSettings,
    progress: Arc<Progress>,
    rejects: Option<Arc<RejectFile>>,
) -> Result<OpenedSource, LoadError> {
    // A paged source is fetched by the pager, page by page; any other is opened as a stream.
    let pager = match (&source.pagination, &source.source) {
        (Some(config), Source::Http(url)) => {
            let base = source.http.url(url)?;
            let mut config = config.clone();
            // --allow-cross-host (YAML allow_cross_host) allows next links elsewhere too.
            config.allow_cross_host |= source.http.allow_cross_host;
            let mut pager = Pager::new(config, base)?;
            if let Some(position) = &source.resume_at {
                pager.resume(position)?;
            }
            let reads_pages = !pager.captures().is_empty() || pager.last_record_pointer().is_some();
            if reads_pages && decode.records_path.is_none() {
                return Err(LoadError::Unsupported(
                    "this pagination reads values from each page, so the records must be at a --records-path (e.g. /data)".into(),
                ));
            }
            Some(pager)
        }
        (Some(_), _) => {
            return Err(LoadError::Unsupported(
                "--pagination needs an http(s) source".into(),
            ));
        }
        (None, _) if source.commit_every.is_some() => {
            return Err(LoadError::Unsupported(
                "--commit-every needs a paged source (--pagination): pages are where a backfill can resume".into(),
            ));
        }
        (None, _) => None,
    };
    let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(8);
    let (batch_tx, batch_rx) = mpsc::channel::<Flow>(4);
    let (sample_tx, sample_rx) = oneshot::channel::<Sample>();
    let (plan_tx, plan_rx) = oneshot::channel::<Arc<LoadPlan>>();

    // Spans as ARCHITECTURE.md lists them: what each stage is doing, for logs and traces.
    let name = &source.source;
    let span = match (&pager, name) {
        (Some(_), _) => tracing::info_span!("http.pages", source = %name),
        (None, Source::Http(_)) => tracing::info_span!("http.ndjson_stream", source = %name),
        (None, _) => tracing::info_span!("source.read", source = %name),
    };
    let paged = pager.is_some();
    let fetch = match pager {
        Some(pager) => {
            let pages = fetch_pages(
                pager,
                source.clone(),
                decode.clone(),
                chunk_tx,
                progress.clone(),
            );
            tokio::spawn(pages.instrument(span))
        }
        None => {
            let body = name.open(&source.http, &progress).await?;
            let read = fetch(
                body,
                chunk_tx,
                progress.clone(),
                name.clone(),
                source.http.clone(),
            );
            tokio::spawn(read.instrument(span))
        }
    };
    let decoding = {
        let exchange = (sample_tx, plan_rx);
        let stage = DecodeStage::new(decode, paged, name.to_string(), rejects, exchange, batch_tx);
        let span = tracing::info_span!("decode.records", source = %name);
        tokio::task::spawn_blocking(move || span.in_scope(|| stage.run(chunk_rx)))
    };
    let stages = Stages {
        tasks: vec![fetch, decoding],
        source_name: name.to_string(),
    };
    let Ok(sample) = sample_rx.await else {
        // The decode stage stopped before it had a sample: its error (or the fetch's) says why.
        return Err(stages.first_error().await);
    };
    Ok(OpenedSource {
        sample,
        plan_tx,
        batches: batch_rx,
        stages,
    })
}

/// Plans `load` on the sample its opened `source` took.
pub(crate) async fn plan_sampled(
    client: &tokio_postgres::Client,
    load: &Load,
    source: &OpenedSource,
) -> Result<Arc<LoadPlan>, LoadError> {
    if load.decode.tables {
        return family::plan_family(client, load, source).await;
    }
    let fields = source.sample.infer();
    let planned = Planned {
        fields: &fields,
        sample: Some(&source.sample),
        sample_limit: load.decode.sample,
        source_name: &load.source_name(),
    };
    plan_load(client, &load.write, planned).await
}

/// What a plan is made from: the fields of the records (inferred from a sample, or a
/// transform's typed output) and, for messages, where they came from.
pub(crate) struct Planned<'a> {
    pub fields: &'a crate::schema::TableSchema,
    /// The records the fields were inferred from, which tell which integer columns their
    /// values outgrew; without one (a transform's typed output) no column is widened.
    pub sample: Option<&'a Sample>,
    /// The `--sample` size, for messages.
    pub sample_limit: usize,
    pub source_name: &'a str,
}

/// Decides how records with `planned.fields` map onto the table `write` loads, reading the
/// catalog.
pub(crate) async fn plan_load(
    client: &tokio_postgres::Client,
    write: &WriteSettings,
    planned: Planned<'_>,
) -> Result<Arc<LoadPlan>, LoadError> {
    let target = describe_target(client, &write.table).await?;
    let widen = match (planned.sample, &target.columns) {
        (Some(sample), Some(columns)) => columns
            .iter()
            .filter_map(|c| {
                // The sampled field loaded into this column (its name may be mapped).
                let key = sample
                    .field_names()
                    .into_iter()
                    .find(|k| crate::schema::column_name(k).is_ok_and(|name| name == c.name))?;
                let to = sample.widening(&key, c.pg_type?, write.widen_to_text)?;
                Some((c.name.clone(), to))
            })
            .collect(),
        _ => Vec::new(),
    };
    let records = planned.sample.map_or(1, Sample::records);
    let plan = LoadPlan::new(
        &target,
        planned.fields,
        &PlanOptions {
            sample_limit: planned.sample_limit,
            merge_keys: write.merge_keys.clone(),
            schema: write.schema,
            widen,
            replace_by_swap: write.mode == Mode::Replace && write.replace_with == ReplaceWith::Swap,
            distribute: write.distribute.clone(),
        },
    )?;
    if !plan.merge_keys.is_empty()
        && target.columns.is_some()
        && !has_unique_key(client, &plan.table, &plan.merge_keys).await?
    {
        return Err(LoadError::Sink(SinkError::Plan {
            table: plan.table.to_string(),
            reason: format!(
                "merging on ({keys}) needs a primary key or unique index on exactly those columns; \
                 create one, e.g. CREATE UNIQUE INDEX ON {qualified} ({keys})",
                keys = plan.merge_keys.join(", "),
                qualified = crate::sink::qualified(&plan.table),
            ),
        }));
    }
    if plan.copy_columns == 0 && records > 0 {
        return Err(LoadError::NoFields {
            source_name: planned.source_name.to_string(),
            table: plan.table,
        });
    }
    Ok(Arc::new(plan))
}

/// What the writer may use besides the load's own connection.
#[derive(Default)]
pub(crate) struct Helpers {
    /// Where rows set aside go (`--on-error reject`).
    pub rejects: Option<Arc<RejectFile>>,
    /// More connections, for `--copy-streams`.
    pub streams: Vec<tokio_postgres::Client>,
}

/// The load's connection and what the sink half of a load takes of its settings.
pub(crate) struct Sink<'a> {
    pub client: &'a mut tokio_postgres::Client,
    pub write: &'a WriteSettings,
    pub state: &'a StateSettings,
}

/// The sink half of a load: encodes `batches` (laid out as `plan.decode`) and hands them to
/// [`crate::sink::write::write`]. `stages` are the stages feeding `batches`; only their
/// clean end lets the write commit.
pub(crate) async fn write(
    sink: Sink<'_>,
    plan: Arc<LoadPlan>,
    batches: mpsc::Receiver<Flow>,
    stages: Stages,
    progress: Arc<Progress>,
    helpers: Helpers,
) -> Result<LoadSummary, LoadError> {
    let Sink {
        client,
        write: settings,
        state,
    } = sink;
    let table = plan.table.clone();
    let cursor = cursor_tracker(state, &plan)?;
    let (tx, mut rx) = mpsc::channel::<Encoded>(4);
    let path = RowsPath::choose(
        client,
        &plan,
        settings.method,
        helpers.rejects.clone(),
        helpers.streams,
    )
    .await?;
    let repeats = match path.tracks_merge_keys() {
        true => Some(
            plan.merge_key_columns()
                .and_then(|(keys, types)| RepeatedKeys::new(keys, &types))
                .ok_or_else(|| {
                    LoadError::Internal("the merge keys cannot be tracked after all".into())
                })?,
        ),
        false => None,
    };
    let encode = {
        let stage = encode_stage::EncodeStage {
            plan: plan.clone(),
            source_name: stages.source_name.clone(),
            cursor,
            rows_per_insert: path.inserts().then_some(settings.insert_batch),
            rejects: helpers.rejects.clone(),
            repeats,
            children: plan
                .family
                .as_deref()
                .map(|f| family::ChildEncoders::new(&plan, f, settings.mode == Mode::Merge)),
        };
        let tx = tx.clone();
        let span = tracing::info_span!("encode.copy", table = %table);
        tokio::task::spawn_blocking(move || {
            let _in_span = span.enter();
            stage.run(batches, tx)
        })
    };
    // The end of the input, sent only once every stage before the writer ended cleanly.
    let checker = tokio::spawn(async move {
        let ended = stages.check(encode).await?;
        let end = Encoded::End {
            cursor: ended.cursor,
            children: ended.children,
        };
        let _ = tx.send(end).await;
        Ok::<(), LoadError>(())
    });
    let options = WriteOptions {
        mode: settings.mode,
        allow_empty: settings.allow_empty,
        state_key: state.key.clone(),
        lock_timeout: settings.lock_timeout,
        rejects: helpers.rejects,
    };
    let written = crate::sink::write::write(client, &plan, path, options, &mut rx, &progress)
        .instrument(tracing::info_span!("sql.load", table = %table))
        .await;
    drop(rx);
    let written = match written {
        Ok(written) => written,
        // A stage failed: its error says why the input stopped.
        Err(SinkError::InputEnded) => {
            return Err(match joined(checker.await) {
                Err(e) => e,
                Ok(()) => LoadError::Internal("the input ended without its stages failing".into()),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let mut figures = progress.figures();
    figures.rows = written.rows;
    Ok(LoadSummary {
        cursor: written.cursor,
        table,
        added_columns: plan.added_columns(),
        widened_columns: plan.widenings().iter().map(ToString::to_string).collect(),
        discarded_fields: plan.discarded_fields.clone(),
        renamed_fields: plan.renamed_fields(),
        paging_stopped: progress.paging_stops(),
        figures,
        created_table: written.created_table,
        child_tables: plan
            .family
            .iter()
            .flat_map(|family| &family.children)
            .zip(&written.child_rows)
            .map(|(child, &rows)| ChildSummary {
                table: child.table.clone(),
                rows,
                created_table: child.create_table.is_some(),
                added_columns: child.added_columns(),
            })
            .collect(),
    })
}
