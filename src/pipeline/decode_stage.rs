//! The decode stage: frames records (unless the fetch stage already did), gathers the
//! sample for the planner, then decodes typed Arrow batches for the encode stage.

use super::fetch::Chunk;
use super::*;

/// Why the decode stage stopped early.
enum Stop {
    Failed(DecodeError),
    /// The reject file cannot be written, or more records were rejected than
    /// `--max-rejects` allows.
    Rejects(RejectError),
    /// The next stage or the planner went away; they report why.
    Cancelled,
}

impl From<DecodeError> for Stop {
    fn from(e: DecodeError) -> Stop {
        Stop::Failed(e)
    }
}

/// How the decode stage finds records in the bytes.
enum Framing {
    /// NDJSON or a JSON array, record by record as the bytes arrive.
    Stream(Framer),
    /// The array at a pointer inside one document, which is read whole first (bounded).
    Document {
        records: JsonPointer,
        buffer: Vec<u8>,
        max_bytes: usize,
    },
}

/// Frames and decodes records, after first gathering the sample for the planner.
pub(super) struct DecodeStage {
    framing: Option<Framing>,
    sample_limit: usize,
    sample: Sample,
    sampled: Vec<u8>,
    sampled_at: Vec<(usize, Position)>,
    exchange: Option<(oneshot::Sender<Sample>, oneshot::Receiver<Arc<LoadPlan>>)>,
    decoder: Option<Decoder>,
    /// Threads decoding records, once the plan is known.
    threads: usize,
    batch_size: usize,
    reject_unknown_fields: bool,
    tx: mpsc::Sender<Flow>,
    source_name: String,
    /// The input format once detected, for the log.
    framer_format: Option<Format>,
    /// Records delivered so far (until the decoder frames them itself), and the first
    /// record number and label of each page.
    delivered: u64,
    pages: Vec<(u64, String)>,
    /// Reject mode: where set-aside records go, and how many may.
    rejects: Option<Arc<RejectFile>>,
}

impl DecodeStage {
    /// The stage for records decoded as `settings` say: `paged` records arrive framed by
    /// the fetch stage; the sample goes out and the plan comes back through `exchange`.
    pub(super) fn new(
        settings: &DecodeSettings,
        paged: bool,
        source_name: String,
        rejects: Option<Arc<RejectFile>>,
        exchange: (oneshot::Sender<Sample>, oneshot::Receiver<Arc<LoadPlan>>),
        tx: mpsc::Sender<Flow>,
    ) -> DecodeStage {
        DecodeStage {
            framing: (!paged).then(|| match &settings.records_path {
                Some(records) => Framing::Document {
                    records: records.clone(),
                    buffer: Vec::new(),
                    max_bytes: settings.max_record_bytes,
                },
                None => Framing::Stream(settings.framer()),
            }),
            sample_limit: settings.sample.max(1),
            sample: match settings.tables {
                true => Sample::tables(settings.flatten_depth),
                false => Sample::new(settings.flatten_depth),
            },
            sampled: Vec::new(),
            sampled_at: Vec::new(),
            exchange: Some(exchange),
            decoder: None,
            threads: settings.threads.unwrap_or(1),
            batch_size: settings.batch_size,
            reject_unknown_fields: settings.reject_unknown_fields,
            tx,
            source_name,
            framer_format: None,
            delivered: 0,
            pages: Vec::new(),
            rejects,
        }
    }

    pub(super) fn run(mut self, rx: mpsc::Receiver<Chunk>) -> Result<(), LoadError> {
        let result = self.consume(rx);
        // Records taken before the failure may hold an earlier error (values are checked
        // against their columns only once the plan is known and their batch is built): the
        // earliest bad line is the one reported.
        let result = match result {
            Err(Stop::Failed(error)) => Err(Stop::Failed(self.earliest(error))),
            result => result,
        };
        match result {
            Ok(()) | Err(Stop::Cancelled) => Ok(()),
            Err(Stop::Rejects(error)) => Err(LoadError::Rejects(error)),
            Err(Stop::Failed(error)) => {
                // Paged sources: say which page the failing record came from.
                let page = error.record().and_then(|record| {
                    self.pages
                        .iter()
                        .rev()
                        .find(|(first, _)| *first <= record)
                        .map(|(_, label)| label.clone())
                });
                let source_name = match page {
                    Some(label) => format!("{}, {label}", self.source_name),
                    None => self.source_name,
                };
                Err(LoadError::Decode { source_name, error })
            }
        }
    }

