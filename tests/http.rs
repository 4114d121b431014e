//! HTTP sources: headers and query parameters with `${VAR}`, retries and Retry-After, against
//! local servers that misbehave on purpose.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::*;

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
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "HTTP 503 Service Unavailable from http://{addr}/flaky (after 3 attempts): busy"
        )),
        "{}",
        run.stderr
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
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "HTTP 401 Unauthorized from http://{addr}/flaky: who are you"
        )),
        "{}",
        run.stderr
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
    let args = [
        "load".to_string(),
        format!("http://{addr}/private?since=2024-01-01"),
        "--table".into(),
        format!("{schema}.t"),
        "--header".into(),
        "Authorization: Bearer ${API_TOKEN}".into(),
        "--query".into(),
        "limit=${PAGE_LIMIT}".into(),
        "--summary-json".into(),
        "-".into(),
        "--progress".into(),
        "always".into(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        command(&args)
            .env("API_TOKEN", "s3cret-token")
            .env("PAGE_LIMIT", "5")
            .env("RUST_LOG", "debug")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
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
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(
            "environment variable APITAP_TEST_UNSET_VARIABLE (in --header Authorization) is not set"
        ),
        "{}",
        run.stderr
    );
}
