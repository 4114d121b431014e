//! What the decode stage needs of a load, resolved from its flags or YAML source.

use super::Framer;
use super::framing::Format;
use super::pointer::JsonPointer;

/// How a load's records are found and decoded.
#[derive(Debug, Clone)]
pub(crate) struct DecodeSettings {
    /// `None` detects NDJSON or a JSON array from the first byte.
    pub format: Option<Format>,
    /// The records are the array at this pointer inside one JSON document (or each page).
    pub records_path: Option<JsonPointer>,
    /// Records read first, to infer a new table's columns (and see which fields exist).
    pub sample: usize,
    /// Levels of objects whose fields become columns (`--nested flatten`); 0 under
    /// `--nested keep`.
    pub flatten_depth: usize,
    /// `--nested tables`: arrays become child tables.
    pub tables: bool,
    /// Records per Arrow batch.
    pub batch_size: usize,
    /// The longest record (or `records_path` document) accepted.
    pub max_record_bytes: usize,
    /// Threads decoding records; `None` until the load, which knows where the server is,
    /// chooses.
    pub threads: Option<usize>,
    /// Fail on a field the table has no column for (`--schema evolve|freeze`); under
    /// `discard` such fields are dropped.
    pub reject_unknown_fields: bool,
    /// Records that cannot be loaded are set aside (`--on-error reject`), so a record longer
    /// than the limit is skipped by the framer (and set aside by the decoder) instead of
    /// failing the load.
    pub rejecting: bool,
}

impl DecodeSettings {
    /// The framer for NDJSON or a JSON array, as these settings ask.
    pub(crate) fn framer(&self) -> Framer {
        let framer = Framer::new(self.format, self.max_record_bytes);
        if self.rejecting {
            framer.skipping_oversized()
        } else {
            framer
        }
    }
}
