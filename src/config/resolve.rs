//! A module's loads, resolved in one step: each source the module reads, with a state of its
//! own, and the one sink part its output is written with, from the first source's settings
//! as the module's `sink(…)` call amends them (the original ApiTap took them from the first
//! source).

use super::module::{Module, SinkCall};
use super::{Config, ConfigError};
use crate::base::options::Mode;
use crate::load::{Load, LoadSpec};
use crate::rejects::RejectOptions;
use crate::schema::PgType;
use crate::sink::{ConnectOptions, WriteSettings};

/// What one run of a module loads, and where.
#[derive(Debug)]
pub(crate) struct ModuleLoads {
    /// The module's target database.
    pub connect: ConnectOptions,
    /// The sources the SQL reads, in order of first use.
    pub sources: Vec<ModuleSource>,
    /// How the module's output is written.
    pub write: WriteSettings,
    /// The module's reject file, shared by its sources' decoders and its writer, when the
    /// first source says `on_error: reject`.
    pub rejects: Option<RejectOptions>,
}

/// One source of a module.
#[derive(Debug)]
pub(crate) struct ModuleSource {
    pub name: String,
    /// Only its source, decode and state parts are used: the module's output is what is
    /// written.
    pub load: Load,
    /// Column types the config gives, overriding inference (`columns:`).
    pub column_types: Vec<(String, PgType)>,
}

impl Config {
    /// Resolves `module` against this config, with `${VAR}` from `env`.
    ///
    /// # Errors
    /// A missing source or target, no destination table, a setting that cannot work, a
    /// merge without keys, or an incremental source in a module of several.
    pub(crate) fn module_loads(
        &self,
        module: &Module,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ModuleLoads, ConfigError> {
        let what = format!("module {}", module.name);
        let resolve_error = |reason: String| ConfigError::Resolve {
            what: what.clone(),
            reason,
        };
        let target = self.target(module.sink.name.as_deref())?;
        let connect = target.connect_options(env)?;
        let first = self.source(&module.sources[0])?;
        let table_text = module
            .sink
            .table
            .clone()
            .or_else(|| first.table_destination_name.clone())
            .ok_or_else(|| {
                resolve_error(format!(
                    "no destination table: add table=\"schema.name\" to sink(…), or table_destination_name to source {:?}",
                    first.name
                ))
            })?;
        let table_text = crate::base::expand::expand(&table_text, env, "the destination table")
            .map_err(|error| ConfigError::Setting {
                what: what.clone(),
                error,
            })?;
        let table = target.table(&table_text)?;
        let mut sources = Vec::with_capacity(module.sources.len());
        let mut sink = None;
        for name in &module.sources {
            let source = self.source(name)?;
            let mut spec = source.to_spec(table.clone())?;
            // Each module keeps its own state of a source: two modules reading one
            // incremental source each get every record. The source's name was the key before.
            spec.state_key = format!("{}/{}", module.name, source.name);
            spec.legacy_state_key = Some(source.name.clone());
            // The first source's settings are the output's, as the module's sink(…) amends
            // them; they change nothing of how the source itself is read but its reject file.
            let first = sources.is_empty();
            if first {
                amend(&mut spec, &module.sink, module.reject_file.as_ref());
                if spec.mode == Mode::Merge && spec.keys.is_empty() {
                    return Err(resolve_error(
                        "mode merge needs key columns: sink(key=\"id\") or primary_key_in_dest"
                            .into(),
                    ));
                }
            }
            let load = source.resolve(spec, env)?;
            if first {
                sink = Some((load.write.clone(), load.rejects.clone()));
            }
            sources.push(ModuleSource {
                name: source.name.clone(),
                load,
                column_types: source.column_types()?,
            });
        }
        if sources.len() > 1 && sources.iter().any(|s| s.load.state.incremental.is_some()) {
            return Err(resolve_error(
                "cursor_field (incremental loading) works in modules that read one source".into(),
            ));
        }
        let Some((write, rejects)) = sink else {
            return Err(resolve_error("the module reads no source".into()));
        };
        Ok(ModuleLoads {
            connect,
            sources,
            write,
            rejects,
        })
    }
}

/// The first source's load as the module's `sink(…)` call amends it: mode, keys, Citus
/// distribution, and the module's own reject file where modules would share one.
fn amend(spec: &mut LoadSpec, sink: &SinkCall, reject_file: Option<&std::path::PathBuf>) {
    if let Some(mode) = sink.mode {
        spec.mode = mode;
    }
    if let Some(keys) = &sink.keys {
        spec.keys = keys.columns();
    }
    if spec.mode != Mode::Merge {
        spec.keys.clear();
    }
    let citus = sink.distribute_by.is_some()
        || sink.colocate_with.is_some()
        || sink.shard_count.is_some()
        || sink.reference_table.is_some();
    if citus {
        spec.distribute_by = sink.distribute_by.clone();
        spec.colocate_with = sink.colocate_with.clone();
        spec.shard_count = sink.shard_count;
        spec.reference_table = sink.reference_table.unwrap_or(false);
    }
    if let Some(path) = reject_file {
        spec.reject_file = Some(path.clone());
    }
}
