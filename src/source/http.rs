//! HTTP requests of a source: the client, redirects, credentials, retries and bounded reads.
//!
//! Credentials go to the source's own origin (scheme, host and port) and nowhere else. A
//! redirect is followed by hand, not by the HTTP library: within the origin it keeps the
//! credentials; to another origin it is refused with a message, or, when the user allows
//! cross-host requests, followed with every credential removed (headers the user gave, auth,
//! API keys in the query). Nothing ever goes from https to http, and no `Referer` is sent.
//! The same rule holds for the pager's next links, which call [`send`] like any request.
//!
//! Responses are read within bounds: a page is read whole only up to `--max-page-bytes` after
//! decompression (a gzip bomb stops there), an error body only as far as its preview needs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tracing::Instrument;

use super::request::RequestOptions;
use super::retry::{self, RetryPolicy};
use super::{SourceError, auth, throttle};
use crate::base::error_chain;
use crate::base::secrets::redact_url;
use crate::progress::Progress;

/// How an HTTP source may be talked to, as the user set it.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub connect_timeout: Duration,
    /// Each read of a response; a read waiting longer fails and is retried.
    pub read_timeout: Duration,
    /// The whole of each request, body included (`--timeout`); none by default, as it would
    /// cut long streams.
    pub total_timeout: Option<Duration>,
    /// A PEM file of CA certificates to trust besides the system's (or the bundled web
    /// roots, where the system has none).
    pub ca_cert: Option<PathBuf>,
    /// Follow redirects and next links to other origins (without credentials).
    pub allow_cross_host: bool,
    /// The most bytes a page (after decompression) may hold.
    pub max_page_bytes: usize,
}

/// How a load talks HTTP: the client, what every request carries, and the retry policy.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    pub client: reqwest::Client,
    pub request: RequestOptions,
    pub retry: RetryPolicy,
    pub auth: Option<Arc<auth::Auth>>,
    /// Shared by every request of the source, so concurrent requests pace together.
    pub throttle: Arc<throttle::Throttle>,
    /// The origin credentials belong to: the source URL's.
    pub origin: Option<reqwest::Url>,
    pub allow_cross_host: bool,
    pub max_page_bytes: usize,
}

/// The most redirects one request follows.
const MAX_REDIRECTS: usize = 10;
/// How much of an error response is read, for its preview.
const ERROR_BODY_BYTES: usize = 64 * 1024;

impl Http {
    /// A source's HTTP side: its own client, request options, retries, pacing and auth,
    /// with credentials bound to the origin of `source_url`.
    ///
    /// # Errors
    /// A CA file that cannot be read, or a TLS setup that fails.
    pub(crate) fn new(
        source_url: Option<&str>,
        settings: &HttpSettings,
        request: RequestOptions,
        retry: RetryPolicy,
        rate_limit: Option<throttle::RateLimit>,
        auth: Option<auth::AuthConfig>,
    ) -> Result<Http, SourceError> {
        Ok(Http {
            client: http_client(settings)?,
            request,
            retry: retry.clone(),
            throttle: Arc::new(throttle::Throttle::new(rate_limit)),
            auth: auth.map(|config| Arc::new(auth::Auth::new(config, retry.clone()))),
            origin: source_url.and_then(|u| reqwest::Url::parse(u).ok()),
            allow_cross_host: settings.allow_cross_host,
            max_page_bytes: settings.max_page_bytes,
        })
    }

    /// The source URL with the `--query` parameters added: the first request's URL, and the
    /// base every page's URL is built on.
    ///
    /// # Errors
    /// Text that is not a URL.
    pub(crate) fn url(&self, url: &str) -> Result<reqwest::Url, SourceError> {
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

    /// Whether `url` is on the source's origin, where its credentials may go.
    pub(crate) fn is_origin(&self, url: &reqwest::Url) -> bool {
        self.origin.as_ref().is_some_and(|o| same_origin(o, url))
    }
}

/// Same scheme, host and port.
pub(crate) fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The client of one source: connect and per-read timeouts (no total one unless asked, so
/// long streams are not cut), no automatic redirects (see the module docs), no `Referer`,
/// and certificates checked against the system's roots, the bundled web roots where the
/// system has none, and the user's CA file.
///
/// # Errors
/// A CA file that cannot be read or holds no certificate.
pub fn http_client(settings: &HttpSettings) -> Result<reqwest::Client, SourceError> {
    crate::base::tls::install_crypto_provider();
    let tls_error = |reason: String| SourceError::Request {
        url: String::new(),
        attempts: 0,
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        // A minimal container has no CA store: the web's roots, bundled, stand in.
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = &settings.ca_cert {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| tls_error(format!("could not read ca_cert {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(tls_error(format!(
                "ca_cert {} holds no certificate",
                path.display()
            )));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| {
                tls_error(format!(
                    "bad certificate in ca_cert {}: {e}",
                    path.display()
                ))
            })?;
        }
    }
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.read_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .user_agent(concat!("apitap/", env!("CARGO_PKG_VERSION")));
    if let Some(total) = settings.total_timeout {
        builder = builder.timeout(total);
    }
    builder.build().map_err(|e| tls_error(error_chain(&e)))
}

