//! Where the bytes come from: an http(s) URL, a file, or stdin.
//!
//! A source is opened into one [`AsyncRead`] of the decompressed body, which the pipeline
//! reads in chunks. Gzip is recognised by its magic bytes rather than by file name or
//! Content-Type, so `.ndjson.gz` files, `curl | apitap load -` and APIs that serve gzip
//! without saying so all work; `Content-Encoding` is handled by reqwest itself.
//!
//! HTTP requests carry the source's headers and query parameters ([`request`]) and are
//! retried on transient failures ([`retry`]) until the body starts to arrive.

pub mod auth;
pub mod paginate;
pub mod request;
pub mod retry;
pub mod throttle;

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use async_compression::tokio::bufread::GzipDecoder;
use futures_util::TryStreamExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio_util::io::StreamReader;
use tracing::Instrument;

pub use request::RequestOptions;
pub use retry::RetryPolicy;

use crate::progress::Progress;

/// How a load talks HTTP: the client, what every request carries, and the retry policy.
#[derive(Debug, Clone)]
pub struct Http {
    pub client: reqwest::Client,
    pub request: RequestOptions,
    pub retry: RetryPolicy,
    pub auth: Option<std::sync::Arc<auth::Auth>>,
    /// Shared by every request of the source, so concurrent requests pace together.
    pub throttle: std::sync::Arc<throttle::Throttle>,
}

/// The body of a source, decompressed.
pub type Body = Pin<Box<dyn AsyncRead + Send>>;

impl Http {
    /// A source's HTTP side: its own client (with these timeouts; none for the whole
    /// request, so long streams are never cut), request options, retries, pacing and auth.
    ///
    /// # Errors
    /// If the TLS backend cannot be set up.
    pub fn new(
        connect_timeout: Duration,
        read_timeout: Duration,
        request: RequestOptions,
        retry: RetryPolicy,
        rate_limit: Option<throttle::RateLimit>,
        auth: Option<auth::AuthConfig>,
    ) -> Result<Http, SourceError> {
        Ok(Http {
            client: http_client(connect_timeout, read_timeout)?,
            request,
            retry,
            throttle: std::sync::Arc::new(throttle::Throttle::new(rate_limit)),
            auth: auth.map(|config| std::sync::Arc::new(auth::Auth::new(config))),
        })
    }

    /// The source URL with the `--query` parameters added: the first request's URL, and the
    /// base every page's URL is built on.
    ///
    /// # Errors
    /// Text that is not a URL.
    pub fn url(&self, url: &str) -> Result<reqwest::Url, SourceError> {
        let mut full = reqwest::Url::parse(url).map_err(|e| SourceError::Request {
            url: redact_url(url),
            attempts: 0,
            reason: format!("invalid URL: {e}"),
        })?;
        if !self.request.query.is_empty() {
            full.query_pairs_mut().extend_pairs(&self.request.query);
        }
        Ok(full)
    }
}

