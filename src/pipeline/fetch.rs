//! The fetch stage: reads a streamed body in chunks, or walks a paged source page by page,
//! and hands the bytes (or the framed pages) to the decode stage.

use super::*;

/// Size of the chunks read from a streamed body.
const CHUNK_BYTES: usize = 256 * 1024;

/// Reads the body in chunks. Stops quietly when the decode stage is gone (it has its reason).
///
/// An HTTP body cut mid-stream is requested again, within the retry policy: the bytes
/// already passed on are read again, checked against a CRC-32 of what was sent (SIMD-fast,
/// so the stream pays next to nothing for it), and skipped,
/// so the stream goes on exactly where it broke and no record is loaded twice. A server
/// that sends different bytes the second time fails the load instead.
pub(super) async fn fetch(
    mut body: Body,
    tx: mpsc::Sender<Chunk>,
    progress: Arc<Progress>,
    source: Source,
    http: Http,
) -> Result<(), LoadError> {
    let mut sent: u64 = 0;
    // Only an HTTP body can be asked for again; files and stdin need no checksum.
    let resumable = matches!(source, Source::Http(_)) && http.retry.max_attempts > 1;
    let mut sent_crc = crc32fast::Hasher::new();
    let mut attempt = 1;
    loop {
        let mut buf = BytesMut::with_capacity(CHUNK_BYTES);
        let mut cut = None;
        while buf.len() < CHUNK_BYTES / 2 {
            match body.read_buf(&mut buf).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    cut = Some(e);
                    break;
                }
            }
        }
        let ended = buf.is_empty() && cut.is_none();
        if !buf.is_empty() {
            if resumable {
                sent_crc.update(&buf);
            }
            sent += buf.len() as u64;
            progress.add_bytes(buf.len() as u64);
            if tx.send(Chunk::Bytes(buf.freeze())).await.is_err() {
                return Ok(());
            }
        }
        if let Some(error) = cut {
            if !resumable || attempt >= http.retry.max_attempts {
                return Err(LoadError::Source(source.read_error(&error)));
            }
            let wait = http.retry.backoff(attempt);
            tracing::info!(source = %source, bytes = sent, error = %crate::base::error_chain(&error), wait_ms = wait.as_millis() as u64, "body cut mid-stream; requesting it again");
            progress.add_retry();
            tokio::time::sleep(wait).await;
            attempt += 1;
            body = source.open(&http, &progress).await?;
            skip_sent(&mut body, sent, sent_crc.clone().finalize(), &source).await?;
            continue;
        }
        if ended {
            tracing::info!(bytes = progress.figures().bytes, "source read to the end");
            return Ok(());
        }
    }
}

/// Reads the first `sent` bytes of a body requested again and checks they are the bytes
/// already passed on (whose CRC-32 is `sent_crc`).
async fn skip_sent(
    body: &mut Body,
    sent: u64,
    sent_crc: u32,
    source: &Source,
) -> Result<(), LoadError> {
    let mut again = crc32fast::Hasher::new();
    let mut left = sent;
    let mut buf = vec![0u8; CHUNK_BYTES];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = body
            .read(&mut buf[..want])
            .await
            .map_err(|e| LoadError::Source(source.read_error(&e)))?;
        if n == 0 {
            break;
        }
        again.update(&buf[..n]);
        left -= n as u64;
    }
    let same = left == 0 && again.finalize() == sent_crc;
    if !same {
        return Err(LoadError::Unsupported(format!(
            "{source}: the body was cut after {sent} bytes, and the server sent different bytes when asked again, so the load cannot go on where it broke; run it again"
        )));
    }
    Ok(())
}

/// What flows from the fetch stage to the decode stage.
pub(super) enum Chunk {
    /// Part of one streamed body; the decode stage finds the records.
    Bytes(Bytes),
    /// One whole page whose records the fetch stage has already found (it needed to, to
    /// know the next page).
    Page(FramedPage),
    /// A commit point after a page (`--commit-every`): the pager's position, as JSON.
    Checkpoint(String),
}

