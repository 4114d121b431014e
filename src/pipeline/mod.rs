//! One load, end to end: the stages wired with bounded channels inside one transaction.
//!
//! ```text
//! fetch (async)  ─Bytes (8)─▶  decode (blocking)  ─Decoded (4)─▶  encode (blocking)
//!                                                                  ─COPY bytes (4)─▶  COPY (async)
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
//! Everything happens in one transaction that commits only when every stage finished
//! cleanly, so a failure anywhere leaves the table exactly as it was.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::decode::pointer::{JsonPointer, scan_document};
use crate::decode::{
    DecodeError, DecodeOptions, Decoded, Format, Framer, Position, RecordDecoder, Sample,
};
use crate::encode::{COPY_HEADER, COPY_TRAILER, CopyEncoder, EncodeError};
use crate::progress::{Figures, Progress};
use crate::schema::TableName;
use crate::sink::swap::{ReplaceWith, Swap};
use crate::sink::{
    ConnectOptions, LoadPlan, PlanOptions, SchemaPolicy, SinkError, StagedRows, describe_target,
    has_unique_key,
};
use crate::source::paginate::{PageFacts, Pager, PaginationConfig};
use crate::source::{Body, Http, Source, SourceError, fetch_page, redact_url};

mod cursor;
mod decode_stage;
mod encode_stage;
mod fetch;
mod parallel;
mod rejects;
pub mod run;

use cursor::CursorMax;
use decode_stage::DecodeStage;
use encode_stage::encode;
use fetch::{Chunk, fetch, fetch_pages};
use rejects::RejectFile;

/// How the load treats rows already in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Add the records to the table.
    Append,
    /// Replace the table's rows with the records, atomically.
    Replace,
    /// Insert new keys and update existing ones (`--key`); the last record of a key wins.
    Merge,
}

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMethod {
    /// Binary COPY: the fast path.
    Copy,
    /// Batched `INSERT … SELECT … FROM unnest(…)`, for servers and proxies without COPY.
    Insert,
}

/// What the encode stage hands to the writer.
pub(crate) enum Encoded {
    /// Binary COPY data, and in reject mode what is needed to find refused rows in it.
    Copy {
        bytes: Bytes,
        rows: Option<Box<CopyRows>>,
    },
    /// One INSERT's worth of rows: each column's values as PostgreSQL text.
    Rows(Vec<Vec<Option<String>>>),
    /// A commit point (`--commit-every`): where to resume, and the highest cursor so far.
    Checkpoint {
        resume: String,
        cursor: Option<String>,
    },
}

/// What flows from the decode stage to the encode stage.
pub(crate) enum Flow {
    Rows(Decoded),
    /// Every row before this came from pages before a commit point; the pager's position
    /// after them, as JSON.
    Checkpoint(String),
}

/// The rows inside one chunk of COPY data.
pub(crate) struct CopyRows {
    /// Where each row ends in the chunk (see [`CopyEncoder::row_ends`]).
    ends: Vec<usize>,
    /// Each row's record number in the load.
    records: Vec<u64>,
    /// The rows' values, to write a refused row to the reject file.
    batch: arrow_array::RecordBatch,
}

/// Everything one load needs to know.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    pub source: Source,
    /// Client, headers, query and retries for an HTTP source.
    pub http: Http,
    pub table: TableName,
    pub mode: Mode,
    /// `None` detects NDJSON or a JSON array.
    pub format: Option<Format>,
    /// Records are the array at this pointer inside one JSON document (`{"data": [...]}`).
    pub records_path: Option<JsonPointer>,
    /// Fetch the HTTP source page by page.
    pub pagination: Option<PaginationConfig>,
    /// Records read to infer a new table's columns (and to see which fields exist).
    pub sample: usize,
    pub batch_size: usize,
    /// Fields without a column: add columns, fail, or drop them.
    pub schema: SchemaPolicy,
    /// Under `--schema evolve`, make a column text when it refuses a sampled value.
    pub widen_to_text: bool,
    /// Let `--mode replace` empty the table when the source has no records.
    pub allow_empty: bool,
    /// How `--mode replace` replaces an existing table's rows.
    pub replace_with: ReplaceWith,
    /// Key columns for `--mode merge` (empty otherwise).
    pub merge_keys: Vec<String>,
    pub method: WriteMethod,
    /// Rows per INSERT statement with `--method insert`.
    pub insert_batch: usize,
    /// Set bad records aside instead of failing (`--on-error reject`).
    pub rejects: Option<RejectOptions>,
    /// Remember the highest value of a field, and ask the API only for newer records.
    pub incremental: Option<Incremental>,
    /// The key of this load's state in `apitap._state`.
    pub state_key: String,
    /// Ignore the stored state this time (a cursor, an unfinished backfill); it is still
    /// updated.
    pub full_refresh: bool,
    /// COPY through this many connections at once (into a staging table the load's
    /// transaction then publishes); 1 is a single direct COPY.
    pub copy_streams: usize,
    /// Commit every this many pages, recording where to resume (paged sources).
    pub commit_every: Option<u64>,
    /// Where an unfinished `--commit-every` backfill stopped, read from the state.
    pub resume: Option<Resume>,
    pub max_record_bytes: usize,
}

