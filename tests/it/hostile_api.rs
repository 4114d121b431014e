//! APIs that misbehave on purpose: garbled rate-limit and Retry-After headers, OAuth token
//! lifetimes no clock can hold, a gzip bomb, an endless error body, a trickling server,
//! Link headers with commas in their URLs, next links that go in circles. None may crash or
//! hang apitap, and none may end a load early while it says it succeeded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::common::*;

fn page_of(uri: &Uri) -> u64 {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1)
}

fn ids(first: u64, n: u64) -> String {
    let rows: Vec<String> = (first..first + n)
        .map(|i| format!("{{\"id\": {i}}}"))
        .collect();
    format!("[{}]", rows.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_rate_limit_and_retry_headers_neither_crash_nor_stall() {
    let db = client().await;
    let schema = fresh_schema(&db, "garbled_headers").await;
    for (i, (name, value)) in [
        ("x-ratelimit-reset", "NaN"),
        ("x-ratelimit-reset", "inf"),
        ("x-ratelimit-reset", "-5"),
        ("x-ratelimit-reset", "1e400"),
        ("x-ratelimit-reset", "soon"),
        ("retry-after", "NaN"),
        ("retry-after", "-1"),
        ("retry-after", "1e400"),
        ("retry-after", "99999999999999999999999"),
    ]
    .into_iter()
    .enumerate()
    {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let router = Router::new().fallback(move || {
            let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                let status = if first && name == "retry-after" {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                };
                (
                    status,
                    [(name, value), ("x-ratelimit-remaining", "0")],
                    "{\"id\": 1}\n",
                )
                    .into_response()
            }
        });
        let addr = serve(router).await;
        let run = apitap(
            &[
                "load",
                &format!("http://{addr}/x"),
                "--table",
                &format!("{schema}.t{i}"),
                "--retry",
                "{max_attempts: 2, min_delay_secs: 0, max_delay_secs: 0}",
            ],
            None,
        )
        .await;
        assert_eq!(run.code, 0, "{name}: {value}: {}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_oauth_token_lifetimes_are_no_expiry_and_the_token_endpoint_is_retried() {
    let db = client().await;
    let schema = fresh_schema(&db, "oauth_odd").await;
    for (i, expires_in) in ["1e30", "-5", "\"soon\"", "18446744073709551615", "0.5"]
        .into_iter()
        .enumerate()
    {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let router = Router::new()
            .route(
                "/token",
                post(move || {
                    // The first answer is a 503: the token endpoint is retried like pages.
                    let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
                    async move {
                        if first {
                            return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
                        }
                        format!("{{\"access_token\": \"t-{i}\", \"expires_in\": {expires_in}}}")
                            .into_response()
                    }
                }),
            )
            .route("/rows", get(|| async { "{\"id\": 1}\n{\"id\": 2}\n" }));
        let addr = serve(router).await;
        let auth = format!(
            "{{kind: oauth2_client_credentials, token_url: 'http://{addr}/token', client_id: c, client_secret: s}}"
        );
        let run = apitap(
            &[
                "load",
                &format!("http://{addr}/rows"),
                "--table",
                &format!("{schema}.t{i}"),
                "--auth",
                &auth,
                "--retry",
                "{max_attempts: 3, min_delay_secs: 0, max_delay_secs: 0}",
            ],
            None,
        )
        .await;
        assert_eq!(run.code, 0, "expires_in {expires_in}: {}", run.stderr);
        assert_eq!(calls.load(Ordering::SeqCst), 2, "expires_in {expires_in}");
    }
}

/// `/bomb`: 64 MiB of a JSON page gzipped to a few dozen KiB; `/broken`: a 500 whose body
/// never ends; `/trickle`: a record every 200 ms, forever.
fn hostile_server() -> Router {
    let bomb = {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(b"{\"data\": [").unwrap();
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&chunk).unwrap();
        }
        gz.write_all(b"]}").unwrap();
        gz.finish().unwrap()
    };
    let endless = || {
        let stream = futures_util::stream::unfold((), |()| async {
            Some((
                Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 64 << 10])),
                (),
            ))
        });
        Body::from_stream(stream)
    };
    let trickle = || {
        let stream = futures_util::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Some((
                Ok::<_, std::io::Error>(bytes::Bytes::from(format!("{{\"id\": {n}}}\n"))),
                n + 1,
            ))
        });
        Body::from_stream(stream)
    };
    Router::new()
        .route(
            "/bomb",
            get(move || {
                let bomb = bomb.clone();
                async move { ([(header::CONTENT_ENCODING, "gzip")], bomb) }
            }),
        )
        .route(
            "/broken",
            get(move || async move { (StatusCode::INTERNAL_SERVER_ERROR, endless()) }),
        )
        .route("/trickle", get(move || async move { trickle() }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bombs_endless_bodies_and_tricklers_are_bounded() {
    let db = client().await;
    let schema = fresh_schema(&db, "bounded").await;
    let table = guarded_table(&db, &schema).await;
    let addr = serve(hostile_server()).await;
    let one_try = ["--retry", "{max_attempts: 1}"];

    let mut args = vec![
        "load",
        "",
        "--table",
        &table,
        "--records-path",
        "/data",
        "--pagination",
        "{kind: page_number}",
        "--max-page-bytes",
        "8000000",
    ];
    let bomb_url = format!("http://{addr}/bomb");
    args[1] = &bomb_url;
    args.extend_from_slice(&one_try);
    let run = apitap(&args, None).await;
    assert_fails(
        &run,
        "is larger than --max-page-bytes allows (8000000 bytes, after decompression)",
    );

    let broken = format!("http://{addr}/broken");
    let run = apitap(
        &[
            "load",
            &broken,
            "--table",
            &table,
            "--retry",
            "{max_attempts: 1}",
        ],
        None,
    )
    .await;
    assert_fails(&run, "HTTP 500 Internal Server Error");
    assert!(
        run.stderr.contains("xxxx"),
        "a preview of the body: {}",
        run.stderr
    );

    let trickle_url = format!("http://{addr}/trickle");
    let run = apitap(
        &[
            "load",
            &trickle_url,
            "--table",
            &table,
            "--timeout",
            "1",
            "--retry",
            "{max_attempts: 1}",
        ],
        None,
    )
    .await;
    assert_fails(&run, "timed out");
    assert_unchanged(&db, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_headers_with_commas_and_several_lines_walk_every_page() {
    let db = client().await;
    let schema = fresh_schema(&db, "links").await;
    let router = Router::new().fallback(|uri: Uri| async move {
        let page = page_of(&uri);
        let mut response = ids(page * 100 - 99, 100).into_response();
        let headers = response.headers_mut();
        if page < 3 {
            // A next link with commas and a semicolon in its query, on its own header line,
            // after a line with two other links, rel naming two relations.
            headers.append(
                header::LINK,
                "</items?fields=id,name;v2&page=1>; rel=\"first\", </items?page=3>; rel=\"last\""
                    .parse()
                    .unwrap(),
            );
            headers.append(
                header::LINK,
                format!(
                    "</items?fields=id,name;v2&page={}>; title=\"a, b\"; rel=\"next nofollow\"",
                    page + 1
                )
                .parse()
                .unwrap(),
            );
        }
        response
    });
    let addr = serve(router).await;
    let run = apitap(
        &[
            "load",
            &format!("http://{addr}/items?fields=id,name;v2"),
            "--table",
            &format!("{schema}.t"),
            "--pagination",
            "{kind: link_header}",
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(count(&db, &format!("{schema}.t")).await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_urls_in_a_circle_fail_at_the_first_repeat() {
    let db = client().await;
    let schema = fresh_schema(&db, "circle").await;
    let table = guarded_table(&db, &schema).await;
    // A → B → A → …
    let router = Router::new()
        .route(
            "/a",
            get(|| async {
                "{\"data\": [{\"id\": 2, \"name\": \"x\"}], \"next\": \"/b?token=abc\"}"
            }),
        )
        .route(
            "/b",
            get(|| async { "{\"data\": [{\"id\": 3, \"name\": \"y\"}], \"next\": \"/a\"}" }),
        );
    let addr = serve(router).await;
    let run = apitap(
        &[
            "load",
            &format!("http://{addr}/a"),
            "--table",
            &table,
            "--records-path",
            "/data",
            "--pagination",
            "{kind: next_url, next_url_path: /next}",
        ],
        None,
    )
    .await;
    assert_fails(
        &run,
        &format!("the API returned the next URL http://{addr}/a a second time (page 2)"),
    );
    assert_unchanged(&db, &table).await;
}
