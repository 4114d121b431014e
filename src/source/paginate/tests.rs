//! Unit tests of `paginate`.

use super::*;

fn pager(yaml: &str, base: &str) -> Pager {
    Pager::new(
        PaginationConfig::parse(yaml).unwrap(),
        Url::parse(base).unwrap(),
    )
    .unwrap()
}

fn facts(records: u64, captured: &[Option<&str>], digest: u64) -> PageFacts {
    PageFacts {
        records,
        captured: captured.iter().map(|c| c.map(str::to_string)).collect(),
        link_next: None,
        last_record: None,
        digest,
    }
}

#[test]
fn limit_offset_stops_on_a_short_page_and_keeps_other_params() {
    let mut p = pager(
        "{kind: limit_offset, page_size: 2}",
        "http://api/x?since=1&offset=99",
    );
    assert_eq!(p.url().as_str(), "http://api/x?since=1&limit=2&offset=0");
    let next = p.advance(&facts(2, &[], 1)).unwrap().unwrap();
    assert_eq!(next.as_str(), "http://api/x?since=1&limit=2&offset=2");
    assert_eq!(p.advance(&facts(1, &[], 2)).unwrap(), None);
}

#[test]
fn page_number_stops_at_total_pages_or_an_empty_page() {
    let mut p = pager(
        "{kind: page_number, page_param: p, per_page_param: n, page_size: 10, total_pages_path: /pages}",
        "http://api/x",
    );
    assert_eq!(p.url().as_str(), "http://api/x?p=1&n=10");
    assert!(p.advance(&facts(10, &[Some("2")], 1)).unwrap().is_some());
    assert_eq!(p.advance(&facts(10, &[Some("2")], 2)).unwrap(), None);
    let mut p = pager("{kind: page_only}", "http://api/x");
    assert_eq!(
        p.advance(&facts(3, &[], 1)).unwrap().unwrap().as_str(),
        "http://api/x?page=2"
    );
    assert_eq!(p.advance(&facts(0, &[], 2)).unwrap(), None);
}

#[test]
fn an_api_ignoring_the_paging_params_is_caught() {
    let mut p = pager("{kind: page_only}", "http://api/x");
    p.advance(&facts(5, &[], 42)).unwrap();
    let err = p.advance(&facts(5, &[], 42)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("page 2 is identical to the page before it"),
        "{err}"
    );
}

#[test]
fn cursors_follow_stop_and_never_repeat() {
    let mut p = pager(
        "{kind: cursor, cursor_param: after, cursor_path: /next, has_more_path: /more}",
        "http://api/x",
    );
    let next = p
        .advance(&facts(5, &[Some("\"c 1\""), Some("true")], 1))
        .unwrap()
        .unwrap();
    assert_eq!(next.as_str(), "http://api/x?after=c+1");
    assert_eq!(
        p.advance(&facts(5, &[Some("\"c2\""), Some("false")], 2))
            .unwrap(),
        None
    );
    let mut p = pager("{kind: cursor, cursor_path: /next}", "http://api/x");
    p.advance(&facts(5, &[Some("7")], 1)).unwrap();
    assert_eq!(p.advance(&facts(5, &[Some("null")], 2)).unwrap(), None);
    let mut p = pager("{kind: cursor, cursor_path: /next}", "http://api/x");
    p.advance(&facts(5, &[Some("\"a\"")], 1)).unwrap();
    let err = p.advance(&facts(5, &[Some("\"a\"")], 2)).unwrap_err();
    assert!(
        err.to_string().contains("cursor \"a\" a second time"),
        "{err}"
    );
    assert!(
        Pager::new(
            PaginationConfig::parse("{kind: cursor}").unwrap(),
            Url::parse("http://a/").unwrap()
        )
        .is_err()
    );
}

#[test]
fn next_links_resolve_and_stay_on_the_same_host() {
    let mut p = pager(
        "{kind: next_url, next_url_path: /links/next}",
        "https://api/v1/items",
    );
    let next = p
        .advance(&facts(5, &[Some("\"/v1/items?page=2\"")], 1))
        .unwrap()
        .unwrap();
    assert_eq!(next.as_str(), "https://api/v1/items?page=2");
    let err = p
        .advance(&facts(5, &[Some("\"https://evil.example/steal\"")], 2))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("another host or scheme (https://evil.example/steal)"),
        "{err}"
    );
    let err = p
        .advance(&facts(5, &[Some("\"http://api/v1/items?page=3\"")], 3))
        .unwrap_err();
    assert!(err.to_string().contains("another host or scheme"), "{err}");
    let mut p = pager(
        "{kind: next_url, next_url_path: /n, allow_cross_host: true}",
        "https://api/x",
    );
    assert!(
        p.advance(&facts(1, &[Some("\"https://cdn/x\"")], 1))
            .unwrap()
            .is_some()
    );
}

