//! Why paging cannot go on: each error names the page, the URL or the setting.

/// Why paging cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PagingError {
    /// A pagination mapping that cannot work.
    #[error("pagination: {0}")]
    Config(String),
    #[error("the API returned {what} a second time (page {page}); stopping instead of looping")]
    Loop { what: String, page: u64 },
    #[error(
        "page {page} is identical to the page before it; the API seems to ignore the paging parameters ({url})"
    )]
    SamePage { page: u64, url: String },
    #[error(
        "page {page} says there is more ({signal}) but {missing}; stopping rather than load part of the data"
    )]
    Missing {
        page: u64,
        signal: String,
        missing: String,
    },
    #[error(
        "the next page is on another host or scheme ({url}); refusing to send the request there \
         (set allow_cross_host: true, or pass --allow-cross-host, to follow it without credentials)"
    )]
    CrossHost { url: String },
    #[error("the next page's URL {link:?} is not a URL: {reason}")]
    BadLink { link: String, reason: String },
    #[error("the saved page position {url:?} is not a URL: {reason}")]
    BadPosition { url: String, reason: String },
    #[error(
        "the saved page position ({saved}) is not on the configured source's origin ({configured}); \
         refusing to resume there (pass --full-refresh to start the backfill again)"
    )]
    ForeignPosition { saved: String, configured: String },
}
