//! Which page to fetch next, and when to stop.
//!
//! The pager is pure: given what the last page showed (its record count, the values at the
//! configured pointers, its `Link` headers, its last record), it returns the next URL or
//! `None`. It never loops and never stops silently:
//!
//! - a cursor, next URL or next link seen before (at any distance, remembered as hashes) or a
//!   page identical to the one before (an API that ignores the paging parameters) fails the
//!   run, naming it;
//! - when a page says there is more (`has_more: true`, `done: false`, a total not yet
//!   reached) but the next position is missing, the run fails naming what is missing, rather
//!   than end with part of the data;
//! - a next link to another origin is refused unless allowed, and then followed without
//!   credentials (see `source/http.rs`).

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use reqwest::Url;

use crate::decode::pointer::JsonPointer;

mod config;
mod error;
mod position;
mod stop;
pub(crate) use config::{Kind, PaginationConfig};
pub(crate) use error::PagingError;
pub(crate) use position::PagerPosition;
pub(crate) use stop::{StopReason, Stopped};

/// Pointers whose values the pager reads from each page, in a fixed order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Captures {
    pub pointers: Vec<JsonPointer>,
    cursor: Option<usize>,
    next_url: Option<usize>,
    total: Option<usize>,
    total_pages: Option<usize>,
    has_more: Option<usize>,
    done: Option<usize>,
}

/// What one fetched page showed the pager.
#[derive(Debug, Clone, Default)]
pub(crate) struct PageFacts {
    pub records: u64,
    /// Raw JSON text of each of [`Captures::pointers`], where present.
    pub captured: Vec<Option<String>>,
    /// The target of `Link: <…>; rel="next"`, resolved against the page's URL, if the
    /// response had one.
    pub link_next: Option<String>,
    /// The raw JSON text at `last_record_path` in the page's last record.
    pub last_record: Option<String>,
    /// A hash of the body, to notice an API that serves the same page again.
    pub digest: u64,
}

/// Walks the pages of one source.
#[derive(Debug)]
pub(crate) struct Pager {
    config: PaginationConfig,
    captures: Captures,
    base: Url,
    current: Url,
    offset: u64,
    page: u64,
    pages_fetched: u64,
    records: u64,
    total: Option<u64>,
    total_pages: Option<u64>,
    /// Cursors and next URLs already followed, as hashes: a repeat at any distance is a
    /// loop. Bounded: past [`MAX_REMEMBERED`] positions, only those are checked.
    seen: HashSet<u64>,
    last_digest: Option<u64>,
    /// The parsed `last_record_path`.
    last_record: Option<JsonPointer>,
    /// Why paging stopped, once it has.
    stopped: Option<Stopped>,
}

/// The most positions remembered for loop detection (8 bytes each).
const MAX_REMEMBERED: usize = 1_000_000;

fn pointer(text: &Option<String>, key: &str) -> Result<Option<JsonPointer>, PagingError> {
    text.as_deref()
        .map(|t| JsonPointer::parse(t).map_err(|e| PagingError::Config(format!("{key}: {e}"))))
        .transpose()
}

