//! The pipeline config file: the original ApiTap's YAML format, accepted as is, plus the keys
//! a serious load needs (auth, rate limits, write mode, column types, connection details).
//!
//! ```yaml
//! sources:
//!   - name: orders_api
//!     url: https://api.example.com/v1/orders
//!     table_destination_name: orders
//!     primary_key_in_dest: id
//!     headers:
//!       - key: Authorization
//!         value: Bearer ${API_TOKEN}
//!     data_path: /data
//!     pagination: {kind: limit_offset, limit_param: limit, offset_param: offset}
//! targets:
//!   - name: warehouse
//!     type: postgres
//!     host: localhost
//!     database: apitap
//!     auth: {username_env: PGUSER, password_env: PGPASSWORD}
//! ```
//!
//! Unknown and missing keys are errors that name the key and its line. `${VAR}` is
//! substituted in URLs, header and query values, auth settings and connection settings when
//! a source or target is used, so a config naming an unset variable only fails the modules
//! that need it.

pub(crate) mod module;
mod resolve;
pub(crate) mod schedule;
mod target;

pub(crate) use resolve::{ModuleLoads, ModuleSource};
pub(crate) use target::TargetConfig;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::base::options::{
    HttpMethod, InputFormat, Mode, Nested, OnError, ReplaceWith, SchemaPolicy, WriteMethod,
};
use crate::base::{Origin, SettingError};
use crate::load::{Load, LoadSpec};
use crate::schema::{PgType, TableName};
use crate::source::RetryPolicy;
use crate::source::auth::AuthConfig;
use crate::source::paginate::PaginationConfig;
use crate::source::throttle::RateLimit;

/// Why a config file or module cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    /// Invalid YAML, or a key that is unknown, missing or of the wrong type.
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// A valid file whose parts do not fit together (a name used twice, a missing target).
    #[error("{path}{}: {reason}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Inconsistent {
        path: PathBuf,
        line: Option<usize>,
        reason: String,
    },
    /// A source or target that cannot be resolved: an unset variable, a bad value.
    #[error("{what}: {reason}")]
    Resolve { what: String, reason: String },
    #[error("destination {0}")]
    TableName(crate::schema::TableNameError),
    /// A setting of a source that cannot be used.
    #[error("{what}: {error}")]
    Setting { what: String, error: SettingError },
}

/// A list of key/value pairs, as the original config writes headers and query parameters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyValue {
    pub key: String,
    pub value: String,
    /// Keep the value out of every output (values from `${VAR}` are kept out anyway).
    #[serde(default)]
    pub secret: bool,
}

/// Key columns: `id`, `a, b` or `[a, b]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum Keys {
    One(String),
    Many(Vec<String>),
}

impl Keys {
    pub(crate) fn columns(&self) -> Vec<String> {
        match self {
            Keys::One(text) => text.split(',').map(|k| k.trim().to_string()).collect(),
            Keys::Many(keys) => keys.clone(),
        }
    }
}

/// One entry of `sources:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceConfig {
    pub name: String,
    /// An http(s) URL, or a file path (relative to the working directory).
    pub url: String,
    pub table_destination_name: Option<String>,
    /// The merge key: a source with one is merged (upserted) unless `mode` says otherwise,
    /// as the original ApiTap always did.
    pub primary_key_in_dest: Option<Keys>,
    #[serde(default)]
    pub headers: Vec<KeyValue>,
    #[serde(default)]
    pub query_params: Vec<KeyValue>,
    /// JSON pointer to the records inside each response (`/data`).
    pub data_path: Option<String>,
    pub pagination: Option<PaginationConfig>,
    pub retry: Option<RetryPolicy>,
    pub auth: Option<AuthConfig>,
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub method: HttpMethod,
    /// JSON body of a POST, written as YAML.
    pub body: Option<serde_yaml::Value>,
    #[serde(default)]
    pub format: InputFormat,
    /// `append`, `replace` or `merge`.
    pub mode: Option<Mode>,
    /// How `mode: replace` replaces an existing table's rows: `swap` (default) or `delete`.
    pub replace_with: Option<ReplaceWith>,
    /// Let `mode: replace` empty the table when the source has no records.
    #[serde(default)]
    pub allow_empty: bool,
    /// `evolve` (default), `freeze` or `discard`.
    pub schema_policy: Option<SchemaPolicy>,
    /// Under `evolve`, make a column text when it refuses a sampled value.
    #[serde(default)]
    pub widen_to_text: bool,
    /// `keep` (default) or `flatten`: the fields of nested objects become columns named by
    /// their path (`user__screen_name`), down to `max_nesting` levels (default 10). (`tables`
    /// is for `apitap load`: a module reads each source as one table.)
    #[serde(default)]
    pub nested: Nested,
    pub max_nesting: Option<usize>,
    /// Column types that override inference: `{amount: numeric, id: bigint}`.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Records sampled to infer the columns.
    pub sample: Option<usize>,
    /// Rows per Arrow batch.
    pub batch_size: Option<usize>,
    /// Threads decoding this source's records (default: chosen, as for `apitap load`).
    pub decode_threads: Option<usize>,
    /// `fail` (default) or `reject`: set records that cannot be loaded aside in
    /// `reject_file` (default `rejects.ndjson`), failing past `max_rejects`.
    #[serde(default)]
    pub on_error: OnError,
    pub reject_file: Option<PathBuf>,
    pub max_rejects: Option<u64>,
    /// Incremental loads: the field whose highest value is stored, and the query parameter
    /// that sends it back next time.
    pub cursor_field: Option<String>,
    pub cursor_param: Option<String>,
    pub connect_timeout_secs: Option<f64>,
    pub read_timeout_secs: Option<f64>,
    /// A bound on each whole request, body included.
    pub timeout_secs: Option<f64>,
    /// A PEM file of CA certificates to trust for https.
    pub ca_cert: Option<PathBuf>,
    /// Follow redirects and next links to other hosts, without credentials.
    #[serde(default)]
    pub allow_cross_host: bool,
    pub max_page_bytes: Option<usize>,
    /// Seconds to wait for another run loading the same state key or table.
    pub lock_timeout_secs: Option<f64>,
    /// Citus, for a table the module creates: distributed by this column (colocated with
    /// `colocate_with`, in `shard_count` shards), or a reference table.
    pub distribute_by: Option<String>,
    pub colocate_with: Option<String>,
    pub shard_count: Option<u32>,
    #[serde(default)]
    pub reference_table: bool,
}