/// Incremental loading: which field's highest value to remember, and how to send it back.
#[derive(Debug, Clone)]
pub struct Incremental {
    /// The field (column) whose highest loaded value is stored.
    pub cursor_field: String,
    /// The query parameter the stored value is sent in (HTTP sources).
    pub cursor_param: Option<String>,
}

/// An unfinished backfill, to pick up.
#[derive(Debug, Clone)]
pub struct Resume {
    pub position: crate::source::paginate::Position,
    /// The highest cursor value its committed pages held.
    pub cursor: Option<String>,
}

/// `--on-error reject`: where set-aside records go, and how many may be.
#[derive(Debug, Clone)]
pub struct RejectOptions {
    pub path: std::path::PathBuf,
    /// Fail the load once more records than this are rejected.
    pub max: Option<u64>,
}

impl RejectOptions {
    /// Rejects are written here first and renamed to `path` only when the load commits, so a
    /// failed load leaves no reject file describing rows that were never loaded either.
    pub(crate) fn partial_path(&self) -> std::path::PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(".partial");
        name.into()
    }
}

/// What a finished load did.
#[derive(Debug, Clone)]
pub struct LoadSummary {
    pub table: TableName,
    /// The highest cursor value loaded and stored (incremental loads).
    pub cursor: Option<String>,
    /// Columns added for new fields (`--schema evolve`).
    pub added_columns: Vec<String>,
    /// Columns widened for sampled values their types could not hold, as `name: old → new`.
    pub widened_columns: Vec<String>,
    /// Fields dropped (`--schema discard`), as far as the sample showed them.
    pub discarded_fields: Vec<String>,
    pub figures: Figures,
    pub created_table: bool,
}

/// Why a load failed. The table is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
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
    #[error(
        "refusing to replace the rows of {table} with nothing: the source had no records (pass --allow-empty to empty the table)"
    )]
    EmptyReplace { table: TableName },
    #[error("{source_name}: the records have no fields to load into {table}")]
    NoFields {
        source_name: String,
        table: TableName,
    },
    #[error("{0}")]
    Pagination(String),
    #[error("{count} records were rejected, more than --max-rejects {max} allows")]
    TooManyRejects { count: u64, max: u64 },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("module {module}: {error}")]
    Transform {
        module: String,
        error: crate::transform::TransformError,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Largest CopyData message sent to the server.
const COPY_MESSAGE_BYTES: usize = 64 * 1024;

/// Runs one load. See the module docs.
///
/// # Errors
/// Any failure of any stage; the transaction is rolled back and the table left unchanged.
pub async fn load(
    request: &LoadRequest,
    connect: &ConnectOptions,
    progress: Arc<Progress>,
) -> Result<LoadSummary, LoadError> {
    let request = &with_stored_state(request, connect).await?;
    let rejects = request
        .rejects
        .as_ref()
        .map(|options| RejectFile::new(options, request.source.to_string(), progress.clone()));
    let stream_count = if request.copy_streams > 1 {
        request.copy_streams
    } else {
        0
    };
    let (source, mut client, streams) = tokio::try_join!(
        open_source(request, progress.clone(), rejects.clone()),
        async { connect.connect().await.map_err(LoadError::from) },
        futures_util::future::try_join_all(
            (0..stream_count).map(|_| async { connect.connect().await.map_err(LoadError::from) })
        ),
    )?;
    let plan = plan_load(
        &client,
        request,
        &source.sample.infer(),
        Some(&source.sample),
    )
    .await?;
    let (batches, stages) = source.start(plan.clone()).await?;
    write(
        &mut client,
        request,
        plan,
        batches,
        stages,
        progress,
        Helpers { rejects, streams },
    )
    .await
}

/// The stored state decides what to ask the API for, so it is read before the source is
/// opened: an unfinished `--commit-every` backfill resumes at its next page (with the query
/// it started with); otherwise an incremental load asks only for records past the stored
/// cursor.
pub(crate) async fn with_stored_state<'a>(
    request: &'a LoadRequest,
    connect: &ConnectOptions,
) -> Result<std::borrow::Cow<'a, LoadRequest>, LoadError> {
    let cursor_param = request
        .incremental
        .as_ref()
        .and_then(|inc| inc.cursor_param.clone());
    if request.full_refresh || (cursor_param.is_none() && request.commit_every.is_none()) {
        return Ok(std::borrow::Cow::Borrowed(request));
    }
    let client = connect.connect().await?;
    let stored = crate::sink::state::read(&client, &request.state_key, &request.table).await?;
    let mut with_state = request.clone();
    let key = &request.state_key;
    match (&stored.resume, request.commit_every) {
        (Some(resume), Some(_)) => {
            let position = serde_json::from_str(resume).map_err(|e| {
                LoadError::Pagination(format!(
                    "the saved position of the unfinished backfill {key:?} in apitap._state is unreadable ({e}); \
                     pass --full-refresh to start it again"
                ))
            })?;
            tracing::info!(key = %key, "resuming an unfinished backfill after its last commit");
            with_state.resume = Some(Resume {
                position,
                cursor: stored.cursor,
            });
        }
        _ => {
            if let (Some(param), Some(value)) = (cursor_param, stored.cursor) {
                tracing::info!(key = %key, cursor = %value, "resuming after the stored cursor");
                with_state.http.request.query.push((param, value));
            }
        }
    }
    Ok(std::borrow::Cow::Owned(with_state))
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