/// A hash of a cursor or URL, for the loop check.
fn fingerprint(text: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

impl Pager {
    /// # Errors
    /// A configuration that cannot work: a cursor without `cursor_path`, a bad pointer.
    pub(crate) fn new(config: PaginationConfig, base: Url) -> Result<Pager, PagingError> {
        let mut captures = Captures::default();
        let mut add = |p: Option<JsonPointer>| {
            p.map(|p| {
                captures.pointers.push(p);
                captures.pointers.len() - 1
            })
        };
        let cursor = add(pointer(&config.cursor_path, "cursor_path")?);
        let next_url = add(pointer(&config.next_url_path, "next_url_path")?);
        let total = add(pointer(&config.total_path, "total_path")?);
        let total_pages = add(pointer(&config.total_pages_path, "total_pages_path")?);
        let has_more = add(pointer(&config.has_more_path, "has_more_path")?);
        let done = add(pointer(&config.done_path, "done_path")?);
        let last_record = pointer(&config.last_record_path, "last_record_path")?;
        captures.cursor = cursor;
        captures.next_url = next_url;
        captures.total = total;
        captures.total_pages = total_pages;
        captures.has_more = has_more;
        captures.done = done;
        match config.kind {
            Kind::Cursor if captures.cursor.is_none() && last_record.is_none() => {
                return Err(PagingError::Config(
                    "kind cursor needs cursor_path (where each page holds the next cursor) or \
                     last_record_path (the field of the last record that is the cursor)"
                        .into(),
                ));
            }
            Kind::Cursor if captures.cursor.is_some() && last_record.is_some() => {
                return Err(PagingError::Config(
                    "kind cursor takes cursor_path or last_record_path, not both".into(),
                ));
            }
            Kind::NextUrl if captures.next_url.is_none() => {
                return Err(PagingError::Config(
                    "kind next_url needs next_url_path (where each page holds the next URL)".into(),
                ));
            }
            _ if last_record.is_some() && config.kind != Kind::Cursor => {
                return Err(PagingError::Config(
                    "last_record_path is for kind cursor".into(),
                ));
            }
            _ => {}
        }
        let start_page = config.start.unwrap_or(1);
        let start_offset = config.start.unwrap_or(0);
        let mut pager = Pager {
            config,
            captures,
            current: base.clone(),
            base,
            offset: start_offset,
            page: start_page,
            pages_fetched: 0,
            records: 0,
            total: None,
            total_pages: None,
            seen: HashSet::new(),
            last_digest: None,
            last_record,
            stopped: None,
        };
        pager.current = pager.url_with(&[]);
        // The first page counts as visited: a next link back to it is a loop too.
        pager
            .seen
            .insert(fingerprint(&format!("URL {}", pager.current)));
        Ok(pager)
    }

    /// Pages that may be fetched at once: more than one only where the URL of every page is
    /// known in advance.
    pub(crate) fn concurrency(&self) -> usize {
        let predictable = match self.config.kind {
            Kind::LimitOffset => self.config.page_size.is_some(),
            Kind::PageNumber | Kind::PageOnly => true,
            Kind::Cursor | Kind::NextUrl | Kind::LinkHeader => false,
        };
        if predictable {
            self.config.concurrency.unwrap_or(1).max(1)
        } else {
            1
        }
    }

    /// The URL of the page `ahead` pages after the current one (for concurrent fetching;
    /// only meaningful when [`Pager::concurrency`] is above 1).
    pub(crate) fn url_ahead(&self, ahead: u64) -> Url {
        let offset = self.offset + ahead * self.config.page_size.unwrap_or(0);
        self.url_at(offset, self.page + ahead, &[])
    }

    /// Pointers to capture from each page.
    pub(crate) fn captures(&self) -> &[JsonPointer] {
        &self.captures.pointers
    }

    /// The pointer to read from each page's last record, for a cursor taken from it.
    pub(crate) fn last_record_pointer(&self) -> Option<&JsonPointer> {
        self.last_record.as_ref()
    }

    /// The URL of the page to fetch now.
    pub(crate) fn url(&self) -> &Url {
        &self.current
    }

    pub(crate) fn pages_fetched(&self) -> u64 {
        self.pages_fetched
    }

    fn param(&self, given: &Option<String>, default: &str) -> String {
        given.clone().unwrap_or_else(|| default.to_string())
    }

    /// The base URL with this page's parameters set (replacing any already there).
    fn url_with(&self, extra: &[(String, String)]) -> Url {
        self.url_at(self.offset, self.page, extra)
    }

    /// The base URL with the parameters of the page at `offset` / `page`.
    fn url_at(&self, offset: u64, page: u64, extra: &[(String, String)]) -> Url {
        let c = &self.config;
        let mut params: Vec<(String, String)> = Vec::new();
        match c.kind {
            Kind::LimitOffset => {
                if let Some(size) = c.page_size {
                    params.push((self.param(&c.limit_param, "limit"), size.to_string()));
                }
                params.push((self.param(&c.offset_param, "offset"), offset.to_string()));
            }
            Kind::PageNumber => {
                params.push((self.param(&c.page_param, "page"), page.to_string()));
                if let Some(size) = c.page_size {
                    params.push((self.param(&c.per_page_param, "per_page"), size.to_string()));
                }
            }
            Kind::PageOnly => params.push((self.param(&c.page_param, "page"), page.to_string())),
            Kind::Cursor => {
                if let (Some(size), Some(name)) = (c.page_size, &c.page_size_param) {
                    params.push((name.clone(), size.to_string()));
                }
            }
            Kind::NextUrl | Kind::LinkHeader => {}
        }
        params.extend(extra.iter().cloned());
        let names: HashSet<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
        let kept: Vec<(String, String)> = self
            .base
            .query_pairs()
            .filter(|(k, _)| !names.contains(k.as_ref()))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut url = self.base.clone();
        url.set_query(None);
        if !kept.is_empty() || !params.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(kept)
                .extend_pairs(params);
        }
        url
    }

    fn captured<'p>(&self, facts: &'p PageFacts, slot: Option<usize>) -> Option<&'p str> {
        slot.and_then(|i| facts.captured.get(i))
            .and_then(|v| v.as_deref())
    }

    /// Records fetched since the first page.
    pub(crate) fn records_fetched(&self) -> u64 {
        self.records
    }

    /// How much the API said there is, once a page said it: its page count, else its
    /// record count (for the progress bar).
    pub(crate) fn expected_total(&self) -> Option<crate::progress::Total> {
        use crate::progress::Total;
        self.total_pages
            .map(Total::Pages)
            .or(self.total.map(Total::Records))
    }

    /// Takes in what the page just fetched showed and returns the next page's URL, or `None`
    /// when the source is exhausted.
    ///
    /// # Errors
    /// A loop (repeated cursor or URL, identical page), a page that says there is more with
    /// no next position, or a next link to another host.
    pub(crate) fn advance(&mut self, facts: &PageFacts) -> Result<Option<Url>, PagingError> {
        self.pages_fetched += 1;
        self.records += facts.records;
        let repeated = self.last_digest == Some(facts.digest) && facts.records > 0;
        self.last_digest = Some(facts.digest);
        let next = self.next_url(facts)?;
        // Checked once the page has said all it can (a repeated cursor is the clearer error),
        // and only when there would be another page.
        if repeated && next.is_some() {
            return Err(PagingError::SamePage {
                page: self.pages_fetched,
                url: crate::base::secrets::redact_url(self.current.as_str()),
            });
        }
        if let Some(next) = &next {
            self.current = next.clone();
        }
        Ok(next)
    }

    /// A JSON boolean captured from the page (`true`, `false`, or those as strings).
    fn flag(&self, facts: &PageFacts, slot: Option<usize>) -> Option<bool> {
        match self.captured(facts, slot)?.trim().trim_matches('"') {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    /// What on the page says there is more, if anything does.
    fn more_signal(&self, facts: &PageFacts) -> Option<String> {
        let pointer = |slot: Option<usize>| {
            slot.map(|i| self.captures.pointers[i].to_string())
                .unwrap_or_default()
        };
        if self.flag(facts, self.captures.has_more) == Some(true) {
            return Some(format!("true at {}", pointer(self.captures.has_more)));
        }
        if self.flag(facts, self.captures.done) == Some(false) {
            return Some(format!("false at {}", pointer(self.captures.done)));
        }
        if let Some(total) = self.total.filter(|&t| self.records < t) {
            return Some(format!("{} of {total} records so far", self.records));
        }
        if let Some(total) = self.total_pages.filter(|&t| self.pages_fetched < t) {
            return Some(format!("{} of {total} pages so far", self.pages_fetched));
        }
        None
    }

    /// The run fails when the page says there is more but `missing` is missing; else paging
    /// stops for `reason`.
    fn end_or_fail(
        &mut self,
        facts: &PageFacts,
        missing: String,
        reason: StopReason,
    ) -> Result<Option<Url>, PagingError> {
        match self.more_signal(facts) {
            Some(signal) => Err(PagingError::Missing {
                page: self.pages_fetched,
                signal,
                missing,
            }),
            None => Ok(self.stop(facts, reason)),
        }
    }

    /// Paging stops after the page `facts` describe, for `reason`. A first page that was
    /// full and whose next cursor or link matched nothing at all is marked suspicious.
    fn stop(&mut self, facts: &PageFacts, reason: StopReason) -> Option<Url> {
        let absent = matches!(reason, StopReason::NoNext { absent: true, .. });
        let full = facts.records > 0
            && self
                .config
                .page_size
                .is_none_or(|size| facts.records >= size);
        let suspicious = absent && full && self.pages_fetched == 1;
        self.stopped = Some(Stopped {
            reason,
            page: self.pages_fetched,
            suspicious,
        });
        None
    }

    /// Why paging stopped, once it has.
    pub(crate) fn stopped(&self) -> Option<&Stopped> {
        self.stopped.as_ref()
    }

    /// Remembers a position; a repeat is a loop.
    fn first_visit(&mut self, what: &str) -> Result<(), PagingError> {
        let print = || match what.strip_prefix("URL ") {
            Some(url) => format!("the next URL {}", crate::base::secrets::redact_url(url)),
            None => what.to_string(),
        };
        let hash = fingerprint(what);
        if self.seen.contains(&hash) {
            return Err(PagingError::Loop {
                what: print(),
                page: self.pages_fetched,
            });
        }
        if self.seen.len() < MAX_REMEMBERED {
            self.seen.insert(hash);
        }
        Ok(())
    }

    /// The next page's URL after the page `facts` describe, or `None` at the end.
    fn next_url(&mut self, facts: &PageFacts) -> Result<Option<Url>, PagingError> {
        let json_number =
            |text: Option<&str>| text.and_then(|t| t.trim_matches('"').parse::<u64>().ok());
        if self.total.is_none() {
            self.total = json_number(self.captured(facts, self.captures.total));
        }
        if self.total_pages.is_none() {
            self.total_pages = json_number(self.captured(facts, self.captures.total_pages));
        }
        if self.flag(facts, self.captures.has_more) == Some(false) {
            let pointer = self.pointer_text(self.captures.has_more);
            return Ok(self.stop(facts, StopReason::HasMoreFalse { pointer }));
        }
        if self.flag(facts, self.captures.done) == Some(true) {
            let pointer = self.pointer_text(self.captures.done);
            return Ok(self.stop(facts, StopReason::Done { pointer }));
        }
        if let Some(max) = self.config.max_pages.filter(|&m| self.pages_fetched >= m) {
            return Ok(self.stop(facts, StopReason::MaxPages(max)));
        }
        match self.config.kind {
            Kind::LimitOffset | Kind::PageNumber | Kind::PageOnly => self.next_computed(facts),
            Kind::Cursor => self.next_cursor(facts),
            Kind::NextUrl => {
                let captured = self.captured(facts, self.captures.next_url);
                let raw = match captured.map(str::trim) {
                    None | Some("null") | Some("\"\"") => {
                        let at = self.pointer_text(self.captures.next_url);
                        let what = format!("no next URL at {at}");
                        let reason = StopReason::NoNext {
                            what,
                            absent: captured.is_none(),
                        };
                        let missing = format!("it has no next URL at {at}");
                        return self.end_or_fail(facts, missing, reason);
                    }
                    Some(raw) => {
                        serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_string())
                    }
                };
                self.next_link(&raw).map(Some)
            }
            Kind::LinkHeader => match &facts.link_next {
                None => {
                    let what = "no Link header with rel=\"next\"".to_string();
                    let missing = format!("it has {what}");
                    let reason = StopReason::NoNext { what, absent: true };
                    self.end_or_fail(facts, missing, reason)
                }
                Some(link) => self.next_link(link).map(Some),
            },
        }
    }

    /// The next page of a paging whose URLs apitap computes (offsets, page numbers): none
    /// after an empty or short page, or once the total is reached, unless the page says
    /// there is more.
    fn next_computed(&mut self, facts: &PageFacts) -> Result<Option<Url>, PagingError> {
        if facts.records == 0 {
            let missing = "the page is empty".to_string();
            return self.end_or_fail(facts, missing, StopReason::EmptyPage);
        }
        let short = self
            .config
            .page_size
            .is_some_and(|size| facts.records < size);
        let reached = match self.config.kind {
            Kind::LimitOffset => {
                self.offset += facts.records;
                self.total.is_some_and(|t| self.offset >= t)
            }
            _ => {
                self.total_pages.is_some_and(|t| self.pages_fetched >= t)
                    || self.total.is_some_and(|t| self.records >= t)
            }
        };
        if (short || reached) && self.more_signal(facts).is_none() {
            let reason = match (self.config.page_size, self.total_pages, self.total) {
                (Some(page_size), ..) if short => StopReason::ShortPage {
                    records: facts.records,
                    page_size,
                },
                (_, Some(total), _) if self.config.kind != Kind::LimitOffset => {
                    StopReason::TotalReached {
                        total,
                        unit: "pages",
                    }
                }
                (.., total) => StopReason::TotalReached {
                    total: total.unwrap_or(self.records),
                    unit: "records",
                },
            };
            return Ok(self.stop(facts, reason));
        }
        if self.config.kind != Kind::LimitOffset {
            self.page += 1;
        }
        Ok(Some(self.url_with(&[])))
    }

    /// The next page of a cursor paging: the cursor from the page (or its last record),
    /// sent in the cursor parameter; a cursor seen before is a loop.
    fn next_cursor(&mut self, facts: &PageFacts) -> Result<Option<Url>, PagingError> {
        let (raw, what) = match &self.last_record {
            Some(path) => (
                facts.last_record.as_deref(),
                format!("no cursor at {path} in the page's last record"),
            ),
            None => (
                self.captured(facts, self.captures.cursor),
                format!("no cursor at {}", self.pointer_text(self.captures.cursor)),
            ),
        };
        let cursor = match raw.map(str::trim) {
            None | Some("null") | Some("\"\"") | Some("") => {
                let missing = match &self.last_record {
                    Some(path) => format!("its last record has no cursor at {path}"),
                    None => format!(
                        "it has no next cursor at {}",
                        self.pointer_text(self.captures.cursor)
                    ),
                };
                let reason = StopReason::NoNext {
                    what,
                    absent: raw.is_none(),
                };
                return self.end_or_fail(facts, missing, reason);
            }
            Some(raw) => serde_json::from_str::<serde_json::Value>(raw)
                .ok()
                .map(|v| match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                })
                .unwrap_or_else(|| raw.to_string()),
        };
        self.first_visit(&format!("cursor {cursor:?}"))?;
        let name = self.param(&self.config.cursor_param, "cursor");
        Ok(Some(self.url_with(&[(name, cursor)])))
    }

    /// The next page at a link the page gave; a URL seen before is a loop.
    fn next_link(&mut self, link: &str) -> Result<Url, PagingError> {
        let next = self.follow(link)?;
        self.first_visit(&format!("URL {next}"))?;
        Ok(next)
    }

    /// The text of the captured pointer `index`, for messages.
    fn pointer_text(&self, index: Option<usize>) -> String {
        index.map_or_else(String::new, |i| self.captures.pointers[i].to_string())
    }

    /// Resolves a next link against the current page and refuses other origins unless
    /// allowed (then the request goes without credentials; see `source/http.rs`).
    fn follow(&self, link: &str) -> Result<Url, PagingError> {
        let next = self.current.join(link).map_err(|e| PagingError::BadLink {
            link: crate::base::secrets::redact(link).into_owned(),
            reason: e.to_string(),
        })?;
        let same_origin = crate::source::http::same_origin(&next, &self.base);
        let downgrade = self.base.scheme() == "https" && next.scheme() != "https";
        if (!same_origin && !self.config.allow_cross_host) || downgrade {
            return Err(PagingError::CrossHost {
                url: crate::base::secrets::redact_url(next.as_str()),
            });
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests;
