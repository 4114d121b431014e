//! `--nested tables`: the rows of a family of tables, held per table until the writer sends
//! each table's as one COPY, in the load's transaction.
//!
//! A connection runs one COPY at a time, so the tables of a family cannot each stream as
//! their rows come; a COPY per table per batch would cost round trips by the thousand. So
//! the encode stage appends each batch's rows, already binary COPY tuples, to a spool with
//! one place per table. Appending or replacing, the spool is a part of bounded size held in
//! memory: the writer sends one part table by table while the next is being filled. A merge
//! applies a segment's child rows only after the root's upsert, so its spool holds the whole
//! segment, in one unnamed temporary file per table (removed by the system when closed, even
//! after a crash): disk use is about the size of the child rows as COPY data.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::copy::CopyIn;
use crate::schema::TableName;
use crate::sink::SinkError;
use crate::sink::plan::LoadPlan;

/// The child rows of one segment (or part), a file or buffer per table (none until it has
/// rows).
#[derive(Debug, Default)]
pub(crate) struct Spool {
    files: Vec<Option<Spooled>>,
    /// The COPY data in all the files.
    bytes: usize,
    /// Held in memory: a part of bounded size ([`Spool::in_memory`]).
    in_memory: bool,
}

/// One table's rows.
#[derive(Debug)]
pub(crate) struct Spooled {
    held: Held,
    rows: u64,
}

/// Where a table's spooled rows are.
#[derive(Debug)]
enum Held {
    /// A temporary file, for as many rows as a segment holds.
    File(File),
    /// A buffer, for a part whose size the encode stage bounds: writing it to a file and
    /// reading it back would cost the client a tenth of its time for nothing.
    Memory(BytesMut),
}

/// How much of a spooled file one COPY message carries.
const CHUNK: usize = 1 << 20;

impl Spool {
    pub(crate) fn new(tables: usize) -> Spool {
        Spool {
            files: (0..tables).map(|_| None).collect(),
            bytes: 0,
            in_memory: false,
        }
    }

    /// A spool held in memory: for parts the caller keeps small.
    pub(crate) fn in_memory(tables: usize) -> Spool {
        Spool {
            in_memory: true,
            ..Spool::new(tables)
        }
    }

    /// Appends `rows` rows of table `table`, as binary COPY tuples.
    ///
    /// # Errors
    /// The temporary file cannot be made or written (a full disk, most likely).
    pub(crate) fn append(&mut self, table: usize, rows: u64, tuples: &[u8]) -> std::io::Result<()> {
        if rows == 0 {
            return Ok(());
        }
        let spooled = match &mut self.files[table] {
            Some(spooled) => spooled,
            slot => slot.insert(Spooled {
                held: match self.in_memory {
                    true => Held::Memory(BytesMut::new()),
                    false => Held::File(tempfile::tempfile()?),
                },
                rows: 0,
            }),
        };
        match &mut spooled.held {
            Held::File(file) => file.write_all(tuples)?,
            Held::Memory(buffer) => buffer.extend_from_slice(tuples),
        }
        spooled.rows += rows;
        self.bytes += tuples.len();
        Ok(())
    }

    /// The COPY data spooled, in bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The rows spooled so far, leaving an empty spool for the next segment.
    pub(crate) fn take(&mut self) -> Spool {
        let empty = Spool {
            in_memory: self.in_memory,
            ..Spool::new(self.files.len())
        };
        empty.replace(self)
    }

    fn replace(mut self, old: &mut Spool) -> Spool {
        std::mem::swap(&mut self, old);
        self
    }

    /// Each table's file, `None` for a table without rows.
    pub(crate) fn into_files(self) -> Vec<Option<Spooled>> {
        self.files
    }

    /// COPYs each table's rows into its table (`children[i]` for file `i`) and returns the
    /// rows each got.
    ///
    /// # Errors
    /// A file that cannot be read back, or a COPY the server refuses (naming the table).
    pub(crate) async fn copy_into(
        self,
        transaction: &tokio_postgres::Transaction<'_>,
        children: &[LoadPlan],
    ) -> Result<Vec<u64>, SinkError> {
        let mut loaded = Vec::with_capacity(children.len());
        for (spooled, plan) in self.files.into_iter().zip(children) {
            let rows = match spooled {
                Some(spooled) => {
                    let statement = plan.copy_statement(false);
                    spooled.copy(transaction, &statement, &plan.table).await?
                }
                None => 0,
            };
            loaded.push(rows);
        }
        Ok(loaded)
    }
}

impl Spooled {
    /// Sends the rows as one COPY with `statement`; `table` names it in errors.
    ///
    /// # Errors
    /// The file cannot be read back, or the server refuses the COPY.
    pub(crate) async fn copy(
        self,
        transaction: &tokio_postgres::Transaction<'_>,
        statement: &str,
        table: &TableName,
    ) -> Result<u64, SinkError> {
        let started = std::time::Instant::now();
        let rows = send(transaction, statement, self)
            .await
            .map_err(|e| match e {
                Failure::File(e) => SinkError::Spool {
                    table: table.to_string(),
                    error: e,
                },
                Failure::Copy(e) => SinkError::database("COPY", table, &e),
            })?;
        tracing::info!(statement = "COPY", table = %table, rows_affected = rows, elapsed_ms = started.elapsed().as_millis() as u64, "sql.execute");
        Ok(rows)
    }
}

enum Failure {
    File(std::io::Error),
    Copy(tokio_postgres::Error),
}

/// One table's spooled rows as one COPY.
async fn send(
    transaction: &tokio_postgres::Transaction<'_>,
    statement: &str,
    spooled: Spooled,
) -> Result<u64, Failure> {
    let mut copy = CopyIn::open(transaction, statement)
        .await
        .map_err(Failure::Copy)?;
    let mut file = match spooled.held {
        Held::File(file) => file,
        Held::Memory(buffer) => {
            let mut buffer = buffer.freeze();
            while !buffer.is_empty() {
                let piece = buffer.split_to(CHUNK.min(buffer.len()));
                copy.send(piece).await.map_err(Failure::Copy)?;
            }
            let rows = copy.finish().await.map_err(Failure::Copy)?;
            debug_assert_eq!(rows, spooled.rows);
            return Ok(rows);
        }
    };
    file.seek(SeekFrom::Start(0)).map_err(Failure::File)?;
    let mut file = tokio::fs::File::from_std(file);
    let mut buffer = BytesMut::with_capacity(CHUNK);
    loop {
        buffer.reserve(CHUNK);
        let read = file.read_buf(&mut buffer).await.map_err(Failure::File)?;
        if read == 0 {
            break;
        }
        if buffer.len() >= CHUNK {
            copy.send(buffer.split().freeze())
                .await
                .map_err(Failure::Copy)?;
        }
    }
    if !buffer.is_empty() {
        copy.send(buffer.split().freeze())
            .await
            .map_err(Failure::Copy)?;
    }
    let rows = copy.finish().await.map_err(Failure::Copy)?;
    debug_assert_eq!(rows, spooled.rows);
    Ok(rows)
}