/// A parsed config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// The file it came from, for messages.
    #[serde(skip)]
    pub path: PathBuf,
    #[serde(skip)]
    text: String,
}

impl Config {
    /// Reads and checks a config file.
    ///
    /// # Errors
    /// An unreadable file, invalid YAML, an unknown or missing key (with its line), or names
    /// used twice.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text; `path` is only for messages.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = serde_yaml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        config.path = path.to_path_buf();
        config.text = text.to_string();
        for (i, source) in config.sources.iter().enumerate() {
            if config.sources[..i].iter().any(|s| s.name == source.name) {
                return Err(config.inconsistent(
                    &format!("name: {}", source.name),
                    format!("two sources are named {:?}", source.name),
                ));
            }
        }
        for (i, target) in config.targets.iter().enumerate() {
            if config.targets[..i].iter().any(|t| t.name == target.name) {
                return Err(config.inconsistent(
                    &format!("name: {}", target.name),
                    format!("two targets are named {:?}", target.name),
                ));
            }
        }
        Ok(config)
    }

    /// An error located at the last line containing `needle`, where the file has one.
    fn inconsistent(&self, needle: &str, reason: String) -> ConfigError {
        let line = self
            .text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(needle))
            .map(|(i, _)| i + 1)
            .last();
        ConfigError::Inconsistent {
            path: self.path.clone(),
            line,
            reason,
        }
    }

    /// The source named `name`.
    ///
    /// # Errors
    /// No such source; the message lists the ones there are.
    pub(crate) fn source(&self, name: &str) -> Result<&SourceConfig, ConfigError> {
        self.sources.iter().find(|s| s.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.sources.iter().map(|s| s.name.as_str()).collect();
            ConfigError::Inconsistent {
                path: self.path.clone(),
                line: None,
                reason: format!(
                    "no source is named {name:?} (sources: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            }
        })
    }

    /// The target named `name`, or the only target when `name` is `None`.
    ///
    /// # Errors
    /// No such target, or several to choose from and no name.
    pub(crate) fn target(&self, name: Option<&str>) -> Result<&TargetConfig, ConfigError> {
        let known: Vec<&str> = self.targets.iter().map(|t| t.name.as_str()).collect();
        let found = match name {
            Some(name) => self.targets.iter().find(|t| t.name == name),
            None if self.targets.len() == 1 => self.targets.first(),
            None => None,
        };
        found.ok_or_else(|| ConfigError::Inconsistent {
            path: self.path.clone(),
            line: None,
            reason: match name {
                Some(name) => format!(
                    "no target is named {name:?} (targets: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
                None => format!(
                    "the module does not say which target to write to; add {{{{ sink(name=\"…\") }}}} (targets: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            },
        })
    }
}

/// A column type in config that apitap cannot load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown column type {0:?}; use e.g. bigint, integer, numeric, double precision, boolean, text, timestamptz, timestamp, date, time, uuid, jsonb, bytea"
)]
pub(crate) struct UnknownColumnType(String);

/// Parses a column type as written in config: a PostgreSQL type name or alias.
///
/// # Errors
/// A type apitap cannot load.
pub(crate) fn parse_pg_type(text: &str) -> Result<PgType, UnknownColumnType> {
    let lower = text.trim().to_ascii_lowercase();
    let name = match lower.as_str() {
        "int" | "integer" => "int4",
        "smallint" => "int2",
        "bigint" => "int8",
        "real" => "float4",
        "double precision" | "double" | "float" => "float8",
        "decimal" => "numeric",
        "boolean" => "bool",
        "varchar" | "character varying" | "string" => "text",
        "timestamp with time zone" => "timestamptz",
        "timestamp without time zone" => "timestamp",
        other => other,
    };
    PgType::from_typname(name).ok_or_else(|| UnknownColumnType(text.to_string()))
}

impl SourceConfig {
    fn what(&self) -> String {
        format!("source {:?}", self.name)
    }

    fn resolve_error(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::Resolve {
            what: self.what(),
            reason: reason.into(),
        }
    }

    /// The explicit column types, parsed.
    ///
    /// # Errors
    /// An unknown type name.
    pub(crate) fn column_types(&self) -> Result<Vec<(String, PgType)>, ConfigError> {
        self.columns
            .iter()
            .map(|(name, pg_type)| {
                parse_pg_type(pg_type)
                    .map(|t| (name.clone(), t))
                    .map_err(|e| self.resolve_error(format!("columns: {name}: {e}")))
            })
            .collect()
    }

    /// The write mode: as configured, else merge when a primary key is given (the original
    /// ApiTap's behaviour), else append.
    pub(crate) fn mode(&self) -> Mode {
        self.mode.unwrap_or(if self.primary_key_in_dest.is_some() {
            Mode::Merge
        } else {
            Mode::Append
        })
    }

    /// The load this source describes, into `table`, as written.
    pub(crate) fn to_spec(&self, table: TableName) -> Result<LoadSpec, ConfigError> {
        let body = self
            .body
            .as_ref()
            .map(|b| serde_json::to_string(b).map_err(|e| self.resolve_error(format!("body: {e}"))))
            .transpose()?;
        let pairs = |list: &[KeyValue]| -> Vec<(String, String)> {
            list.iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect()
        };
        let mode = self.mode();
        Ok(LoadSpec {
            source: self.url.clone(),
            table: Some(table),
            headers: pairs(&self.headers),
            query: pairs(&self.query_params),
            http_method: self.method,
            body,
            auth: self.auth.clone(),
            retry: self.retry.clone(),
            rate_limit: self.rate_limit,
            pagination: self.pagination.clone(),
            records_path: self.data_path.clone(),
            format: self.format,
            connect_timeout_secs: self.connect_timeout_secs,
            read_timeout_secs: self.read_timeout_secs,
            timeout_secs: self.timeout_secs,
            ca_cert: self.ca_cert.clone(),
            allow_cross_host: self.allow_cross_host,
            max_page_bytes: self.max_page_bytes,
            secrets: self
                .headers
                .iter()
                .chain(&self.query_params)
                .filter(|kv| kv.secret)
                .map(|kv| kv.value.clone())
                .collect(),
            mode,
            replace_with: self.replace_with.unwrap_or_default(),
            keys: match (mode, &self.primary_key_in_dest) {
                (Mode::Merge, Some(keys)) => keys.columns(),
                _ => Vec::new(),
            },
            method: WriteMethod::Copy,
            insert_batch: None,
            on_error: self.on_error,
            reject_file: self.reject_file.clone(),
            max_rejects: self.max_rejects,
            cursor_field: self.cursor_field.clone(),
            cursor_param: self.cursor_param.clone(),
            state_key: self.name.clone(),
            legacy_state_key: None,
            full_refresh: false,
            commit_every: None,
            copy_streams: 1,
            lock_timeout_secs: self.lock_timeout_secs,
            distribute_by: self.distribute_by.clone(),
            colocate_with: self.colocate_with.clone(),
            shard_count: self.shard_count,
            reference_table: self.reference_table,
            sample: self.sample,
            batch_size: self.batch_size,
            schema: self.schema_policy.unwrap_or_default(),
            widen_to_text: self.widen_to_text,
            nested: self.nested,
            max_nesting: self.max_nesting,
            allow_empty: self.allow_empty,
            max_record_bytes: None,
            decode_threads: self.decode_threads,
        })
    }

    /// Resolves `spec`, a load of this source, naming the source in errors.
    fn resolve(
        &self,
        spec: LoadSpec,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Load, ConfigError> {
        let error = |error| ConfigError::Setting {
            what: self.what(),
            error,
        };
        if spec.nested == Nested::Tables {
            return Err(error(crate::base::SettingError::Conflict(
                "nested: tables loads a family of tables, and a module's SQL reads each source as one table: \
                 use nested: flatten here (or apitap load --nested tables)"
                    .into(),
            )));
        }
        spec.resolve(Origin::Yaml, env).map_err(error)
    }
}

/// Reads `.env` in the working directory, as the original ApiTap did: its variables fill in
/// those the environment does not already set.
///
/// # Errors
/// A `.env` that cannot be read or parsed.
pub(crate) fn load_dotenv() -> Result<Option<PathBuf>, ConfigError> {
    match dotenvy::dotenv() {
        Ok(path) => Ok(Some(path)),
        Err(e) if e.not_found() => Ok(None),
        Err(e) => Err(ConfigError::Read {
            path: PathBuf::from(".env"),
            reason: e.to_string(),
        }),
    }
}

/// The environment, as the config sees it.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests;
