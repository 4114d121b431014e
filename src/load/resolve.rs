//! [`LoadSpec::resolve`]: the one function that checks a described load, applies its
//! defaults and cuts it into the parts the stages take. Each part is resolved by a function
//! of its own, in the order the checks have always run (so that of two mistakes, the same one
//! is reported first).

use std::path::PathBuf;
use std::time::Duration;

use super::{Load, LoadSpec, MAX_RECORD_BYTES_LIMIT, defaults};
use crate::base::expand::{expand, expand_url};
use crate::base::options::{
    HttpMethod, InputFormat, Mode, Nested, OnError, SchemaPolicy, WriteMethod,
};
use crate::base::{Origin, Setting, SettingError};
use crate::decode::infer::MAX_FLATTEN_DEPTH;
use crate::decode::pointer::JsonPointer;
use crate::decode::{DecodeSettings, Format};
use crate::rejects::RejectOptions;
use crate::sink::WriteSettings;
use crate::sink::plan::citus::DistributeAs;
use crate::sink::state::{Incremental, StateSettings};
use crate::source::request::RequestOptions;
use crate::source::{Http, HttpSettings, Source, SourceSettings};

/// A setting's name as the user wrote it: the flag, or the YAML key.
fn say(origin: Origin, flag: &'static str, yaml: &'static str) -> &'static str {
    match origin {
        Origin::Flags => flag,
        Origin::Yaml => yaml,
    }
}

fn conflict<T>(text: String) -> Result<T, SettingError> {
    Err(SettingError::Conflict(text))
}

/// `value` seconds (or `default`) as a positive duration.
fn seconds(
    value: Option<f64>,
    default: f64,
    setting: Setting,
    origin: Origin,
) -> Result<Duration, SettingError> {
    Duration::try_from_secs_f64(value.unwrap_or(default))
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            SettingError::invalid(setting.name(origin), "must be a positive number of seconds")
        })
}