/// Opens the request's source and starts its fetch and decode stages; returns once the
/// sample is taken.
pub(crate) async fn open_source(
    request: &LoadRequest,
    progress: Arc<Progress>,
    rejects: Option<Arc<RejectFile>>,
) -> Result<OpenedSource, LoadError> {
    // A paged source is fetched by the pager, page by page; any other is opened as a stream.
    let pager = match (&request.pagination, &request.source) {
        (Some(config), Source::Http(url)) => {
            let base = request.http.url(url)?;
            let mut pager = Pager::new(config.clone(), base).map_err(LoadError::Pagination)?;
            if let Some(resume) = &request.resume {
                pager
                    .resume(&resume.position)
                    .map_err(LoadError::Pagination)?;
            }
            if !pager.captures().is_empty() && request.records_path.is_none() {
                return Err(LoadError::Pagination(
                    "this pagination reads values from each page, so the records must be at a --records-path (e.g. /data)".into(),
                ));
            }
            Some(pager)
        }
        (Some(_), _) => {
            return Err(LoadError::Pagination(
                "--pagination needs an http(s) source".into(),
            ));
        }
        (None, _) if request.commit_every.is_some() => {
            return Err(LoadError::Pagination(
                "--commit-every needs a paged source (--pagination): pages are where a backfill can resume".into(),
            ));
        }
        (None, _) => None,
    };
    let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(8);
    let (batch_tx, batch_rx) = mpsc::channel::<Flow>(4);
    let (sample_tx, sample_rx) = oneshot::channel::<Sample>();
    let (plan_tx, plan_rx) = oneshot::channel::<Arc<LoadPlan>>();

    let span = tracing::info_span!("http.ndjson_stream", source = %request.source);
    let fetch = match pager {
        Some(pager) => tokio::spawn(
            fetch_pages(pager, request.clone(), chunk_tx, progress.clone()).instrument(span),
        ),
        None => {
            let body = request.source.open(&request.http, &progress).await?;
            tokio::spawn(
                fetch(
                    body,
                    chunk_tx,
                    progress.clone(),
                    request.source.clone(),
                    request.http.clone(),
                )
                .instrument(span),
            )
        }
    };
    let decode = {
        let stage = DecodeStage::new(request, rejects, sample_tx, plan_rx, batch_tx);
        let span = tracing::info_span!("transform.load", table = %request.table);
        tokio::task::spawn_blocking(move || span.in_scope(|| stage.run(chunk_rx)))
    };
    let stages = Stages {
        tasks: vec![fetch, decode],
        source_name: request.source.to_string(),
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

/// Decides how records with `fields` map onto the request's table, reading the catalog.
/// `sample`, the records the fields were inferred from, tells which integer columns their
/// values outgrew; without one (a transform's typed output) no column is widened.
pub(crate) async fn plan_load(
    client: &tokio_postgres::Client,
    request: &LoadRequest,
    fields: &crate::schema::TableSchema,
    sample: Option<&Sample>,
) -> Result<Arc<LoadPlan>, LoadError> {
    let target = describe_target(client, &request.table).await?;
    let widen = match (sample, &target.columns) {
        (Some(sample), Some(columns)) => columns
            .iter()
            .filter_map(|c| {
                let to = sample.widening(&c.name, c.pg_type?, request.widen_to_text)?;
                Some((c.name.clone(), to))
            })
            .collect(),
        _ => Vec::new(),
    };
    let records = sample.map_or(1, Sample::records);
    let plan = LoadPlan::new(
        &target,
        fields,
        &PlanOptions {
            sample_limit: request.sample,
            merge_keys: request.merge_keys.clone(),
            schema: request.schema,
            widen,
            replace_by_swap: request.mode == Mode::Replace
                && request.replace_with == ReplaceWith::Swap,
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
            source_name: request.source.to_string(),
            table: plan.table,
        });
    }
    Ok(Arc::new(plan))
}

/// The sink half of a load: encodes `batches` (laid out as `plan.decode`) and writes them in
/// one transaction, with the merge and the incremental state, then commits. `upstream` are
/// the stages feeding `batches`; only their clean end lets the transaction commit. With a
/// reject file, rows the server refuses are found and set aside instead of failing the load.
pub(crate) async fn write(
    client: &mut tokio_postgres::Client,
    request: &LoadRequest,
    plan: Arc<LoadPlan>,
    batch_rx: mpsc::Receiver<Flow>,
    stages: Stages,
    progress: Arc<Progress>,
    helpers: Helpers,
) -> Result<LoadSummary, LoadError> {
    let Helpers { rejects, streams } = helpers;
    let table = plan.table.clone();
    // Chunk by chunk for appends and replaces; a merge COPYs into staging, where nothing is
    // refused, and finds the rows its one statement refuses afterwards (`merge_rejects`).
    let isolate_refused = rejects.as_ref().filter(|_| plan.merge_keys.is_empty());
    // Some poolers and PostgreSQL-compatible servers refuse COPY FROM STDIN; the load then
    // goes through the INSERT fallback instead of failing.
    let method = match request.method {
        WriteMethod::Copy if !crate::sink::copy_from_stdin_works(client, &table).await? => {
            tracing::warn!(table = %table, "the server refuses COPY FROM STDIN; loading with batched INSERTs (--method insert) instead");
            WriteMethod::Insert
        }
        method => method,
    };
    let cursor = match &request.incremental {
        Some(inc) if plan.copy_columns > 0 => {
            let plan_error = |reason: String| {
                LoadError::Sink(SinkError::Plan {
                    table: table.to_string(),
                    reason,
                })
            };
            let names = plan.copy_names();
            let column = names
                .iter()
                .position(|n| *n == inc.cursor_field)
                .ok_or_else(|| {
                    plan_error(format!(
                        "the cursor field {:?} is not a field of the records (fields: {})",
                        inc.cursor_field,
                        names.join(", ")
                    ))
                })?;
            let mut max = CursorMax::new(plan.copy_types()[column]).map_err(plan_error)?;
            // A resumed backfill's earlier commits already saw part of the maximum.
            if let Some(seen) = request.resume.as_ref().and_then(|r| r.cursor.as_deref()) {
                max.seed(seen);
            }
            Some((column, max))
        }
        _ => None,
    };
    // A merge COPYs into a staging table and applies it in one statement; the INSERT
    // fallback merges each batch as it goes (ON CONFLICT in the INSERT itself).
    let staged = !plan.merge_keys.is_empty() && method == WriteMethod::Copy;
    // Rows a staged merge refuses are found after the COPY, by their record numbers.
    let merge_rejects = rejects.as_deref().filter(|_| staged);
    let (copy_tx, mut copy_rx) = mpsc::channel::<(Encoded, u64)>(4);
    let encode = {
        let plan = plan.clone();
        let source_name = stages.source_name.clone();
        let rows_per_insert = (method == WriteMethod::Insert).then_some(request.insert_batch);
        let keep_rows = isolate_refused.is_some() || merge_rejects.is_some();
        tokio::task::spawn_blocking(move || {
            encode(
                batch_rx,
                copy_tx,
                &plan,
                &source_name,
                cursor,
                rows_per_insert,
                keep_rows,
            )
        })
    };
    let mut upstream = Some((stages, encode));

    // One transaction, or with --commit-every one per group of pages: each ends with the rows,
    // the merge and the state (cursor so far, and where to resume) committed together.
    let mut rows = 0;
    let mut segment = 0;
    let mut swap = None;
    let cursor_value = loop {
        segment += 1;
        let mut transaction = client
            .transaction()
            .await
            .map_err(|e| SinkError::database("starting a transaction", &table, &e))?;
        let first = segment == 1;
        let mut staged_records = Vec::new();
        if first {
            for (statement, action) in [
                (&plan.create_schema, "CREATE SCHEMA"),
                (&plan.create_table, "CREATE TABLE"),
            ] {
                execute(&transaction, statement.as_deref(), action, &table).await?;
            }
            if let Some(oid) = plan.swap_of {
                let keys_first = isolate_refused.is_some();
                swap = Some(Swap::begin(&transaction, &table, oid, keys_first).await?);
            }
            let delete = plan
                .delete_statement()
                .filter(|_| request.mode == Mode::Replace);
            for (statement, action) in [
                (plan.alter_table.as_deref(), "ALTER TABLE"),
                (delete.as_deref(), "DELETE"),
            ] {
                execute(&transaction, statement, action, &table).await?;
            }
        }
        let staging = plan.staging_statement().filter(|_| staged);
        execute(
            &transaction,
            staging.as_deref(),
            "CREATE TEMP TABLE",
            &table,
        )
        .await?;
        let (loaded, end) = if plan.copy_columns == 0 {
            (0, SegmentEnd::Done)
        } else if method == WriteMethod::Insert {
            insert_segment(&transaction, &plan, &mut copy_rx, &progress).await?
        } else if let Some(rejects) = isolate_refused {
            copy_isolating_segment(&mut transaction, &plan, &mut copy_rx, rejects, &progress)
                .await?
        } else if !streams.is_empty() {
            parallel::copy_segment(
                &transaction,
                &plan,
                &mut copy_rx,
                &mut upstream,
                &progress,
                &streams,
            )
            .await?
        } else {
            let freeze = first && plan.may_freeze();
            let copy = plan.copy_statement(freeze);
            copy_segment(
                &transaction,
                &copy,
                &table,
                &mut copy_rx,
                &mut upstream,
                &progress,
                merge_rejects.map(|_| &mut staged_records),
            )
            .await?
        };
        rows += loaded;
        let (cursor_value, resume) = match end {
            SegmentEnd::Checkpoint { resume, cursor } => (cursor, Some(resume)),
            SegmentEnd::Done => {
                let checked = match upstream.take() {
                    Some((stages, encode)) => stages.check(encode).await?,
                    None => None,
                };
                (checked, None)
            }
            SegmentEnd::DoneChecked(cursor) => (cursor, None),
        };
        if resume.is_none() && rows == 0 && request.mode == Mode::Replace && !request.allow_empty {
            return Err(LoadError::EmptyReplace { table });
        }
        if staged && loaded > 0 {
            let refused = merge_rejects.map(|r| (r, staged_records.as_slice()));
            merge_staged(&mut transaction, &plan, refused).await?;
        }
        if let Some(swap) = swap.take() {
            swap.finish(&transaction).await?;
        }
        // The state moves with the rows: same transaction, so a crash loses both or neither.
        if cursor_value.is_some() || resume.is_some() || request.resume.is_some() {
            let stored = crate::sink::state::Stored {
                cursor: cursor_value.clone(),
                resume: resume.clone(),
            };
            crate::sink::state::save(&transaction, &request.state_key, &stored, &table).await?;
        }
        transaction
            .commit()
            .instrument(tracing::info_span!("sql.execute", statement = "COMMIT", table = %table))
            .await
            .map_err(|e| SinkError::database("COMMIT", &table, &e))?;
        match resume {
            Some(_) => {
                tracing::info!(table = %table, rows, segment, "committed; the backfill resumes here if it stops")
            }
            None => break cursor_value,
        }
    };
    if let Some(rejects) = &rejects {
        rejects.publish().map_err(|e| {
            LoadError::Internal(format!(
                "the load committed, but the reject file could not be renamed: {e}"
            ))
        })?;
    }
    let mut figures = progress.figures();
    figures.rows = rows;
    Ok(LoadSummary {
        cursor: cursor_value,
        table,
        added_columns: plan.added_columns.clone(),
        widened_columns: plan.widened_columns.clone(),
        discarded_fields: plan.discarded_fields.clone(),
        figures,
        created_table: plan.create_table.is_some(),
    })
}

/// What the writer may use besides the load's own connection.
#[derive(Default)]
pub(crate) struct Helpers {
    /// Where rows set aside go (`--on-error reject`).
    pub rejects: Option<Arc<RejectFile>>,
    /// More connections, for `--copy-streams`.
    pub streams: Vec<tokio_postgres::Client>,
}

/// The upstream stages and the encode task, until they are checked at the end of the input.
pub(crate) type Upstream = Option<(
    Stages,
    tokio::task::JoinHandle<Result<Option<String>, LoadError>>,
)>;

/// How a group of rows ended.
pub(crate) enum SegmentEnd {
    /// The input ended; the upstream stages are still to be checked.
    Done,
    /// The input ended and the stages were checked (the COPY must check them before it
    /// finishes); the highest cursor value.
    DoneChecked(Option<String>),
    /// A commit point: where to resume, and the highest cursor value so far.
    Checkpoint {
        resume: String,
        cursor: Option<String>,
    },
}

/// Runs the INSERT fallback until the input or a commit point ends.
async fn insert_segment(
    transaction: &tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
    copy_rx: &mut mpsc::Receiver<(Encoded, u64)>,
    progress: &Progress,
) -> Result<(u64, SegmentEnd), LoadError> {
    let table = &plan.table;
    let insert_failed =
        |e: tokio_postgres::Error| LoadError::from(SinkError::database("INSERT", table, &e));
    let statement = transaction
        .prepare(&plan.insert_statement())
        .await
        .map_err(insert_failed)?;
    let mut rows = 0;
    while let Some((encoded, batch_rows)) = copy_rx.recv().await {
        let columns = match encoded {
            Encoded::Rows(columns) => columns,
            Encoded::Checkpoint { resume, cursor } => {
                return Ok((rows, SegmentEnd::Checkpoint { resume, cursor }));
            }
            Encoded::Copy { .. } => {
                return Err(LoadError::Internal("COPY data on the INSERT path".into()));
            }
        };
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = columns
            .iter()
            .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        rows += transaction
            .execute(&statement, &params)
            .instrument(tracing::info_span!("sql.execute", statement = "INSERT", table = %table))
            .await
            .map_err(insert_failed)?;
        progress.add_rows(batch_rows);
    }
    Ok((rows, SegmentEnd::Done))
}

/// COPY chunk by chunk, setting aside rows the server refuses, until the input or a commit
/// point ends.
async fn copy_isolating_segment(
    transaction: &mut tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
    copy_rx: &mut mpsc::Receiver<(Encoded, u64)>,
    rejects: &RejectFile,
    progress: &Progress,
) -> Result<(u64, SegmentEnd), LoadError> {
    // Each chunk COPYs under its own savepoint, where FREEZE is not allowed.
    let statement = plan.copy_statement(false);
    let mut rows = 0;
    while let Some((encoded, batch_rows)) = copy_rx.recv().await {
        let (bytes, copy_rows) = match encoded {
            Encoded::Copy {
                bytes,
                rows: Some(copy_rows),
            } => (bytes, copy_rows),
            Encoded::Checkpoint { resume, cursor } => {
                return Ok((rows, SegmentEnd::Checkpoint { resume, cursor }));
            }
            _ => return Err(LoadError::Internal("a COPY chunk without its rows".into())),
        };
        rows += copy_isolating(
            transaction,
            &statement,
            &bytes,
            &copy_rows,
            rejects,
            &plan.table,
        )
        .await?;
        progress.add_rows(batch_rows);
    }
    Ok((rows, SegmentEnd::Done))
}

/// One streaming COPY until the input or a commit point ends. At the end of the input it
/// checks the upstream stages before finishing: only a clean end of every stage may
/// complete the COPY (dropping it unfinished aborts it).
///
/// `records`, when given, collects each row's record number in COPY order.
async fn copy_segment(
    transaction: &tokio_postgres::Transaction<'_>,
    statement: &str,
    table: &TableName,
    copy_rx: &mut mpsc::Receiver<(Encoded, u64)>,
    upstream: &mut Upstream,
    progress: &Progress,
    mut records: Option<&mut Vec<u64>>,
) -> Result<(u64, SegmentEnd), LoadError> {
    let copy_failed =
        |e: tokio_postgres::Error| LoadError::from(SinkError::database("COPY", table, &e));
    let started = std::time::Instant::now();
    let sink = transaction
        .copy_in::<_, Bytes>(statement)
        .await
        .map_err(copy_failed)?;
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(COPY_HEADER))
        .await
        .map_err(copy_failed)?;
    let mut end = None;
    while let Some((encoded, batch_rows)) = copy_rx.recv().await {
        let bytes = match encoded {
            Encoded::Copy { bytes, rows } => {
                if let (Some(records), Some(rows)) = (records.as_deref_mut(), rows) {
                    records.extend_from_slice(&rows.records);
                }
                bytes
            }
            Encoded::Checkpoint { resume, cursor } => {
                end = Some(SegmentEnd::Checkpoint { resume, cursor });
                break;
            }
            Encoded::Rows(_) => {
                return Err(LoadError::Internal("INSERT rows on the COPY path".into()));
            }
        };
        send_copy_data(&mut sink, bytes)
            .await
            .map_err(copy_failed)?;
        progress.add_rows(batch_rows);
    }
    let end = match end {
        Some(checkpoint) => checkpoint,
        None => match upstream.take() {
            Some((stages, encode)) => SegmentEnd::DoneChecked(stages.check(encode).await?),
            None => SegmentEnd::DoneChecked(None),
        },
    };
    sink.send(Bytes::from_static(COPY_TRAILER))
        .await
        .map_err(copy_failed)?;
    let rows = sink.finish().await.map_err(copy_failed)?;
    tracing::info!(statement = "COPY", table = %table, rows_affected = rows, elapsed_ms = started.elapsed().as_millis() as u64, "sql.execute");
    Ok((rows, end))
}

