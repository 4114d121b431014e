//! A pager's saved position (`--commit-every`): where a backfill resumes, holding no
//! secret, and refused when it points at another origin than the configured source.

use reqwest::Url;
use serde::Deserialize;

use super::{Pager, PagingError};

/// Where a pager stands between two pages, saved with each commit of a `--commit-every`
/// load so that a rerun picks up at the next page. The base URL is kept too: it carries the
/// query of the run that started the backfill (an incremental cursor included), which the
/// rest of the backfill must keep asking with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub(crate) struct PagerPosition {
    base: String,
    next: String,
    offset: u64,
    page: u64,
    pages_fetched: u64,
    records: u64,
    total: Option<u64>,
    total_pages: Option<u64>,
}

impl Pager {
    /// Where the pager stands: the next page to fetch and the counts so far.
    /// The position holds no secret: query values that are secrets are masked, and put back
    /// from the configuration when the backfill resumes ([`Pager::resume`]).
    pub(crate) fn position(&self) -> PagerPosition {
        PagerPosition {
            base: mask_secrets(&self.base, &self.base),
            next: mask_secrets(&self.current, &self.base),
            offset: self.offset,
            page: self.page,
            pages_fetched: self.pages_fetched,
            records: self.records,
            total: self.total,
            total_pages: self.total_pages,
        }
    }

    /// Continues from a saved position instead of the first page. The position must be on
    /// the configured source's origin (anyone who can write the state table could otherwise
    /// send the next run, credentials and all, elsewhere); masked query values are put back
    /// from the pager's own base URL, which the configuration built.
    ///
    /// # Errors
    /// A position whose URLs do not parse (a hand-edited state row).
    pub(crate) fn resume(&mut self, position: &PagerPosition) -> Result<(), PagingError> {
        let url = |text: &str| {
            Url::parse(text).map_err(|e| PagingError::BadPosition {
                url: crate::base::secrets::redact_url(text),
                reason: e.to_string(),
            })
        };
        let base = url(&position.base)?;
        let next = url(&position.next)?;
        // The base must be on the configured origin; a next link may be elsewhere only where
        // cross-host links are allowed.
        let foreign = |saved: &Url| !crate::source::http::same_origin(saved, &self.base);
        if foreign(&base) || (foreign(&next) && !self.config.allow_cross_host) {
            let saved = if foreign(&base) { &base } else { &next };
            return Err(PagingError::ForeignPosition {
                saved: crate::base::secrets::redact_url(saved.as_str()),
                configured: crate::base::secrets::redact_url(self.base.as_str()),
            });
        }
        self.current = unmask_secrets(&next, &self.base);
        self.base = unmask_secrets(&base, &self.base);
        self.offset = position.offset;
        self.page = position.page;
        self.pages_fetched = position.pages_fetched;
        self.records = position.records;
        self.total = position.total;
        self.total_pages = position.total_pages;
        Ok(())
    }
}

/// `url` with the values of query parameters that are secrets, or that the configuration
/// put there (`configured` has the same name and value: a token in `--query`, say), replaced
/// by the mask. On resume they come back from the configuration, so the saved position holds
/// no credential; parameters the pages themselves set (a page token, a cursor) are kept.
fn mask_secrets(url: &Url, configured: &Url) -> String {
    let mut masked = url.clone();
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let from_config = configured.query_pairs().any(|(ck, cv)| ck == k && cv == v);
                let value = if from_config || crate::base::secrets::is_secret(&v) {
                    crate::base::secrets::MASK.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), value)
            })
            .collect();
        masked.query_pairs_mut().clear().extend_pairs(pairs);
    }
    let _ = masked.set_password(None);
    masked.to_string()
}

/// `saved` with masked query values taken from `configured` (the same parameter there).
fn unmask_secrets(saved: &Url, configured: &Url) -> Url {
    if !saved
        .query_pairs()
        .any(|(_, v)| v == crate::base::secrets::MASK)
    {
        return saved.clone();
    }
    let pairs: Vec<(String, String)> = saved
        .query_pairs()
        .map(|(k, v)| {
            let value = if v == crate::base::secrets::MASK {
                configured
                    .query_pairs()
                    .find(|(name, _)| *name == k)
                    .map_or_else(|| v.to_string(), |(_, value)| value.into_owned())
            } else {
                v.into_owned()
            };
            (k.into_owned(), value)
        })
        .collect();
    let mut url = saved.clone();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url
}
