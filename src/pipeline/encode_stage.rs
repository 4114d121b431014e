//! The encode stage: Arrow batches to binary COPY bytes for the COPY. It also keeps the
//! incremental cursor's maximum, since it sees every loaded batch.

use super::cursor::CursorMax;
use super::*;

/// Encodes batches to COPY bytes, and returns the highest value of the `cursor` column (by
/// index among the loaded columns) if one is tracked. With `keep_rows`, each chunk carries
/// its rows' boundaries, record numbers and values, so rows the server refuses can be found
/// and set aside. Stops quietly when the COPY is gone (it
/// has its reason).
pub(super) fn encode(
    mut rx: mpsc::Receiver<Flow>,
    tx: mpsc::Sender<Encoded>,
    plan: &LoadPlan,
    source_name: &str,
    mut cursor: Option<(usize, CursorMax)>,
    rows_per_insert: Option<usize>,
    keep_rows: bool,
) -> Result<Option<String>, LoadError> {
    let types = plan.copy_types();
    let mut encoder = CopyEncoder::new(plan.copy_names(), plan.copy_types());
    // Columns left to their defaults are decoded (to catch values for them) but not sent.
    let projection: Option<Vec<usize>> =
        (plan.copy_columns < plan.decode.columns.len()).then(|| (0..plan.copy_columns).collect());
    let mut capacity = 1 << 20;
    while let Some(flow) = rx.blocking_recv() {
        let decoded = match flow {
            Flow::Rows(decoded) => decoded,
            Flow::Checkpoint(resume) => {
                let cursor = cursor.as_ref().and_then(|(_, max)| max.value());
                if tx
                    .blocking_send(Encoded::Checkpoint { resume, cursor })
                    .is_err()
                {
                    return Ok(None);
                }
                continue;
            }
        };
        if decoded.batch.num_rows() == 0 {
            // Every record of the batch was set aside.
            continue;
        }
        let batch = match &projection {
            Some(columns) => decoded
                .batch
                .project(columns)
                .map_err(|e| LoadError::Internal(e.to_string()))?,
            None => decoded.batch.clone(),
        };
        if let Some((column, max)) = &mut cursor {
            max.update(batch.column(*column));
        }
        if let Some(rows_per_insert) = rows_per_insert {
            // The INSERT fallback: text columns, one statement's worth at a time.
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
                let refusable = keep_rows.then(|| {
                    Box::new(Refusable {
                        ends: Vec::new(),
                        records: (offset..offset + len)
                            .map(|row| decoded.record_of(row))
                            .collect(),
                        batch: chunk.clone(),
                    })
                });
                let rows = Encoded::Rows {
                    columns,
                    rows: len as u64,
                    refusable,
                };
                if tx.blocking_send(rows).is_err() {
                    return Ok(None);
                }
                offset += len;
            }
            continue;
        }
        let mut out = BytesMut::with_capacity(capacity);
        encoder
            .encode(&batch, decoded.first_record, &mut out)
            .map_err(|error| LoadError::Encode {
                source_name: source_name.to_string(),
                // With rejected records gone, rows and record numbers no longer line up.
                error: match error {
                    EncodeError::Value {
                        record,
                        column,
                        reason,
                    } => EncodeError::Value {
                        record: decoded.record_of((record - decoded.first_record) as usize),
                        column,
                        reason,
                    },
                    other => other,
                },
            })?;
        capacity = capacity.max(out.len());
        let refusable = keep_rows.then(|| {
            Box::new(Refusable {
                ends: encoder.row_ends().to_vec(),
                records: (0..batch.num_rows())
                    .map(|row| decoded.record_of(row))
                    .collect(),
                batch: batch.clone(),
            })
        });
        let bytes = out.freeze();
        let chunk = Encoded::Copy {
            bytes,
            rows: batch.num_rows() as u64,
            refusable,
        };
        if tx.blocking_send(chunk).is_err() {
            return Ok(None);
        }
    }
    Ok(cursor.and_then(|(_, max)| max.value()))
}