#[test]
fn link_headers() {
    let mut p = pager("{kind: link_header}", "https://api/x");
    let mut f = facts(2, &[], 1);
    f.link_next = Some("/x?page=2".into());
    assert_eq!(
        p.advance(&f).unwrap().unwrap().as_str(),
        "https://api/x?page=2"
    );
    assert_eq!(p.advance(&facts(2, &[], 2)).unwrap(), None);
}

#[test]
fn unknown_keys_are_errors() {
    let err = PaginationConfig::parse("{kind: cursor, cursor_pth: /x}")
        .unwrap_err()
        .to_string();
    assert!(
        err.to_string().contains("unknown field `cursor_pth`"),
        "{err}"
    );
    assert!(PaginationConfig::parse("{kind: sideways}").is_err());
}

#[test]
fn next_urls_seen_before_at_any_distance_are_a_loop() {
    let mut p = pager("{kind: next_url, next_url_path: /next}", "https://api/a");
    p.advance(&facts(5, &[Some("\"https://api/b\"")], 1))
        .unwrap();
    p.advance(&facts(5, &[Some("\"https://api/c\"")], 2))
        .unwrap();
    let err = p
        .advance(&facts(5, &[Some("\"https://api/b?token=s3\"")], 3))
        .map(|_| ())
        .and_then(|()| {
            p.advance(&facts(5, &[Some("\"https://api/b\"")], 4))
                .map(|_| ())
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the API returned the next URL https://api/b a second time (page 4); stopping instead of looping"
    );
}

#[test]
fn a_page_that_says_there_is_more_never_ends_the_run_silently() {
    // has_more: true with no cursor.
    let mut p = pager(
        "{kind: cursor, cursor_path: /next, has_more_path: /has_more}",
        "https://api/x",
    );
    let err = p
        .advance(&facts(5, &[Some("null"), Some("true")], 1))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "page 1 says there is more (true at /has_more) but it has no next cursor at /next; stopping rather than load part of the data"
    );
    // has_more: false ends it, cursor or not.
    let mut p = pager(
        "{kind: cursor, cursor_path: /next, has_more_path: /has_more}",
        "https://api/x",
    );
    assert_eq!(
        p.advance(&facts(5, &[Some("\"c\""), Some("false")], 1))
            .unwrap(),
        None
    );
    // Salesforce's done: false with no next URL.
    let mut p = pager(
        "{kind: next_url, next_url_path: /nextRecordsUrl, done_path: /done}",
        "https://api/q",
    );
    let err = p.advance(&facts(5, &[None, Some("false")], 1)).unwrap_err();
    assert!(
        err.to_string()
            .contains("(false at /done) but it has no next URL at /nextRecordsUrl"),
        "{err}"
    );
    // A total not reached, and an empty page.
    let mut p = pager("{kind: page_number, total_path: /total}", "https://api/p");
    p.advance(&facts(10, &[Some("30")], 1)).unwrap();
    let err = p.advance(&facts(0, &[Some("30")], 2)).unwrap_err();
    assert!(
        err.to_string()
            .contains("(10 of 30 records so far) but the page is empty"),
        "{err}"
    );
    // Without any signal, a missing cursor is the end.
    let mut p = pager("{kind: cursor, cursor_path: /next}", "https://api/x");
    assert_eq!(p.advance(&facts(5, &[None], 1)).unwrap(), None);
}

#[test]
fn a_cursor_can_come_from_the_last_record() {
    let mut p = pager(
        "{kind: cursor, cursor_param: starting_after, last_record_path: /id, has_more_path: /has_more}",
        "https://api/v1/customers?limit=3",
    );
    let mut f = facts(3, &[Some("true")], 1);
    f.last_record = Some("\"cus_3\"".into());
    assert_eq!(
        p.advance(&f).unwrap().unwrap().as_str(),
        "https://api/v1/customers?limit=3&starting_after=cus_3"
    );
    let mut f = facts(0, &[Some("true")], 2);
    f.last_record = None;
    let err = p.advance(&f).unwrap_err();
    assert!(
        err.to_string()
            .contains("its last record has no cursor at /id"),
        "{err}"
    );
    assert!(
        Pager::new(
            PaginationConfig::parse("{kind: cursor, cursor_path: /c, last_record_path: /id}")
                .unwrap(),
            Url::parse("https://a/").unwrap()
        )
        .is_err()
    );
}
