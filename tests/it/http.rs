//! HTTP sources: headers and query parameters with `${VAR}`, retries and Retry-After, against
//! local servers that misbehave on purpose.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::paging::{Query, query_u64, records};
use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub const FAST_RETRY: &str = "{max_attempts: 4, min_delay_secs: 0.05, max_delay_secs: 0.2}";

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