/// Runs one statement of the plan, if there is one, logging how long it took.
async fn execute(
    transaction: &tokio_postgres::Transaction<'_>,
    statement: Option<&str>,
    action: &'static str,
    table: &TableName,
) -> Result<(), SinkError> {
    let Some(sql) = statement else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    transaction
        .batch_execute(sql)
        .instrument(tracing::info_span!("sql.execute", statement = action, table = %table))
        .await
        .map_err(|e| SinkError::database(action, table, &e))?;
    tracing::info!(statement = action, table = %table, elapsed_ms = started.elapsed().as_millis() as u64, "sql.execute");
    Ok(())
}

/// Applies the staged rows to the table with one INSERT … ON CONFLICT DO UPDATE.
///
/// Optimistic: most loads repeat no key, so the plain upsert runs first, under a savepoint.
/// A repeated key makes PostgreSQL refuse it (ON CONFLICT may not touch a row twice,
/// SQLSTATE 21000); only then is it rolled back and run again keeping the last record of
/// each key. Checking for repeats first would cost a scan of every staged key on every load.
///
/// With a reject file (`refused`: it, and each staged row's record number), a row the
/// server refuses (a CHECK, NOT NULL or foreign key) is set aside instead of failing the load.
async fn merge_staged(
    transaction: &mut tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
    refused: Option<(&RejectFile, &[u64])>,
) -> Result<(), LoadError> {
    let table = &plan.table;
    let started = std::time::Instant::now();
    let merge_failed = |e: tokio_postgres::Error| {
        SinkError::database("the merge (INSERT … ON CONFLICT)", table, &e)
    };
    let merge = |rows: StagedRows| plan.merge_statement(rows).unwrap_or_default();
    let attempt = transaction
        .savepoint("apitap_merge")
        .await
        .map_err(merge_failed)?;
    let (merged, repeated) = match attempt.execute(merge(StagedRows::All).as_str(), &[]).await {
        Ok(merged) => {
            attempt.commit().await.map_err(merge_failed)?;
            (merged, false)
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::CARDINALITY_VIOLATION) => {
            attempt.rollback().await.map_err(merge_failed)?;
            // The anti-join is hash tables over the staged keys; temporary tables get no
            // statistics unless analyzed.
            transaction
                .batch_execute(&format!(
                    "SET LOCAL work_mem = '256MB'; {}",
                    plan.analyze_staging_statement()
                ))
                .await
                .map_err(merge_failed)?;
            let merged = transaction
                .execute(merge(StagedRows::LastOfEachKey).as_str(), &[])
                .await
                .map_err(merge_failed)?;
            (merged, true)
        }
        Err(e) => match refused {
            Some((rejects, records)) if e.as_db_error().is_some() => {
                attempt.rollback().await.map_err(merge_failed)?;
                let merged = merge_isolating(transaction, plan, rejects, records).await?;
                (merged, true)
            }
            _ => return Err(merge_failed(e).into()),
        },
    };
    tracing::info!(statement = "MERGE", table = %table, repeated_keys = repeated, rows_affected = merged, elapsed_ms = started.elapsed().as_millis() as u64, "sql.execute");
    Ok(())
}

