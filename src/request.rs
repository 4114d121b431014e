//! The resolved load: everything one `apitap load`, or one source of a pipeline module, asks
//! for, checked and with its defaults applied.
//!
//! Users describe a load in two ways, as flags and as a YAML source. Both are turned into a
//! [`LoadSpec`] (the raw description: text as written, options left unset) and resolved by
//! the one function [`LoadSpec::resolve`], so they get the same defaults ([`defaults`]), the
//! same checks and the same messages; only the names of the settings in messages follow
//! where the user wrote them ([`Origin`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::base::expand::{expand, expand_url};
use crate::base::options::{
    HttpMethod, InputFormat, Mode, OnError, ReplaceWith, SchemaPolicy, WriteMethod,
};
use crate::base::{Origin, Setting, SettingError};
use crate::decode::Format;
use crate::decode::pointer::JsonPointer;
use crate::rejects::RejectOptions;
use crate::schema::TableName;
use crate::sink::plan::citus::DistributeAs;
use crate::source::auth::AuthConfig;
use crate::source::paginate::{PaginationConfig, Position};
use crate::source::request::RequestOptions;
use crate::source::throttle::RateLimit;
use crate::source::{Http, HttpSettings, RetryPolicy, Source};

/// The defaults of every load, whichever way it was described.
pub mod defaults {
    /// Records read first, to infer a new table's columns.
    pub const SAMPLE: usize = 1000;
    /// Records per Arrow batch.
    pub const BATCH_SIZE: usize = 8192;
    /// Rows per statement of the INSERT fallback.
    pub const INSERT_BATCH: usize = 5000;
    /// The longest record (or `--records-path` document) accepted.
    pub const MAX_RECORD_BYTES: usize = 64 << 20;
    /// Seconds to wait for an HTTP connection.
    pub const CONNECT_TIMEOUT_SECS: f64 = 10.0;
    /// Seconds to wait for each read of an HTTP response.
    pub const READ_TIMEOUT_SECS: f64 = 60.0;
    /// Where `--on-error reject` sets records aside.
    pub const REJECT_FILE: &str = "rejects.ndjson";
    /// Seconds a load waits for another run of it (same state key, or the same table for a
    /// replace or merge) to finish.
    pub const LOCK_TIMEOUT_SECS: f64 = 600.0;
    /// The most bytes one page may hold, after decompression.
    pub const MAX_PAGE_BYTES: usize = crate::source::http::DEFAULT_MAX_PAGE_BYTES;
}

/// The largest `--max-record-bytes`: PostgreSQL stores no value over 1 GiB, and a batch (up
/// to 512 MiB of input plus one record) must stay under Arrow's 2 GiB offsets.
pub const MAX_RECORD_BYTES_LIMIT: usize = 1 << 30;

