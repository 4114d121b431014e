//! `apitap load`: its flags, the load they describe, and what it prints when done.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

mod report;
use report::report;

use super::{Outcome, interrupted};
use crate::base::Origin;
use crate::base::options::{
    HttpMethod, InputFormat, Mode, Nested, OnError, ProgressMode, ReplaceWith, SchemaPolicy,
    WriteMethod,
};
use crate::load::{Load, LoadSpec, defaults};
use crate::progress::Progress;
use crate::schema::TableName;
use crate::sink::ConnectOptions;
use crate::source::RetryPolicy;
use crate::source::auth::AuthConfig;
use crate::source::paginate::PaginationConfig;
use crate::source::throttle::RateLimit;

#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    /// An http(s) URL, a file path, or `-` for stdin. Gzip, zstd and bzip2 are detected and
    /// decompressed.
    pub source: String,

    /// Target table, `[schema.]table`; created (with its schema) when missing.
    #[arg(help_heading = "Table", long, short = 't')]
    pub table: String,

    /// `append` adds rows; `replace` swaps the table's rows for the new ones atomically;
    /// `merge` upserts on --key (the last record of a repeated key wins).
    #[arg(help_heading = "Table", long, value_enum, default_value_t = Mode::Append)]
    pub mode: Mode,

    /// How `--mode replace` replaces an existing table: `swap` loads a new table and swaps it
    /// in with the old one's indexes, constraints, triggers and grants (refused when views or
    /// other tables' foreign keys depend on it); `delete` deletes and reloads the rows in place.
    #[arg(help_heading = "Table", long, value_enum, default_value_t = ReplaceWith::Swap)]
    pub replace_with: ReplaceWith,

    /// Incremental loads: remember the highest loaded value of this field, in apitap._state,
    /// written in the load's transaction.
    #[arg(help_heading = "Incremental loads", long, value_name = "FIELD")]
    pub cursor_field: Option<String>,

    /// Send the remembered value to the API in this query parameter on the next run.
    #[arg(
        help_heading = "Incremental loads",
        long,
        value_name = "NAME",
        requires = "cursor_field"
    )]
    pub cursor_param: Option<String>,

    /// The key of the load's state in apitap._state (default: the --table text).
    #[arg(help_heading = "Incremental loads", long, value_name = "KEY")]
    pub state_key: Option<String>,

    /// Ignore the stored state this time: the cursor, or an unfinished backfill (it is still
    /// updated).
    #[arg(help_heading = "Incremental loads", long)]
    pub full_refresh: bool,

    /// Citus: make a table the load creates a distributed table, sharded by this column.
    #[arg(help_heading = "Citus", long, value_name = "COLUMN")]
    pub distribute_by: Option<String>,

    /// Citus: colocate the new distributed table with this one (same shards and placement).
    #[arg(
        help_heading = "Citus",
        long,
        value_name = "TABLE",
        requires = "distribute_by"
    )]
    pub colocate_with: Option<String>,

    /// Citus: shards of the new distributed table (default: citus.shard_count).
    #[arg(
        help_heading = "Citus",
        long,
        value_name = "N",
        requires = "distribute_by"
    )]
    pub shard_count: Option<u32>,

    /// Citus: make a table the load creates a reference table (a copy on every node).
    #[arg(help_heading = "Citus", long, conflicts_with = "distribute_by")]
    pub reference_table: bool,

    /// Seconds to wait for another run of this load (same state key; same table for replace
    /// and merge) to finish before failing with who holds it.
    #[arg(help_heading = "Table", long, value_name = "SECS", default_value_t = crate::load::defaults::LOCK_TIMEOUT_SECS)]
    pub lock_timeout: f64,

    /// COPY through N connections at once, into a staging table the load's transaction
    /// publishes: faster when the server has idle cores (append and replace only).
    #[arg(help_heading = "Table", long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub copy_streams: u16,

    /// Commit every N pages of a paged source, recording where to resume: a rerun after a
    /// crash goes on after the last commit, with no row twice and none missing.
    #[arg(help_heading = "Incremental loads", long, value_name = "PAGES", value_parser = clap::value_parser!(u64).range(1..))]
    pub commit_every: Option<u64>,

    /// How rows are written: binary `copy`, or batched `insert` for servers and proxies
    /// without COPY.
    #[arg(long, value_enum, default_value_t = WriteMethod::Copy, help_heading = "Table")]
    pub method: WriteMethod,

    /// A record that cannot be decoded or converted: `fail` the load (the default), or
    /// `reject` it to --reject-file and load the rest.
    #[arg(long, value_enum, default_value_t = OnError::Fail, help_heading = "Table")]
    pub on_error: OnError,

    /// Where --on-error reject writes set-aside records (NDJSON with the reason); written
    /// only if the load commits.
    #[arg(
        long,
        default_value = defaults::REJECT_FILE,
        value_name = "PATH",
        help_heading = "Table"
    )]
    pub reject_file: PathBuf,

    /// Fail the load when more records than this are rejected.
    #[arg(long, value_name = "N", help_heading = "Table")]
    pub max_rejects: Option<u64>,

    /// Rows per INSERT statement with --method insert.
    #[arg(long, default_value_t = defaults::INSERT_BATCH, value_name = "N", help_heading = "Table")]
    pub insert_batch: usize,

    /// Key columns for --mode merge, comma-separated; a new table gets them as primary key. With
    /// --nested tables, the columns child rows link to (in any mode).
    #[arg(
        help_heading = "Table",
        long = "key",
        value_delimiter = ',',
        value_name = "COLUMN[,COLUMN…]"
    )]
    pub keys: Vec<String>,

    #[arg(help_heading = "Input", long, value_enum, default_value_t = InputFormat::Auto)]
    pub format: InputFormat,

    /// The records are the array at this JSON pointer inside one JSON document, e.g. /data
    /// for `{"data": [...], "next": …}`. The document is read whole (up to
    /// --max-record-bytes).
    #[arg(help_heading = "Input", long, value_name = "POINTER")]
    pub records_path: Option<String>,

    /// Records read before loading, to infer a new table's columns.
    #[arg(help_heading = "Table", long, default_value_t = defaults::SAMPLE, value_name = "N")]
    pub sample: usize,

    /// Fields the table has no column for: `evolve` adds nullable columns, `freeze` fails
    /// naming the field, `discard` drops them and says which.
    #[arg(help_heading = "Table", long, value_enum, default_value_t = SchemaPolicy::Evolve)]
    pub schema: SchemaPolicy,

    /// Nested objects: `keep` loads each top-level field whole (objects and arrays as jsonb);
    /// `flatten` makes the fields of objects columns named by their path, joined with `__`
    /// (`user__screen_name`); arrays stay jsonb. `tables` flattens too, and loads each array
    /// into a child table `<table>__<path>`, one row per element, linked by `_parent_<key>`
    /// (--key, or the table's primary key; else a generated `_apitap_id`) and `_idx`.
    #[arg(help_heading = "Table", long, value_enum, default_value_t = Nested::Keep)]
    pub nested: Nested,

    /// With --nested flatten or tables: how many levels of objects become columns (1 to 64); deeper
    /// objects land whole, as jsonb.
    #[arg(help_heading = "Table", long, value_name = "N")]
    pub max_nesting: Option<usize>,

    /// The same as --schema discard.
    #[arg(help_heading = "Table", long)]
    pub ignore_unknown_fields: bool,

    /// With --schema evolve: make a column text when the sample holds a value its type
    /// refuses (`"A-7"` in an integer column), converting the values already in it.
    #[arg(help_heading = "Table", long)]
    pub widen_to_text: bool,

    /// Let `--mode replace` empty the table when the source has no records.
    #[arg(help_heading = "Table", long)]
    pub allow_empty: bool,

    /// Records per Arrow batch.
    #[arg(help_heading = "Input", long, default_value_t = defaults::BATCH_SIZE, value_name = "N")]
    pub batch_size: usize,

    /// An HTTP header for the request, `'Name: value'`; `${VAR}` is taken from the
    /// environment. Repeatable. Values are never printed.
    #[arg(
        help_heading = "HTTP sources",
        long = "header",
        short = 'H',
        value_name = "'NAME: VALUE'"
    )]
    pub headers: Vec<String>,

    /// A query parameter added to the URL, `name=value`, with `${VAR}` from the environment.
    /// Repeatable.
    #[arg(
        help_heading = "HTTP sources",
        long = "query",
        value_name = "NAME=VALUE"
    )]
    pub query: Vec<String>,

    /// Fetch an HTTP source page by page, as an inline mapping, e.g.
    /// '{kind: page_number, page_size: 1000}' or
    /// '{kind: cursor, cursor_param: after, cursor_path: /next_cursor, has_more_path: /has_more}'.
    /// Kinds: limit_offset, page_number, page_only, cursor, next_url, link_header.
    #[arg(help_heading = "HTTP sources", long, value_name = "MAPPING")]
    pub pagination: Option<String>,

    /// Authentication, as an inline mapping with secrets from the environment:
    /// '{kind: bearer, token: "${TOKEN}"}', '{kind: basic, username: u, password: "${PW}"}',
    /// '{kind: api_key, name: X-Api-Key, value: "${KEY}", in: header|query}',
    /// '{kind: oauth2_client_credentials, token_url: …, client_id: …, client_secret: "${SECRET}", scope: …}'.
    #[arg(help_heading = "HTTP sources", long, value_name = "MAPPING")]
    pub auth: Option<String>,

    /// Pace requests, as an inline mapping: '{requests_per_second: 10, burst: 5}'. Shared by
    /// concurrent page fetches; 429s and exhausted X-RateLimit windows pause them all.
    #[arg(help_heading = "HTTP sources", long, value_name = "MAPPING")]
    pub rate_limit: Option<String>,

    /// HTTP method: GET, or POST with --body.
    #[arg(help_heading = "HTTP sources", long, value_enum, default_value_t = HttpMethod::Get)]
    pub http_method: HttpMethod,

    /// JSON body sent with --http-method post; `${VAR}` and the date helpers are expanded.
    #[arg(help_heading = "HTTP sources", long, value_name = "JSON")]
    pub body: Option<String>,

    /// Seconds to wait for an HTTP connection.
    #[arg(
        help_heading = "HTTP sources",
        long,
        default_value_t = defaults::CONNECT_TIMEOUT_SECS,
        value_name = "SECS"
    )]
    pub connect_timeout: f64,

    /// Seconds to wait for each read of a response (there is no total timeout).
    #[arg(
        help_heading = "HTTP sources",
        long,
        default_value_t = defaults::READ_TIMEOUT_SECS,
        value_name = "SECS"
    )]
    pub read_timeout: f64,

    /// Seconds the whole of each HTTP request may take, body included: bounds a server that
    /// trickles. None by default, as it would cut long streams.
    #[arg(help_heading = "HTTP sources", long, value_name = "SECS")]
    pub timeout: Option<f64>,

    /// A PEM file of CA certificates to trust for https sources (a private CA), besides the
    /// system's roots (or the bundled web roots where the system has none).
    #[arg(help_heading = "HTTP sources", long, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,

    /// Follow redirects and next links to other hosts, without any credential (by default
    /// they fail the load, so credentials never reach another origin).
    #[arg(help_heading = "HTTP sources", long)]
    pub allow_cross_host: bool,

    /// The most bytes one page may hold, after decompression.
    #[arg(help_heading = "HTTP sources", long, value_name = "BYTES", default_value_t = defaults::MAX_PAGE_BYTES)]
    pub max_page_bytes: usize,

    /// A text to keep out of every output, log and file (`${VAR}` allowed); repeatable.
    /// Auth values, URL passwords and the values of headers and query parameters named like
    /// credentials (Authorization, X-Api-Key, api_key, access_token…) are kept out already.
    #[arg(help_heading = "HTTP sources", long = "secret", value_name = "TEXT")]
    pub secrets: Vec<String>,

    /// Retries of failed requests (connection errors, timeouts, 408, 429, 5xx), as an inline
    /// mapping: '{max_attempts: 5, min_delay_secs: 0.5, max_delay_secs: 30}' (the defaults).
    #[arg(help_heading = "HTTP sources", long, value_name = "MAPPING")]
    pub retry: Option<String>,

    /// Decode records on N threads (1: one thread). Default: as many as the cores the
    /// server does not need, up to 4 (docs/loading.md).
    #[arg(help_heading = "Input", long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub decode_threads: Option<u16>,

    /// Longest record (or, with --records-path, document) accepted, in bytes.
    #[arg(help_heading = "Input", long, default_value_t = defaults::MAX_RECORD_BYTES, value_name = "BYTES")]
    pub max_record_bytes: usize,

    /// PostgreSQL URL or `key=value` string; else DATABASE_URL, else libpq's PG* variables.
    #[arg(
        help_heading = "Connection and output",
        long,
        env = "DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    #[arg(help_heading = "Connection and output", long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,

    /// Write the summary as JSON to this file, or `-` for stdout.
    #[arg(help_heading = "Connection and output", long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,

    /// Do not print the summary line on stderr.
    #[arg(help_heading = "Connection and output", long, short = 'q')]
    pub quiet: bool,

    /// Show what the load would do and write nothing: connect read-only, sample, and print
    /// the target table, the DDL, each column's type and why, the merge keys, and the first N
    /// rows (default 10) as they would land.
    #[arg(
        help_heading = "Connection and output",
        long,
        value_name = "N",
        num_args = 0..=1,
        default_missing_value = "10"
    )]
    pub preview: Option<usize>,

    #[command(flatten, next_help_heading = "Metrics")]
    pub metrics: super::metrics::MetricsArgs,
}