/// A merge the server refused: the staged rows are numbered in arrival order and merged range
/// by range under savepoints, a refused range halved until each refused row stands alone and
/// goes to the reject file. Ranges go in order and each keeps the last record of a key, so
/// the last record still wins.
async fn merge_isolating(
    transaction: &mut tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
    rejects: &RejectFile,
    records: &[u64],
) -> Result<u64, LoadError> {
    let table = &plan.table;
    let failed = |e: tokio_postgres::Error| {
        SinkError::database("the merge (INSERT … ON CONFLICT)", table, &e)
    };
    transaction
        .batch_execute(&plan.number_staging_statement())
        .await
        .map_err(failed)?;
    let merge = plan
        .merge_statement(StagedRows::Numbered)
        .unwrap_or_default();
    let row_json = plan.staged_row_statement();
    let mut pending = vec![(1_i64, records.len() as i64)];
    let mut merged = 0;
    while let Some((first, last)) = pending.pop() {
        let savepoint = transaction.savepoint("apitap_rows").await.map_err(failed)?;
        match savepoint.execute(merge.as_str(), &[&first, &last]).await {
            Ok(n) => {
                savepoint.commit().await.map_err(failed)?;
                merged += n;
            }
            Err(e) if e.as_db_error().is_some() => {
                savepoint.rollback().await.map_err(failed)?;
                if first == last {
                    let row: String = transaction
                        .query_one(row_json.as_str(), &[&first])
                        .await
                        .map_err(failed)?
                        .get(0);
                    let reason =
                        format!("PostgreSQL refused the row: {}", crate::sink::refusal(&e));
                    let record = records[(first - 1) as usize];
                    rejects.add(record, None, &reason, &row)?;
                } else {
                    // Last in, first out: the first half is tried first, keeping row order.
                    let middle = first + (last - first) / 2;
                    pending.push((middle + 1, last));
                    pending.push((first, middle));
                }
            }
            Err(e) => return Err(failed(e).into()),
        }
    }
    Ok(merged)
}

