//! The `pagination:` mapping, as YAML or as the inline `--pagination '{kind: …}'` gives it.

use serde::Deserialize;

use crate::base::SettingError;

/// Pagination styles; names follow the original ApiTap's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
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
pub(crate) struct PaginationConfig {
    pub kind: Kind,
    pub limit_param: Option<String>,
    pub offset_param: Option<String>,
    pub page_param: Option<String>,
    pub per_page_param: Option<String>,
    /// Where the cursor kind sends its page size, if anywhere.
    pub page_size_param: Option<String>,
    pub cursor_param: Option<String>,
    /// Where each page holds the next cursor (`/next_cursor`, `/meta/after_cursor`).
    pub cursor_path: Option<String>,
    /// Or: the cursor is a field of each page's last record (Stripe's `starting_after=<id>`,
    /// `since_id` APIs), at this pointer inside the record (`/id`).
    pub last_record_path: Option<String>,
    pub next_url_path: Option<String>,
    /// Records per page asked for; a shorter page is the last one.
    pub page_size: Option<u64>,
    /// First offset (default 0) or page number (default 1).
    pub start: Option<u64>,
    /// Stop once this many records (offset kinds) or pages (page kinds) have been fetched,
    /// as read from the first page at this pointer.
    pub total_path: Option<String>,
    pub total_pages_path: Option<String>,
    /// Stop when the value here is false; while it is true, a missing next position fails.
    pub has_more_path: Option<String>,
    /// Stop when the value here is true (Salesforce's `done`); while it is false, a missing
    /// next position fails.
    pub done_path: Option<String>,
    /// Stop after this many pages, whatever the API says.
    pub max_pages: Option<u64>,
    /// Pages fetched at once (offset and page-number kinds, whose next URL is known in
    /// advance). Rows still reach the table in page order. Halved on a 429, regrown slowly.
    pub concurrency: Option<usize>,
    /// Follow next links to other hosts or schemes (off: they could carry credentials away).
    #[serde(default)]
    pub allow_cross_host: bool,
}

impl PaginationConfig {
    /// Parses the inline mapping given to `--pagination`.
    ///
    /// # Errors
    /// Text that is not such a mapping, or an unknown key.
    pub(crate) fn parse(text: &str) -> Result<PaginationConfig, SettingError> {
        serde_yaml::from_str(text)
            .map_err(|e| SettingError::invalid(format!("--pagination {text:?}"), e.to_string()))
    }
}