pub(super) struct FramedPage {
    pub(super) body: Bytes,
    /// Each record's byte range in `body`, and where it starts.
    pub(super) records: Vec<(usize, usize, Position)>,
    /// `page 3 (URL)`, for messages.
    pub(super) label: String,
}

/// Fetches pages until the pager says the source is exhausted, passing each on with its
/// records located, in page order. Where the pager knows the URLs ahead, up to its
/// concurrency pages are in flight; every 429 halves that, a run of good pages grows it back.
/// Stops quietly when the decode stage is gone (it has its reason).
pub(super) async fn fetch_pages(
    mut pager: Pager,
    source: SourceSettings,
    decode: DecodeSettings,
    tx: mpsc::Sender<Chunk>,
    progress: Arc<Progress>,
) -> Result<(), LoadError> {
    let source_name = source.source.to_string();
    let http = &source.http;
    let most = pager.concurrency();
    let mut limit = most;
    let mut good_pages = 0;
    let mut rejections_seen = http.throttle.rejections();
    let mut in_flight = futures_util::stream::FuturesOrdered::new();
    // Absolute index (from 0) of the next page to request; a resumed backfill starts past
    // the pages it committed.
    let mut next_index = pager.pages_fetched();
    loop {
        while in_flight.len() < limit {
            let ahead = next_index - pager.pages_fetched();
            let url = if most == 1 {
                pager.url().clone()
            } else {
                pager.url_ahead(ahead)
            };
            let label = format!("page {} ({})", next_index + 1, redact_url(url.as_str()));
            let progress = &*progress;
            in_flight.push_back(async move {
                let page = fetch_page(http, &url, progress).await;
                (label, page)
            });
            next_index += 1;
            if most == 1 {
                break;
            }
        }
        let Some((label, page)) = futures_util::StreamExt::next(&mut in_flight).await else {
            return Ok(());
        };
        let page = page?;
        progress.add_bytes(page.body.len() as u64);
        let (framed, captured) = frame_page(page.body, label.clone(), &decode, pager.captures())
            .map_err(|error| LoadError::Decode {
                source_name: format!("{source_name}, {label}"),
                error,
            })?;
        progress.add_page();
        let last_record = pager.last_record_pointer().and_then(|pointer| {
            let (start, end, _) = framed.records.last()?;
            value_at(&framed.body[*start..*end], pointer)
        });
        let facts = PageFacts {
            records: framed.records.len() as u64,
            captured,
            link_next: crate::source::link::next(&page.links)
                .and_then(|target| page.url.join(&target).ok())
                .map(String::from),
            last_record,
            digest: digest(&framed.body),
        };
        if tx.send(Chunk::Page(framed)).await.is_err() {
            return Ok(());
        }
        let more = pager.advance(&facts)?;
        if let Some(total) = pager.expected_total() {
            progress.set_total(total);
        }
        progress.paged_to(pager.pages_fetched(), pager.records_fetched());
        if more.is_none() {
            // Pages requested past the end are dropped unread.
            tracing::info!(pages = pager.pages_fetched(), "last page reached");
            say_why_paging_stopped(&pager, &source_name, &progress);
            return Ok(());
        }
        if let Some(every) = source.commit_every
            && pager.pages_fetched() % every.max(1) == 0
        {
            let position = serde_json::to_string(&pager.position())
                .map_err(|e| LoadError::Internal(e.to_string()))?;
            if tx.send(Chunk::Checkpoint(position)).await.is_err() {
                return Ok(());
            }
        }
        let rejections = http.throttle.rejections();
        if rejections > rejections_seen {
            limit = (limit / 2).max(1);
            rejections_seen = rejections;
            good_pages = 0;
            tracing::info!(concurrency = limit, "rate limited; fewer pages in flight");
        } else if limit < most {
            good_pages += 1;
            if good_pages >= 2 * limit {
                limit += 1;
                good_pages = 0;
            }
        }
    }
}