/// `value` (or `default`), which must be at least 1.
fn positive(value: Option<usize>, default: usize, what: &str) -> Result<usize, SettingError> {
    match value {
        Some(0) => Err(SettingError::invalid(what, "must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

impl LoadSpec {
    /// Checks the described load and applies the defaults; `${VAR}` comes from `env`.
    ///
    /// # Errors
    /// An unset variable, a value that cannot work, or settings that do not go together,
    /// named as `origin` spells them.
    pub(crate) fn resolve(
        self,
        origin: Origin,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Load, SettingError> {
        let table = self
            .table
            .clone()
            .ok_or_else(|| SettingError::Conflict("the load has no destination table".into()))?;
        let source = self.source_settings(origin, env)?;
        let records_path = self
            .records_path
            .as_deref()
            .map(JsonPointer::parse)
            .transpose()
            .map_err(|e| SettingError::invalid(Setting::RecordsPath.name(origin), e.to_string()))?;
        let merge_keys = self.merge_keys(origin)?;
        let link_keys = match self.nested {
            Nested::Tables => self.keys.clone(),
            _ => Vec::new(),
        };
        self.check_combinations(origin)?;
        self.check_tables(origin)?;
        let distribute = self.distribution(origin)?;
        let decode = self.decode_settings(records_path, origin)?;
        let write = WriteSettings {
            table,
            mode: self.mode,
            replace_with: self.replace_with,
            merge_keys,
            link_keys,
            method: self.method,
            insert_batch: positive(self.insert_batch, defaults::INSERT_BATCH, "insert batch")?,
            copy_streams: self.copy_streams,
            allow_empty: self.allow_empty,
            schema: self.schema,
            widen_to_text: self.widen_to_text,
            distribute,
            lock_timeout: seconds(
                self.lock_timeout_secs,
                defaults::LOCK_TIMEOUT_SECS,
                Setting::LockTimeout,
                origin,
            )?,
        };
        Ok(Load {
            source,
            decode,
            write,
            state: StateSettings {
                key: self.state_key,
                legacy_key: self.legacy_state_key,
                full_refresh: self.full_refresh,
                incremental: self.cursor_field.map(|cursor_field| Incremental {
                    cursor_field,
                    cursor_param: self.cursor_param,
                }),
                resumable: self.commit_every.is_some(),
                resumed_cursor: None,
            },
            rejects: (self.on_error == OnError::Reject).then(|| RejectOptions {
                path: self
                    .reject_file
                    .unwrap_or_else(|| PathBuf::from(defaults::REJECT_FILE)),
                max: self.max_rejects,
            }),
        })
    }

    /// The fetch stage's part: the source, and for HTTP its client, request, auth, retries
    /// and pacing. Registers the secrets it meets.
    fn source_settings(
        &self,
        origin: Origin,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SourceSettings, SettingError> {
        let name = |setting: Setting| setting.name(origin);
        let url = expand_url(&self.source, env, name(Setting::Url))?;
        for secret in &self.secrets {
            crate::base::secrets::register(&expand(secret, env, "--secret")?);
        }
        let mut request = RequestOptions::build(&self.headers, &self.query, origin, env)?;
        if self.http_method == HttpMethod::Post {
            request = request.with_post_body(self.body.as_deref(), origin, env)?;
        } else if self.body.is_some() {
            return conflict(
                say(
                    origin,
                    "--body needs --http-method post",
                    "body needs method: post",
                )
                .into(),
            );
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
        let settings = self.http_settings(origin)?;
        let source = Source::parse(&url);
        let source_url = match &source {
            Source::Http(u) => Some(u.as_str()),
            _ => None,
        };
        let http = Http::new(source_url, &settings, request, retry, self.rate_limit, auth)
            .map_err(|e| SettingError::invalid(name(Setting::CaCert), e.to_string()))?;
        Ok(SourceSettings {
            source,
            http,
            pagination: self.pagination.clone(),
            resume_at: None,
            commit_every: self.commit_every,
        })
    }

    /// Timeouts, trusted CAs, cross-host and page-size limits of an HTTP source.
    fn http_settings(&self, origin: Origin) -> Result<HttpSettings, SettingError> {
        Ok(HttpSettings {
            connect_timeout: seconds(
                self.connect_timeout_secs,
                defaults::CONNECT_TIMEOUT_SECS,
                Setting::ConnectTimeout,
                origin,
            )?,
            read_timeout: seconds(
                self.read_timeout_secs,
                defaults::READ_TIMEOUT_SECS,
                Setting::ReadTimeout,
                origin,
            )?,
            total_timeout: match self.timeout_secs {
                Some(secs) => Some(seconds(Some(secs), secs, Setting::Timeout, origin)?),
                None => None,
            },
            ca_cert: self.ca_cert.clone(),
            // A pagination's allow_cross_host (the older key) allows it too.
            allow_cross_host: self.allow_cross_host
                || self.pagination.as_ref().is_some_and(|p| p.allow_cross_host),
            max_page_bytes: match self.max_page_bytes {
                Some(0) => {
                    return Err(SettingError::invalid(
                        Setting::MaxPageBytes.name(origin),
                        "must be at least 1",
                    ));
                }
                Some(n) => n,
                None => defaults::MAX_PAGE_BYTES,
            },
        })
    }

    /// The decode stage's part.
    fn decode_settings(
        &self,
        records_path: Option<JsonPointer>,
        origin: Origin,
    ) -> Result<DecodeSettings, SettingError> {
        Ok(DecodeSettings {
            format: match self.format {
                InputFormat::Auto => None,
                InputFormat::Ndjson => Some(Format::Ndjson),
                InputFormat::Json => Some(Format::JsonArray),
            },
            records_path,
            sample: self.sample.unwrap_or(defaults::SAMPLE),
            flatten_depth: self.flatten_depth(origin)?,
            tables: self.nested == Nested::Tables,
            batch_size: positive(self.batch_size, defaults::BATCH_SIZE, "batch size")?,
            max_record_bytes: positive(
                self.max_record_bytes,
                defaults::MAX_RECORD_BYTES,
                "the record size limit",
            )?,
            threads: match self.decode_threads {
                Some(0) => {
                    return Err(SettingError::invalid(
                        "decode threads",
                        "must be at least 1",
                    ));
                }
                threads => threads,
            },
            reject_unknown_fields: self.schema != SchemaPolicy::Discard,
            rejecting: self.on_error == OnError::Reject,
        })
    }

    /// How many levels of objects become columns: `--max-nesting` (1 to 64) under
    /// `--nested flatten`, none under `keep`.
    fn flatten_depth(&self, origin: Origin) -> Result<usize, SettingError> {
        let setting = Setting::MaxNesting.name(origin);
        match (self.nested, self.max_nesting) {
            (Nested::Keep, None) => Ok(0),
            (Nested::Keep, Some(_)) => conflict(
                say(
                    origin,
                    "--max-nesting needs --nested flatten or tables",
                    "max_nesting needs nested: flatten or tables",
                )
                .to_string(),
            ),
            (Nested::Flatten | Nested::Tables, None) => Ok(defaults::MAX_NESTING),
            (Nested::Flatten | Nested::Tables, Some(depth))
                if (1..=MAX_FLATTEN_DEPTH).contains(&depth) =>
            {
                Ok(depth)
            }
            (Nested::Flatten | Nested::Tables, Some(_)) => Err(SettingError::invalid(
                setting,
                format!("must be from 1 to {MAX_FLATTEN_DEPTH}"),
            )),
        }
    }

    /// The merge keys: needed by `--mode merge`, and only by it (`--nested tables` links
    /// child rows by `--key` in every mode, [`LoadSpec::link_keys`]).
    fn merge_keys(&self, origin: Origin) -> Result<Vec<String>, SettingError> {
        match (self.mode, self.keys.is_empty()) {
            (Mode::Merge, true) => conflict(
                say(
                    origin,
                    "--mode merge needs --key COLUMN[,COLUMN…]",
                    "mode: merge needs primary_key_in_dest",
                )
                .into(),
            ),
            (Mode::Merge, false) => Ok(self.keys.clone()),
            (_, false) if origin == Origin::Flags && self.nested != Nested::Tables => {
                conflict("--key only applies to --mode merge and --nested tables".into())
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Settings that cannot go together: commit points, COPY streams, record size.
    fn check_combinations(&self, origin: Origin) -> Result<(), SettingError> {
        let (replace, merge, reject) = (
            say(origin, "--mode replace", "mode: replace"),
            say(origin, "--mode merge", "mode: merge"),
            say(origin, "--on-error reject", "on_error: reject"),
        );
        let rejecting = self.on_error == OnError::Reject;
        let every_name = Setting::CommitEvery.name(origin);
        if let Some(every) = self.commit_every {
            if every == 0 {
                return Err(SettingError::invalid(every_name, "must be at least 1"));
            }
            if self.mode == Mode::Replace {
                return conflict(format!(
                    "{every_name} cannot be used with {replace}: a replace must land in one transaction"
                ));
            }
            if rejecting {
                return conflict(format!("{every_name} cannot be used with {reject} yet"));
            }
        }
        let streams_name = Setting::CopyStreams.name(origin);
        match self.copy_streams {
            0 => return Err(SettingError::invalid(streams_name, "must be at least 1")),
            1 => {}
            _ if self.mode == Mode::Merge => {
                return conflict(format!(
                    "{streams_name} cannot be used with {merge}: rows would lose their order, and with it which record of a key is the last"
                ));
            }
            _ if rejecting || self.commit_every.is_some() || self.method == WriteMethod::Insert => {
                return conflict(format!(
                    "{streams_name} works with plain COPY loads: not with {reject}, {every_name} or {}",
                    say(origin, "--method insert", "method: insert"),
                ));
            }
            _ => {}
        }
        if self
            .max_record_bytes
            .is_some_and(|n| n > MAX_RECORD_BYTES_LIMIT)
        {
            return Err(SettingError::invalid(
                say(origin, "--max-record-bytes", "max_record_bytes"),
                format!(
                    "at most {MAX_RECORD_BYTES_LIMIT} (1 GiB): no PostgreSQL value is larger, and a batch must stay under Arrow's 2 GiB"
                ),
            ));
        }
        Ok(())
    }

    /// What `--nested tables` cannot do yet: INSERTs, COPY streams, Citus.
    fn check_tables(&self, origin: Origin) -> Result<(), SettingError> {
        if self.nested != Nested::Tables {
            return Ok(());
        }
        let tables = say(origin, "--nested tables", "nested: tables");
        let other = if self.method == WriteMethod::Insert {
            say(origin, "--method insert", "method: insert")
        } else if self.copy_streams > 1 {
            Setting::CopyStreams.name(origin)
        } else if self.distribute_by.is_some() || self.reference_table {
            say(
                origin,
                "--distribute-by/--reference-table",
                "distribute_by/reference_table",
            )
        } else {
            return Ok(());
        };
        conflict(format!(
            "{tables} cannot be used with {other} yet: it writes a family of tables by binary COPY in one transaction"
        ))
    }

    /// `--distribute-by` (with `--colocate-with`, `--shard-count`) or `--reference-table`.
    fn distribution(&self, origin: Origin) -> Result<Option<DistributeAs>, SettingError> {
        let (by, colocate, shards, reference) = (
            say(origin, "--distribute-by", "distribute_by"),
            say(origin, "--colocate-with", "colocate_with"),
            say(origin, "--shard-count", "shard_count"),
            say(origin, "--reference-table", "reference_table"),
        );
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
