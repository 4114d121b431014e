//! Binary COPY: the fast path, one streaming `COPY … FROM STDIN (FORMAT binary)` per segment;
//! and in reject mode, one COPY per chunk under a savepoint, so rows the server refuses can
//! be found ([`crate::sink::write::refused`]) and set aside.

use std::ops::ControlFlow;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::mpsc;

use crate::encode::{COPY_HEADER, COPY_TRAILER};
use crate::metrics::Statement;
use crate::progress::{Progress, SentWith};
use crate::rejects::RejectFile;
use crate::schema::TableName;
use crate::sink::SinkError;
use crate::sink::plan::LoadPlan;
use crate::sink::write::refused;
use crate::sink::write::{Encoded, Refusable, SegmentEnd, next_chunk};

/// Largest CopyData message sent to the server. Each message is a hand-off from our task to
/// the connection's (tokio-postgres queues one at a time): at 64 KiB a million demo rows took
/// 22k context switches, at 256 KiB 11k, with less client CPU and no slower a load; at 1 MiB
/// the server waits longer for each message before it parses any of it, for no further gain.
const COPY_MESSAGE_BYTES: usize = 256 * 1024;

/// One streaming COPY until the input or a commit point ends. Only [`Encoded::End`] lets the
/// COPY finish: a channel closing without it leaves the COPY unfinished, which aborts it.
///
/// `records`, when given, collects each row's record number in COPY order.
pub(super) async fn segment(
    transaction: &tokio_postgres::Transaction<'_>,
    statement: &str,
    table: &TableName,
    rx: &mut mpsc::Receiver<Encoded>,
    progress: &Progress,
    mut records: Option<&mut Vec<u64>>,
) -> Result<(u64, SegmentEnd), SinkError> {
    let copy_failed = |e: tokio_postgres::Error| SinkError::database("COPY", table, &e);
    let started = std::time::Instant::now();
    let mut copy = CopyIn::open(transaction, statement)
        .await
        .map_err(copy_failed)?;
    let end = loop {
        let chunk = match next_chunk(rx).await? {
            ControlFlow::Continue(chunk) => chunk,
            ControlFlow::Break(end) => break end,
        };
        if let (Some(records), Some(refusable)) = (records.as_deref_mut(), chunk.refusable) {
            records.extend_from_slice(&refusable.records);
        }
        copy.send(chunk.bytes).await.map_err(copy_failed)?;
        progress.add_rows(chunk.rows, SentWith::Copy);
    };
    let rows = copy.finish().await.map_err(copy_failed)?;
    progress.round_trip(Statement::Copy);
    tracing::info!(statement = "COPY", table = %table, rows_affected = rows, elapsed_ms = started.elapsed().as_millis() as u64, "sql.execute");
    Ok((rows, end))
}

/// COPY chunk by chunk, each under its own savepoint, setting aside the rows the server
/// refuses, until the input or a commit point ends.
pub(super) async fn isolating_segment(
    transaction: &mut tokio_postgres::Transaction<'_>,
    plan: &LoadPlan,
    rx: &mut mpsc::Receiver<Encoded>,
    rejects: &RejectFile,
    progress: &Progress,
) -> Result<(u64, SegmentEnd), SinkError> {
    // Under a savepoint FREEZE is not allowed.
    let statement = plan.copy_statement(false);
    let mut loaded = 0;
    loop {
        let chunk = match next_chunk(rx).await? {
            ControlFlow::Continue(chunk) => chunk,
            ControlFlow::Break(end) => return Ok((loaded, end)),
        };
        let Some(refusable) = chunk.refusable else {
            return Err(SinkError::Protocol("a COPY chunk without its rows"));
        };
        loaded += isolating(
            transaction,
            &statement,
            &chunk.bytes,
            &refusable,
            rejects,
            &plan.table,
        )
        .await?;
        progress.add_rows(chunk.rows, SentWith::Copy);
        progress.round_trip(Statement::Copy);
    }
}

/// Loads one chunk's rows, setting aside those the server refuses (a constraint, a value it
/// will not take), each with its record number, the server's reason and its values.
async fn isolating(
    transaction: &mut tokio_postgres::Transaction<'_>,
    statement: &str,
    bytes: &Bytes,
    rows: &Refusable,
    rejects: &RejectFile,
    table: &TableName,
) -> Result<u64, SinkError> {
    let start_of = |row: usize| if row == 0 { 0 } else { rows.ends[row - 1] };
    refused::isolate(
        transaction,
        rows.ends.len(),
        table,
        "COPY",
        async |savepoint, range| {
            let data = bytes.slice(start_of(range.start)..rows.ends[range.end - 1]);
            copy_once(savepoint, statement, data).await
        },
        async |_, row, reason| {
            rejects.add(
                rows.records[row],
                None,
                reason,
                &crate::rejects::row_json(&rows.batch, row),
            )?;
            Ok(())
        },
    )
    .await
}

/// Sends COPY data in CopyData messages of at most [`COPY_MESSAGE_BYTES`], then flushes: the
/// server reads each message whole before parsing it, so a message as large as a batch would
/// stall it while it arrives. The pieces share `bytes`' buffer.
pub(super) async fn send_copy_data<S>(
    sink: &mut S,
    mut bytes: Bytes,
) -> Result<(), tokio_postgres::Error>
where
    S: futures_util::Sink<Bytes, Error = tokio_postgres::Error> + Unpin,
{
    while !bytes.is_empty() {
        let piece = bytes.split_to(bytes.len().min(COPY_MESSAGE_BYTES));
        sink.feed(piece).await?;
    }
    sink.flush().await
}

/// Sends one COPY statement with `data` (whole rows) and returns the rows it loaded.
async fn copy_once(
    transaction: &tokio_postgres::Transaction<'_>,
    statement: &str,
    data: Bytes,
) -> Result<u64, tokio_postgres::Error> {
    copy_all(transaction, statement, [data]).await
}

/// Sends one COPY statement with the whole rows of `pieces`, in order, and returns the rows
/// it loaded.
pub(super) async fn copy_all(
    transaction: &tokio_postgres::Transaction<'_>,
    statement: &str,
    pieces: impl IntoIterator<Item = Bytes>,
) -> Result<u64, tokio_postgres::Error> {
    let mut copy = CopyIn::open(transaction, statement).await?;
    for piece in pieces {
        copy.send(piece).await?;
    }
    copy.finish().await
}

/// One COPY in progress: its header sent, whole rows sent as they come, its trailer sent by
/// [`CopyIn::finish`]. Dropped unfinished, it aborts.
pub(super) struct CopyIn {
    sink: std::pin::Pin<Box<tokio_postgres::CopyInSink<Bytes>>>,
}

impl CopyIn {
    pub(super) async fn open(
        transaction: &tokio_postgres::Transaction<'_>,
        statement: &str,
    ) -> Result<CopyIn, tokio_postgres::Error> {
        let mut sink = Box::pin(transaction.copy_in::<_, Bytes>(statement).await?);
        sink.feed(Bytes::from_static(COPY_HEADER)).await?;
        Ok(CopyIn { sink })
    }

    pub(super) async fn send(&mut self, rows: Bytes) -> Result<(), tokio_postgres::Error> {
        send_copy_data(&mut self.sink, rows).await
    }

    /// Ends the COPY and returns the rows it loaded.
    pub(super) async fn finish(mut self) -> Result<u64, tokio_postgres::Error> {
        self.sink.send(Bytes::from_static(COPY_TRAILER)).await?;
        self.sink.as_mut().finish().await
    }
}