/// Records why paging stopped, for the summary, and warns at once when that looks like a
/// mistake: a full first page whose next cursor or link is nowhere on it (a mistyped path
/// would otherwise end the load after one page, with success).
fn say_why_paging_stopped(pager: &Pager, source_name: &str, progress: &Progress) {
    let Some(stopped) = pager.stopped() else {
        return;
    };
    if stopped.suspicious {
        tracing::warn!(
            source = %source_name,
            "paging stopped after the first page, which was full: {}; if the API has more pages, check the path",
            stopped.reason
        );
    }
    progress.paging_stopped(stopped.to_string());
}

/// Locates a page's records: at the records path inside the page's document, or as NDJSON
/// lines or array elements. Also returns the raw text of the values the pager asked for.
fn frame_page(
    body: Bytes,
    label: String,
    decode: &DecodeSettings,
    captures: &[JsonPointer],
) -> Result<(FramedPage, Vec<Option<String>>), DecodeError> {
    // A final newline keeps the last NDJSON line inside the body (not in the framer's
    // carry), so every record is a range of it.
    let body = if decode.records_path.is_none() && !body.is_empty() && body.last() != Some(&b'\n') {
        Bytes::from([&body[..], b"\n"].concat())
    } else {
        body
    };
    let base = body.as_ptr() as usize;
    let body_len = body.len();
    let mut records = Vec::new();
    // The framer and scanner hand out slices of `body` itself; a slice from anywhere else
    // (a copied carry) would be a framing bug, reported rather than sliced wrongly.
    let mut locate = |record: &[u8], at: Position| {
        if record.is_empty() {
            // A record too long to keep, skipped by the framer (reject mode).
            records.push((0, 0, at));
            return Ok(());
        }
        let start = (record.as_ptr() as usize).wrapping_sub(base);
        if start > body_len || body_len - start < record.len() {
            return Err(DecodeError::Structure {
                line: at.line,
                message: "internal error: a record outside its page".into(),
            });
        }
        records.push((start, start + record.len(), at));
        Ok(())
    };
    let captured = match &decode.records_path {
        Some(path) => {
            let refs: Vec<&JsonPointer> = captures.iter().collect();
            let scanned = scan_document(&body, path, &refs, &mut locate)?;
            scanned
                .captured
                .iter()
                .map(|c| c.map(|b| String::from_utf8_lossy(b).into_owned()))
                .collect()
        }
        None => {
            let mut framer = decode.framer();
            framer.push(&body, &mut locate)?;
            framer.finish(&mut locate)?;
            Vec::new()
        }
    };
    Ok((
        FramedPage {
            body,
            records,
            label,
        },
        captured,
    ))
}

/// A cheap fingerprint of a page: its length and its first and last 64 KiB.
fn digest(body: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.len().hash(&mut hasher);
    body[..body.len().min(65536)].hash(&mut hasher);
    body[body.len().saturating_sub(65536)..].hash(&mut hasher);
    hasher.finish()
}

/// The raw JSON text at `pointer` (through objects) inside one record: a page's last, for a
/// cursor taken from it. Raw, so a numeric id past 2^53 is sent back exactly as it came.
fn value_at(record: &[u8], pointer: &JsonPointer) -> Option<String> {
    let mut text = std::str::from_utf8(record).ok()?;
    for token in pointer.tokens() {
        let mut found = None;
        crate::decode::scan::scan_record::<crate::decode::scan::SyntaxError>(
            text,
            |key, escaped, value| {
                let mut name = String::new();
                if escaped {
                    crate::decode::scan::unescape(key, &mut name);
                } else {
                    name.push_str(key);
                }
                if name == *token {
                    found = Some(value);
                }
                Ok(())
            },
        )
        .ok()?;
        let value = found?;
        text = value.json(text);
    }
    Some(text.to_string())
}