/// Sends a request with the source's headers and credentials (on its origin only),
/// following redirects as the module docs say and retrying transient failures, and returns
/// the first successful response with the number of the attempt that got it. Attempts count
/// from `first_attempt`, so a caller that retries for its own reasons shares the budget.
pub(super) async fn send(
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
        let last = attempt >= http.retry.max_attempts;
        if http.throttle.acquire().await {
            progress.add_throttle_wait();
        }
        let sent = send_following_redirects(http, url).await;
        match &sent {
            Ok(response) => progress.add_http_response(Some(response.status().as_u16())),
            Err(Failure::Transport(_)) => progress.add_http_response(None),
            Err(Failure::Refused(_)) => {}
        }
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
                    // The start of the body usually says why (an error JSON, a login page);
                    // only that much is read.
                    let bytes = read_capped(response, ERROR_BODY_BYTES).await.0;
                    return Err(SourceError::Status {
                        status,
                        url: shown,
                        attempts: attempt,
                        body: crate::base::snippet(&bytes),
                    });
                }
                match retry::retry_after(response.headers(), std::time::SystemTime::now()) {
                    Ok(Some(wait)) => wait,
                    Ok(None) => http.retry.backoff(attempt),
                    Err(wait) => return Err(SourceError::RetryAfterTooLong { url: shown, wait }),
                }
            }
            Err(Failure::Refused(error)) => return Err(error),
            Err(Failure::Transport(e))
                if !last && (e.is_connect() || e.is_timeout() || e.is_request()) =>
            {
                http.retry.backoff(attempt)
            }
            Err(Failure::Transport(e)) => {
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

/// Why one attempt failed.
enum Failure {
    /// The network or the server failed; maybe worth another try.
    Transport(reqwest::Error),
    /// apitap refused to go on (a redirect to another origin, to http); final.
    Refused(SourceError),
}

/// One attempt: the request, and the redirects it leads to, each checked against the origin
/// rule, credentials attached only on the source's origin.
async fn send_following_redirects(
    http: &Http,
    url: &reqwest::Url,
) -> Result<reqwest::Response, Failure> {
    let mut target = url.clone();
    let mut post = http.request.post;
    for _ in 0..=MAX_REDIRECTS {
        let trusted = http.is_origin(&target);
        let mut requested = target.clone();
        let credentials = match &http.auth {
            Some(auth) if trusted => auth
                .credentials(&http.client, &mut requested)
                .await
                .map_err(Failure::Refused)?,
            _ => None,
        };
        let mut request = if post {
            let request = http.client.post(requested.clone());
            match &http.request.body {
                Some(body) => request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone()),
                None => request,
            }
        } else {
            http.client.get(requested.clone())
        };
        if trusted {
            for (name, value) in http.request.headers.iter().chain(credentials.as_ref()) {
                request = request.header(name, value);
            }
        }
        let response = request.send().await.map_err(Failure::Transport)?;
        let status = response.status();
        if !status.is_redirection() || status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        let Some(location) = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
        else {
            return Ok(response);
        };
        let next = requested.join(location).map_err(|e| {
            Failure::Refused(refused(
                &target,
                format!(
                    "it redirected to {:?}, which is not a URL ({e})",
                    crate::base::secrets::redact(location)
                ),
            ))
        })?;
        if target.scheme() == "https" && next.scheme() != "https" {
            return Err(Failure::Refused(refused(
                &target,
                format!(
                    "it redirected from https to {} ({}); apitap never leaves https",
                    next.scheme(),
                    redact_url(next.as_str())
                ),
            )));
        }
        if !http.is_origin(&next) && !http.allow_cross_host {
            return Err(Failure::Refused(refused(
                &target,
                format!(
                    "it redirected to another origin ({}), where the source's credentials must not go; \
                     pass --allow-cross-host (YAML: allow_cross_host: true) to follow such redirects without credentials",
                    redact_url(next.as_str())
                ),
            )));
        }
        tracing::info!(from = %redact_url(target.as_str()), to = %redact_url(next.as_str()), status = status.as_u16(), "following a redirect");
        // As browsers and curl do: 307 and 308 repeat the request, the others become a GET.
        if !matches!(status.as_u16(), 307 | 308) {
            post = false;
        }
        target = next;
    }
    Err(Failure::Refused(refused(
        url,
        format!("more than {MAX_REDIRECTS} redirects"),
    )))
}

