//! Credentials stay with their origin: redirects and next links to another origin are refused,
//! or followed without any credential when the user allows it; https never turns into http;
//! no Referer is sent. HTTPS sources trust the system's roots plus `--ca-cert`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::certs::{make_pki, serve_https};
use crate::common::*;

/// What one server saw: each request's path and query, and its credential-bearing headers.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    /// Records the path, the api_key query parameter and the credential headers.
    fn record(&self, uri: &Uri, headers: &HeaderMap) {
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| format!(" {name}={}", v.to_str().unwrap_or("?")))
                .unwrap_or_default()
        };
        let key = query(uri)
            .get("api_key")
            .map(|k| format!(" api_key={k}"))
            .unwrap_or_default();
        self.0.lock().unwrap().push(format!(
            "{}{key}{}{}{}",
            uri.path(),
            header("x-api-key"),
            header("authorization"),
            header("referer")
        ));
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

fn query(uri: &Uri) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn rows() -> String {
    (1..=3).map(|i| format!("{{\"id\": {i}}}\n")).collect()
}

/// A server answering `/rows` with rows and `/go?to=URL` with a 302 to URL.
fn server(seen: Seen) -> Router {
    let seen_rows = seen.clone();
    Router::new()
        .route(
            "/rows",
            get(move |uri: Uri, headers: HeaderMap| {
                seen_rows.record(&uri, &headers);
                async { rows() }
            }),
        )
        .route(
            "/go",
            get(move |uri: Uri, headers: HeaderMap| {
                seen.record(&uri, &headers);
                let to = query(&uri).get("to").cloned().unwrap_or_default();
                async move { (StatusCode::FOUND, [(header::LOCATION, to)]).into_response() }
            }),
        )
}

const AUTH_ARGS: [&str; 6] = [
    "--header",
    "X-Api-Key: hdr-secret-1",
    "--auth",
    "{kind: api_key, name: api_key, value: qry-secret-2, in: query}",
    "--retry",
    "{max_attempts: 1}",
];

async fn load(url: &str, table: &str, extra: &[&str]) -> Run {
    let mut args = vec!["load", url, "--table", table];
    args.extend_from_slice(&AUTH_ARGS);
    args.extend_from_slice(extra);
    apitap(&args, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_another_origin_never_carry_credentials() {
    let db = client().await;
    let schema = fresh_schema(&db, "redirects").await;
    let (seen_a, seen_b) = (Seen::default(), Seen::default());
    let a = serve(server(seen_a.clone())).await;
    let b = serve(server(seen_b.clone())).await;

    // Within the origin: followed, credentials kept.
    let run = load(
        &format!("http://{a}/go?to=/rows"),
        &format!("{schema}.same"),
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        seen_a.all(),
        vec![
            "/go api_key=qry-secret-2 x-api-key=hdr-secret-1".to_string(),
            "/rows api_key=qry-secret-2 x-api-key=hdr-secret-1".to_string(),
        ]
    );

    // To another origin: refused before anything is sent there.
    let to_b = format!("http://{b}/rows");
    let run = load(
        &format!("http://{a}/go?to={to_b}"),
        &format!("{schema}.cross"),
        &[],
    )
    .await;
    assert_fails(
        &run,
        &format!(
            "it redirected to another origin (http://{b}/rows), where the source's credentials must not go"
        ),
    );
    assert!(seen_b.all().is_empty(), "{:?}", seen_b.all());
    assert!(!run.stderr.contains("secret"), "{}", run.stderr);
    assert!(!table_exists(&db, &format!("{schema}.cross")).await);

    // Allowed: followed with no credential at all, and no Referer.
    let run = load(
        &format!("http://{a}/go?to={to_b}"),
        &format!("{schema}.allowed"),
        &["--allow-cross-host"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(seen_b.all(), vec!["/rows".to_string()]);
    assert_eq!(count(&db, &format!("{schema}.allowed")).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_links_to_another_origin_never_carry_credentials() {
    let db = client().await;
    let schema = fresh_schema(&db, "cross_pages").await;
    let (seen_a, seen_b) = (Seen::default(), Seen::default());
    let b = serve(server(seen_b.clone())).await;
    let seen = seen_a.clone();
    let a = serve(Router::new().route(
        "/first",
        get(move |uri: Uri, headers: HeaderMap| {
            seen.record(&uri, &headers);
            async move { format!("{{\"data\": [{{\"id\": 1}}], \"next\": \"http://{b}/rows\"}}") }
        }),
    ))
    .await;
    let paged = [
        "--records-path",
        "/data",
        "--pagination",
        "{kind: next_url, next_url_path: /next}",
    ];
    let run = load(
        &format!("http://{a}/first"),
        &format!("{schema}.refused"),
        &paged,
    )
    .await;
    assert_fails(
        &run,
        &format!("the next page is on another host or scheme (http://{b}/rows)"),
    );
    assert!(seen_b.all().is_empty());
    // Allowed: the page is fetched bare. It is NDJSON, not a document with /data, so the
    // load fails on its content, after the request; what matters is what was sent.
    let mut allowed = paged.to_vec();
    allowed.push("--allow-cross-host");
    let _ = load(
        &format!("http://{a}/first"),
        &format!("{schema}.allowed"),
        &allowed,
    )
    .await;
    assert_eq!(seen_b.all(), vec!["/rows".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_sources_trust_a_private_ca_and_never_go_down_to_http() {
    let db = client().await;
    let schema = fresh_schema(&db, "https").await;
    let pki = make_pki();
    let plain = serve(server(Seen::default())).await;
    let router = server(Seen::default());
    let addr = serve_https(router, &pki).await;
    let url = format!("https://127.0.0.1:{}/rows", addr.port());

    // Not in any store: refused, with a message about the certificate.
    let run = load(&url, &format!("{schema}.untrusted"), &[]).await;
    assert_fails(&run, "certificate");

    let ca = pki.ca_cert.to_str().unwrap();
    let run = load(&url, &format!("{schema}.trusted"), &["--ca-cert", ca]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(count(&db, &format!("{schema}.trusted")).await, 3);

    // An https source redirected to http is refused, allowed cross-host or not.
    let down = format!(
        "https://127.0.0.1:{}/go?to=http://{plain}/rows",
        addr.port()
    );
    for extra in [
        &["--ca-cert", ca][..],
        &["--ca-cert", ca, "--allow-cross-host"][..],
    ] {
        let run = load(&down, &format!("{schema}.down"), extra).await;
        assert_fails(&run, "it redirected from https to http");
    }
    // A CA file that holds no certificate is named.
    let empty = pki.dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let run = load(
        &url,
        &format!("{schema}.empty"),
        &["--ca-cert", empty.to_str().unwrap()],
    )
    .await;
    assert_fails(&run, "holds no certificate");
}
