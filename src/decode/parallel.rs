//! Decoding on several threads, for inputs one core cannot decode as fast as the server
//! takes rows.
//!
//! Input is cut into jobs of about one batch each — the `batch_size` records or
//! [`super::LOAD_BATCH_BYTES`] of text that end a batch on one thread — handed round-robin
//! to worker threads, each with its own [`RecordDecoder`]. Results are taken back in the
//! same round-robin order, so batches, rejected records and the first error come out exactly
//! in input order. Each worker has at most [`JOBS_PER_WORKER`] jobs handed out and not yet
//! taken back, so memory stays bounded by a few batches per worker whatever the input's
//! size.
//!
//! NDJSON goes to the workers as the input's own buffers ([`lines`]): the feeding thread
//! only cuts them at a newline, and each worker finds the lines of its job, as the caller's
//! [`super::Framer`] would, numbering lines and records from the job's start. Results are
//! renumbered as they are taken back, in order, when the lines and records before each job
//! are known. Finding records is a search per record and a copy: left on the feeding
//! thread, with a copy of each record into the job, it held two workers to 1.48× of one
//! thread in the decode bench (1.78× now). Other input (a JSON array, pages the fetch stage
//! framed, the planner's sample) is framed on the caller's thread and handed over record
//! by record.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

mod lines;

use bytes::Bytes;

use super::{
    DecodeError, DecodeOptions, Decoded, Format, Framer, LineStart, Position, RecordDecoder,
};
use crate::schema::TableSchema;

/// Jobs a worker may have handed out and not yet taken back: with a second one queued, a
/// worker that finishes before the one whose result is due next goes straight on (decode
/// bench, two workers, three alternating runs: 1.77× → 1.81× of one thread). It was no
/// faster while the feeding thread still framed every record, and four are no faster than
/// two. The channels to and from each worker are sized from it.
const JOBS_PER_WORKER: usize = 2;

/// Input gathered for one worker: records one after another with where each ends, or
/// NDJSON lines for the worker to find.
#[derive(Default)]
struct Job {
    /// The records, one after another.
    text: Vec<u8>,
    /// Each record's end in `text`, and its position in the input (none for lines).
    records: Vec<(usize, Position)>,
    /// The number of the job's first record in the whole input (records).
    first_record: u64,
    /// The job is NDJSON lines, found by these rules: the text of `pieces`, one after
    /// another, the last line perhaps unfinished where the input ended.
    lines: Option<LineStart>,
    pieces: Vec<Bytes>,
}

/// A job's batches (or its first error), and the job's buffers back for another job.
struct Outcome {
    decoded: Result<Vec<Decoded>, DecodeError>,
    spare: Job,
    /// The lines and records a job of lines held, by which the next is renumbered.
    lines: u64,
    records: u64,
}

struct Worker {
    jobs: Option<SyncSender<Job>>,
    results: Receiver<Outcome>,
    thread: Option<JoinHandle<()>>,
}

/// A [`RecordDecoder`] spread over threads; see the module docs.
pub struct ParallelDecoder {
    workers: Vec<Worker>,
    job: Job,
    /// Buffers of jobs done, for the next ones: memory allocated on one thread and freed on
    /// another goes back to the system and is faulted in again, page by page.
    spare: Vec<Job>,
    /// Jobs handed out and results taken back.
    sent: usize,
    received: usize,
    /// The number of the next record pushed (records).
    next_record: u64,
    /// Once NDJSON goes to the workers as text: what the feeding thread knows of the line
    /// the gathered text ends with.
    feed: Option<lines::Feed>,
    /// The lines and records before the next job of lines to be taken back.
    line_base: u64,
    record_base: u64,
    /// A job failed: later jobs come after its error, and what they hold is dropped.
    failed: bool,
    batch_size: usize,
    batch_bytes: usize,
}

