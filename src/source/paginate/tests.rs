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
        err.starts_with("page 2 is identical to the page before it"),
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
    assert!(err.contains("cursor \"a\" a second time"), "{err}");
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
        err.contains("another host or scheme (https://evil.example/steal)"),
        "{err}"
    );
    let err = p
        .advance(&facts(5, &[Some("\"http://api/v1/items?page=3\"")], 3))
        .unwrap_err();
    assert!(err.contains("another host or scheme"), "{err}");
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
    assert_eq!(
        link_next(r#"<https://api/x?page=1>; rel="prev", <https://api/x?page=3>; rel="next""#),
        Some("https://api/x?page=3".into())
    );
    assert_eq!(link_next(r#"<https://api/x?page=3>; rel="last""#), None);
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
    assert!(err.contains("unknown field `cursor_pth`"), "{err}");
    assert!(PaginationConfig::parse("{kind: sideways}").is_err());
}
