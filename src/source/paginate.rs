//! Which page to fetch next, and when to stop.
//!
//! The pager is pure: given what the last page showed (its record count, the values at the
//! configured pointers, its `Link` header), it returns the next URL or `None`. It refuses to
//! loop: a repeated cursor, or a page identical to the one before (an API that ignores the
//! paging parameters), fails the run instead of fetching forever. A next link to another host
//! or scheme is refused unless allowed, so credentials never leak to a third party.

use std::collections::HashSet;

use reqwest::Url;
use serde::Deserialize;

use crate::decode::pointer::JsonPointer;
use crate::request::SettingError;

/// Pagination styles; names follow the original ApiTap's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `?limit=N&offset=K`, K growing by the records received.
    LimitOffset,
    /// `?page=P&per_page=N`.
    PageNumber,
    /// `?page=P`, the server choosing the page size.
    PageOnly,
    /// `?cursor=TOKEN`, the token read from each page at `cursor_path`.
    Cursor,
    /// The next page's URL, read from each page at `next_url_path`.
    NextUrl,
    /// RFC 8288 `Link: <…>; rel="next"`.
    LinkHeader,
}

/// The `pagination:` mapping (YAML config, or inline `--pagination '{kind: …}'`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaginationConfig {
    pub kind: Kind,
    pub limit_param: Option<String>,
    pub offset_param: Option<String>,
    pub page_param: Option<String>,
    pub per_page_param: Option<String>,
    /// Where the cursor kind sends its page size, if anywhere.
    pub page_size_param: Option<String>,
    pub cursor_param: Option<String>,
    pub cursor_path: Option<String>,
    pub next_url_path: Option<String>,
    /// Records per page asked for; a shorter page is the last one.
    pub page_size: Option<u64>,
    /// First offset (default 0) or page number (default 1).
    pub start: Option<u64>,
    /// Stop once this many records (offset kinds) or pages (page kinds) have been fetched,
    /// as read from the first page at this pointer.
    pub total_path: Option<String>,
    pub total_pages_path: Option<String>,
    /// Stop when the value here is false.
    pub has_more_path: Option<String>,
    /// Stop after this many pages, whatever the API says.
    pub max_pages: Option<u64>,
    /// Pages fetched at once (offset and page-number kinds, whose next URL is known in
    /// advance). Rows still reach the table in page order. Halved on a 429, regrown slowly.
    pub concurrency: Option<usize>,
    /// Follow next links to other hosts or schemes (off: they could carry credentials away).
    #[serde(default)]
    pub allow_cross_host: bool,
}

/// Pointers whose values the pager reads from each page, in a fixed order.
#[derive(Debug, Clone, Default)]
pub struct Captures {
    pub pointers: Vec<JsonPointer>,
    cursor: Option<usize>,
    next_url: Option<usize>,
    total: Option<usize>,
    total_pages: Option<usize>,
    has_more: Option<usize>,
}

/// What one fetched page showed the pager.
#[derive(Debug, Clone, Default)]
pub struct PageFacts {
    pub records: u64,
    /// Raw JSON text of each of [`Captures::pointers`], where present.
    pub captured: Vec<Option<String>>,
    /// The target of `Link: <…>; rel="next"`, if the response had one.
    pub link_next: Option<String>,
    /// A hash of the body, to notice an API that serves the same page again.
    pub digest: u64,
}

/// Where a pager stands between two pages, saved with each commit of a `--commit-every`
/// load so that a rerun picks up at the next page. The base URL is kept too: it carries the
/// query of the run that started the backfill (an incremental cursor included), which the
/// rest of the backfill must keep asking with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Position {
    base: String,
    next: String,
    offset: u64,
    page: u64,
    pages_fetched: u64,
    records: u64,
    total: Option<u64>,
    total_pages: Option<u64>,
}

/// Walks the pages of one source.
#[derive(Debug)]
pub struct Pager {
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
    seen_cursors: HashSet<String>,
    last_digest: Option<u64>,
}

