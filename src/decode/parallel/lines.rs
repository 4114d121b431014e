//! NDJSON handed to the decode workers as the input's own buffers. The feeding thread
//! gathers a job of about a batch, as slices of the buffers the input arrived in (no byte
//! copied), and cuts it after its last newline (one search from the end per piece); the
//! worker finds the job's lines with its own [`super::Framer`], so the search per record
//! and the copy of each record happen on the workers, in parallel.
//!
//! Memory stays bounded without the feeding thread knowing where lines start: a line
//! longer than a record may be is cut short to one byte over the limit, and the rest of it
//! dropped up to its newline, so the worker's framer still finds it too long, at its line.

use bytes::Bytes;

use super::{DecodeError, Decoded, LineStart, ParallelDecoder, Position, RecordDecoder};

/// What the feeding thread knows of the job it gathers.
#[derive(Debug, Default)]
pub(super) struct Feed {
    /// Bytes in the job's pieces.
    gathered: usize,
    /// Bytes of the unfinished line the job ends with.
    partial: usize,
    /// That line was cut short for being too long: its bytes are dropped until its newline.
    dropping: bool,
}

impl ParallelDecoder {
    /// From here on the input is NDJSON text starting at line `start.line`, to be pushed
    /// with [`ParallelDecoder::push_lines`]. Records pushed before go out first.
    ///
    /// # Errors
    /// As [`ParallelDecoder::push`], for records pushed before.
    pub(crate) fn start_lines(
        &mut self,
        start: LineStart,
        out: &mut Vec<Decoded>,
    ) -> Result<(), DecodeError> {
        if !self.job.records.is_empty() {
            self.dispatch(out)?;
        }
        self.line_base = start.line - 1;
        self.record_base = self.next_record - 1;
        self.job.lines = Some(start);
        self.feed = Some(Feed::default());
        Ok(())
    }

    /// Takes the next bytes of NDJSON text (after [`ParallelDecoder::start_lines`]); batches
    /// that are ready, in input order, go to `out`.
    ///
    /// # Errors
    /// As [`ParallelDecoder::push`], for the earliest line with one.
    pub(crate) fn push_lines(
        &mut self,
        bytes: Bytes,
        out: &mut Vec<Decoded>,
    ) -> Result<(), DecodeError> {
        debug_assert!(self.job.lines.is_some(), "lines pushed before start_lines");
        let mut feed = self.feed.take().unwrap_or_default();
        let result = self.gather(&mut feed, bytes, out);
        self.feed = Some(feed);
        result
    }

    fn gather(
        &mut self,
        feed: &mut Feed,
        mut bytes: Bytes,
        out: &mut Vec<Decoded>,
    ) -> Result<(), DecodeError> {
        let max = self
            .job
            .lines
            .map_or(usize::MAX, |start| start.max_record_bytes);
        while !bytes.is_empty() {
            if feed.dropping {
                let Some(newline) = memchr::memchr(b'\n', &bytes) else {
                    return Ok(());
                };
                feed.dropping = false;
                // The newline ends the line cut short.
                drop(bytes.split_to(newline));
            }
            // Up to a batch's worth, unless all the job holds is one unfinished line.
            let room = if feed.gathered < self.batch_bytes {
                self.batch_bytes - feed.gathered
            } else {
                bytes.len()
            };
            let piece = bytes.split_to(room.min(bytes.len()));
            feed.partial = match memchr::memrchr(b'\n', &piece) {
                Some(newline) => piece.len() - newline - 1,
                None => feed.partial + piece.len(),
            };
            feed.gathered += piece.len();
            self.job.pieces.push(piece);
            if feed.partial > max {
                // Too long to be a record, whatever follows.
                let cut = feed.partial - (max + 1);
                drop(split_off_end(&mut self.job.pieces, cut));
                feed.gathered -= cut;
                feed.partial = max + 1;
                feed.dropping = true;
            }
            if feed.gathered >= self.batch_bytes && feed.partial < feed.gathered {
                let unfinished = split_off_end(&mut self.job.pieces, feed.partial);
                self.dispatch(out)?;
                self.job.pieces = unfinished;
                feed.gathered = feed.partial;
            }
        }
        Ok(())
    }
}

/// Takes the last `len` bytes off `pieces`, as pieces of their own (slices of the same
/// buffers).
fn split_off_end(pieces: &mut Vec<Bytes>, mut len: usize) -> Vec<Bytes> {
    let mut end = Vec::new();
    while len > 0 {
        let Some(last) = pieces.last_mut() else {
            break;
        };
        if last.len() <= len {
            len -= last.len();
            end.extend(pieces.pop());
        } else {
            end.push(last.split_off(last.len() - len));
            len = 0;
        }
    }
    end.reverse();
    end
}

/// Decodes a job of lines on a worker: finds its records as the caller's framer would,
/// numbering lines and records from 1. Returns the batches or the first error, and the
/// lines (newlines) and records the job holds.
pub(super) fn decode(
    decoder: &mut RecordDecoder,
    pieces: &[Bytes],
    start: &LineStart,
) -> (Result<Vec<Decoded>, DecodeError>, u64, u64) {
    decoder.reset(1);
    let mut framer = start.framer();
    let mut decoded = Vec::new();
    let mut take = |record: &[u8], at: Position| -> Result<(), DecodeError> {
        decoded.extend(decoder.push(record, at)?);
        Ok(())
    };
    let framed = pieces
        .iter()
        .try_for_each(|piece| framer.push(piece, &mut take))
        .and_then(|()| framer.finish(&mut take));
    let result = match framed {
        Ok(()) => decoder.finish().map(|last| {
            decoded.extend(last);
            decoded
        }),
        Err(error) => Err(decoder.earliest_error(error)),
    };
    (result, framer.line() - 1, decoder.last_record())
}