impl ParallelDecoder {
    /// Starts `threads` workers (at least one) decoding for `table`.
    ///
    /// # Errors
    /// The operating system refuses a thread.
    pub fn new(
        table: &TableSchema,
        options: &DecodeOptions,
        threads: usize,
    ) -> std::io::Result<ParallelDecoder> {
        let mut workers = Vec::new();
        for n in 0..threads.max(1) {
            // Room for every job a worker may have out, both ways: the feeding thread then
            // never blocks handing over a job (it would not be taking results back, and a
            // worker waiting to hand one over would wait forever), nor does a worker.
            let (jobs, job_rx) = sync_channel::<Job>(JOBS_PER_WORKER);
            let (result_tx, results) = sync_channel::<Outcome>(JOBS_PER_WORKER);
            let mut decoder = RecordDecoder::new(table, options.clone());
            let thread = std::thread::Builder::new()
                .name(format!("apitap-decode-{n}"))
                .spawn(move || {
                    for job in job_rx {
                        let mut outcome = match &job.lines {
                            Some(start) => {
                                let (decoded, lines, records) =
                                    lines::decode(&mut decoder, &job.pieces, start);
                                Outcome {
                                    decoded,
                                    spare: job,
                                    lines,
                                    records,
                                }
                            }
                            None => Outcome {
                                decoded: decoder.decode_job(
                                    &job.text,
                                    &job.records,
                                    job.first_record,
                                ),
                                spare: job,
                                lines: 0,
                                records: 0,
                            },
                        };
                        // The input's buffers go back to whoever else holds them, now.
                        outcome.spare.pieces.clear();
                        if result_tx.send(outcome).is_err() {
                            return;
                        }
                    }
                })?;
            workers.push(Worker {
                jobs: Some(jobs),
                results,
                thread: Some(thread),
            });
        }
        Ok(ParallelDecoder {
            workers,
            job: Job {
                first_record: 1,
                ..Job::default()
            },
            spare: Vec::new(),
            sent: 0,
            received: 0,
            next_record: 1,
            feed: None,
            line_base: 0,
            record_base: 0,
            failed: false,
            batch_size: options.batch_size.max(1),
            batch_bytes: options.max_batch_bytes,
        })
    }

    /// Takes one record; batches that are ready, in input order, go to `out`.
    ///
    /// # Errors
    /// As [`RecordDecoder::push`], for the earliest record with one.
    pub fn push(
        &mut self,
        record: &[u8],
        at: Position,
        out: &mut Vec<Decoded>,
    ) -> Result<(), DecodeError> {
        debug_assert!(self.feed.is_none(), "records pushed after lines");
        self.job.text.extend_from_slice(record);
        self.job.records.push((self.job.text.len(), at));
        self.next_record += 1;
        if self.job.records.len() >= self.batch_size || self.job.text.len() >= self.batch_bytes {
            self.dispatch(out)?;
        }
        Ok(())
    }

    /// Decodes what is left and waits for every worker; the batches go to `out`. The input
    /// has ended: gathered text that ends without a newline is its last line.
    ///
    /// # Errors
    /// As [`RecordDecoder::finish`].
    pub fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        if !self.job.records.is_empty() || !self.job.pieces.is_empty() {
            self.dispatch(out)?;
        }
        while self.received < self.sent {
            self.collect(out)?;
        }
        Ok(())
    }

    /// The records decoded: all of them once [`ParallelDecoder::finish`] returned.
    pub fn records(&self) -> u64 {
        if self.feed.is_some() {
            self.record_base
        } else {
            self.next_record - 1
        }
    }

    /// Hands the gathered job to the next worker, first taking that worker's last result.
    fn dispatch(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        if self.sent - self.received == JOBS_PER_WORKER * self.workers.len() {
            self.collect(out)?;
        }
        let mut next = self.spare.pop().unwrap_or_else(|| Job {
            text: Vec::with_capacity(self.job.text.capacity()),
            records: Vec::with_capacity(self.job.records.capacity()),
            ..Job::default()
        });
        next.text.clear();
        next.records.clear();
        next.first_record = self.next_record;
        next.lines = self.job.lines;
        let job = std::mem::replace(&mut self.job, next);
        let worker = &self.workers[self.sent % self.workers.len()];
        let sent = worker
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if !sent {
            return Err(stopped());
        }
        self.sent += 1;
        Ok(())
    }

    /// The oldest job's result.
    fn collect(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        let worker = &self.workers[self.received % self.workers.len()];
        let result = worker.results.recv();
        // Counted taken even when it is an error, so that a later finish() does not wait for
        // it again (and forever).
        self.received += 1;
        let Ok(Outcome {
            decoded,
            spare,
            lines,
            records,
        }) = result
        else {
            self.failed = true;
            return Err(stopped());
        };
        let found_lines = spare.lines.is_some();
        self.spare.push(spare);
        if self.failed {
            return Ok(());
        }
        let (lines_before, records_before) = (self.line_base, self.record_base);
        if found_lines {
            self.line_base += lines;
            self.record_base += records;
        }
        match decoded {
            Ok(mut batches) => {
                if found_lines {
                    for batch in &mut batches {
                        batch.shift(lines_before, records_before);
                    }
                }
                out.extend(batches);
                Ok(())
            }
            Err(mut error) => {
                self.failed = true;
                if found_lines {
                    error.shift(lines_before, records_before);
                }
                Err(error)
            }
        }
    }
}