fn pointer(text: &Option<String>, key: &str) -> Result<Option<JsonPointer>, String> {
    text.as_deref()
        .map(|t| JsonPointer::parse(t).map_err(|e| format!("pagination {key}: {e}")))
        .transpose()
}

impl PaginationConfig {
    /// Parses the inline mapping given to `--pagination`.
    ///
    /// # Errors
    /// Text that is not such a mapping, or an unknown key.
    pub fn parse(text: &str) -> Result<PaginationConfig, SettingError> {
        serde_yaml::from_str(text)
            .map_err(|e| SettingError::invalid(format!("--pagination {text:?}"), e.to_string()))
    }
}

impl Pager {
    /// # Errors
    /// A configuration that cannot work: a cursor without `cursor_path`, a bad pointer.
    pub fn new(config: PaginationConfig, base: Url) -> Result<Pager, String> {
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
        captures.cursor = cursor;
        captures.next_url = next_url;
        captures.total = total;
        captures.total_pages = total_pages;
        captures.has_more = has_more;
        match config.kind {
            Kind::Cursor if captures.cursor.is_none() => {
                return Err("pagination kind cursor needs cursor_path (where each page holds the next cursor)".into());
            }
            Kind::NextUrl if captures.next_url.is_none() => {
                return Err("pagination kind next_url needs next_url_path (where each page holds the next URL)".into());
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
            seen_cursors: HashSet::new(),
            last_digest: None,
        };
        pager.current = pager.url_with(&[]);
        Ok(pager)
    }

    /// Where the pager stands: the next page to fetch and the counts so far.
    pub fn position(&self) -> Position {
        Position {
            base: self.base.to_string(),
            next: self.current.to_string(),
            offset: self.offset,
            page: self.page,
            pages_fetched: self.pages_fetched,
            records: self.records,
            total: self.total,
            total_pages: self.total_pages,
        }
    }

    /// Continues from a saved position instead of the first page.
    ///
    /// # Errors
    /// A position whose URLs do not parse (a hand-edited state row).
    pub fn resume(&mut self, position: &Position) -> Result<(), String> {
        let url = |text: &str| {
            Url::parse(text)
                .map_err(|e| format!("the saved page position {text:?} is not a URL: {e}"))
        };
        self.base = url(&position.base)?;
        self.current = url(&position.next)?;
        self.offset = position.offset;
        self.page = position.page;
        self.pages_fetched = position.pages_fetched;
        self.records = position.records;
        self.total = position.total;
        self.total_pages = position.total_pages;
        Ok(())
    }

    /// Pages that may be fetched at once: more than one only where the URL of every page is
    /// known in advance.
    pub fn concurrency(&self) -> usize {
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
    pub fn url_ahead(&self, ahead: u64) -> Url {
        let offset = self.offset + ahead * self.config.page_size.unwrap_or(0);
        self.url_at(offset, self.page + ahead, &[])
    }

    /// Pointers to capture from each page.
    pub fn captures(&self) -> &[JsonPointer] {
        &self.captures.pointers
    }

    /// The URL of the page to fetch now.
    pub fn url(&self) -> &Url {
        &self.current
    }

    pub fn pages_fetched(&self) -> u64 {
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

    /// Takes in what the page just fetched showed and returns the next page's URL, or `None`
    /// when the source is exhausted.
    ///
    /// # Errors
    /// A loop (repeated cursor, identical page) or a next link to another host.
    pub fn advance(&mut self, facts: &PageFacts) -> Result<Option<Url>, String> {
        self.pages_fetched += 1;
        self.records += facts.records;
        let repeated = self.last_digest == Some(facts.digest) && facts.records > 0;
        self.last_digest = Some(facts.digest);
        let next = self.next_url(facts)?;
        // Checked once the page has said all it can (a repeated cursor is the clearer error),
        // and only when there would be another page.
        if repeated && next.is_some() {
            return Err(format!(
                "page {} is identical to the page before it; the API seems to ignore the paging parameters ({})",
                self.pages_fetched, self.current
            ));
        }
        if let Some(next) = &next {
            self.current = next.clone();
        }
        Ok(next)
    }

    fn next_url(&mut self, facts: &PageFacts) -> Result<Option<Url>, String> {
        let json_number =
            |text: Option<&str>| text.and_then(|t| t.trim_matches('"').parse::<u64>().ok());
        if self.total.is_none() {
            self.total = json_number(self.captured(facts, self.captures.total));
        }
        if self.total_pages.is_none() {
            self.total_pages = json_number(self.captured(facts, self.captures.total_pages));
        }
        if facts.records == 0
            && !matches!(
                self.config.kind,
                Kind::Cursor | Kind::NextUrl | Kind::LinkHeader
            )
        {
            return Ok(None);
        }
        if self
            .config
            .max_pages
            .is_some_and(|max| self.pages_fetched >= max)
        {
            return Ok(None);
        }
        if self.captured(facts, self.captures.has_more).map(str::trim) == Some("false") {
            return Ok(None);
        }
        let next = match self.config.kind {
            Kind::LimitOffset => {
                self.offset += facts.records;
                if self
                    .config
                    .page_size
                    .is_some_and(|size| facts.records < size)
                    || self.total.is_some_and(|t| self.offset >= t)
                {
                    return Ok(None);
                }
                self.url_with(&[])
            }
            Kind::PageNumber | Kind::PageOnly => {
                if self
                    .config
                    .page_size
                    .is_some_and(|size| facts.records < size)
                    || self.total_pages.is_some_and(|t| self.pages_fetched >= t)
                    || self.total.is_some_and(|t| self.records >= t)
                {
                    return Ok(None);
                }
                self.page += 1;
                self.url_with(&[])
            }
            Kind::Cursor => {
                let cursor = match self.captured(facts, self.captures.cursor).map(str::trim) {
                    None | Some("null") | Some("\"\"") | Some("") => return Ok(None),
                    Some(raw) => serde_json::from_str::<serde_json::Value>(raw)
                        .ok()
                        .map(|v| match v {
                            serde_json::Value::String(s) => s,
                            other => other.to_string(),
                        })
                        .unwrap_or_else(|| raw.to_string()),
                };
                if !self.seen_cursors.insert(cursor.clone()) {
                    return Err(format!(
                        "the API returned cursor {cursor:?} a second time (page {}); stopping instead of looping",
                        self.pages_fetched
                    ));
                }
                let name = self.param(&self.config.cursor_param, "cursor");
                self.url_with(&[(name, cursor)])
            }
            Kind::NextUrl => {
                let raw = match self.captured(facts, self.captures.next_url).map(str::trim) {
                    None | Some("null") | Some("\"\"") => return Ok(None),
                    Some(raw) => {
                        serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_string())
                    }
                };
                self.follow(&raw)?
            }
            Kind::LinkHeader => match &facts.link_next {
                None => return Ok(None),
                Some(link) => self.follow(link)?,
            },
        };
        Ok(Some(next))
    }

    /// Resolves a next link against the current page and refuses other hosts.
    fn follow(&self, link: &str) -> Result<Url, String> {
        let next = self
            .current
            .join(link)
            .map_err(|e| format!("the next page's URL {link:?} is not a URL: {e}"))?;
        let same_origin = next.scheme() == self.base.scheme()
            && next.host_str() == self.base.host_str()
            && next.port_or_known_default() == self.base.port_or_known_default();
        if !same_origin && !self.config.allow_cross_host {
            return Err(format!(
                "the next page is on another host or scheme ({}); refusing to send the request there \
                 (set allow_cross_host: true in the pagination if that is intended)",
                crate::source::redact_url(next.as_str())
            ));
        }
        Ok(next)
    }
}

/// The `rel="next"` target of an RFC 8288 `Link` header.
pub fn link_next(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .any(|(k, v)| {
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            })
            .then(|| target.to_string())
    })
}

#[cfg(test)]
mod tests;
