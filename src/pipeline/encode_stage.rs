//! The encode stage: Arrow batches to binary COPY bytes (or INSERT text) for the sink. It
//! also keeps the incremental cursor's maximum, since it sees every loaded row.

use super::cursor::CursorMax;
use super::*;
use crate::encode::repeats::RepeatedKeys;
use crate::sink::write::CopyChunk;

/// The buffers COPY data is encoded into, used again once the sink is done with them: a
/// fresh multi-megabyte buffer per batch costs page faults and zeroing (in the kernel) on
/// every batch, about a tenth of the client's CPU.
#[derive(Default)]
struct CopyBuffers {
    buffers: Vec<BytesMut>,
}

impl CopyBuffers {
    /// As many as there can be chunks in flight (the channel to the sink, the one it is
    /// sending, the one being encoded), and a spare.
    const KEPT: usize = 8;

    /// An empty buffer with room for `capacity` bytes: one whose earlier bytes every holder
    /// has dropped, or else a new one.
    fn take(&mut self, capacity: usize) -> &mut BytesMut {
        let free = self
            .buffers
            .iter_mut()
            .position(|b| b.try_reclaim(capacity));
        let i = match free {
            Some(i) => i,
            None if self.buffers.len() < Self::KEPT => {
                self.buffers.push(BytesMut::with_capacity(capacity));
                self.buffers.len() - 1
            }
            None => {
                self.buffers[0] = BytesMut::with_capacity(capacity);
                0
            }
        };
        &mut self.buffers[i]
    }
}

/// What the encode stage needs besides its channels.
pub(super) struct EncodeStage {
    pub plan: Arc<LoadPlan>,
    pub source_name: String,
    /// The cursor column (by index among the loaded columns) and its maximum so far.
    pub cursor: Option<(usize, CursorMax)>,
    /// Rows per INSERT statement, for the INSERT fallback; COPY otherwise.
    pub rows_per_insert: Option<usize>,
    /// Reject mode: rows it cannot encode go here, and each chunk carries what the sink
    /// needs to set aside a row the server refuses.
    pub rejects: Option<Arc<RejectFile>>,
    /// A merge that may COPY into an empty table: each batch's rows whose key may repeat an
    /// earlier one go in a chunk of their own (see [`crate::encode::repeats`]).
    pub repeats: Option<RepeatedKeys>,
    /// `--nested tables`: where the child tables' rows go.
    pub children: Option<super::family::ChildEncoders>,
}

/// What the encode stage hands on at the input's end: the highest cursor value, and the
/// child tables' rows since the last commit point.
#[derive(Default)]
pub(super) struct Ended {
    pub cursor: Option<String>,
    pub children: Option<crate::sink::write::spool::Spool>,
}

impl EncodeStage {
    /// Encodes every batch of `rx` into `tx`, and returns the highest cursor value if one is
    /// tracked (and the child rows). Stops quietly when the sink is gone (it has its reason).
    pub(super) fn run(
        mut self,
        mut rx: mpsc::Receiver<Flow>,
        tx: mpsc::Sender<Encoded>,
    ) -> Result<Ended, LoadError> {
        let mut encoder = CopyEncoder::new(self.plan.copy_names(), self.plan.copy_types());
        // Columns left to their defaults are decoded (to catch values for them) but not sent.
        let projection: Option<Vec<usize>> = (self.plan.copy_columns
            < self.plan.decode.columns.len())
        .then(|| (0..self.plan.copy_columns).collect());
        let mut capacity = 1 << 20;
        let mut buffers = CopyBuffers::default();
        while let Some(flow) = rx.blocking_recv() {
            let decoded = match flow {
                Flow::Rows(decoded) => decoded,
                Flow::Checkpoint(resume) => {
                    let cursor = self.cursor.as_ref().and_then(|(_, max)| max.value());
                    let children = self.children.as_mut().map(|c| c.take());
                    let checkpoint = Encoded::Checkpoint {
                        resume,
                        cursor,
                        children,
                    };
                    if tx.blocking_send(checkpoint).is_err() {
                        return Ok(Ended::default());
                    }
                    continue;
                }
            };
            if let Some(children) = &mut self.children {
                children.add(&decoded, &self.source_name)?;
            }
            let batch = match &projection {
                Some(columns) => decoded
                    .batch
                    .project(columns)
                    .map_err(|e| LoadError::Internal(e.to_string()))?,
                None => decoded.batch.clone(),
            };
            let records: Vec<u64> = (0..batch.num_rows())
                .map(|row| decoded.record_of(row))
                .collect();
            let chunks = match self.rows_per_insert {
                Some(rows_per_insert) => {
                    let chunks = self.insert_chunks(&batch, &records, rows_per_insert);
                    self.track_cursor(&batch);
                    chunks
                }
                None => {
                    let mut chunks = Vec::new();
                    for (mut part, mut records, repeats) in self.split_repeats(batch, records)? {
                        let out = buffers.take(capacity);
                        self.encode_copy(&mut encoder, &mut part, &mut records, out)?;
                        capacity = capacity.max(out.len());
                        let out = out.split();
                        if part.num_rows() == 0 {
                            // Every record of the part was set aside.
                            continue;
                        }
                        let refusable = self.rejects.is_some().then(|| {
                            Box::new(Refusable {
                                ends: encoder.row_ends().to_vec(),
                                records,
                                batch: part.clone(),
                            })
                        });
                        self.track_cursor(&part);
                        let rows = part.num_rows() as u64;
                        if let Some(children) = self.children.as_mut().filter(|c| c.spools_root()) {
                            chunks.extend(children.add_root(rows, &out)?);
                            continue;
                        }
                        chunks.push(Encoded::Copy(CopyChunk {
                            bytes: out.freeze(),
                            rows,
                            refusable,
                            repeats,
                        }));
                    }
                    chunks
                }
            };
            for chunk in chunks {
                if tx.blocking_send(chunk).is_err() {
                    return Ok(Ended::default());
                }
            }
        }
        Ok(Ended {
            cursor: self.cursor.and_then(|(_, max)| max.value()),
            children: self.children.as_mut().map(|c| c.take()),
        })
    }