fn refused(url: &reqwest::Url, reason: String) -> SourceError {
    SourceError::Request {
        url: redact_url(url.as_str()),
        attempts: 1,
        reason,
    }
}

/// Reads a response body up to `limit` bytes: the bytes, and whether it went past the limit
/// (the rest is not read). A read error ends it early, as if the body ended.
pub(super) async fn read_capped(response: reqwest::Response, limit: usize) -> (bytes::Bytes, bool) {
    let mut out = bytes::BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit - out.len();
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            return (out.freeze(), true);
        }
        out.extend_from_slice(&chunk);
    }
    (out.freeze(), false)
}

/// One page, read whole, and the `Link` headers it came with.
#[derive(Debug)]
pub(crate) struct FetchedPage {
    pub body: bytes::Bytes,
    /// Every `Link` header value of the response, in order.
    pub links: Vec<String>,
    /// The URL the page was fetched from, after redirects within the origin (relative next
    /// links resolve against it).
    pub url: reqwest::Url,
}

/// Fetches a whole page, up to `--max-page-bytes` after decompression. A body cut off
/// mid-read is fetched again from the start: nothing of it has been passed on yet, so
/// nothing is duplicated.
///
/// # Errors
/// As for the request, once the retries are used up; a page past the size limit.
pub(crate) async fn fetch_page(
    http: &Http,
    url: &reqwest::Url,
    progress: &Progress,
) -> Result<FetchedPage, SourceError> {
    let shown = redact_url(url.as_str());
    let mut attempt = 1;
    loop {
        let (response, used) = send(http, url, progress, attempt).await?;
        attempt = used;
        let links = response
            .headers()
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let final_url = response.url().clone();
        match read_page(response, http.max_page_bytes).await {
            Ok(body) => {
                return Ok(FetchedPage {
                    body,
                    links,
                    url: final_url,
                });
            }
            Err(PageRead::TooLarge) => {
                return Err(SourceError::PageTooLarge {
                    url: shown,
                    limit: http.max_page_bytes,
                });
            }
            Err(PageRead::Cut(e)) if attempt < http.retry.max_attempts => {
                let wait = http.retry.backoff(attempt);
                tracing::info!(url = %shown, attempt, wait_ms = wait.as_millis() as u64, error = %error_chain(&e), "page body cut off; fetching it again");
                progress.add_retry();
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(PageRead::Cut(e)) => {
                return Err(SourceError::Read {
                    source_name: shown,
                    reason: format!("{} (after {attempt} attempts)", error_chain(&e)),
                });
            }
        }
    }
}

enum PageRead {
    TooLarge,
    Cut(reqwest::Error),
}

/// A page's whole body, refusing to hold more than `limit` bytes.
async fn read_page(response: reqwest::Response, limit: usize) -> Result<bytes::Bytes, PageRead> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(PageRead::TooLarge);
    }
    let mut out = bytes::BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(PageRead::Cut)?;
        if out.len() + chunk.len() > limit {
            return Err(PageRead::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// The default `--max-page-bytes`: far above any page a real API sends, far below what
/// would exhaust memory.
pub(crate) const DEFAULT_MAX_PAGE_BYTES: usize = 256 << 20;

/// A source's settings when the user gave none (tests, and the defaults of flags and YAML).
impl Default for HttpSettings {
    fn default() -> HttpSettings {
        HttpSettings {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            total_timeout: None,
            ca_cert: None,
            allow_cross_host: false,
            max_page_bytes: DEFAULT_MAX_PAGE_BYTES,
        }
    }
}