/// A load as the user described it, before it is checked: text as written (with `${VAR}`
/// and date helpers unexpanded), options unset where the user left them out.
#[derive(Debug, Clone, Default)]
pub struct LoadSpec {
    /// An http(s) URL, a file path or `-`.
    pub source: String,
    pub table: Option<TableName>,
    /// Header names and values, and query names and values, as written.
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    /// GET, or POST with this JSON body.
    pub http_method: HttpMethod,
    pub body: Option<String>,
    pub auth: Option<AuthConfig>,
    pub retry: Option<RetryPolicy>,
    pub rate_limit: Option<RateLimit>,
    pub pagination: Option<PaginationConfig>,
    pub records_path: Option<String>,
    pub format: InputFormat,
    pub connect_timeout_secs: Option<f64>,
    pub read_timeout_secs: Option<f64>,
    /// A bound on each whole request, body included (none by default).
    pub timeout_secs: Option<f64>,
    /// A PEM file of CA certificates to trust for HTTPS sources.
    pub ca_cert: Option<PathBuf>,
    /// Follow redirects and next links to other origins, without credentials.
    pub allow_cross_host: bool,
    pub max_page_bytes: Option<usize>,
    /// More texts to keep out of every output (`--secret`, YAML `secret: true`).
    pub secrets: Vec<String>,
    pub mode: Mode,
    pub replace_with: ReplaceWith,
    /// Merge keys.
    pub keys: Vec<String>,
    pub method: WriteMethod,
    pub insert_batch: Option<usize>,
    pub on_error: OnError,
    pub reject_file: Option<PathBuf>,
    pub max_rejects: Option<u64>,
    pub cursor_field: Option<String>,
    pub cursor_param: Option<String>,
    pub state_key: String,
    pub full_refresh: bool,
    pub commit_every: Option<u64>,
    pub copy_streams: usize,
    pub lock_timeout_secs: Option<f64>,
    /// Citus: make a table the load creates distributed by this column…
    pub distribute_by: Option<String>,
    pub colocate_with: Option<String>,
    pub shard_count: Option<u32>,
    /// …or a reference table.
    pub reference_table: bool,
    pub sample: Option<usize>,
    pub batch_size: Option<usize>,
    pub schema: SchemaPolicy,
    pub widen_to_text: bool,
    pub allow_empty: bool,
    pub max_record_bytes: Option<usize>,
    /// Threads decoding records; `None` chooses ([`crate::pipeline::decode_threads`]).
    pub decode_threads: Option<usize>,
}

/// Everything one load needs to know, checked.
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
    /// The key the same load's state had before (a pipeline source's name, before keys
    /// named the module too); its state is taken over when `state_key` has none.
    pub legacy_state_key: Option<String>,
    /// How long to wait for another run holding this load's state key or table.
    pub lock_timeout: Duration,
    /// Citus: how a table the load creates is distributed.
    pub distribute: Option<DistributeAs>,
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
    /// Threads decoding records (1: the decode stage's own); `None` until the load, which
    /// knows where the server is, chooses.
    pub decode_threads: Option<usize>,
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
    pub position: Position,
    /// The highest cursor value its committed pages held.
    pub cursor: Option<String>,
}