/// Sends COPY data in psql-sized CopyData messages, then flushes: the server reads each
/// message whole before parsing it, so a batch-sized message would stall it while it
/// arrives. The pieces share `bytes`' buffer.
pub(crate) async fn send_copy_data<S>(
    sink: &mut S,
    mut bytes: Bytes,
) -> Result<(), tokio_postgres::Error>
where
    S: futures_util::Sink<Bytes, Error = tokio_postgres::Error> + Unpin,
{
    while !bytes.is_empty() {
        let piece = bytes.split_to(bytes.len().min(COPY_MESSAGE_BYTES));
        sink.feed(piece).await?;
    }
    sink.flush().await
}

/// Sends one COPY statement with `data` (whole rows) and returns the rows it loaded.
async fn copy_once(
    transaction: &tokio_postgres::Transaction<'_>,
    statement: &str,
    data: Bytes,
) -> Result<u64, tokio_postgres::Error> {
    let sink = transaction.copy_in::<_, Bytes>(statement).await?;
    futures_util::pin_mut!(sink);
    sink.feed(Bytes::from_static(COPY_HEADER)).await?;
    send_copy_data(&mut sink, data).await?;
    sink.send(Bytes::from_static(COPY_TRAILER)).await?;
    sink.finish().await
}

/// Loads one chunk's rows, setting aside those the server refuses (a constraint, a value it
/// will not take). Each attempt runs under a savepoint; a refused range is rolled back and
/// split in halves until the refused rows stand alone, so a chunk with one bad row costs
/// about 2·log2(rows) extra COPY statements and every good row still loads, in order.
async fn copy_isolating(
    transaction: &mut tokio_postgres::Transaction<'_>,
    statement: &str,
    bytes: &Bytes,
    rows: &CopyRows,
    rejects: &RejectFile,
    table: &TableName,
) -> Result<u64, LoadError> {
    let start_of = |row: usize| if row == 0 { 0 } else { rows.ends[row - 1] };
    let mut loaded = 0;
    let mut pending = vec![(0, rows.ends.len())];
    while let Some((first, end)) = pending.pop() {
        if first == end {
            continue;
        }
        let data = bytes.slice(start_of(first)..rows.ends[end - 1]);
        let savepoint = transaction
            .savepoint("apitap_rows")
            .await
            .map_err(|e| SinkError::database("SAVEPOINT", table, &e))?;
        match copy_once(&savepoint, statement, data).await {
            Ok(n) => {
                savepoint
                    .commit()
                    .await
                    .map_err(|e| SinkError::database("RELEASE SAVEPOINT", table, &e))?;
                loaded += n;
            }
            Err(e) if e.as_db_error().is_some() => {
                savepoint
                    .rollback()
                    .await
                    .map_err(|e| SinkError::database("ROLLBACK TO SAVEPOINT", table, &e))?;
                if end - first == 1 {
                    let reason =
                        format!("PostgreSQL refused the row: {}", crate::sink::refusal(&e));
                    rejects.add(
                        rows.records[first],
                        None,
                        &reason,
                        &row_json(&rows.batch, first),
                    )?;
                } else {
                    // Last in, first out: the first half is tried first, keeping row order.
                    let middle = first + (end - first) / 2;
                    pending.push((middle, end));
                    pending.push((first, middle));
                }
            }
            Err(e) => return Err(SinkError::database("COPY", table, &e).into()),
        }
    }
    Ok(loaded)
}

