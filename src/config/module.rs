//! SQL modules: every `*.sql` file under the modules folder is a minijinja template that
//! says where its rows come from, where they go and when, through the original ApiTap's
//! helpers:
//!
//! ```sql
//! {{ sink(name="warehouse", table="analytics.posts", mode="merge", key="id") }}
//! {{ schedule("0 */5 * * * *") }}
//! SELECT id, "userId" AS user_id, title FROM {{ use_source("posts") }} WHERE id > 5
//! ```
//!
//! `use_source("posts")` prints the source's name as a quoted SQL identifier, and the
//! transform registers the source under exactly that name: the SQL text is never rewritten.
//! `sink` takes the target's name and, beyond the original, the destination `table`, write
//! `mode` and merge `key`. `schedule` takes a cron expression (6 fields, seconds first, UTC);
//! a module without one runs only when asked. The date helpers `current_date()` and
//! `few_date_ago(N)` work here too.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use minijinja::value::Kwargs;
use minijinja::{Environment, Error, ErrorKind, Value};

use super::{ConfigError, Keys};
use crate::base::options::Mode;
use crate::schema::quote_ident;

/// What a module's `sink(…)` call said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SinkCall {
    /// The target's name in the config.
    pub name: Option<String>,
    /// `schema.table`, overriding the first source's `table_destination_name`.
    pub table: Option<String>,
    pub mode: Option<Mode>,
    pub keys: Option<Keys>,
    /// Citus, for a table the module creates: `distribute_by="col"` (with `colocate_with`,
    /// `shard_count`) or `reference_table=true`, checked as a source's keys are.
    pub distribute_by: Option<String>,
    pub colocate_with: Option<String>,
    pub shard_count: Option<u32>,
    pub reference_table: Option<bool>,
}

/// A rendered module.
#[derive(Debug, Clone)]
pub(crate) struct Module {
    /// The file's path under the modules folder, without `.sql` (`posts`, `team/users`).
    pub name: String,
    pub path: PathBuf,
    /// The SQL DataFusion runs.
    pub sql: String,
    pub sink: SinkCall,
    /// Sources in order of first `use_source`.
    pub sources: Vec<String>,
    pub schedule: Option<String>,
    /// Where the module sets records aside, when its first source's reject file is one
    /// other modules would write too (see [`separate_reject_files`]).
    pub reject_file: Option<PathBuf>,
}

#[derive(Debug, Default)]
struct Calls {
    sink: Option<SinkCall>,
    sources: Vec<String>,
    schedule: Option<String>,
}

/// Every `*.sql` file under `dir`, recursively, sorted by path.
///
/// # Errors
/// A folder that cannot be read.
pub(crate) fn discover(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|e| ConfigError::Read {
            path: folder.clone(),
            reason: e.to_string(),
        })?;
        for entry in entries {
            let path = entry
                .map_err(|e| ConfigError::Read {
                    path: folder.clone(),
                    reason: e.to_string(),
                })?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "sql") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message)
}

/// The templates' environment: the date helpers, and `sink`, `use_source` and `schedule`,
/// which record their calls in `calls`.
fn helpers(calls: &Arc<Mutex<Calls>>) -> Environment<'static> {
    let mut templates = Environment::new();
    crate::base::expand::add_date_helpers(&mut templates);
    {
        let calls = calls.clone();
        templates.add_function(
            "sink",
            move |name: Option<String>, kwargs: Kwargs| -> Result<String, Error> {
                let call = sink_call(name, &kwargs)?;
                kwargs.assert_all_used()?;
                if let Ok(mut calls) = calls.lock() {
                    calls.sink = Some(call);
                }
                Ok(String::new())
            },
        );
    }
    {
        let calls = calls.clone();
        templates.add_function("use_source", move |name: String| -> Value {
            if let Ok(mut calls) = calls.lock()
                && !calls.sources.contains(&name)
            {
                calls.sources.push(name.clone());
            }
            Value::from_safe_string(quote_ident(&name))
        });
    }
    for helper in ["schedule", "scheduler"] {
        let calls = calls.clone();
        templates.add_function(helper, move |cron: String| -> Result<String, Error> {
            super::schedule::Schedule::parse(&cron).map_err(|e| invalid(e.to_string()))?;
            if let Ok(mut calls) = calls.lock() {
                calls.schedule = Some(cron);
            }
            Ok(String::new())
        });
    }
    templates
}

