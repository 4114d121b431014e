//! The choices a user makes by name, as `--mode merge` on the command line or `mode: merge`
//! in YAML: one enum each, shared by the flags (clap) and the config (serde), and matched by
//! the stages that act on them.

/// How the load treats rows already in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    /// Add the records to the table.
    #[default]
    Append,
    /// Replace the table's rows with the records, atomically.
    Replace,
    /// Insert new keys and update existing ones (`--key`); the last record of a key wins.
    Merge,
}

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WriteMethod {
    /// Binary COPY: the fast path.
    #[default]
    Copy,
    /// Batched `INSERT … SELECT … FROM unnest(…)`, for servers and proxies without COPY.
    Insert,
}

/// What to do with fields the target table has no column for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SchemaPolicy {
    /// Add a nullable column for each new field (in the load's transaction).
    #[default]
    Evolve,
    /// Fail, naming the field.
    Freeze,
    /// Drop such fields, and say which.
    Discard,
}

/// How `--mode replace` replaces a table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReplaceWith {
    /// Load a new table and put it in the old one's place at the end, with its indexes,
    /// keys, triggers and grants.
    #[default]
    Swap,
    /// Delete the rows and load the new ones into the same table (slower on indexed tables,
    /// and leaves the old rows dead until VACUUM; keeps views and foreign keys pointing at it).
    Delete,
}

/// What to do with a record that cannot be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OnError {
    /// Fail the load; the table is left unchanged.
    #[default]
    Fail,
    /// Set the record aside in the reject file and load the rest.
    Reject,
}

/// The layout of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum InputFormat {
    /// Detect from the first byte: `[` is a JSON array, `{` NDJSON.
    #[default]
    Auto,
    /// One JSON object per line.
    Ndjson,
    /// One JSON array whose elements are the records.
    Json,
}

/// The HTTP method of a source's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum HttpMethod {
    #[default]
    Get,
    /// POST, with the source's JSON body.
    Post,
}

/// When to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ProgressMode {
    /// A bar when stderr is a terminal.
    Auto,
    /// A bar on a terminal, else a line every few seconds.
    Always,
    Never,
}

/// What becomes of a record's nested objects (`--nested`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Nested {
    /// Each top-level field is one column; objects and arrays land whole, as jsonb.
    #[default]
    Keep,
    /// The fields of objects become columns named by their path (`user__screen_name`), down
    /// to `--max-nesting` levels; arrays land whole, as jsonb.
    Flatten,
    /// As `flatten`, and each array becomes a child table (`tweets__entities__hashtags`),
    /// one row per element linked to its parent row.
    Tables,
}
