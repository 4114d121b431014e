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
use crate::sink::{ConnectOptions, LoadPlan, SinkError, describe_target, has_unique_key};
use crate::source::paginate::{PageFacts, Pager, PaginationConfig};
use crate::source::{Body, Http, Source, SourceError, fetch_page, redact_url};

/// How the load treats rows already in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Add the records to the table.
    Append,
    /// Replace the table's rows with the records, atomically.
    Replace,
    /// Insert new keys and update existing ones (`--key`); the last record of a key wins.
    Merge,
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
    pub ignore_unknown_fields: bool,
    /// Let `--mode replace` empty the table when the source has no records.
    pub allow_empty: bool,
    /// Key columns for `--mode merge` (empty otherwise).
    pub merge_keys: Vec<String>,
    pub max_record_bytes: usize,
}

/// What a finished load did.
#[derive(Debug, Clone)]
pub struct LoadSummary {
    pub table: TableName,
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
    #[error("internal error: {0}")]
    Internal(String),
}

/// Largest CopyData message sent to the server.
const COPY_MESSAGE_BYTES: usize = 64 * 1024;

/// Size of the chunks read from the source.
const CHUNK_BYTES: usize = 256 * 1024;

/// Runs one load. See the module docs.
///
/// # Errors
/// Any failure of any stage; the transaction is rolled back and the table left unchanged.
pub async fn load(
    request: &LoadRequest,
    connect: &ConnectOptions,
    progress: Arc<Progress>,
) -> Result<LoadSummary, LoadError> {
    // A paged source is fetched by the pager, page by page; any other is opened as a stream.
    let pager = match (&request.pagination, &request.source) {
        (Some(config), Source::Http(url)) => {
            let base = reqwest::Url::parse(url).map_err(|e| SourceError::Request {
                url: redact_url(url),
                attempts: 0,
                reason: format!("invalid URL: {e}"),
            })?;
            let pager = Pager::new(config.clone(), base).map_err(LoadError::Pagination)?;
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
        (None, _) => None,
    };
    let (body, mut client) = tokio::try_join!(
        async {
            match pager {
                None => request
                    .source
                    .open(&request.http, &progress)
                    .await
                    .map(Some)
                    .map_err(LoadError::from),
                Some(_) => Ok(None),
            }
        },
        async { connect.connect().await.map_err(LoadError::from) },
    )?;

    let (chunk_tx, chunk_rx) = mpsc::channel::<Chunk>(8);
    let (batch_tx, batch_rx) = mpsc::channel::<Decoded>(4);
    let (sample_tx, sample_rx) = oneshot::channel::<Sample>();
    let (plan_tx, plan_rx) = oneshot::channel::<Arc<LoadPlan>>();

    let span = tracing::info_span!("http.ndjson_stream", source = %request.source);
    let fetch = match (body, pager) {
        (_, Some(pager)) => tokio::spawn(
            fetch_pages(pager, request.clone(), chunk_tx, progress.clone()).instrument(span),
        ),
        (Some(body), None) => tokio::spawn(
            fetch(body, chunk_tx, progress.clone(), request.source.clone()).instrument(span),
        ),
        (None, None) => unreachable!("a source without pagination is opened above"),
    };
    let decode = {
        let stage = DecodeStage::new(request, sample_tx, plan_rx, batch_tx);
        let span = tracing::info_span!("transform.load", table = %request.table);
        tokio::task::spawn_blocking(move || span.in_scope(|| stage.run(chunk_rx)))
    };
    let stages = Stages {
        fetch,
        decode,
        source_name: request.source.to_string(),
    };

    let Ok(sample) = sample_rx.await else {
        // The decode stage stopped before it had a sample: its error (or the fetch's) says why.
        return Err(stages.first_error().await);
    };

    let target = describe_target(&client, &request.table).await?;
    let plan = Arc::new(LoadPlan::new(
        &target,
        &sample,
        request.sample,
        &request.merge_keys,
    )?);
    if !plan.merge_keys.is_empty()
        && target.columns.is_some()
        && !has_unique_key(&client, &plan.table, &plan.merge_keys).await?
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
    let table = plan.table.clone();
    if plan.copy_columns == 0 && sample.records() > 0 {
        return Err(LoadError::NoFields {
            source_name: request.source.to_string(),
            table,
        });
    }
    if plan_tx.send(plan.clone()).is_err() {
        return Err(stages.first_error().await);
    }

    let (copy_tx, mut copy_rx) = mpsc::channel::<(Bytes, u64)>(4);
    let encode = {
        let plan = plan.clone();
        let source_name = request.source.to_string();
        tokio::task::spawn_blocking(move || encode(batch_rx, copy_tx, &plan, &source_name))
    };

    let transaction = client
        .transaction()
        .await
        .map_err(|e| SinkError::database("starting a transaction", &table, &e))?;
    for (statement, action) in [
        (plan.create_schema.clone(), "CREATE SCHEMA"),
        (plan.create_table.clone(), "CREATE TABLE"),
        (
            (request.mode == Mode::Replace).then(|| plan.delete_statement()),
            "DELETE",
        ),
        (plan.staging_statement(), "CREATE TEMP TABLE"),
    ] {
        if let Some(sql) = statement {
            let started = std::time::Instant::now();
            transaction
                .batch_execute(&sql)
                .instrument(tracing::info_span!("sql.execute", statement = action, table = %table))
                .await
                .map_err(|e| SinkError::database(action, &table, &e))?;
            tracing::info!(statement = action, table = %table, elapsed_ms = started.elapsed().as_millis() as u64, "sql.execute");
        }
    }

    let mut rows = 0;
    if plan.copy_columns > 0 {
        let copy_failed =
            |e: tokio_postgres::Error| LoadError::from(SinkError::database("COPY", &table, &e));
        let copy = async {
            let sink = transaction
                .copy_in::<_, Bytes>(&plan.copy_statement())
                .await
                .map_err(copy_failed)?;
            futures_util::pin_mut!(sink);
            sink.send(Bytes::from_static(COPY_HEADER))
                .await
                .map_err(copy_failed)?;
            while let Some((mut bytes, batch_rows)) = copy_rx.recv().await {
                // psql-sized messages: the server reads each CopyData message whole before
                // parsing it, so a batch-sized message would stall it while it arrives.
                while !bytes.is_empty() {
                    let piece = bytes.split_to(bytes.len().min(COPY_MESSAGE_BYTES));
                    sink.feed(piece).await.map_err(copy_failed)?;
                }
                sink.flush().await.map_err(copy_failed)?;
                progress.add_rows(batch_rows);
            }
            // The encode stage has stopped; only a clean end of every stage may finish the
            // COPY. Dropping the sink unfinished aborts it.
            stages.check(encode).await?;
            sink.send(Bytes::from_static(COPY_TRAILER))
                .await
                .map_err(copy_failed)?;
            sink.finish().await.map_err(copy_failed)
        };
        let started = std::time::Instant::now();
        rows = copy
            .instrument(tracing::info_span!("sql.execute", statement = "COPY", table = %table))
            .await?;
        tracing::info!(statement = "COPY", table = %table, rows_affected = rows, elapsed_ms = started.elapsed().as_millis() as u64, "sql.execute");
    } else {
        stages.check(encode).await?;
    }

    if rows == 0 && request.mode == Mode::Replace && !request.allow_empty {
        return Err(LoadError::EmptyReplace { table });
    }
    if let Some(repeated_keys) = plan.repeated_keys_query().filter(|_| rows > 0) {
        let started = std::time::Instant::now();
        let merge_failed = |e: tokio_postgres::Error| {
            SinkError::database("the merge (INSERT … ON CONFLICT)", &table, &e)
        };
        // The key check and the de-duplication are hash tables over the staged keys.
        transaction
            .batch_execute(&format!(
                "SET LOCAL work_mem = '256MB'; {}",
                plan.analyze_staging_statement()
            ))
            .await
            .map_err(merge_failed)?;
        let dedupe: bool = transaction
            .query_one(repeated_keys.as_str(), &[])
            .await
            .map_err(merge_failed)?
            .get(0);
        let merge = plan.merge_statement(dedupe).unwrap_or_default();
        let merged = transaction
            .execute(merge.as_str(), &[])
            .instrument(tracing::info_span!("sql.execute", statement = "MERGE", table = %table))
            .await
            .map_err(merge_failed)?;
        tracing::info!(statement = "MERGE", table = %table, repeated_keys = dedupe, rows_affected = merged, elapsed_ms = started.elapsed().as_millis() as u64, "sql.execute");
    }
    transaction
        .commit()
        .instrument(tracing::info_span!("sql.execute", statement = "COMMIT", table = %table))
        .await
        .map_err(|e| SinkError::database("COMMIT", &table, &e))?;
    let mut figures = progress.figures();
    figures.rows = rows;
    figures.throttle_waits = request.http.throttle.waits();
    Ok(LoadSummary {
        table,
        figures,
        created_table: plan.create_table.is_some(),
    })
}

/// The upstream stages, joined to find out whether they ended cleanly.
struct Stages {
    fetch: tokio::task::JoinHandle<Result<(), LoadError>>,
    decode: tokio::task::JoinHandle<Result<(), LoadError>>,
    source_name: String,
}

fn joined(result: Result<Result<(), LoadError>, tokio::task::JoinError>) -> Result<(), LoadError> {
    result.map_err(|e| LoadError::Internal(format!("a load stage panicked: {e}")))?
}

impl Stages {
    /// Waits for every stage; the first error in stream order wins, since a later stage's
    /// error is often a consequence (a body cut short looks like malformed JSON).
    async fn check(
        self,
        encode: tokio::task::JoinHandle<Result<(), LoadError>>,
    ) -> Result<(), LoadError> {
        let fetch = joined(self.fetch.await);
        let decode = joined(self.decode.await);
        let encode = joined(encode.await);
        fetch.and(decode).and(encode)
    }

    /// For when the decode stage stopped early: the reason, which it or the fetch returned.
    async fn first_error(self) -> LoadError {
        let source_name = self.source_name.clone();
        let fetch = joined(self.fetch.await);
        let decode = joined(self.decode.await);
        match fetch.and(decode) {
            Err(e) => e,
            Ok(()) => LoadError::Internal(format!(
                "{source_name}: the decode stage stopped without a reason"
            )),
        }
    }
}

/// Reads the body in chunks. Stops quietly when the decode stage is gone (it has its reason).
async fn fetch(
    mut body: Body,
    tx: mpsc::Sender<Chunk>,
    progress: Arc<Progress>,
    source: Source,
) -> Result<(), LoadError> {
    loop {
        let mut buf = BytesMut::with_capacity(CHUNK_BYTES);
        while buf.len() < CHUNK_BYTES / 2 {
            let n = body
                .read_buf(&mut buf)
                .await
                .map_err(|e| LoadError::Source(source.read_error(&e)))?;
            if n == 0 {
                break;
            }
        }
        if buf.is_empty() {
            tracing::info!(bytes = progress.figures().bytes, "source read to the end");
            return Ok(());
        }
        progress.add_bytes(buf.len() as u64);
        if tx.send(Chunk::Bytes(buf.freeze())).await.is_err() {
            return Ok(());
        }
    }
}

/// What flows from the fetch stage to the decode stage.
enum Chunk {
    /// Part of one streamed body; the decode stage finds the records.
    Bytes(Bytes),
    /// One whole page whose records the fetch stage has already found (it needed to, to
    /// know the next page).
    Page(FramedPage),
}

struct FramedPage {
    body: Bytes,
    /// Each record's byte range in `body`, and where it starts.
    records: Vec<(usize, usize, Position)>,
    /// `page 3 (URL)`, for messages.
    label: String,
}

/// Fetches pages until the pager says the source is exhausted, passing each on with its
/// records located, in page order. Where the pager knows the URLs ahead, up to its
/// concurrency pages are in flight; every 429 halves that, a run of good pages grows it back.
/// Stops quietly when the decode stage is gone (it has its reason).
async fn fetch_pages(
    mut pager: Pager,
    request: LoadRequest,
    tx: mpsc::Sender<Chunk>,
    progress: Arc<Progress>,
) -> Result<(), LoadError> {
    let source_name = request.source.to_string();
    let http = &request.http;
    let most = pager.concurrency();
    let mut limit = most;
    let mut good_pages = 0;
    let mut rejections_seen = http.throttle.rejections();
    let mut in_flight = futures_util::stream::FuturesOrdered::new();
    // Absolute index (from 0) of the next page to request.
    let mut next_index = 0u64;
    loop {
        while in_flight.len() < limit {
            let ahead = next_index - pager.pages_fetched();
            let url = if most == 1 {
                pager.url().clone()
            } else {
                pager.url_ahead(ahead)
            };
            let label = format!("page {} ({})", next_index + 1, redact_url(url.as_str()));
            let progress = &*progress;
            in_flight.push_back(async move {
                let page = fetch_page(http, &url, progress).await;
                (label, page)
            });
            next_index += 1;
            if most == 1 {
                break;
            }
        }
        let Some((label, page)) = futures_util::StreamExt::next(&mut in_flight).await else {
            return Ok(());
        };
        let page = page?;
        progress.add_bytes(page.body.len() as u64);
        progress.add_page();
        let (framed, captured) = frame_page(page.body, label.clone(), &request, pager.captures())
            .map_err(|error| LoadError::Decode {
            source_name: format!("{source_name}, {label}"),
            error,
        })?;
        let facts = PageFacts {
            records: framed.records.len() as u64,
            captured,
            link_next: page.link_next,
            digest: digest(&framed.body),
        };
        if tx.send(Chunk::Page(framed)).await.is_err() {
            return Ok(());
        }
        if pager
            .advance(&facts)
            .map_err(LoadError::Pagination)?
            .is_none()
        {
            // Pages requested past the end are dropped unread.
            tracing::info!(pages = pager.pages_fetched(), "last page reached");
            return Ok(());
        }
        let rejections = http.throttle.rejections();
        if rejections > rejections_seen {
            limit = (limit / 2).max(1);
            rejections_seen = rejections;
            good_pages = 0;
            tracing::info!(concurrency = limit, "rate limited; fewer pages in flight");
        } else if limit < most {
            good_pages += 1;
            if good_pages >= 2 * limit {
                limit += 1;
                good_pages = 0;
            }
        }
    }
}

/// Locates a page's records: at the records path inside the page's document, or as NDJSON
/// lines or array elements. Also returns the raw text of the values the pager asked for.
fn frame_page(
    body: Bytes,
    label: String,
    request: &LoadRequest,
    captures: &[JsonPointer],
) -> Result<(FramedPage, Vec<Option<String>>), DecodeError> {
    // A final newline keeps the last NDJSON line inside the body (not in the framer's
    // carry), so every record is a range of it.
    let body = if request.records_path.is_none() && !body.is_empty() && body.last() != Some(&b'\n')
    {
        Bytes::from([&body[..], b"\n"].concat())
    } else {
        body
    };
    let base = body.as_ptr() as usize;
    let mut records = Vec::new();
    let mut locate = |record: &[u8], at: Position| {
        let start = record.as_ptr() as usize - base;
        records.push((start, start + record.len(), at));
        Ok::<(), DecodeError>(())
    };
    let captured = match &request.records_path {
        Some(path) => {
            let refs: Vec<&JsonPointer> = captures.iter().collect();
            let scanned = scan_document(&body, path, &refs, &mut locate)?;
            scanned
                .captured
                .iter()
                .map(|c| c.map(|b| String::from_utf8_lossy(b).into_owned()))
                .collect()
        }
        None => {
            let mut framer = Framer::new(request.format, request.max_record_bytes);
            framer.push(&body, &mut locate)?;
            framer.finish(&mut locate)?;
            Vec::new()
        }
    };
    Ok((
        FramedPage {
            body,
            records,
            label,
        },
        captured,
    ))
}

/// A cheap fingerprint of a page: its length and its first and last 64 KiB.
fn digest(body: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.len().hash(&mut hasher);
    body[..body.len().min(65536)].hash(&mut hasher);
    body[body.len().saturating_sub(65536)..].hash(&mut hasher);
    hasher.finish()
}

/// Why the decode stage stopped early.
enum Stop {
    Failed(DecodeError),
    /// The next stage or the planner went away; they report why.
    Cancelled,
}

impl From<DecodeError> for Stop {
    fn from(e: DecodeError) -> Stop {
        Stop::Failed(e)
    }
}

/// How the decode stage finds records in the bytes.
enum Framing {
    /// NDJSON or a JSON array, record by record as the bytes arrive.
    Stream(Framer),
    /// The array at a pointer inside one document, which is read whole first (bounded).
    Document {
        records: JsonPointer,
        buffer: Vec<u8>,
        max_bytes: usize,
    },
}

/// Frames and decodes records, after first gathering the sample for the planner.
struct DecodeStage {
    framing: Option<Framing>,
    sample_limit: usize,
    sample: Sample,
    sampled: Vec<u8>,
    sampled_at: Vec<(usize, Position)>,
    exchange: Option<(oneshot::Sender<Sample>, oneshot::Receiver<Arc<LoadPlan>>)>,
    decoder: Option<RecordDecoder>,
    batch_size: usize,
    reject_unknown_fields: bool,
    tx: mpsc::Sender<Decoded>,
    source_name: String,
    /// Records decoded, and the input format once detected, for the log.
    records: u64,
    framer_format: Option<Format>,
    /// Records delivered so far, and the first record number and label of each page.
    delivered: u64,
    pages: Vec<(u64, String)>,
}

impl DecodeStage {
    fn new(
        request: &LoadRequest,
        sample_tx: oneshot::Sender<Sample>,
        plan_rx: oneshot::Receiver<Arc<LoadPlan>>,
        tx: mpsc::Sender<Decoded>,
    ) -> DecodeStage {
        DecodeStage {
            // Pages arrive framed by the fetch stage.
            framing: request
                .pagination
                .is_none()
                .then(|| match &request.records_path {
                    Some(records) => Framing::Document {
                        records: records.clone(),
                        buffer: Vec::new(),
                        max_bytes: request.max_record_bytes,
                    },
                    None => Framing::Stream(Framer::new(request.format, request.max_record_bytes)),
                }),
            sample_limit: request.sample.max(1),
            sample: Sample::default(),
            sampled: Vec::new(),
            sampled_at: Vec::new(),
            exchange: Some((sample_tx, plan_rx)),
            decoder: None,
            batch_size: request.batch_size,
            reject_unknown_fields: !request.ignore_unknown_fields,
            tx,
            source_name: request.source.to_string(),
            records: 0,
            framer_format: None,
            delivered: 0,
            pages: Vec::new(),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Chunk>) -> Result<(), LoadError> {
        let result = (|| {
            let mut framing = self.framing.take();
            while let Some(chunk) = rx.blocking_recv() {
                match (chunk, &mut framing) {
                    (Chunk::Page(page), _) => {
                        self.pages.push((self.delivered + 1, page.label));
                        for (start, end, at) in page.records {
                            self.deliver(&page.body[start..end], at)?;
                        }
                    }
                    (Chunk::Bytes(bytes), Some(Framing::Stream(framer))) => {
                        framer.push(&bytes, &mut |record, at| self.deliver(record, at))?;
                    }
                    (
                        Chunk::Bytes(bytes),
                        Some(Framing::Document {
                            buffer, max_bytes, ..
                        }),
                    ) => {
                        if buffer.len() + bytes.len() > *max_bytes {
                            return Err(Stop::Failed(DecodeError::DocumentTooLarge {
                                limit: *max_bytes,
                            }));
                        }
                        buffer.extend_from_slice(&bytes);
                    }
                    (Chunk::Bytes(_), None) => {}
                }
            }
            match framing {
                Some(Framing::Stream(mut framer)) => {
                    framer.finish(&mut |record, at| self.deliver(record, at))?;
                    self.framer_format = framer.format();
                }
                Some(Framing::Document {
                    records, buffer, ..
                }) => {
                    scan_document(&buffer, &records, &[], &mut |record, at| {
                        self.deliver(record, at)
                    })?;
                }
                None => {}
            }
            if self.decoder.is_none() {
                self.start_decoding()?;
            }
            if let Some(decoder) = &mut self.decoder
                && let Some(last) = decoder.finish()?
            {
                self.tx.blocking_send(last).map_err(|_| Stop::Cancelled)?;
            }
            let format = self.framer_format.map(|f| format!("{f:?}"));
            tracing::info!(records = self.records, format, "all records decoded");
            Ok::<(), Stop>(())
        })();
        match result {
            Ok(()) | Err(Stop::Cancelled) => Ok(()),
            Err(Stop::Failed(error)) => {
                // Paged sources: say which page the failing record came from.
                let page = error.record().and_then(|record| {
                    self.pages
                        .iter()
                        .rev()
                        .find(|(first, _)| *first <= record)
                        .map(|(_, label)| label.clone())
                });
                let source_name = match page {
                    Some(label) => format!("{}, {label}", self.source_name),
                    None => self.source_name,
                };
                Err(LoadError::Decode { source_name, error })
            }
        }
    }

    /// A record from the input, in order; counted for page labels.
    fn deliver(&mut self, record: &[u8], at: Position) -> Result<(), Stop> {
        self.delivered += 1;
        self.on_record(record, at)
    }

    fn on_record(&mut self, record: &[u8], at: Position) -> Result<(), Stop> {
        if let Some(decoder) = &mut self.decoder {
            self.records += 1;
            if let Some(decoded) = decoder.push(record, at)? {
                self.tx
                    .blocking_send(decoded)
                    .map_err(|_| Stop::Cancelled)?;
            }
            return Ok(());
        }
        self.sample.add(record);
        self.sampled_at.push((self.sampled.len(), at));
        self.sampled.extend_from_slice(record);
        if self.sampled_at.len() >= self.sample_limit {
            self.start_decoding()?;
        }
        Ok(())
    }

    /// Hands the sample to the planner, waits for the plan, then decodes the sampled records.
    fn start_decoding(&mut self) -> Result<(), Stop> {
        let (sample_tx, plan_rx) = self.exchange.take().ok_or(Stop::Cancelled)?;
        sample_tx
            .send(std::mem::take(&mut self.sample))
            .map_err(|_| Stop::Cancelled)?;
        let plan = plan_rx.blocking_recv().map_err(|_| Stop::Cancelled)?;
        let copy_columns = plan.copy_columns;
        self.decoder = Some(RecordDecoder::new(
            &plan.decode,
            DecodeOptions {
                batch_size: self.batch_size,
                reject_unknown_fields: self.reject_unknown_fields,
                unknown_field_hint: plan.unknown_field_hint.clone(),
                must_stay_null: (copy_columns..plan.decode.columns.len())
                    .map(|i| (i, plan.late_field_hint.clone()))
                    .collect(),
            },
        ));
        let sampled = std::mem::take(&mut self.sampled);
        let sampled_at = std::mem::take(&mut self.sampled_at);
        let ends = sampled_at
            .iter()
            .skip(1)
            .map(|(s, _)| *s)
            .chain([sampled.len()]);
        for ((start, at), end) in sampled_at.iter().zip(ends) {
            self.on_record(&sampled[*start..end], *at)?;
        }
        Ok(())
    }
}

/// Encodes batches to COPY bytes. Stops quietly when the COPY is gone (it has its reason).
fn encode(
    mut rx: mpsc::Receiver<Decoded>,
    tx: mpsc::Sender<(Bytes, u64)>,
    plan: &LoadPlan,
    source_name: &str,
) -> Result<(), LoadError> {
    let mut encoder = CopyEncoder::new(plan.copy_names(), plan.copy_types());
    // Columns left to their defaults are decoded (to catch values for them) but not sent.
    let projection: Option<Vec<usize>> =
        (plan.copy_columns < plan.decode.columns.len()).then(|| (0..plan.copy_columns).collect());
    let mut capacity = 1 << 20;
    while let Some(decoded) = rx.blocking_recv() {
        let batch = match &projection {
            Some(columns) => decoded
                .batch
                .project(columns)
                .map_err(|e| LoadError::Internal(e.to_string()))?,
            None => decoded.batch,
        };
        let mut out = BytesMut::with_capacity(capacity);
        encoder
            .encode(&batch, decoded.first_record, &mut out)
            .map_err(|error| LoadError::Encode {
                source_name: source_name.to_string(),
                error,
            })?;
        capacity = capacity.max(out.len());
        if tx
            .blocking_send((out.freeze(), batch.num_rows() as u64))
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}
