//! What flows from the encode stage into the writer, and how the writer reads it: COPY
//! chunks or INSERT rows, commit points, and the end of the input, which alone lets a load
//! commit.

use arrow_array::RecordBatch;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::spool::Spool;
use crate::sink::SinkError;

/// What the encode stage hands to the writer, in order.
pub(crate) enum Encoded {
    /// Binary COPY data of whole rows.
    Copy(CopyChunk),
    /// One INSERT's worth of rows: each column's values as PostgreSQL text, and in reject
    /// mode what is needed to set a refused row aside.
    Rows {
        columns: Vec<Vec<Option<String>>>,
        rows: u64,
        refusable: Option<Box<Refusable>>,
    },
    /// `--nested tables`: the next part of the rows of every table of the family, each in
    /// a temporary file ([`RowsPath::Family`](super::RowsPath::Family)).
    Part(Spool),
    /// A commit point (`--commit-every`): where to resume, and the highest cursor so far.
    Checkpoint {
        resume: String,
        cursor: Option<String>,
        children: Option<Spool>,
    },
    /// Every row was sent and every stage before the writer ended cleanly; the highest
    /// cursor value, and the child tables' rows (`--nested tables`). Only now may the load
    /// commit.
    End {
        cursor: Option<String>,
        children: Option<Spool>,
    },
}

/// The rows of one chunk, kept in reject mode so that a row the server refuses can be set
/// aside with its record number and values.
pub(crate) struct Refusable {
    /// Where each row ends in the chunk's COPY data (see
    /// [`crate::encode::CopyEncoder::row_ends`]); empty for INSERT rows.
    pub ends: Vec<usize>,
    /// Each row's record number in the load.
    pub records: Vec<u64>,
    /// The rows' values, to write a refused row to the reject file.
    pub batch: RecordBatch,
}

/// How a group of rows ended.
pub(super) enum SegmentEnd {
    /// The input ended cleanly ([`Encoded::End`]); the highest cursor value, and the child
    /// tables' rows.
    Done {
        cursor: Option<String>,
        children: Option<Spool>,
    },
    /// A commit point: where to resume, the highest cursor value so far, and the child
    /// tables' rows since the last.
    Checkpoint {
        resume: String,
        cursor: Option<String>,
        children: Option<Spool>,
    },
}

impl From<Encoded> for Option<SegmentEnd> {
    /// How a segment ends, if `item` ends it.
    fn from(item: Encoded) -> Option<SegmentEnd> {
        match item {
            Encoded::End { cursor, children } => Some(SegmentEnd::Done { cursor, children }),
            Encoded::Checkpoint {
                resume,
                cursor,
                children,
            } => Some(SegmentEnd::Checkpoint {
                resume,
                cursor,
                children,
            }),
            Encoded::Copy(_) | Encoded::Rows { .. } | Encoded::Part(_) => None,
        }
    }
}

/// Binary COPY data of `rows` whole rows, and in reject mode what is needed to find a row
/// the server refuses in it.
pub(crate) struct CopyChunk {
    pub bytes: Bytes,
    pub rows: u64,
    pub refusable: Option<Box<Refusable>>,
    /// Each row's merge key may have come before in the load (see
    /// [`crate::encode::repeats`]). False when the keys are not tracked.
    pub repeats: bool,
}

/// The next COPY chunk of a segment, or how the segment ends: the input's end or a commit
/// point. A channel that closes without [`Encoded::End`] is [`SinkError::InputEnded`].
pub(super) async fn next_chunk(
    rx: &mut mpsc::Receiver<Encoded>,
) -> Result<std::ops::ControlFlow<SegmentEnd, CopyChunk>, SinkError> {
    use std::ops::ControlFlow::{Break, Continue};
    match rx.recv().await {
        Some(Encoded::Copy(chunk)) => Ok(Continue(chunk)),
        Some(Encoded::Rows { .. }) => Err(SinkError::Protocol("INSERT rows on the COPY path")),
        Some(Encoded::Part(_)) => Err(SinkError::Protocol("spooled rows on the COPY path")),
        Some(end) => Option::<SegmentEnd>::from(end)
            .map(Break)
            .ok_or(SinkError::Protocol("a segment that does not end")),
        None => Err(SinkError::InputEnded),
    }
}

/// Waits for the end of an input that has nothing to load (no columns).
pub(super) async fn drain(rx: &mut mpsc::Receiver<Encoded>) -> Result<SegmentEnd, SinkError> {
    while let Some(item) = rx.recv().await {
        if let Some(end) = item.into() {
            return Ok(end);
        }
    }
    Err(SinkError::InputEnded)
}
