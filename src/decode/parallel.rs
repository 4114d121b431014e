//! Decoding on several threads, for inputs one core cannot decode as fast as the server
//! takes rows.
//!
//! Framing stays on the caller's thread (it is a memchr per record). Framed records are
//! gathered into jobs of one batch each — the same `batch_size` records or
//! [`super::LOAD_BATCH_BYTES`] of text that end a batch on one thread — and handed round-robin
//! to worker threads, each with its own [`RecordDecoder`]. Results are taken back in the
//! same round-robin order, so batches, rejected records and the first error come out exactly
//! in input order. Each worker has at most one job handed out and not yet taken back (a
//! second one queued measured no faster), so memory stays bounded by a few batches per
//! worker whatever the input's size.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::{DecodeError, DecodeOptions, Decoded, Position, RecordDecoder};
use crate::schema::TableSchema;

/// Records gathered for one worker: their text one after another, and where each starts.
#[derive(Default)]
struct Job {
    text: Vec<u8>,
    /// Each record's end in `text`, and its position in the input.
    records: Vec<(usize, Position)>,
    /// The number of the job's first record in the whole input.
    first_record: u64,
}

/// A job's batches (or its first error), and the job's buffers back for another job.
struct Outcome {
    decoded: Result<Vec<Decoded>, DecodeError>,
    spare: Job,
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
    next_record: u64,
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
            let (jobs, job_rx) = sync_channel::<Job>(1);
            let (result_tx, results) = sync_channel::<Outcome>(1);
            let mut decoder = RecordDecoder::new(table, options.clone());
            let thread = std::thread::Builder::new()
                .name(format!("apitap-decode-{n}"))
                .spawn(move || {
                    for job in job_rx {
                        let decoded = decoder.decode_job(&job.text, &job.records, job.first_record);
                        if result_tx
                            .send(Outcome {
                                decoded,
                                spare: job,
                            })
                            .is_err()
                        {
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
        self.job.text.extend_from_slice(record);
        self.job.records.push((self.job.text.len(), at));
        self.next_record += 1;
        if self.job.records.len() >= self.batch_size || self.job.text.len() >= self.batch_bytes {
            self.dispatch(out)?;
        }
        Ok(())
    }

    /// Decodes what is left and waits for every worker; the batches go to `out`.
    ///
    /// # Errors
    /// As [`RecordDecoder::finish`].
    pub fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        if !self.job.records.is_empty() {
            self.dispatch(out)?;
        }
        while self.received < self.sent {
            self.collect(out)?;
        }
        Ok(())
    }

    /// Hands the gathered job to the next worker, first taking that worker's last result.
    fn dispatch(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        if self.sent - self.received == self.workers.len() {
            self.collect(out)?;
        }
        let mut next = self.spare.pop().unwrap_or_else(|| Job {
            text: Vec::with_capacity(self.job.text.capacity()),
            records: Vec::with_capacity(self.job.records.capacity()),
            first_record: 0,
        });
        next.text.clear();
        next.records.clear();
        next.first_record = self.next_record;
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
        let Outcome { decoded, spare } = result.map_err(|_| stopped())?;
        self.spare.push(spare);
        out.extend(decoded?);
        Ok(())
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
