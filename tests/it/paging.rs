//! Paged HTTP sources: every paging kind walks every page, loops and foreign hosts fail
//! the run, pages are fetched concurrently and in order, rate limits slow them down.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::http::FAST_RETRY;

/// Records `first..first+n` as a JSON array text.
pub fn records(first: u64, n: u64) -> String {
    let items: Vec<String> = (first..first + n)
        .map(|i| format!("{{\"id\": {i}}}"))
        .collect();
    format!("[{}]", items.join(","))
}

pub fn query_u64(
    query: &std::collections::HashMap<String, String>,
    key: &str,
    default: u64,
) -> u64 {
    query
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub type Query = axum::extract::Query<std::collections::HashMap<String, String>>;

/// Loads `url` paged with `pagination` into a fresh table; returns the run and the ids loaded.
async fn paged_load(schema: &str, url: &str, pagination: &str, extra: &[&str]) -> (Run, Vec<i64>) {
    let db = client().await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
        .await
        .unwrap();
    let mut args = vec![
        "load",
        url,
        "--table",
        &table,
        "--pagination",
        pagination,
        "--summary-json",
        "-",
    ];
    if !extra.contains(&"--retry") {
        args.extend_from_slice(&["--retry", FAST_RETRY]);
    }
    args.extend_from_slice(extra);
    let run = apitap(&args, None).await;
    let ids = if table_exists(&db, &table).await {
        db.query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    (run, ids)
}

fn pages_in(run: &Run) -> u64 {
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_default();
    summary["pages"].as_u64().unwrap_or(0)
}

/// Why the summary says paging stopped; the human summary says the same.
#[track_caller]
fn stopped_in(run: &Run) -> String {
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_default();
    let why = summary["paging_stopped"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        run.stderr
            .contains(&format!("apitap: paging stopped: {why}\n")),
        "{}",
        run.stderr
    );
    why
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_number_and_limit_offset_stop_on_the_short_page() {
    let schema = fresh_schema(&client().await, "paged_numbers").await;
    let demo = serve(apitap::demo::router()).await;
    let (run, ids) = paged_load(
        &schema,
        &format!("http://{demo}/rows?rows=2500"),
        "{kind: page_number, page_size: 1000}",
        &["--records-path", "/data"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ids, (1..=2500).collect::<Vec<_>>());
    assert_eq!(pages_in(&run), 3);
    assert_eq!(
        stopped_in(&run),
        "short page (500 of 1000 records) on page 3"
    );

    let router = Router::new().route(
        "/items",
        get(|axum::extract::Query(q): Query| async move {
            if q.get("scope").map(String::as_str) != Some("all") {
                return (StatusCode::BAD_REQUEST, "scope missing").into_response();
            }
            let (limit, offset) = (query_u64(&q, "limit", 100), query_u64(&q, "offset", 0));
            records(offset + 1, limit.min(2345u64.saturating_sub(offset))).into_response()
        }),
    );
    let addr = serve(router).await;
    // --query parameters ride along on every page.
    let (run, ids) = paged_load(
        &schema,
        &format!("http://{addr}/items"),
        "{kind: limit_offset, page_size: 500}",
        &["--query", "scope=all"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ids, (1..=2345).collect::<Vec<_>>());
    assert_eq!(pages_in(&run), 5);
    assert_eq!(
        stopped_in(&run),
        "short page (345 of 500 records) on page 5"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_next_links_and_link_headers_walk_every_page() {
    let schema = fresh_schema(&client().await, "paged_links").await;
    let router = Router::new()
        .route(
            "/cursor",
            get(|axum::extract::Query(q): Query| async move {
                let page = query_u64(&q, "after", 0);
                let next = if page < 3 {
                    format!("\"{}\"", page + 1)
                } else {
                    "null".into()
                };
                format!(
                    "{{\"items\": {}, \"next\": {next}}}",
                    records(page * 10 + 1, 10)
                )
            }),
        )
        .route(
            "/next",
            get(|axum::extract::Query(q): Query| async move {
                let page = query_u64(&q, "n", 1);
                let next = if page < 4 {
                    format!("\"/next?n={}\"", page + 1)
                } else {
                    "null".into()
                };
                format!(
                    "{{\"data\": {}, \"links\": {{\"next\": {next}}}}}",
                    records(page * 10 - 9, 10)
                )
            }),
        )
        .route(
            "/link",
            get(|axum::extract::Query(q): Query| async move {
                let page = query_u64(&q, "page", 1);
                let mut response = records(page * 10 - 9, 10).into_response();
                if page < 2 {
                    let link = format!("</link?page={}>; rel=\"next\"", page + 1);
                    response
                        .headers_mut()
                        .insert(header::LINK, link.parse().unwrap());
                }
                response
            }),
        );
    let addr = serve(router).await;
    let (run, ids) = paged_load(
        &schema,
        &format!("http://{addr}/cursor"),
        "{kind: cursor, cursor_param: after, cursor_path: /next}",
        &["--records-path", "/items"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ids, (1..=40).collect::<Vec<_>>());
    assert_eq!(stopped_in(&run), "no cursor at /next on page 4");
    let (run, ids) = paged_load(
        &schema,
        &format!("http://{addr}/next"),
        "{kind: next_url, next_url_path: /links/next}",
        &["--records-path", "/data"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ids, (1..=40).collect::<Vec<_>>());
    assert_eq!(stopped_in(&run), "no next URL at /links/next on page 4");
    let (run, ids) = paged_load(
        &schema,
        &format!("http://{addr}/link"),
        "{kind: link_header}",
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
    assert_eq!(
        stopped_in(&run),
        "no Link header with rel=\"next\" on page 2"
    );
}

/// Every paged load says why paging stopped; a full first page whose cursor path matches
/// nothing (a mistyped path, which would end the load after one page with success) is
/// warned about at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_paging_stopped_is_said_and_a_mistyped_path_is_warned_about() {
    let schema = fresh_schema(&client().await, "paged_stops").await;
    let demo = serve(apitap::demo::router()).await;
    let events = format!("http://{demo}/events?rows=2000");
    let rows = |n: u32| format!("http://{demo}/rows?rows={n}");
    let cursor = |path: &str| {
        format!(
            "{{kind: cursor, cursor_param: after, cursor_path: {path}, has_more_path: /has_more, page_size: 500, page_size_param: limit}}"
        )
    };
    let data = ["--records-path", "/data"];
    for (url, pagination, extra, why) in [
        (
            events.clone(),
            cursor("/next_cursor"),
            ["--records-path", "/items"],
            "has_more false at /has_more on page 4",
        ),
        (
            rows(10_000),
            "{kind: page_number, page_size: 5000, total_path: /total}".to_string(),
            data,
            "total reached (10000 records) on page 2",
        ),
        (
            rows(10_000),
            "{kind: page_number, page_size: 1000, max_pages: 2}".to_string(),
            data,
            "max_pages 2 reached on page 2",
        ),
        (
            rows(0),
            "{kind: page_number}".to_string(),
            data,
            "empty page on page 1",
        ),
    ] {
        let (run, _) = paged_load(&schema, &url, &pagination, &extra).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(stopped_in(&run), why);
        assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
    }
    let mistyped = "{kind: cursor, cursor_param: after, cursor_path: /next_cursr, page_size: 500, page_size_param: limit}";
    let (run, ids) = paged_load(&schema, &events, mistyped, &["--records-path", "/items"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ids.len(), 500);
    assert_eq!(stopped_in(&run), "no cursor at /next_cursr on page 1");
    assert!(
        run.stderr.contains(
            "paging stopped after the first page, which was full: no cursor at /next_cursr; if the API has more pages, check the path"
        ),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_loops_and_foreign_hosts_fail_the_run() {
    let schema = fresh_schema(&client().await, "paged_loops").await;
    let router = Router::new()
        .route("/ignores", get(|| async { records(1, 100) }))
        .route(
            "/repeats",
            get(|| async { format!("{{\"items\": {}, \"next\": \"same\"}}", records(1, 5)) }),
        )
        .route(
            "/leaks",
            get(|| async {
                format!(
                    "{{\"data\": {}, \"next\": \"http://other.example/steal\"}}",
                    records(1, 5)
                )
            }),
        );
    let addr = serve(router).await;
    let (run, ids) = paged_load(
        &schema,
        &format!("http://{addr}/ignores"),
        "{kind: limit_offset, limit_param: n, offset_param: skip}",
        &[],
    )
    .await;
    assert_fails(
        &run,
        "page 2 is identical to the page before it; the API seems to ignore the paging parameters",
    );
    assert!(ids.is_empty());
    let (run, _) = paged_load(
        &schema,
        &format!("http://{addr}/repeats"),
        "{kind: cursor, cursor_path: /next}",
        &["--records-path", "/items"],
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("the API returned cursor \"same\" a second time (page 2)"),
        "{}",
        run.stderr
    );
    let (run, _) = paged_load(
        &schema,
        &format!("http://{addr}/leaks"),
        "{kind: next_url, next_url_path: /next}",
        &["--records-path", "/data"],
    )
    .await;
    assert_fails(
        &run,
        "the next page is on another host or scheme (http://other.example/steal); refusing",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_page_is_fetched_again_and_a_failed_page_fails_the_run() {
    let schema = fresh_schema(&client().await, "paged_faults").await;
    let cuts = Arc::new(AtomicUsize::new(0));
    let cuts_in = cuts.clone();
    let router = Router::new()
        .route(
            "/cut",
            get(move |axum::extract::Query(q): Query| {
                let cuts = cuts_in.clone();
                async move {
                    let page = query_u64(&q, "page", 1);
                    let body = if page <= 3 {
                        records(page * 100 - 99, 100)
                    } else {
                        "[]".into()
                    };
                    if page == 2 && cuts.fetch_add(1, Ordering::SeqCst) == 0 {
                        // Half the page, then the connection drops.
                        let half = body[..body.len() / 2].to_string();
                        let stream = futures_util::stream::iter(vec![
                            Ok::<_, std::io::Error>(bytes::Bytes::from(half)),
                            Err(std::io::Error::other("dropped")),
                        ]);
                        return axum::body::Body::from_stream(stream).into_response();
                    }
                    body.into_response()
                }
            }),
        )
        .route(
            "/broken",
            get(|axum::extract::Query(q): Query| async move {
                match query_u64(&q, "page", 1) {
                    1 => records(1, 10).into_response(),
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "db down").into_response(),
                }
            }),
        )
        .route(
            "/badrecord",
            get(|axum::extract::Query(q): Query| async move {
                match query_u64(&q, "page", 1) {
                    1 => records(1, 10),
                    2 => "[{\"id\": 11}, {\"id\": \"twelve\"}]".into(),
                    _ => "[]".into(),
                }
            }),
        );
    let addr = serve(router).await;
    let (run, ids) = paged_load(
        &schema,
        &format!("http://{addr}/cut"),
        "{kind: page_only}",
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ids, (1..=300).collect::<Vec<_>>(), "every row exactly once");
    assert_eq!(cuts.load(Ordering::SeqCst), 2);

    let (run, ids) = paged_load(
        &schema,
        &format!("http://{addr}/broken"),
        "{kind: page_only}",
        &[],
    )
    .await;
    assert_fails(
        &run,
        &format!(
            "HTTP 500 Internal Server Error from http://{addr}/broken?page=2 (after 4 attempts): db down"
        ),
    );
    assert!(ids.is_empty(), "a failed page leaves nothing behind");

    let db = client().await;
    db.batch_execute(&format!("CREATE TABLE {schema}.typed (id bigint)"))
        .await
        .unwrap();
    let run = apitap(
        &[
            "load",
            &format!("http://{addr}/badrecord"),
            "--table",
            &format!("{schema}.typed"),
            "--pagination",
            "{kind: page_only}",
        ],
        None,
    )
    .await;
    assert_fails(
        &run,
        &format!(
            "http://{addr}/badrecord, page 2 (http://{addr}/badrecord?page=2): line 1 (record 12): column \"id\": \"twelve\" is not an integer (bigint)"
        ),
    );
}

/// Pages of 50 ids, each answered after `delay`, counting how many are in flight at once.
/// `reject_above`: answer 429 (Retry-After: 0) when more than that many are in flight.
fn slow_pages(delay: Duration, last_page: u64, reject_above: usize) -> (Router, Arc<AtomicUsize>) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let most_out = most.clone();
    let router = Router::new().route(
        "/pages",
        get(move |axum::extract::Query(q): Query| {
            let (in_flight, most) = (in_flight.clone(), most.clone());
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                if now > reject_above {
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        [(header::RETRY_AFTER, "0")],
                        "slow down",
                    )
                        .into_response();
                }
                let page = query_u64(&q, "page", 1);
                let mut response = if page <= last_page {
                    records(page * 50 - 49, 50)
                } else {
                    "[]".into()
                }
                .into_response();
                if page == 1 && reject_above == usize::MAX - 1 {
                    // An exhausted rate-limit window that resets in one second.
                    response
                        .headers_mut()
                        .insert("x-ratelimit-remaining", "0".parse().unwrap());
                    response
                        .headers_mut()
                        .insert("x-ratelimit-reset", "1".parse().unwrap());
                }
                response
            }
        }),
    );
    (router, most_out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_fetched_concurrently_and_land_in_order() {
    let schema = fresh_schema(&client().await, "concurrent").await;
    let (router, most) = slow_pages(Duration::from_millis(100), 12, usize::MAX);
    let addr = serve(router).await;
    let (run, ids) = paged_load(
        &schema,
        &format!("http://{addr}/pages"),
        "{kind: page_number, page_size: 50, concurrency: 4}",
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ids, (1..=600).collect::<Vec<_>>());
    // The server counts the requests it is serving at once (each takes 100 ms).
    let most = most.load(Ordering::SeqCst);
    assert!((2..=4).contains(&most), "{most} pages in flight at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_429s_slow_paging_down_without_losing_rows() {
    let schema = fresh_schema(&client().await, "rate_limits").await;
    // Paced at 10 requests a second: 6 pages (the last one empty) take at least 0.5 s.
    let (router, _) = slow_pages(Duration::ZERO, 5, usize::MAX);
    let addr = serve(router).await;
    let started = Instant::now();
    let (run, ids) = paged_load(
        &schema,
        &format!("http://{addr}/pages"),
        "{kind: page_number, page_size: 50}",
        &["--rate-limit", "{requests_per_second: 10}"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ids, (1..=250).collect::<Vec<_>>());
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        summary["throttle_waits"].as_u64().unwrap() >= 4,
        "{summary}"
    );

    // An API that refuses more than two requests at once: asked for six, apitap backs off.
    let (router, _) = slow_pages(Duration::from_millis(50), 20, 2);
    let addr = serve(router).await;
    let (run, ids) = paged_load(
        &schema,
        &format!("http://{addr}/pages"),
        "{kind: page_number, page_size: 50, concurrency: 6}",
        &[
            "--retry",
            "{max_attempts: 10, min_delay_secs: 0.01, max_delay_secs: 0.1}",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ids, (1..=1000).collect::<Vec<_>>());
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(summary["retries"].as_u64().unwrap() > 0, "{summary}");

    // X-RateLimit-Remaining: 0 with a reset in 1 s holds the next request back.
    let (router, _) = slow_pages(Duration::ZERO, 2, usize::MAX - 1);
    let addr = serve(router).await;
    let started = Instant::now();
    let (run, ids) = paged_load(
        &schema,
        &format!("http://{addr}/pages"),
        "{kind: page_number, page_size: 50}",
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ids, (1..=100).collect::<Vec<_>>());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_page_in_the_middle_fails_the_run_clearly() {
    let schema = fresh_schema(&client().await, "html_page").await;
    let router = Router::new().route(
        "/p",
        get(|axum::extract::Query(q): Query| async move {
            match query_u64(&q, "page", 1) {
                1 => format!("{{\"data\": {}}}", records(1, 10)).into_response(),
                _ => (
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html><body>Maintenance</body></html>",
                )
                    .into_response(),
            }
        }),
    );
    let addr = serve(router).await;
    let (run, ids) = paged_load(
        &schema,
        &format!("http://{addr}/p"),
        "{kind: page_only}",
        &["--records-path", "/data"],
    )
    .await;
    assert_fails(
        &run,
        &format!(
            "http://{addr}/p, page 2 (http://{addr}/p?page=2): the input is not JSON (it looks like HTML or XML): <html><body>Maintenance</body></html>"
        ),
    );
    assert!(ids.is_empty());
}