/// What a `sink(…)` call says: the target's name (first argument or `name=`), and `table`,
/// `mode`, `key` and the Citus settings.
fn sink_call(name: Option<String>, kwargs: &Kwargs) -> Result<SinkCall, Error> {
    let name = match name {
        Some(n) => Some(n),
        None => kwargs.get::<Option<String>>("name")?,
    };
    let mode = kwargs
        .get::<Option<String>>("mode")?
        .map(|m| {
            serde_yaml::from_str::<Mode>(&m).map_err(|_| {
                invalid(format!(
                    "sink(mode={m:?}): use \"append\", \"replace\" or \"merge\""
                ))
            })
        })
        .transpose()?;
    let keys = match kwargs.get::<Option<Value>>("key")? {
        None => None,
        Some(v) if v.kind() == minijinja::value::ValueKind::Seq => {
            Some(Keys::Many(v.try_iter()?.map(|k| k.to_string()).collect()))
        }
        Some(v) => Some(Keys::One(v.to_string())),
    };
    Ok(SinkCall {
        name,
        table: kwargs.get("table")?,
        mode,
        keys,
        distribute_by: kwargs.get("distribute_by")?,
        colocate_with: kwargs.get("colocate_with")?,
        shard_count: kwargs.get("shard_count")?,
        reference_table: kwargs.get("reference_table")?,
    })
}

/// Renders the module at `path` (inside `dir`).
///
/// # Errors
/// An unreadable file, a template error (with its line), or a helper called wrongly.
pub(crate) fn render(dir: &Path, path: &Path) -> Result<Module, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let name = path
        .strip_prefix(dir)
        .unwrap_or(path)
        .with_extension("")
        .to_string_lossy()
        .replace('\\', "/");
    let calls = Arc::new(Mutex::new(Calls::default()));
    let templates = helpers(&calls);
    let rendered = templates
        .render_named_str(&name, &source, ())
        .map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason: template_error(&e),
        })?;
    let calls = std::mem::take(&mut *calls.lock().map_err(|_| ConfigError::Invalid {
        path: path.to_path_buf(),
        reason: "a template helper panicked".into(),
    })?);
    if calls.sources.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            reason: "the module reads no source; name one with {{ use_source(\"name\") }}".into(),
        });
    }
    Ok(Module {
        name,
        path: path.to_path_buf(),
        sql: rendered.trim().trim_end_matches(';').trim_end().to_string(),
        sink: calls.sink.unwrap_or_default(),
        sources: calls.sources,
        schedule: calls.schedule,
        reject_file: None,
    })
}

/// Gives each module that sets records aside a reject file of its own when several would
/// share one (the default `rejects.ndjson`, or a source's `reject_file` read by several
/// modules): the module's name goes before the extension, `rejects.orders_daily.ndjson`, so
/// modules running at once (`--jobs`) never write into one file. `modules` should be every
/// module of the folder, so that a name does not depend on which ones a run selects.
pub(crate) fn separate_reject_files(config: &super::Config, modules: &mut [Module]) {
    let mut users: std::collections::BTreeMap<PathBuf, Vec<usize>> = Default::default();
    for (i, module) in modules.iter().enumerate() {
        let Some(first) = module.sources.first().and_then(|s| config.source(s).ok()) else {
            continue;
        };
        if first.on_error == crate::base::options::OnError::Reject {
            let path = first
                .reject_file
                .clone()
                .unwrap_or_else(|| PathBuf::from(crate::load::defaults::REJECT_FILE));
            users.entry(path).or_default().push(i);
        }
    }
    for (path, shared_by) in users.into_iter().filter(|(_, m)| m.len() > 1) {
        for i in shared_by {
            let module = modules[i].name.replace(['/', '\\'], ".");
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            let name = match path.extension() {
                Some(ext) => format!("{stem}.{module}.{}", ext.to_string_lossy()),
                None => format!("{stem}.{module}"),
            };
            modules[i].reject_file = Some(path.with_file_name(name));
        }
    }
}

