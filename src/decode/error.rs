//! Why input could not be decoded, and where: every variant about a record names its line
//! and its number, so a message can send the user to it.

/// Why the input could not be decoded. Positions are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the input is not JSON (it looks like {looks_like}): {start}")]
    NotJson {
        looks_like: &'static str,
        start: String,
    },
    #[error("line {line}: {message}")]
    Structure { line: u64, message: String },
    #[error("line {line}: a record is longer than the limit of {limit} bytes")]
    RecordTooLarge { line: u64, limit: usize },
    #[error(
        "the document is larger than the limit of {limit} bytes (raise --max-record-bytes, or ask the API for smaller pages)"
    )]
    DocumentTooLarge { limit: usize },
    /// A record skipped by the framer (reject mode) for being longer than the limit.
    #[error("line {line} (record {record}): the record is longer than --max-record-bytes allows")]
    Oversized { line: u64, record: u64 },
    #[error("line {line}, column {column} (record {record}): malformed JSON: {message}")]
    Syntax {
        line: u64,
        column: u64,
        record: u64,
        message: String,
    },
    #[error("line {line} (record {record}): column {column:?}: {reason}")]
    Value {
        line: u64,
        record: u64,
        column: String,
        reason: String,
    },
    #[error(
        "line {line} (record {record}): field {field:?} is {found}, but its fields are loaded as columns \
         ({columns}__…), so only an object or null fits there; load with --nested keep to keep it whole as jsonb"
    )]
    NotObject {
        line: u64,
        record: u64,
        field: String,
        /// The field's columns' common start (`user` for `user__id`, …).
        columns: String,
        found: &'static str,
    },
    #[error(
        "line {line} (record {record}): field {field:?} is {found}, but its elements are loaded as rows of a \
         child table, so only an array or null fits there; load with --nested flatten or keep to keep it whole as jsonb"
    )]
    NotArray {
        line: u64,
        record: u64,
        field: String,
        found: &'static str,
    },
    #[error("line {line} (record {record}): field {field:?} {hint}")]
    UnknownField {
        line: u64,
        record: u64,
        field: String,
        hint: String,
    },
}

impl DecodeError {
    /// The number of the record the error is about, when it is about one.
    pub(crate) fn record(&self) -> Option<u64> {
        match self {
            DecodeError::Syntax { record, .. }
            | DecodeError::Oversized { record, .. }
            | DecodeError::Value { record, .. }
            | DecodeError::NotObject { record, .. }
            | DecodeError::NotArray { record, .. }
            | DecodeError::UnknownField { record, .. } => Some(*record),
            _ => None,
        }
    }

    /// The line the error is on, when it is about one record (0 otherwise).
    pub(crate) fn line(&self) -> u64 {
        match self {
            DecodeError::Syntax { line, .. }
            | DecodeError::Oversized { line, .. }
            | DecodeError::Value { line, .. }
            | DecodeError::NotObject { line, .. }
            | DecodeError::NotArray { line, .. }
            | DecodeError::UnknownField { line, .. }
            | DecodeError::Structure { line, .. }
            | DecodeError::RecordTooLarge { line, .. } => *line,
            _ => 0,
        }
    }

    /// Renumbers the error as `lines` lines and `records` records further into the input: a
    /// decode worker that finds lines itself numbers them from the start of its job.
    pub(crate) fn shift(&mut self, lines: u64, records: u64) {
        match self {
            DecodeError::Syntax { line, record, .. }
            | DecodeError::Oversized { line, record }
            | DecodeError::Value { line, record, .. }
            | DecodeError::NotObject { line, record, .. }
            | DecodeError::NotArray { line, record, .. }
            | DecodeError::UnknownField { line, record, .. } => {
                *line += lines;
                *record += records;
            }
            // Line 0 is no line (an internal error).
            DecodeError::Structure { line, .. } | DecodeError::RecordTooLarge { line, .. } => {
                if *line > 0 {
                    *line += lines;
                }
            }
            DecodeError::NotJson { .. } | DecodeError::DocumentTooLarge { .. } => {}
        }
    }
}