    /// Takes every chunk of the input, then the end of it.
    fn consume(&mut self, mut rx: mpsc::Receiver<Chunk>) -> Result<(), Stop> {
        let mut framing = self.framing.take();
        while let Some(chunk) = rx.blocking_recv() {
            self.take(chunk, &mut framing)?;
        }
        match framing {
            Some(Framing::Stream(mut framer)) => {
                framer.finish(&mut |record, at| self.deliver(record, at))?;
                self.framer_format = framer.format();
            }
            Some(Framing::Document {
                records, buffer, ..
            }) => {
                scan_document(&buffer, &records, &[], &mut |record, at| {
                    self.deliver(record, at)
                })?;
            }
            None => {}
        }
        if self.decoder.is_none() {
            self.start_decoding()?;
        }
        self.finish_batches()?;
        let format = self.framer_format.map(|f| format!("{f:?}"));
        let records = self
            .decoder
            .as_ref()
            .map_or(self.delivered, Decoder::records);
        tracing::info!(records, format, "all records decoded");
        Ok(())
    }

    /// One chunk from the fetch stage: bytes to frame, a framed page, or a commit point.
    fn take(&mut self, chunk: Chunk, framing: &mut Option<Framing>) -> Result<(), Stop> {
        match (chunk, framing) {
            (Chunk::Checkpoint(position), _) => {
                // Everything before the commit point goes before it: the plan must exist
                // (even on a short sample) and the decoder's rows must be out.
                if self.decoder.is_none() {
                    self.start_decoding()?;
                }
                self.finish_batches()?;
                self.tx
                    .blocking_send(Flow::Checkpoint(position))
                    .map_err(|_| Stop::Cancelled)?;
            }
            (Chunk::Page(page), _) => {
                self.pages.push((self.delivered + 1, page.label));
                for (start, end, at) in page.records {
                    self.deliver(&page.body[start..end], at)?;
                }
            }
            (Chunk::Bytes(bytes), Some(Framing::Stream(framer))) => match &mut self.decoder {
                Some(decoder) => {
                    let mut ready = Vec::new();
                    decoder.push_bytes(framer, bytes, &mut ready)?;
                    for decoded in ready {
                        self.send(decoded)?;
                    }
                }
                None => framer.push(&bytes, &mut |record, at| self.deliver(record, at))?,
            },
            (
                Chunk::Bytes(bytes),
                Some(Framing::Document {
                    buffer, max_bytes, ..
                }),
            ) => {
                if buffer.len() + bytes.len() > *max_bytes {
                    return Err(Stop::Failed(DecodeError::DocumentTooLarge {
                        limit: *max_bytes,
                    }));
                }
                buffer.extend_from_slice(&bytes);
            }
            (Chunk::Bytes(_), None) => {}
        }
        Ok(())
    }

    /// The earliest of `error` and the errors of records taken before it.
    fn earliest(&mut self, mut error: DecodeError) -> DecodeError {
        if self.decoder.is_none() && error.line() > 0 {
            // Still sampling: the plan is needed to check the sampled values. The load fails
            // whatever this finds, and rolls back what it began.
            if let Err(Stop::Failed(earlier)) = self.start_decoding()
                && earlier.line() > 0
                && earlier.line() < error.line()
            {
                error = earlier;
            }
        }
        match &mut self.decoder {
            Some(decoder) => decoder.earliest_error(error),
            None => error,
        }
    }

    /// Passes a batch on, after writing its rejected records to the reject file.
    fn send(&mut self, decoded: Decoded) -> Result<(), Stop> {
        if let Some(rejects) = &self.rejects {
            for rejected in &decoded.rejected {
                rejects
                    .add(
                        rejected.record,
                        Some(rejected.line),
                        &rejected.error.to_string(),
                        &rejected.text,
                    )
                    .map_err(Stop::Rejects)?;
            }
        }
        self.tx
            .blocking_send(Flow::Rows(decoded))
            .map_err(|_| Stop::Cancelled)
    }

    /// Decodes what the decoder holds and passes it on.
    fn finish_batches(&mut self) -> Result<(), Stop> {
        let mut ready = Vec::new();
        if let Some(decoder) = &mut self.decoder {
            decoder.finish(&mut ready)?;
        }
        for decoded in ready {
            self.send(decoded)?;
        }
        Ok(())
    }

