//! Where the bytes come from: an http(s) URL, a file, or stdin.
//!
//! A source is opened into one [`AsyncRead`] of the decompressed body, which the pipeline
//! reads in chunks. Gzip, zstd and bzip2 are recognised by their magic bytes rather than
//! by file name or Content-Type, so `.ndjson.gz` or `.ndjson.zst` files, `curl | apitap load
//! -` and APIs that serve compressed files without saying so all work; `Content-Encoding` is
//! handled by reqwest itself. Each is decompressed as it streams, in bounded memory: a zstd
//! frame that asks for a window past zstd's default limit (128 MiB) is refused, not given the
//! memory.
//!
//! HTTP requests carry the source's headers and query parameters ([`request`]) and are
//! retried on transient failures ([`retry`]) until the body starts to arrive.

pub(crate) mod auth;
pub mod http;
pub(crate) mod link;
pub(crate) mod paginate;
pub(crate) mod request;
pub(crate) mod retry;
pub(crate) mod throttle;

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use async_compression::tokio::bufread::{BzDecoder, GzipDecoder, ZstdDecoder};
use futures_util::TryStreamExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio_util::io::StreamReader;

use crate::base::error_chain;
pub(crate) use crate::base::secrets::redact_url;
pub use http::HttpSettings;
pub(crate) use http::{Http, fetch_page};
pub(crate) use retry::RetryPolicy;

use crate::progress::Progress;

/// The body of a source, decompressed.
pub(crate) type Body = Pin<Box<dyn AsyncRead + Send>>;

/// Where to read records from, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Http(String),
    File(PathBuf),
    Stdin,
}

/// What the fetch stage needs of a load: where the bytes come from and how to ask for them.
#[derive(Debug, Clone)]
pub(crate) struct SourceSettings {
    pub source: Source,
    /// Client, headers, query, auth, retries and pacing of an HTTP source.
    pub http: Http,
    /// Fetch the HTTP source page by page.
    pub pagination: Option<paginate::PaginationConfig>,
    /// Where an unfinished `--commit-every` backfill stopped, from the stored state.
    pub resume_at: Option<paginate::PagerPosition>,
    /// Send a commit point every this many pages (`--commit-every`).
    pub commit_every: Option<u64>,
}

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("HTTP {status} from {url}{}{}", attempts_suffix(*.attempts), body_suffix(.body))]
    Status {
        status: reqwest::StatusCode,
        url: String,
        attempts: u32,
        body: String,
    },
    #[error("could not fetch {url}{}: {reason}", attempts_suffix(*.attempts))]
    Request {
        url: String,
        attempts: u32,
        reason: String,
    },
    #[error("{url} asked to retry after {} s, longer than apitap waits ({} s)", .wait.as_secs(), 600)]
    RetryAfterTooLong {
        url: String,
        wait: std::time::Duration,
    },
    #[error(
        "a page of {url} is larger than --max-page-bytes allows ({limit} bytes, after decompression); \
         raise it, or ask the API for smaller pages"
    )]
    PageTooLarge { url: String, limit: usize },
    #[error("could not read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("reading {source_name} failed: {reason}")]
    Read { source_name: String, reason: String },
}

fn attempts_suffix(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    }
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

impl Source {
    /// `-` is stdin, `http://` and `https://` are URLs, anything else is a file path.
    pub(crate) fn parse(text: &str) -> Source {
        if text == "-" {
            Source::Stdin
        } else if text.starts_with("http://") || text.starts_with("https://") {
            Source::Http(text.to_string())
        } else {
            Source::File(PathBuf::from(text))
        }
    }