impl LoadSpec {
    /// Checks the described load and applies the defaults; `${VAR}` comes from `env`.
    ///
    /// # Errors
    /// An unset variable, a value that cannot work, or settings that do not go together,
    /// named as `origin` spells them.
    pub fn resolve(
        self,
        origin: Origin,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<LoadRequest, SettingError> {
        let name = |setting: Setting| setting.name(origin);
        let conflict = |text: String| Err(SettingError::Conflict(text));
        let table = self
            .table
            .clone()
            .ok_or_else(|| SettingError::Conflict("the load has no destination table".into()))?;
        let url = expand_url(&self.source, env, name(Setting::Url))?;
        for secret in &self.secrets {
            crate::base::secrets::register(&expand(secret, env, "--secret")?);
        }
        let mut request = RequestOptions::build(&self.headers, &self.query, origin, env)?;
        if self.http_method == HttpMethod::Post {
            request = request.with_post_body(self.body.as_deref(), origin, env)?;
        } else if self.body.is_some() {
            return conflict(match origin {
                Origin::Flags => "--body needs --http-method post".into(),
                Origin::Yaml => "body needs method: post".into(),
            });
        }
        let auth = match self.auth.clone() {
            Some(mut auth) => {
                auth.substitute_env(env, name(Setting::Auth))?;
                auth.register_secrets();
                Some(auth)
            }
            None => None,
        };
        let retry = self.retry.clone().unwrap_or_default();
        retry.validate(name(Setting::Retry))?;
        if let Some(limit) = &self.rate_limit {
            limit.validate(name(Setting::RateLimit))?;
        }
        let seconds = |value: Option<f64>, default: f64, setting: Setting| {
            Duration::try_from_secs_f64(value.unwrap_or(default))
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    SettingError::invalid(name(setting), "must be a positive number of seconds")
                })
        };
        let settings = HttpSettings {
            connect_timeout: seconds(
                self.connect_timeout_secs,
                defaults::CONNECT_TIMEOUT_SECS,
                Setting::ConnectTimeout,
            )?,
            read_timeout: seconds(
                self.read_timeout_secs,
                defaults::READ_TIMEOUT_SECS,
                Setting::ReadTimeout,
            )?,
            total_timeout: match self.timeout_secs {
                Some(secs) => Some(seconds(Some(secs), secs, Setting::Timeout)?),
                None => None,
            },
            ca_cert: self.ca_cert.clone(),
            // A pagination's allow_cross_host (the older key) allows it too.
            allow_cross_host: self.allow_cross_host
                || self.pagination.as_ref().is_some_and(|p| p.allow_cross_host),
            max_page_bytes: match self.max_page_bytes {
                Some(0) => {
                    return Err(SettingError::invalid(
                        name(Setting::MaxPageBytes),
                        "must be at least 1",
                    ));
                }
                Some(n) => n,
                None => defaults::MAX_PAGE_BYTES,
            },
        };
        let source_url = Source::parse(&url);
        let http = Http::new(
            match &source_url {
                Source::Http(u) => Some(u.as_str()),
                _ => None,
            },
            &settings,
            request,
            retry,
            self.rate_limit,
            auth,
        )
        .map_err(|e| SettingError::invalid(name(Setting::CaCert), e.to_string()))?;
        let records_path = self
            .records_path
            .as_deref()
            .map(JsonPointer::parse)
            .transpose()
            .map_err(|e| SettingError::invalid(name(Setting::RecordsPath), e.to_string()))?;
        let merge_keys = match (self.mode, self.keys.is_empty()) {
            (Mode::Merge, true) => {
                return conflict(match origin {
                    Origin::Flags => "--mode merge needs --key COLUMN[,COLUMN…]".into(),
                    Origin::Yaml => "mode: merge needs primary_key_in_dest".into(),
                });
            }
            (Mode::Merge, false) => self.keys.clone(),
            (_, false) if origin == Origin::Flags => {
                return conflict("--key only applies to --mode merge".into());
            }
            _ => Vec::new(),
        };
        // The other settings a message names, spelled as the user wrote them.
        let say = |flag: &'static str, yaml: &'static str| match origin {
            Origin::Flags => flag,
            Origin::Yaml => yaml,
        };
        let (replace, merge, reject) = (
            say("--mode replace", "mode: replace"),
            say("--mode merge", "mode: merge"),
            say("--on-error reject", "on_error: reject"),
        );
        if let Some(every) = self.commit_every {
            let every_name = name(Setting::CommitEvery);
            if every == 0 {
                return Err(SettingError::invalid(every_name, "must be at least 1"));
            }
            if self.mode == Mode::Replace {
                return conflict(format!(
                    "{every_name} cannot be used with {replace}: a replace must land in one transaction"
                ));
            }
            if self.on_error == OnError::Reject {
                return conflict(format!("{every_name} cannot be used with {reject} yet"));
            }
        }
        let streams_name = name(Setting::CopyStreams);
        match self.copy_streams {
            0 => return Err(SettingError::invalid(streams_name, "must be at least 1")),
            1 => {}
            _ if self.mode == Mode::Merge => {
                return conflict(format!(
                    "{streams_name} cannot be used with {merge}: rows would lose their order, and with it which record of a key is the last"
                ));
            }
            _ if self.on_error == OnError::Reject
                || self.commit_every.is_some()
                || self.method == WriteMethod::Insert =>
            {
                return conflict(format!(
                    "{streams_name} works with plain COPY loads: not with {reject}, {} or {}",
                    name(Setting::CommitEvery),
                    say("--method insert", "method: insert"),
                ));
            }
            _ => {}
        }
        if self
            .max_record_bytes
            .is_some_and(|n| n > MAX_RECORD_BYTES_LIMIT)
        {
            return Err(SettingError::invalid(
                say("--max-record-bytes", "max_record_bytes"),
                format!(
                    "at most {MAX_RECORD_BYTES_LIMIT} (1 GiB): no PostgreSQL value is larger, and a batch must stay under Arrow's 2 GiB"
                ),
            ));
        }
        let distribute = self.distribution(origin)?;
        let positive = |value: Option<usize>, default: usize, what: &str| match value {
            Some(0) => Err(SettingError::invalid(what, "must be at least 1")),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        Ok(LoadRequest {
            source: Source::parse(&url),
            http,
            table,
            mode: self.mode,
            format: match self.format {
                InputFormat::Auto => None,
                InputFormat::Ndjson => Some(Format::Ndjson),
                InputFormat::Json => Some(Format::JsonArray),
            },
            records_path,
            pagination: self.pagination,
            sample: self.sample.unwrap_or(defaults::SAMPLE),
            batch_size: positive(self.batch_size, defaults::BATCH_SIZE, "batch size")?,
            schema: self.schema,
            widen_to_text: self.widen_to_text,
            allow_empty: self.allow_empty,
            replace_with: self.replace_with,
            merge_keys,
            method: self.method,
            insert_batch: positive(self.insert_batch, defaults::INSERT_BATCH, "insert batch")?,
            rejects: (self.on_error == OnError::Reject).then(|| RejectOptions {
                path: self
                    .reject_file
                    .unwrap_or_else(|| PathBuf::from(defaults::REJECT_FILE)),
                max: self.max_rejects,
            }),
            incremental: self.cursor_field.map(|cursor_field| Incremental {
                cursor_field,
                cursor_param: self.cursor_param,
            }),
            state_key: self.state_key,
            legacy_state_key: None,
            lock_timeout: seconds(
                self.lock_timeout_secs,
                defaults::LOCK_TIMEOUT_SECS,
                Setting::LockTimeout,
            )?,
            distribute,
            full_refresh: self.full_refresh,
            copy_streams: self.copy_streams,
            commit_every: self.commit_every,
            resume: None,
            max_record_bytes: positive(
                self.max_record_bytes,
                defaults::MAX_RECORD_BYTES,
                "the record size limit",
            )?,
            decode_threads: match self.decode_threads {
                Some(0) => {
                    return Err(SettingError::invalid(
                        "decode threads",
                        "must be at least 1",
                    ));
                }
                threads => threads,
            },
        })
    }
}

