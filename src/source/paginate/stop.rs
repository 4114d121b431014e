//! Why paging stopped, said in every summary: a load that ends after one page because its
//! cursor path matches nothing looks, without a reason, just like one that read them all.

use std::fmt;

/// What ended the paging, as the last page showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// `has_more_path` said false.
    HasMoreFalse { pointer: String },
    /// `done_path` said true.
    Done { pointer: String },
    /// `max_pages` pages were fetched.
    MaxPages(u64),
    /// The page held no record.
    EmptyPage,
    /// The page held fewer records than `page_size`.
    ShortPage { records: u64, page_size: u64 },
    /// The records (or pages) the API announced were all fetched.
    TotalReached { total: u64, unit: &'static str },
    /// No next cursor, next URL or `Link` header on the page (or on its last record).
    NoNext {
        /// `no cursor at /next_cursor`, `no Link header with rel="next"`, …
        what: String,
        /// The pointer matched nothing at all (not even `null`): perhaps a mistyped path.
        absent: bool,
    },
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::HasMoreFalse { pointer } => write!(f, "has_more false at {pointer}"),
            StopReason::Done { pointer } => write!(f, "done true at {pointer}"),
            StopReason::MaxPages(max) => write!(f, "max_pages {max} reached"),
            StopReason::EmptyPage => f.write_str("empty page"),
            StopReason::ShortPage { records, page_size } => {
                write!(f, "short page ({records} of {page_size} records)")
            }
            StopReason::TotalReached { total, unit } => write!(f, "total reached ({total} {unit})"),
            StopReason::NoNext { what, .. } => f.write_str(what),
        }
    }
}

/// Where paging stopped: the reason, on which page, and whether that stop looks like a
/// mistake the user should hear about at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stopped {
    pub(crate) reason: StopReason,
    /// The page (from 1) whose content ended the paging.
    pub(crate) page: u64,
    /// The first page was full, and its next cursor or link matched nothing: most likely a
    /// mistyped path, which would otherwise end the load after one page with success.
    pub(crate) suspicious: bool,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on page {}", self.reason, self.page)
    }
}
