//! Decoding on several threads, for inputs one core cannot decode as fast as the server
//! takes rows.
//!
//! Input is cut into jobs of about one batch each — the `batch_size` records or
//! [`super::LOAD_BATCH_BYTES`] of text that end a batch on one thread — numbered, and put
//! in one queue that worker threads, each with its own [`RecordDecoder`], take them from as
//! each is free. Results are taken back by number, so batches, rejected records and the
//! first error come out exactly in input order whichever worker finished first. At most
//! [`JOBS_PER_WORKER`] jobs per worker are handed out and not yet taken back, so memory
//! stays bounded by a few batches per worker whatever the input's size.
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

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

mod lines;

use bytes::Bytes;

use super::{
    DecodeError, DecodeOptions, Decoded, Format, Framer, LineStart, Position, RecordDecoder,
};
use crate::schema::TableSchema;

/// Jobs handed out and not yet taken back, per worker: the results that wait for an
/// earlier job bound the memory, and while one worker is slow on the job due next, the
/// others go on with the jobs after it (up to this many each). The cores a load's workers
/// run on are seldom equally free (the server's backend, the other stages, a shared
/// host's neighbours): with jobs dealt round-robin and two per worker, a worker running at
/// half speed held the other to its pace. With one queue, a worker is held up only when
/// the job due next is still on another worker and every later job in flight is done.
/// Two workers on a shared 2-vCPU machine, medians of eight alternating runs: round-robin
/// 1.37× of one thread, one queue with two per worker 1.48×, three 1.55×; four no better.
const JOBS_PER_WORKER: usize = 3;

/// Input gathered for one worker: records one after another with where each ends, or
/// NDJSON lines for the worker to find.
#[derive(Default)]
struct Job {
    /// The job's place in the input: jobs are numbered from 0 as they are handed out.
    number: usize,
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

/// A [`RecordDecoder`] spread over threads; see the module docs.
pub struct ParallelDecoder {
    /// Jobs for whichever worker is free first. Closed (`None`) to stop the workers.
    jobs: Option<SyncSender<Job>>,
    /// Outcomes in the order the workers finish them, each with its job's number.
    results: Receiver<(usize, Outcome)>,
    /// Outcomes that came back before an earlier job's: slot `n % len` holds job `n`'s.
    finished: Vec<Option<Outcome>>,
    threads: Vec<JoinHandle<()>>,
    job: Job,
    /// Buffers of jobs done, for the next ones: memory allocated on one thread and freed on
    /// another goes back to the system and is faulted in again, page by page.
    spare: Vec<Job>,
    /// Jobs handed out and results taken back (in input order).
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

/// A worker: takes the next job whoever handed it, decodes it, hands back the outcome
/// under the job's number, until the job channel closes or nobody takes outcomes.
fn work(
    mut decoder: RecordDecoder,
    jobs: &Mutex<Receiver<Job>>,
    results: &Sender<(usize, Outcome)>,
) {
    loop {
        // The lock is held only by a worker waiting for the next job; the others are
        // decoding, or would wait for the same one.
        let job = match jobs.lock() {
            Ok(jobs) => jobs.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let number = job.number;
        // A bug that panics in the decoder must not leave the feeding thread waiting
        // forever for this job: its outcome is the error that names the bug.
        let decoded = catch_unwind(AssertUnwindSafe(|| decode_job(&mut decoder, job)));
        let (outcome, stop) = match decoded {
            Ok(mut outcome) => {
                // The input's buffers go back to whoever else holds them, now.
                outcome.spare.pieces.clear();
                (outcome, false)
            }
            Err(_) => (
                Outcome {
                    decoded: Err(stopped()),
                    spare: Job::default(),
                    lines: 0,
                    records: 0,
                },
                true,
            ),
        };
        if results.send((number, outcome)).is_err() || stop {
            return;
        }
    }
}

fn decode_job(decoder: &mut RecordDecoder, job: Job) -> Outcome {
    match &job.lines {
        Some(start) => {
            let (decoded, lines, records) = lines::decode(decoder, &job.pieces, start);
            Outcome {
                decoded,
                spare: job,
                lines,
                records,
            }
        }
        None => Outcome {
            decoded: decoder.decode_job(&job.text, &job.records, job.first_record),
            spare: job,
            lines: 0,
            records: 0,
        },
    }
}

impl ParallelDecoder {
    /// Starts `threads` workers (at least one) decoding for `table`.
    ///
    /// # Errors
    /// The operating system refuses a thread.
    pub(crate) fn new(
        table: &TableSchema,
        options: &DecodeOptions,
        threads: usize,
    ) -> std::io::Result<ParallelDecoder> {
        let threads = threads.max(1);
        let in_flight = JOBS_PER_WORKER * threads;
        // Room for every job that may be out: the feeding thread then never blocks handing
        // one over (it would not be taking results back while it waits).
        let (jobs, job_rx) = sync_channel::<Job>(in_flight);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (result_tx, results) = channel();
        let mut handles = Vec::with_capacity(threads);
        for n in 0..threads {
            let decoder = RecordDecoder::new(table, options.clone());
            let (job_rx, result_tx) = (Arc::clone(&job_rx), result_tx.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("apitap-decode-{n}"))
                    .spawn(move || work(decoder, &job_rx, &result_tx))?,
            );
        }
        Ok(ParallelDecoder {
            jobs: Some(jobs),
            results,
            finished: (0..in_flight).map(|_| None).collect(),
            threads: handles,
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
    pub(crate) fn push(
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
    pub(crate) fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        if !self.job.records.is_empty() || !self.job.pieces.is_empty() {
            self.dispatch(out)?;
        }
        while self.received < self.sent {
            self.collect(out)?;
        }
        Ok(())
    }

    /// The records decoded: all of them once [`ParallelDecoder::finish`] returned.
    pub(crate) fn records(&self) -> u64 {
        if self.feed.is_some() {
            self.record_base
        } else {
            self.next_record - 1
        }
    }

    /// Hands the gathered job to the workers, first taking back the oldest result when as
    /// many jobs are out as memory allows.
    fn dispatch(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        if self.sent - self.received == self.finished.len() {
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
        let mut job = std::mem::replace(&mut self.job, next);
        job.number = self.sent;
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if !sent {
            return Err(stopped());
        }
        self.sent += 1;
        Ok(())
    }

    /// The oldest job's result, once its worker hands it back; results of later jobs that
    /// come back first wait in `finished`.
    fn collect(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        let slot = self.received % self.finished.len();
        while self.finished[slot].is_none() {
            let Ok((number, outcome)) = self.results.recv() else {
                break;
            };
            let at = number % self.finished.len();
            self.finished[at] = Some(outcome);
        }
        // Counted taken even when it is an error, so that a later finish() does not wait for
        // it again (and forever).
        self.received += 1;
        let Some(Outcome {
            decoded,
            spare,
            lines,
            records,
        }) = self.finished[slot].take()
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
        // Closing the job channel ends each worker's loop once it is done with its job;
        // closing the results ends a worker handing one over that nobody will take.
        self.jobs = None;
        drop(std::mem::replace(&mut self.results, channel().1));
        for thread in self.threads.drain(..) {
            let _ = thread.join();
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
    pub(crate) fn records(&self) -> u64 {
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
    pub(crate) fn earliest_error(&mut self, error: DecodeError) -> DecodeError {
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