/// Where to read records from, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Http(String),
    File(PathBuf),
    Stdin,
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
    pub fn parse(text: &str) -> Source {
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
    pub async fn open(&self, http: &Http, progress: &Progress) -> Result<Body, SourceError> {
        let raw: Body = match self {
            Source::Stdin => Box::pin(tokio::io::stdin()),
            Source::File(path) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| SourceError::File {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                Box::pin(file)
            }
            Source::Http(url) => open_http(http, url, progress).await?,
        };
        let mut reader = BufReader::with_capacity(256 * 1024, raw);
        let head = reader.fill_buf().await.map_err(|e| self.read_error(&e))?;
        if head.starts_with(&[0x1f, 0x8b]) {
            let mut gzip = GzipDecoder::new(reader);
            // Concatenated gzip files (`cat a.gz b.gz`) are valid gzip; read every member.
            gzip.multiple_members(true);
            Ok(Box::pin(gzip))
        } else {
            Ok(Box::pin(reader))
        }
    }

    /// An error while reading the body, worded for this source.
    pub fn read_error(&self, error: &std::io::Error) -> SourceError {
        SourceError::Read {
            source_name: self.to_string(),
            reason: error_chain(error),
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

/// Builds the HTTP client: connect and per-read timeouts (a read waiting longer fails and is
/// retried), but no total timeout, which would cut a long stream short.
///
/// # Errors
/// If the TLS backend cannot be set up.
pub fn http_client(
    connect_timeout: Duration,
    read_timeout: Duration,
) -> Result<reqwest::Client, SourceError> {
    crate::tls::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .read_timeout(read_timeout)
        .user_agent(concat!("apitap/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SourceError::Request {
            url: String::new(),
            attempts: 1,
            reason: error_chain(&e),
        })
}

/// Streams the body of `url`, after retrying transient failures of the request itself.
async fn open_http(http: &Http, url: &str, progress: &Progress) -> Result<Body, SourceError> {
    let (response, _) = send(http, &http.url(url)?, progress, 1).await?;
    let stream = response.bytes_stream().map_err(std::io::Error::other);
    Ok(Box::pin(StreamReader::new(stream)))
}

/// One page, read whole, and the target of its `Link: rel="next"` header.
#[derive(Debug)]
pub struct FetchedPage {
    pub body: bytes::Bytes,
    pub link_next: Option<String>,
}

/// Fetches a whole page. A body cut off mid-read is fetched again from the start: nothing
/// of it has been passed on yet, so nothing is duplicated.
///
/// # Errors
/// As for the request, once the retries are used up.
pub async fn fetch_page(
    http: &Http,
    url: &reqwest::Url,
    progress: &Progress,
) -> Result<FetchedPage, SourceError> {
    let shown = redact_url(url.as_str());
    let mut attempt = 1;
    loop {
        let (response, used) = send(http, url, progress, attempt).await?;
        attempt = used;
        let link_next = response
            .headers()
            .get(reqwest::header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(paginate::link_next);
        match response.bytes().await {
            Ok(body) => return Ok(FetchedPage { body, link_next }),
            Err(e) if attempt < http.retry.max_attempts => {
                let wait = http.retry.backoff(attempt);
                tracing::info!(url = %shown, attempt, wait_ms = wait.as_millis() as u64, error = %error_chain(&e), "page body cut off; fetching it again");
                progress.add_retry();
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => {
                return Err(SourceError::Read {
                    source_name: shown,
                    reason: format!("{} (after {attempt} attempts)", error_chain(&e)),
                });
            }
        }
    }
}

/// Sends a GET with the source's headers, retrying transient failures, and returns the
/// first successful response with the number of the attempt that got it. Attempts count
/// from `first_attempt`, so a caller that retries for its own reasons shares the budget.
async fn send(
    http: &Http,
    url: &reqwest::Url,
    progress: &Progress,
    first_attempt: u32,
) -> Result<(reqwest::Response, u32), SourceError> {
    let span = tracing::info_span!("http.request", url = %redact_url(url.as_str()), status = tracing::field::Empty);
    send_retrying(http, url, progress, first_attempt)
        .instrument(span)
        .await
}

async fn send_retrying(
    http: &Http,
    url: &reqwest::Url,
    progress: &Progress,
    first_attempt: u32,
) -> Result<(reqwest::Response, u32), SourceError> {
    let shown = redact_url(url.as_str());
    let mut attempt = first_attempt;
    let mut refreshed_token = false;
    loop {
        let started = std::time::Instant::now();
        let mut rate_limited = false;
        let mut target = url.clone();
        let credentials = match &http.auth {
            Some(auth) => auth.credentials(&http.client, &mut target).await?,
            None => None,
        };
        let mut request = if http.request.post {
            let request = http.client.post(target);
            match &http.request.body {
                Some(body) => request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone()),
                None => request,
            }
        } else {
            http.client.get(target)
        };
        for (name, value) in http.request.headers.iter().chain(credentials.as_ref()) {
            request = request.header(name, value);
        }
        let last = attempt >= http.retry.max_attempts;
        if http.throttle.acquire().await {
            progress.add_throttle_wait();
        }
        let sent = request.send().await;
        if let Ok(response) = &sent {
            http.throttle
                .observe(response.headers(), std::time::SystemTime::now());
        }
        let wait = match sent {
            // An OAuth2 token can be revoked or expire early: fetch a new one, once.
            Ok(response)
                if response.status() == reqwest::StatusCode::UNAUTHORIZED
                    && !refreshed_token
                    && http.auth.as_ref().is_some_and(|a| a.can_refresh()) =>
            {
                if let Some(auth) = &http.auth {
                    auth.invalidate().await;
                }
                refreshed_token = true;
                tracing::info!(url = %shown, "401 with an OAuth2 token; fetching a new one");
                continue;
            }
            Ok(response) if response.status().is_success() => {
                let status = response.status();
                tracing::Span::current().record("status", status.as_u16());
                tracing::info!(
                    url = %shown,
                    status = status.as_u16(),
                    attempt,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "response headers received"
                );
                return Ok((response, attempt));
            }
            Ok(response) => {
                let status = response.status();
                rate_limited = status == reqwest::StatusCode::TOO_MANY_REQUESTS;
                tracing::Span::current().record("status", status.as_u16());
                if last || !retry::retryable_status(status) {
                    // The start of the body usually says why (an error JSON, a login page).
                    let bytes = response.bytes().await.unwrap_or_default();
                    return Err(SourceError::Status {
                        status,
                        url: shown,
                        attempts: attempt,
                        body: crate::decode::framing::preview(&bytes),
                    });
                }
                match retry::retry_after(response.headers(), std::time::SystemTime::now()) {
                    Ok(Some(wait)) => wait,
                    Ok(None) => http.retry.backoff(attempt),
                    Err(wait) => return Err(SourceError::RetryAfterTooLong { url: shown, wait }),
                }
            }
            Err(e) if !last && (e.is_connect() || e.is_timeout() || e.is_request()) => {
                http.retry.backoff(attempt)
            }
            Err(e) => {
                return Err(SourceError::Request {
                    url: shown,
                    attempts: attempt,
                    reason: error_chain(&e),
                });
            }
        };
        tracing::info!(url = %shown, attempt, wait_ms = wait.as_millis() as u64, "retrying");
        progress.add_retry();
        if rate_limited {
            // Every request of the source holds back, not only this one.
            http.throttle.pause(wait);
        } else {
            tokio::time::sleep(wait).await;
        }
        attempt += 1;
    }
}

/// A URL fit for messages and logs: user info and query values are hidden, since either may
/// hold a credential.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return url.to_string();
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let _ = parsed.set_username("***");
        let _ = parsed.set_password(None);
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let secret = ["key", "token", "secret", "password", "signature", "auth"]
                    .iter()
                    .any(|s| k.to_ascii_lowercase().contains(s));
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// An error and its causes on one line: reqwest and io errors keep the useful part
/// ("Connection refused") in their sources.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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

    #[test]
    fn redacts_credentials_in_urls() {
        assert_eq!(
            redact_url("https://user:pw@api.example.org/v1?api_key=s3cret&page=2"),
            "https://***@api.example.org/v1?api_key=***&page=2"
        );
    }
}
