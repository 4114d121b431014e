//! The resolved load: everything one `apitap load`, or one source of a pipeline module, asks
//! for, checked, with its defaults applied, and cut into the parts the stages take.
//!
//! Users describe a load in two ways, as flags and as a YAML source. Both are turned into a
//! [`LoadSpec`] (the raw description: text as written, options left unset) and resolved by
//! the one function [`LoadSpec::resolve`], so they get the same defaults ([`defaults`]), the
//! same checks and the same messages; only the names of the settings in messages follow
//! where the user wrote them ([`Origin`](crate::base::Origin)).
//!
//! The result, [`Load`], is a few typed parts, each defined by the stage that uses it: the
//! fetch stage takes [`SourceSettings`], the decode stage [`DecodeSettings`], the sink
//! [`WriteSettings`] and [`StateSettings`], the reject file [`RejectOptions`]. No stage sees
//! the settings of another.

mod resolve;
mod spec;

pub(crate) use spec::LoadSpec;

use crate::decode::DecodeSettings;
use crate::rejects::RejectOptions;
use crate::sink::WriteSettings;
use crate::sink::state::StateSettings;
use crate::source::SourceSettings;

/// The defaults of every load, whichever way it was described.
pub(crate) mod defaults {
    /// Records read first, to infer a new table's columns.
    pub(crate) const SAMPLE: usize = 1000;
    /// Levels of objects `--nested flatten` makes columns of.
    pub(crate) const MAX_NESTING: usize = 10;
    /// Records per Arrow batch.
    pub(crate) const BATCH_SIZE: usize = 8192;
    /// Rows per statement of the INSERT fallback.
    pub(crate) const INSERT_BATCH: usize = 5000;
    /// The longest record (or `--records-path` document) accepted.
    pub(crate) const MAX_RECORD_BYTES: usize = 64 << 20;
    /// Seconds to wait for an HTTP connection.
    pub(crate) const CONNECT_TIMEOUT_SECS: f64 = 10.0;
    /// Seconds to wait for each read of an HTTP response.
    pub(crate) const READ_TIMEOUT_SECS: f64 = 60.0;
    /// Where `--on-error reject` sets records aside.
    pub(crate) const REJECT_FILE: &str = "rejects.ndjson";
    /// Seconds a load waits for another run of it (same state key, or the same table for a
    /// replace or merge) to finish.
    pub(crate) const LOCK_TIMEOUT_SECS: f64 = 600.0;
    /// The most bytes one page may hold, after decompression.
    pub(crate) const MAX_PAGE_BYTES: usize = crate::source::http::DEFAULT_MAX_PAGE_BYTES;
}

/// The largest `--max-record-bytes`: PostgreSQL stores no value over 1 GiB, and a batch (up
/// to 512 MiB of input plus one record) must stay under Arrow's 2 GiB offsets.
pub(crate) const MAX_RECORD_BYTES_LIMIT: usize = 1 << 30;

/// One load, checked, in the parts its stages take.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    pub source: SourceSettings,
    pub decode: DecodeSettings,
    pub write: WriteSettings,
    pub state: StateSettings,
    /// Set bad records aside instead of failing (`--on-error reject`).
    pub rejects: Option<RejectOptions>,
}

impl Load {
    /// The source as messages name it (a URL with its secrets hidden, a path, `stdin`).
    pub(crate) fn source_name(&self) -> String {
        self.source.source.to_string()
    }
}

#[cfg(test)]
mod tests;