    /// Opens the source and returns its decompressed body.
    ///
    /// # Errors
    /// A non-2xx response, an unreachable server, or a file that cannot be opened.
    pub(crate) async fn open(
        &self,
        http: &Http,
        progress: &Arc<Progress>,
    ) -> Result<Body, SourceError> {
        let (raw, size): (Body, Option<u64>) = match self {
            Source::Stdin => (Box::pin(tokio::io::stdin()), stdin_file_size()),
            Source::File(path) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| SourceError::File {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                let size = file
                    .metadata()
                    .await
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|m| m.len());
                (Box::pin(file), size)
            }
            Source::Http(url) => open_http(http, url, progress).await?,
        };
        // A body requested again after a cut is read from its start.
        progress.restart_input();
        if let Some(size) = size {
            progress.set_total(crate::progress::Total::Bytes(size));
        }
        let counted = Counted {
            inner: raw,
            progress: progress.clone(),
        };
        let mut reader = BufReader::with_capacity(256 * 1024, counted);
        let head = reader.fill_buf().await.map_err(|e| self.read_error(&e))?;
        // Concatenated members (`cat a.gz b.gz`, `zstd -c a >> b.zst`) are one valid file of
        // each format; every member is read.
        Ok(match Compression::detect(head) {
            None => Box::pin(reader),
            Some(Compression::Gzip) => {
                let mut gzip = GzipDecoder::new(reader);
                gzip.multiple_members(true);
                Box::pin(gzip)
            }
            Some(Compression::Zstd) => {
                let mut zstd = ZstdDecoder::new(reader);
                zstd.multiple_members(true);
                Box::pin(zstd)
            }
            Some(Compression::Bzip2) => {
                let mut bzip2 = BzDecoder::new(reader);
                bzip2.multiple_members(true);
                Box::pin(bzip2)
            }
        })
    }

    /// An error while reading the body, worded for this source.
    pub(crate) fn read_error(&self, error: &std::io::Error) -> SourceError {
        let mut reason = error_chain(error);
        // What the decompressors say of a stream that stops inside a member or frame.
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            reason.push_str(
                " (the input ends inside its compressed data: a file cut short, or a download that stopped)",
            );
        }
        SourceError::Read {
            source_name: self.to_string(),
            reason,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Http(url) => f.write_str(&redact_url(url)),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Stdin => f.write_str("stdin"),
        }
    }
}

/// How a body is compressed, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Gzip,
    Zstd,
    Bzip2,
}

impl Compression {
    /// Each format's magic bytes: a gzip member (RFC 1952), a zstd frame (RFC 8878), a bzip2
    /// stream (`BZh`, then the block size). xz is left out: its decoder reports a stream cut
    /// short as "out of memory", which would send users the wrong way.
    const MAGIC: [(Compression, &'static [u8]); 3] = [
        (Compression::Gzip, &[0x1f, 0x8b]),
        (Compression::Zstd, &[0x28, 0xb5, 0x2f, 0xfd]),
        (Compression::Bzip2, b"BZh"),
    ];

    fn detect(head: &[u8]) -> Option<Compression> {
        let found = Compression::MAGIC
            .iter()
            .find(|(_, magic)| head.starts_with(magic));
        found.map(|(format, _)| *format)
    }
}

/// Streams the body of `url`, after retrying transient failures of the request itself;
/// with its length when the server said it (and the body is not compressed in transit).
async fn open_http(
    http: &Http,
    url: &str,
    progress: &Progress,
) -> Result<(Body, Option<u64>), SourceError> {
    let (response, _) = http::send(http, &http.url(url)?, progress, 1).await?;
    let size = response.content_length();
    let stream = response.bytes_stream().map_err(std::io::Error::other);
    Ok((Box::pin(StreamReader::new(stream)), size))
}

/// The size of stdin when it is a file (`apitap load - < dump.ndjson`), not a pipe.
fn stdin_file_size() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        std::fs::metadata("/proc/self/fd/0")
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The input as read, counted (before decompression) for the progress bar.
struct Counted {
    inner: Body,
    progress: Arc<Progress>,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = this.inner.as_mut().poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &polled {
            this.progress
                .add_input_bytes((buf.filled().len() - before) as u64);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(Source::parse("-"), Source::Stdin);
        assert_eq!(
            Source::parse("https://x/y"),
            Source::Http("https://x/y".into())
        );
        assert_eq!(Source::parse("./a.json"), Source::File("./a.json".into()));
    }
}