impl LoadSpec {
    /// `--distribute-by` (with `--colocate-with`, `--shard-count`) or `--reference-table`.
    fn distribution(&self, origin: Origin) -> Result<Option<DistributeAs>, SettingError> {
        let say = |flag: &'static str, yaml: &'static str| match origin {
            Origin::Flags => flag,
            Origin::Yaml => yaml,
        };
        let (by, colocate, shards, reference) = (
            say("--distribute-by", "distribute_by"),
            say("--colocate-with", "colocate_with"),
            say("--shard-count", "shard_count"),
            say("--reference-table", "reference_table"),
        );
        let conflict = |text: String| Err(SettingError::Conflict(text));
        match &self.distribute_by {
            Some(_) if self.reference_table => conflict(format!(
                "{by} and {reference} cannot go together: a reference table has no distribution column"
            )),
            Some(_) if self.colocate_with.is_some() && self.shard_count.is_some() => {
                conflict(format!(
                    "{shards} cannot go with {colocate}: a table colocated with another has its shard count"
                ))
            }
            Some(_) if self.shard_count == Some(0) => {
                Err(SettingError::invalid(shards, "must be at least 1"))
            }
            Some(column) => Ok(Some(DistributeAs::Hash {
                column: column.clone(),
                colocate_with: self.colocate_with.clone(),
                shard_count: self.shard_count,
            })),
            None if self.colocate_with.is_some() || self.shard_count.is_some() => {
                conflict(format!("{colocate} and {shards} need {by}"))
            }
            None if self.reference_table => Ok(Some(DistributeAs::Reference)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests;