/// One row as a JSON object, for the reject file.
fn row_json(batch: &arrow_array::RecordBatch, row: usize) -> String {
    let mut writer = arrow_json::LineDelimitedWriter::new(Vec::new());
    match writer
        .write(&batch.slice(row, 1))
        .and_then(|()| writer.finish())
    {
        Ok(()) => String::from_utf8_lossy(&writer.into_inner())
            .trim_end()
            .to_string(),
        Err(e) => format!("(the row could not be shown: {e})"),
    }
}

/// The stages upstream of the encoder, joined to find out whether they ended cleanly.
pub(crate) struct Stages {
    /// In stream order.
    tasks: Vec<tokio::task::JoinHandle<Result<(), LoadError>>>,
    source_name: String,
}

fn joined(result: Result<Result<(), LoadError>, tokio::task::JoinError>) -> Result<(), LoadError> {
    result.map_err(|e| LoadError::Internal(format!("a load stage panicked: {e}")))?
}

impl Stages {
    /// One task producing the batches, labelled `source_name` in messages.
    pub(crate) fn single(
        task: tokio::task::JoinHandle<Result<(), LoadError>>,
        source_name: String,
    ) -> Stages {
        Stages {
            tasks: vec![task],
            source_name,
        }
    }

    /// Waits for every stage; the first error in stream order wins, since a later stage's
    /// error is often a consequence (a body cut short looks like malformed JSON).
    pub(crate) async fn join(self) -> Result<(), LoadError> {
        let mut result = Ok(());
        for task in self.tasks {
            let outcome = joined(task.await);
            result = result.and(outcome);
        }
        result
    }

    async fn check(
        self,
        encode: tokio::task::JoinHandle<Result<Option<String>, LoadError>>,
    ) -> Result<Option<String>, LoadError> {
        let upstream = self.join().await;
        let encode = encode
            .await
            .map_err(|e| LoadError::Internal(format!("a load stage panicked: {e}")))?;
        upstream.and(encode)
    }

    /// For when a stage stopped early: the reason it returned.
    pub(crate) async fn first_error(self) -> LoadError {
        let source_name = self.source_name.clone();
        match self.join().await {
            Err(e) => e,
            Ok(()) => LoadError::Internal(format!(
                "{source_name}: the decode stage stopped without a reason"
            )),
        }
    }
}
