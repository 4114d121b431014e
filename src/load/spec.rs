//! A load as the user described it: flags of `apitap load`, or a YAML source (with its
//! module's `sink(…)`), before anything is checked.

use std::path::PathBuf;

use crate::base::options::{
    HttpMethod, InputFormat, Mode, Nested, OnError, ReplaceWith, SchemaPolicy, WriteMethod,
};
use crate::schema::TableName;
use crate::source::RetryPolicy;
use crate::source::auth::AuthConfig;
use crate::source::paginate::PaginationConfig;
use crate::source::throttle::RateLimit;

/// A load as the user described it, before it is checked: text as written (with `${VAR}`
/// and date helpers unexpanded), options unset where the user left them out.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadSpec {
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
    /// The key the same load's state had before (a pipeline source's name, before keys
    /// named the module too); its state is taken over when `state_key` has none.
    pub legacy_state_key: Option<String>,
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
    /// What becomes of nested objects, and how many levels of them (`--max-nesting`).
    pub nested: Nested,
    pub max_nesting: Option<usize>,
    pub allow_empty: bool,
    pub max_record_bytes: Option<usize>,
    /// Threads decoding records; `None` chooses ([`crate::pipeline::decode_threads`]).
    pub decode_threads: Option<usize>,
}