/// A worker thread ended without an answer: it panicked, which is a bug.
fn stopped() -> DecodeError {
    DecodeError::Structure {
        line: 0,
        message: "internal error: a decode thread stopped".into(),
    }
}

impl Drop for ParallelDecoder {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            // Closing the job channel ends the worker's loop; its last result, if any, is
            // dropped with the receiver.
            worker.jobs = None;
        }
        for worker in &mut self.workers {
            // So is a worker waiting to hand over a result nobody will take.
            drop(std::mem::replace(&mut worker.results, sync_channel(0).1));
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// One decoder, on this thread or spread over several, behind one interface.
pub enum Decoder {
    Here(RecordDecoder),
    Spread(ParallelDecoder),
}

impl Decoder {
    /// A decoder using `threads` threads besides the caller's when more than one.
    ///
    /// # Errors
    /// The operating system refuses a thread.
    pub fn new(
        table: &TableSchema,
        options: DecodeOptions,
        threads: usize,
    ) -> std::io::Result<Decoder> {
        Ok(if threads > 1 {
            Decoder::Spread(ParallelDecoder::new(table, &options, threads)?)
        } else {
            Decoder::Here(RecordDecoder::new(table, options))
        })
    }

    /// Frames `bytes` with `framer` and decodes the records; batches that are ready, in
    /// input order, go to `out`. Spread over threads, NDJSON goes to the workers as text
    /// from the first point where the framer is between two lines (the line it holds part
    /// of is finished by the framer first).
    ///
    /// # Errors
    /// As [`Framer::push`] and [`RecordDecoder::push`].
    pub fn push_bytes(
        &mut self,
        framer: &mut Framer,
        mut bytes: Bytes,
        out: &mut Vec<Decoded>,
    ) -> Result<(), DecodeError> {
        let decoder = match self {
            Decoder::Here(decoder) => {
                return framer.push(&bytes, &mut |record, at| {
                    out.extend(decoder.push(record, at)?);
                    Ok(())
                });
            }
            Decoder::Spread(decoder) => decoder,
        };
        if decoder.feed.is_none() {
            if framer.format() == Some(Format::Ndjson)
                && framer.between_lines().is_none()
                && let Some(newline) = memchr::memchr(b'\n', &bytes)
            {
                let line_end = bytes.split_to(newline + 1);
                framer.push(&line_end, &mut |record, at| decoder.push(record, at, out))?;
            }
            if let Some(start) = framer.between_lines() {
                decoder.start_lines(start, out)?;
            }
        }
        if decoder.feed.is_some() {
            return decoder.push_lines(bytes, out);
        }
        framer.push(&bytes, &mut |record, at| decoder.push(record, at, out))
    }

    /// The records decoded: all of them once [`Decoder::finish`] returned.
    pub fn records(&self) -> u64 {
        match self {
            Decoder::Here(decoder) => decoder.last_record(),
            Decoder::Spread(decoder) => decoder.records(),
        }
    }

    /// Takes one record; batches that are ready, in input order, go to `out`.
    ///
    /// # Errors
    /// As [`RecordDecoder::push`].
    pub fn push(
        &mut self,
        record: &[u8],
        at: Position,
        out: &mut Vec<Decoded>,
    ) -> Result<(), DecodeError> {
        match self {
            Decoder::Here(decoder) => {
                out.extend(decoder.push(record, at)?);
                Ok(())
            }
            Decoder::Spread(decoder) => decoder.push(record, at, out),
        }
    }

    /// The error to report when decoding stops with `error`: records taken before it may
    /// still hold an earlier one (a value is checked when its batch is built, and other
    /// threads may not have reached theirs), so they are decoded now, their batches
    /// dropped, and the error on the earliest line wins.
    pub fn earliest_error(&mut self, error: DecodeError) -> DecodeError {
        let mut dropped = Vec::new();
        match self.finish(&mut dropped) {
            Err(earlier) if earlier.line() > 0 && earlier.line() < error.line() => earlier,
            _ => error,
        }
    }

    /// Every batch left, in input order, into `out`.
    ///
    /// # Errors
    /// As [`RecordDecoder::finish`].
    pub fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        match self {
            Decoder::Here(decoder) => {
                out.extend(decoder.finish()?);
                Ok(())
            }
            Decoder::Spread(decoder) => decoder.finish(out),
        }
    }
}

#[cfg(test)]
mod tests;