    fn track_cursor(&mut self, batch: &arrow_array::RecordBatch) {
        if let Some((column, max)) = &mut self.cursor {
            max.update(batch.column(*column));
        }
    }

    /// `batch` and its record numbers as they go to the sink: whole, or when merge keys are
    /// tracked and some may repeat, the rows whose keys are new and then the others (a
    /// key's first record is always among the new, so each key's records keep their order).
    fn split_repeats(
        &mut self,
        batch: arrow_array::RecordBatch,
        records: Vec<u64>,
    ) -> Result<Vec<(arrow_array::RecordBatch, Vec<u64>, bool)>, LoadError> {
        let Some(repeats) = self.repeats.as_mut().and_then(|keys| keys.mark(&batch)) else {
            return Ok(vec![(batch, records, false)]);
        };
        let rows = |repeated: bool| -> Result<_, LoadError> {
            let keep: arrow_array::BooleanArray =
                repeats.iter().map(|&r| Some(r == repeated)).collect();
            let part = arrow_select::filter::filter_record_batch(&batch, &keep)
                .map_err(|e| LoadError::Internal(e.to_string()))?;
            let numbers = records
                .iter()
                .zip(&repeats)
                .filter(|&(_, &r)| r == repeated)
                .map(|(&n, _)| n)
                .collect();
            Ok((part, numbers, repeated))
        };
        Ok(vec![rows(false)?, rows(true)?])
    }

    /// Encodes `batch` to COPY data in `out`. A row it cannot encode (text with a NUL, say,
    /// from a SQL transform) fails the load, or in reject mode is set aside and left out.
    fn encode_copy(
        &self,
        encoder: &mut CopyEncoder,
        batch: &mut arrow_array::RecordBatch,
        records: &mut Vec<u64>,
        out: &mut BytesMut,
    ) -> Result<(), LoadError> {
        let start = out.len();
        loop {
            // Record numbers here are rows of the batch; `records` gives the load's numbers.
            match encoder.encode(batch, 0, out) {
                Ok(()) => return Ok(()),
                Err(EncodeError::Value {
                    record: row,
                    column,
                    reason,
                }) => {
                    let row = row as usize;
                    let record = records[row];
                    let Some(rejects) = &self.rejects else {
                        return Err(LoadError::Encode {
                            source_name: self.source_name.clone(),
                            error: EncodeError::Value {
                                record,
                                column,
                                reason,
                            },
                        });
                    };
                    let text = crate::rejects::row_json(batch, row);
                    rejects.add(record, None, &format!("column {column:?}: {reason}"), &text)?;
                    records.remove(row);
                    let keep: Vec<bool> = (0..batch.num_rows()).map(|r| r != row).collect();
                    *batch = arrow_select::filter::filter_record_batch(
                        batch,
                        &arrow_array::BooleanArray::from(keep),
                    )
                    .map_err(|e| LoadError::Internal(e.to_string()))?;
                    out.truncate(start);
                }
                Err(error) => {
                    return Err(LoadError::Encode {
                        source_name: self.source_name.clone(),
                        error,
                    });
                }
            }
        }
    }

    /// The INSERT fallback: text columns, one statement's worth of rows at a time.
    fn insert_chunks(
        &self,
        batch: &arrow_array::RecordBatch,
        records: &[u64],
        rows_per_insert: usize,
    ) -> Vec<Encoded> {
        let types = self.plan.copy_types();
        let mut chunks = Vec::new();
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = rows_per_insert.min(batch.num_rows() - offset);
            let chunk = batch.slice(offset, len);
            let columns = chunk
                .columns()
                .iter()
                .zip(&types)
                .map(|(array, &pg_type)| crate::encode::text::column_text(array, pg_type))
                .collect();
            let refusable = self.rejects.is_some().then(|| {
                Box::new(Refusable {
                    ends: Vec::new(),
                    records: records[offset..offset + len].to_vec(),
                    batch: chunk.clone(),
                })
            });
            chunks.push(Encoded::Rows {
                columns,
                rows: len as u64,
                refusable,
            });
            offset += len;
        }
        chunks
    }
}