pub(super) async fn run_load(args: LoadArgs) -> anyhow::Result<Outcome> {
    let load = load_spec(&args)?.resolve(Origin::Flags, &|name| std::env::var(name).ok())?;
    let connect = ConnectOptions::resolve(args.database_url.as_deref(), &[], &|k| {
        std::env::var(k).ok()
    })?;
    if let Some(rows) = args.preview {
        let preview = crate::pipeline::preview_load(&load, &connect, rows)
            .await
            .with_context(|| {
                format!(
                    "previewing the load of {} into {}; nothing was written",
                    load.source.source, load.write.table
                )
            })?;
        let mut out = std::io::stdout().lock();
        write!(
            out,
            "load {}\n{preview}nothing was written (a preview)\n",
            load.source.source
        )?;
        return Ok(Outcome::Done);
    }
    let metrics = args.metrics.start().await?;
    let meter = metrics.as_ref().map(|m| m.module("load"));
    let progress = Progress::start(args.progress, &load.source_name(), meter.clone());
    let run = meter.as_ref().map(|m| m.run());
    let outcome = watch(&args, &load, &connect, &progress, run).await;
    args.metrics.finish(metrics.as_ref(), outcome)
}

/// Loads, until done or interrupted, and says what happened.
async fn watch(
    args: &LoadArgs,
    load: &Load,
    connect: &ConnectOptions,
    progress: &Arc<Progress>,
    run: Option<crate::metrics::RunMeter>,
) -> anyhow::Result<Outcome> {
    let interrupt = interrupted();
    let loading = crate::pipeline::load(load, connect, progress.clone());
    tokio::pin!(loading);
    let mut result = tokio::select! {
        result = &mut loading => Some(result),
        () = interrupt => None,
    };
    if result.is_none() && progress.ledger().committing {
        // The COMMIT is on its way: dropping the load now would leave its outcome unknown.
        crate::base::say(
            "apitap: interrupted during COMMIT; waiting for the server's answer (interrupt again to stop waiting)",
        );
        result = tokio::select! {
            result = &mut loading => Some(result),
            () = interrupted() => None,
        };
    }
    progress.finish();
    let state_key = load.state.kept().then_some(load.state.key.as_str());
    let left = || crate::cli::output::left_in("the table", progress.ledger(), state_key);
    let Some(result) = result else {
        // Dropping the load dropped its transaction and connection: PostgreSQL rolls back.
        let table = load.write.table.to_string();
        let left = crate::cli::output::left_in(&table, progress.ledger(), state_key);
        crate::base::say(&format!("apitap: interrupted; {left}"));
        if let Some(run) = run {
            run.failed(format!("interrupted; {left}"));
        }
        return Ok(Outcome::Interrupted);
    };
    if let Some(run) = run {
        run.ended(&result);
    }
    let summary = result.with_context(|| {
        format!(
            "loading {} into {} failed; {}",
            load.source.source,
            load.write.table,
            left()
        )
    })?;
    report(args, load, &summary)?;
    Ok(Outcome::Done)
}