    /// A record from the input, in order; counted for page labels.
    fn deliver(&mut self, record: &[u8], at: Position) -> Result<(), Stop> {
        self.delivered += 1;
        self.on_record(record, at)
    }

    fn on_record(&mut self, record: &[u8], at: Position) -> Result<(), Stop> {
        if let Some(decoder) = &mut self.decoder {
            let mut ready = Vec::new();
            decoder.push(record, at, &mut ready)?;
            for decoded in ready {
                self.send(decoded)?;
            }
            return Ok(());
        }
        self.sample.add(record);
        self.sampled_at.push((self.sampled.len(), at));
        self.sampled.extend_from_slice(record);
        if self.sampled_at.len() >= self.sample_limit {
            self.start_decoding()?;
        }
        Ok(())
    }

    /// Hands the sample to the planner, waits for the plan, then decodes the sampled records.
    fn start_decoding(&mut self) -> Result<(), Stop> {
        let (sample_tx, plan_rx) = self.exchange.take().ok_or(Stop::Cancelled)?;
        sample_tx
            .send(std::mem::take(&mut self.sample))
            .map_err(|_| Stop::Cancelled)?;
        let plan = plan_rx.blocking_recv().map_err(|_| Stop::Cancelled)?;
        let copy_columns = plan.copy_columns;
        let decoder = Decoder::new(
            &plan.decode,
            DecodeOptions {
                batch_size: self.batch_size,
                reject_unknown_fields: self.reject_unknown_fields,
                unknown_field_hint: plan.fields_known.unknown_field_hint(),
                must_stay_null: (copy_columns..plan.decode.columns.len())
                    .map(|i| (i, plan.fields_known.late_field_hint()))
                    .collect(),
                reject: self.rejects.is_some(),
                zone: Some(crate::decode::SessionZone::parse(&plan.dates.time_zone)),
                plus_infinity: plan.dates.plus_infinity,
                family: plan.family.as_ref().map(|f| f.spec.clone()),
                max_batch_bytes: crate::decode::LOAD_BATCH_BYTES,
            },
            self.threads,
        )
        .map_err(|e| {
            Stop::Failed(DecodeError::Structure {
                line: 0,
                message: format!("could not start the decode threads: {e}"),
            })
        })?;
        self.decoder = Some(decoder);
        let sampled = std::mem::take(&mut self.sampled);
        let sampled_at = std::mem::take(&mut self.sampled_at);
        let ends = sampled_at
            .iter()
            .skip(1)
            .map(|(s, _)| *s)
            .chain([sampled.len()]);
        for ((start, at), end) in sampled_at.iter().zip(ends) {
            self.on_record(&sampled[*start..end], *at)?;
        }
        Ok(())
    }
}

/// How many threads decode a load's records: `asked`, or else as many cores as neither
/// PostgreSQL nor apitap's other stages need, from 1 to 4. A server on this machine
/// (`server_is_local`) needs a core for each COPY stream's backend; fetching, encoding and
/// sending need about one more. So a 2-core machine with its own server decodes on one
/// thread, and an 8-core one on four.
pub(crate) fn decode_threads(
    asked: Option<usize>,
    server_is_local: bool,
    copy_streams: usize,
) -> usize {
    if let Some(threads) = asked {
        return threads.max(1);
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    spare_cores(cores, server_is_local, copy_streams)
}

fn spare_cores(cores: usize, server_is_local: bool, copy_streams: usize) -> usize {
    let server = if server_is_local { copy_streams } else { 0 };
    cores.saturating_sub(server + 1).clamp(1, 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_threads_leave_the_server_its_cores() {
        assert_eq!(decode_threads(Some(3), true, 1), 3);
        // (cores, local server, COPY streams) → threads
        for (cores, local, streams, threads) in [
            (1, true, 1, 1),
            (2, true, 1, 1),
            (2, false, 1, 1),
            (4, true, 1, 2),
            (4, false, 1, 3),
            (8, true, 2, 4),
            (8, true, 6, 1),
            (64, false, 1, 4),
        ] {
            assert_eq!(
                spare_cores(cores, local, streams),
                threads,
                "{cores} cores, local {local}, {streams} streams"
            );
        }
    }
}