/// A template error with its line, and the reason behind it.
fn template_error(error: &Error) -> String {
    let mut text = match (error.line(), error.detail()) {
        (Some(line), Some(detail)) => format!("line {line}: {detail}"),
        _ => error.to_string(),
    };
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        text.push_str(&format!(": {e}"));
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(text: &str) -> Result<Module, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("posts.sql");
        std::fs::write(&path, text).unwrap();
        render(dir.path(), &path).map_err(|e| {
            e.to_string()
                .replace(&path.display().to_string(), "posts.sql")
        })
    }

    #[test]
    fn helpers_record_sink_sources_and_schedule() {
        let m = module(
            "{{ sink(name=\"pg\", table=\"a.posts\", mode=\"merge\", key=[\"id\", \"v\"]) }}\n\
             SELECT p.id, u.name FROM {{ use_source(\"posts\") }} p\n\
             JOIN {{ use_source(\"Users\") }} u ON p.\"userId\" = u.id;\n\
             {{ schedule(\"0 */5 * * * *\") }}\n",
        )
        .unwrap();
        assert_eq!(m.name, "posts");
        assert_eq!(
            m.sql,
            "SELECT p.id, u.name FROM \"posts\" p\nJOIN \"Users\" u ON p.\"userId\" = u.id"
        );
        assert_eq!(m.sources, vec!["posts", "Users"]);
        assert_eq!(m.schedule.as_deref(), Some("0 */5 * * * *"));
        assert_eq!(
            m.sink,
            SinkCall {
                name: Some("pg".into()),
                table: Some("a.posts".into()),
                mode: Some(Mode::Merge),
                keys: Some(Keys::Many(vec!["id".into(), "v".into()])),
                ..SinkCall::default()
            }
        );
    }

    #[test]
    fn sink_takes_citus_settings() {
        let m = module(
            "{{ sink(table=\"a.b\", distribute_by=\"id\", colocate_with=\"a.c\") }} select * from {{ use_source(\"x\") }}",
        )
        .unwrap();
        assert_eq!(
            (
                m.sink.distribute_by,
                m.sink.colocate_with,
                m.sink.shard_count
            ),
            (Some("id".into()), Some("a.c".into()), None)
        );
        let m = module("{{ sink(reference_table=true) }} select * from {{ use_source(\"x\") }}")
            .unwrap();
        assert_eq!(m.sink.reference_table, Some(true));
    }

    #[test]
    fn names_are_quoted_not_spliced() {
        let m = module("select posts_id from {{ use_source('we\"ird') }}").unwrap();
        assert_eq!(m.sql, "select posts_id from \"we\"\"ird\"");
        assert_eq!(m.schedule, None);
    }

    #[test]
    fn mistakes_are_named_with_their_line() {
        let err = module("select 1 from {{ use_source(\"a\") }}\n{{ schedule(\"every day\") }}")
            .unwrap_err();
        assert!(err.starts_with("posts.sql: line 2: "), "{err}");
        assert!(err.contains("every day"), "{err}");
        let err = module("{{ sink(name='pg', tabel='x') }} select 1 from {{ use_source('a') }}")
            .unwrap_err();
        assert!(err.contains("tabel"), "{err}");
        assert_eq!(
            module("select 1").unwrap_err(),
            "posts.sql: the module reads no source; name one with {{ use_source(\"name\") }}"
        );
    }
}