/// The load the flags describe. Only the flags' own syntax is checked here (`Name: value`,
/// inline mappings); [`LoadSpec::resolve`] checks the rest, as it does for YAML sources.
fn load_spec(args: &LoadArgs) -> anyhow::Result<LoadSpec> {
    let table = TableName::parse(&args.table)
        .map_err(|e| anyhow::anyhow!(e))
        .context("invalid --table")?;
    let headers = args
        .headers
        .iter()
        .map(|h| match h.split_once(':') {
            Some((name, value)) => Ok((name.trim().to_string(), value.trim().to_string())),
            None => anyhow::bail!("--header {h:?} must look like 'Name: value'"),
        })
        .collect::<anyhow::Result<_>>()?;
    let query = args
        .query
        .iter()
        .map(|q| match q.split_once('=') {
            Some((name, value)) => Ok((name.to_string(), value.to_string())),
            None => anyhow::bail!("--query {q:?} must look like name=value"),
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(LoadSpec {
        source: args.source.clone(),
        table: Some(table),
        headers,
        query,
        http_method: args.http_method,
        body: args.body.clone(),
        auth: args.auth.as_deref().map(AuthConfig::parse).transpose()?,
        retry: args.retry.as_deref().map(RetryPolicy::parse).transpose()?,
        rate_limit: args
            .rate_limit
            .as_deref()
            .map(RateLimit::parse)
            .transpose()?,
        pagination: args
            .pagination
            .as_deref()
            .map(PaginationConfig::parse)
            .transpose()?,
        records_path: args.records_path.clone(),
        format: args.format,
        connect_timeout_secs: Some(args.connect_timeout),
        read_timeout_secs: Some(args.read_timeout),
        timeout_secs: args.timeout,
        ca_cert: args.ca_cert.clone(),
        allow_cross_host: args.allow_cross_host,
        max_page_bytes: Some(args.max_page_bytes),
        secrets: args.secrets.clone(),
        mode: args.mode,
        replace_with: args.replace_with,
        keys: args.keys.clone(),
        method: args.method,
        insert_batch: Some(args.insert_batch),
        on_error: args.on_error,
        reject_file: Some(args.reject_file.clone()),
        max_rejects: args.max_rejects,
        cursor_field: args.cursor_field.clone(),
        cursor_param: args.cursor_param.clone(),
        state_key: args.state_key.clone().unwrap_or_else(|| args.table.clone()),
        legacy_state_key: None,
        full_refresh: args.full_refresh,
        commit_every: args.commit_every,
        copy_streams: usize::from(args.copy_streams),
        lock_timeout_secs: Some(args.lock_timeout),
        distribute_by: args.distribute_by.clone(),
        colocate_with: args.colocate_with.clone(),
        shard_count: args.shard_count,
        reference_table: args.reference_table,
        sample: Some(args.sample),
        batch_size: Some(args.batch_size),
        schema: if args.ignore_unknown_fields {
            SchemaPolicy::Discard
        } else {
            args.schema
        },
        widen_to_text: args.widen_to_text,
        nested: args.nested,
        max_nesting: args.max_nesting,
        allow_empty: args.allow_empty,
        max_record_bytes: Some(args.max_record_bytes),
        decode_threads: args.decode_threads.map(usize::from),
    })
}
