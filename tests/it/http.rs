//! HTTP sources: headers and query parameters with `${VAR}`, retries and Retry-After, against
//! local servers that misbehave on purpose.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const FAST_RETRY: &str = "{max_attempts: 4, min_delay_secs: 0.05, max_delay_secs: 0.2}";

fn rows(n: usize) -> String {
    (1..=n).map(|i| format!("{{\"id\": {i}}}\n")).collect()
}

/// Answers the first `failures` requests with `failure`, then with rows.
fn flaky(failures: usize, failure: fn() -> Response) -> (Router, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let router = Router::new().route(
        "/flaky",
        get(move || {
            let counter = counter.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) < failures {
                    failure()
                } else {
                    rows(100).into_response()
                }
            }
        }),
    );
    (router, calls)
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried() {
    let db = client().await;
    let schema = fresh_schema(&db, "retry").await;
    let (router, calls) = flaky(2, unavailable);
    let addr = serve(router).await;
    let run = apitap(
        &[
            "load",
            &format!("http://{addr}/flaky"),
            "--table",
            &format!("{schema}.t"),
            "--retry",
            FAST_RETRY,
            "--summary-json",
            "-",
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["retries"], 2);
    assert!(
        run.stderr.contains("100 rows") && run.stderr.contains(", 2 retries"),
        "{}",
        run.stderr
    );
    assert_eq!(count(&db, &format!("{schema}.t")).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let db = client().await;
    let schema = fresh_schema(&db, "retry_after").await;
    let (router, calls) = flaky(1, || {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "slow down",
        )
            .into_response()
    });
    let addr = serve(router).await;
    let started = Instant::now();
    let run = apitap(
        &[
            "load",
            &format!("http://{addr}/flaky"),
            "--table",
            &format!("{schema}.t"),
            "--retry",
            FAST_RETRY,
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The backoff alone would have waited at most 0.2 s.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(count(&db, &format!("{schema}.t")).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_give_up_and_client_errors_are_not_retried() {
    let db = client().await;
    let schema = fresh_schema(&db, "give_up").await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint); INSERT INTO {table} VALUES (0)"
    ))
    .await
    .unwrap();
    let (router, calls) = flaky(usize::MAX, unavailable);
    let addr = serve(router).await;
    let run = apitap(
        &[
            "load",
            &format!("http://{addr}/flaky"),
            "--table",
            &table,
            "--retry",
            "{max_attempts: 3, min_delay_secs: 0.01, max_delay_secs: 0.05}",
        ],
        None,
    )
    .await;
    assert_fails(
        &run,
        &format!("HTTP 503 Service Unavailable from http://{addr}/flaky (after 3 attempts): busy"),
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let (router, calls) = flaky(usize::MAX, || {
        (StatusCode::UNAUTHORIZED, "who are you").into_response()
    });
    let addr = serve(router).await;
    let run = apitap(
        &["load", &format!("http://{addr}/flaky"), "--table", &table],
        None,
    )
    .await;
    assert_fails(
        &run,
        &format!("HTTP 401 Unauthorized from http://{addr}/flaky: who are you"),
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(count(&db, &table).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_query_take_secrets_from_the_environment_and_never_show_them() {
    let db = client().await;
    let schema = fresh_schema(&db, "headers").await;
    let router = Router::new().route(
        "/private",
        get(
            |headers: HeaderMap, query: axum::extract::RawQuery| async move {
                let auth = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                if auth != Some("Bearer s3cret-token") {
                    return (StatusCode::UNAUTHORIZED, "bad token").into_response();
                }
                if query.0.as_deref() != Some("since=2024-01-01&limit=5") {
                    return (StatusCode::BAD_REQUEST, format!("bad query {:?}", query.0))
                        .into_response();
                }
                rows(5).into_response()
            },
        ),
    );
    let addr = serve(router).await;
    let url = format!("http://{addr}/private?since=2024-01-01");
    let table = format!("{schema}.t");
    let run = apitap_env(
        &[
            "load",
            &url,
            "--table",
            &table,
            "--header",
            "Authorization: Bearer ${API_TOKEN}",
            "--query",
            "limit=${PAGE_LIMIT}",
            "--summary-json",
            "-",
            "--progress",
            "always",
        ],
        &[
            ("API_TOKEN", "s3cret-token"),
            ("PAGE_LIMIT", "5"),
            ("RUST_LOG", "debug"),
        ],
        None,
    )
    .await;
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    assert_eq!(run.code, 0, "{stderr}");
    assert_eq!(count(&db, &format!("{schema}.t")).await, 5);
    assert!(
        !stdout.contains("s3cret") && !stderr.contains("s3cret"),
        "{stdout}\n{stderr}"
    );

    let run = apitap(
        &[
            "load",
            &format!("http://{addr}/private"),
            "--table",
            &format!("{schema}.t"),
            "--header",
            "Authorization: Bearer ${APITAP_TEST_UNSET_VARIABLE}",
        ],
        None,
    )
    .await;
    assert_fails(
        &run,
        "environment variable APITAP_TEST_UNSET_VARIABLE (in --header Authorization) is not set",
    );
}

/// Records `first..first+n` as a JSON array text.
fn records(first: u64, n: u64) -> String {
    let items: Vec<String> = (first..first + n)
        .map(|i| format!("{{\"id\": {i}}}"))
        .collect();
    format!("[{}]", items.join(","))
}

fn query_u64(query: &std::collections::HashMap<String, String>, key: &str, default: u64) -> u64 {
    query
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

type Query = axum::extract::Query<std::collections::HashMap<String, String>>;

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
    let (run, ids) = paged_load(
        &schema,
        &format!("http://{addr}/next"),
        "{kind: next_url, next_url_path: /links/next}",
        &["--records-path", "/data"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ids, (1..=40).collect::<Vec<_>>());
    let (run, ids) = paged_load(
        &schema,
        &format!("http://{addr}/link"),
        "{kind: link_header}",
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
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

fn authorized(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_basic_and_api_key_auth() {
    let schema = fresh_schema(&client().await, "auth").await;
    let router = Router::new()
        .route(
            "/bearer",
            get(|h: HeaderMap| async move {
                if authorized(&h, "Bearer tok-123") {
                    rows(3).into_response()
                } else {
                    StatusCode::UNAUTHORIZED.into_response()
                }
            }),
        )
        .route(
            "/basic",
            get(|h: HeaderMap| async move {
                // base64("loader:pa:ss")
                if authorized(&h, "Basic bG9hZGVyOnBhOnNz") {
                    rows(3).into_response()
                } else {
                    StatusCode::UNAUTHORIZED.into_response()
                }
            }),
        )
        .route(
            "/key",
            get(|axum::extract::Query(q): Query| async move {
                if q.get("api_key").map(String::as_str) == Some("k-999") {
                    rows(3).into_response()
                } else {
                    StatusCode::FORBIDDEN.into_response()
                }
            }),
        );
    let addr = serve(router).await;
    for (path, auth) in [
        ("bearer", "{kind: bearer, token: '${APITAP_T_SECRET}'}"),
        (
            "basic",
            "{kind: basic, username: loader, password: '${APITAP_T_SECRET}'}",
        ),
        (
            "key",
            "{kind: api_key, name: api_key, value: '${APITAP_T_SECRET}', in: query}",
        ),
    ] {
        let secret = match path {
            "bearer" => "tok-123",
            "basic" => "pa:ss",
            _ => "k-999",
        };
        let (url, table) = (format!("http://{addr}/{path}"), format!("{schema}.{path}"));
        let run = apitap_env(
            &["load", &url, "--table", &table, "--auth", auth],
            &[("APITAP_T_SECRET", secret), ("RUST_LOG", "debug")],
            None,
        )
        .await;
        let stderr = &run.stderr;
        assert_eq!(run.code, 0, "{path}: {stderr}");
        assert!(
            !stderr.contains(secret),
            "{path} leaked its secret: {stderr}"
        );
        assert_eq!(
            count(&client().await, &format!("{schema}.{path}")).await,
            3,
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_tokens_are_cached_and_refreshed_on_401() {
    let schema = fresh_schema(&client().await, "oauth").await;
    let issued = Arc::new(AtomicUsize::new(0));
    let issued_in = issued.clone();
    let issued_check = issued.clone();
    let router = Router::new()
        .route(
            "/token",
            axum::routing::post(move |body: String| {
                let issued = issued_in.clone();
                async move {
                    let form: std::collections::HashMap<String, String> =
                        form_urlencoded::parse(body.as_bytes()).into_owned().collect();
                    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
                        || form.get("client_secret").map(String::as_str) != Some("cl-secret")
                    {
                        return (StatusCode::UNAUTHORIZED, "{\"error\": \"invalid_client\"}").into_response();
                    }
                    let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                    format!("{{\"access_token\": \"tok-{n}\", \"token_type\": \"Bearer\", \"expires_in\": 3600}}").into_response()
                }
            }),
        )
        .route(
            "/data",
            get(move |h: HeaderMap, axum::extract::Query(q): Query| {
                let issued = issued_check.clone();
                async move {
                    // The first token is "revoked": only the latest one is accepted.
                    let current = format!("Bearer tok-{}", issued.load(Ordering::SeqCst));
                    if issued.load(Ordering::SeqCst) < 2 || !authorized(&h, &current) {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    match query_u64(&q, "page", 1) {
                        p @ 1..=3 => records(p * 10 - 9, 10).into_response(),
                        _ => "[]".into_response(),
                    }
                }
            }),
        );
    let addr = serve(router).await;
    let auth = format!(
        "{{kind: oauth2_client_credentials, token_url: 'http://{addr}/token', client_id: app, client_secret: '${{APITAP_T_CLIENT_SECRET}}', scope: read}}"
    );
    let (url, table) = (format!("http://{addr}/data"), format!("{schema}.t"));
    let run = apitap_env(
        &[
            "load",
            &url,
            "--table",
            &table,
            "--pagination",
            "{kind: page_only}",
            "--auth",
            &auth,
        ],
        &[
            ("APITAP_T_CLIENT_SECRET", "cl-secret"),
            ("RUST_LOG", "debug"),
        ],
        None,
    )
    .await;
    let stderr = &run.stderr;
    assert_eq!(run.code, 0, "{stderr}");
    assert!(
        !stderr.contains("cl-secret") && !stderr.contains("tok-2"),
        "{stderr}"
    );
    // One token, refused; a second one, kept for every later page.
    assert_eq!(issued.load(Ordering::SeqCst), 2);
    assert_eq!(count(&client().await, &format!("{schema}.t")).await, 30);
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
async fn post_bodies_and_date_helpers() {
    let schema = fresh_schema(&client().await, "post").await;
    let today = chrono::Utc::now().date_naive();
    let week_ago = (today - chrono::Duration::days(7))
        .format("%Y-%m-%d")
        .to_string();
    let expected_query = format!("day={}", today.format("%Y-%m-%d"));
    let router = Router::new().route(
        "/search",
        axum::routing::post(
            move |axum::extract::RawQuery(q): axum::extract::RawQuery,
                  h: HeaderMap,
                  body: String| {
                let (week_ago, expected_query) = (week_ago.clone(), expected_query.clone());
                async move {
                    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    let json = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
                        == Some("application/json");
                    if !json
                        || body["since"] != week_ago.as_str()
                        || body["who"] != "me"
                        || q.as_deref() != Some(expected_query.as_str())
                    {
                        return (StatusCode::BAD_REQUEST, format!("got {body} {q:?}"))
                            .into_response();
                    }
                    rows(4).into_response()
                }
            },
        ),
    );
    let addr = serve(router).await;
    let (url, table) = (format!("http://{addr}/search"), format!("{schema}.t"));
    let run = apitap_env(
        &[
            "load",
            &url,
            "--table",
            &table,
            "--http-method",
            "post",
            "--body",
            r#"{"since": "{{ few_date_ago(7) }}", "who": "${APITAP_T_WHO}"}"#,
            "--query",
            "day={{ current_date() }}",
        ],
        &[("APITAP_T_WHO", "me")],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(count(&client().await, &format!("{schema}.t")).await, 4);

    let run = apitap(
        &[
            "load",
            "-",
            "--table",
            &format!("{schema}.t"),
            "--body",
            "{}",
        ],
        Some(Vec::new()),
    )
    .await;
    assert_fails(&run, "--body needs --http-method post");
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

/// `head`, then (once the client is reading the body) a dropped connection.
fn cut_body(head: String) -> axum::body::Body {
    let chunks = futures_util::stream::unfold(0, move |k| {
        let head = head.clone();
        async move {
            let item = match k {
                0 => Ok(bytes::Bytes::from(head)),
                1 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Err(std::io::Error::other("dropped"))
                }
                _ => return None,
            };
            Some((item, k + 1))
        }
    });
    axum::body::Body::from_stream(chunks)
}

/// A single streamed body cut mid-record is requested again; the bytes already loaded are
/// checked and skipped, so every row lands exactly once. If the server sends something else
/// the second time, the load fails instead of guessing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_cut_mid_way_resumes_where_it_broke() {
    let db = client().await;
    let schema = fresh_schema(&db, "resume").await;
    let requests = Arc::new(AtomicUsize::new(0));
    let requests_in = requests.clone();
    let body: String = (1..=20_000)
        .map(|i| format!("{{\"id\": {i}, \"name\": \"row {i}\"}}\n"))
        .collect();
    let router = Router::new()
        .route(
            "/stream",
            get(move || {
                let n = requests_in.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                async move {
                    if n == 0 {
                        // Two thirds of the body, ending inside a record, then a dropped connection.
                        let cut = body.len() * 2 / 3 + 7;
                        return cut_body(body[..cut].to_string()).into_response();
                    }
                    body.into_response()
                }
            }),
        )
        .route(
            "/changing",
            get({
                let served = Arc::new(AtomicUsize::new(0));
                move || {
                    let n = served.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let body: String = (1..=5000)
                            .map(|i| format!("{{\"id\": {}}}\n", i + n * 100_000))
                            .collect();
                        let cut = body.len() / 2;
                        cut_body(body[..cut].to_string()).into_response()
                    }
                }
            }),
        );
    let addr = serve(router).await;
    let table = format!("{schema}.t");
    let run = apitap(
        &[
            "load",
            &format!("http://{addr}/stream"),
            "--table",
            &table,
            "--retry",
            "{min_delay_secs: 0, max_delay_secs: 0}",
            "--summary-json",
            "-",
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["retries"], 1);
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    let facts = db
        .query_one(
            &format!("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM {table}"),
            &[],
        )
        .await
        .unwrap();
    let facts: (i64, i64, i64, i64) = (facts.get(0), facts.get(1), facts.get(2), facts.get(3));
    assert_eq!(facts, (20_000, 20_000, 1, 20_000));

    let changing = format!("{schema}.changing");
    let run = apitap(
        &[
            "load",
            &format!("http://{addr}/changing"),
            "--table",
            &changing,
            "--retry",
            "{min_delay_secs: 0, max_delay_secs: 0}",
        ],
        None,
    )
    .await;
    assert_fails(
        &run,
        &format!(
            "http://{addr}/changing: the body was cut after {} bytes, and the server sent different bytes when asked again",
            {
                let body: String = (1..=5000).map(|i| format!("{{\"id\": {i}}}\n")).collect();
                body.len() / 2
            }
        ),
    );
    assert!(!table_exists(&db, &changing).await);
}
