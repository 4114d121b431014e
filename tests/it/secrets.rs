//! No credential in any output: each path a secret could take out of apitap (DNS, connect,
//! TLS and timeout errors, an HTTP error whose body echoes the request, a cut body, a decode
//! error, retries in debug logs plain and JSON, summaries, reject files, `apitap._state`,
//! `apitap run`'s summaries, metrics) is run against a server, and the secrets are looked
//! for in everything apitap wrote, in every form they travel in: secrets from the environment
//! and secrets written out, in the URL's query and userinfo, in headers and in auth.

use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;

use crate::common::*;

/// The secrets, as the environment holds them.
const SECRETS: [(&str, &str); 4] = [
    ("APITAP_T_TOKEN", "tok-SECRET-1a2b/+="),
    ("APITAP_T_KEY", "key-SECRET-3c4d"),
    ("APITAP_T_QUERY", "qry SECRET&5e6f"),
    ("APITAP_T_HEADER", "hdr-SECRET-7g8h"),
];

/// Secrets written out where they are used, not taken from the environment.
const LITERALS: [&str; 3] = ["lit-SECRET-9z", "pw-SECRET-0x", "sess-SECRET-5k"];

/// The flags that carry them.
const CREDENTIAL_ARGS: [&str; 10] = [
    "--auth",
    "{kind: bearer, token: \"${APITAP_T_TOKEN}\"}",
    "--header",
    "X-Api-Key: ${APITAP_T_HEADER}",
    "--header",
    "X-Session: sess-SECRET-5k",
    "--query",
    "access_token=${APITAP_T_QUERY}",
    "--query",
    "api_key=${APITAP_T_KEY}",
];

/// `url` with a password and a credential in its query, written out.
fn with_literal_secrets(url: &str) -> String {
    let mut url = reqwest::Url::parse(url).unwrap();
    url.set_username("loader").unwrap();
    url.set_password(Some("pw-SECRET-0x")).unwrap();
    url.query_pairs_mut()
        .append_pair("client_secret", "lit-SECRET-9z");
    url.to_string()
}

/// Every form a secret travels in: as is, percent- and form-encoded.
fn forms() -> Vec<String> {
    let mut out = Vec::new();
    for secret in SECRETS.iter().map(|(_, s)| *s).chain(LITERALS) {
        out.push(secret.to_string());
        let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        out.push(encoded.replace('+', "%20"));
        out.push(encoded);
    }
    out
}

/// Fails naming `what` if any secret is in `text`.
#[track_caller]
fn assert_clean(what: &str, text: &str) {
    for form in forms() {
        assert!(
            !text.contains(&form),
            "{what} shows a secret ({form:?}):\n{text}"
        );
    }
}

/// Everything in `dir`'s files, for checking.
fn files_in(dir: &Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            all.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
    }
    all
}

/// Runs `apitap load URL` (with a password and a credential written into it) with the
/// credentials, debug logs, a summary and a metrics file; checks that the
/// outputs and every file it wrote in `dir` are clean, and returns the run.
async fn load_clean(what: &str, url: &str, table: &str, dir: &Path, extra: &[&str]) -> Run {
    let summary = dir.join("summary.json");
    let metrics = dir.join("metrics.prom");
    let url = with_literal_secrets(url);
    let mut args = vec![
        "load",
        &url,
        "--table",
        table,
        "--summary-json",
        summary.to_str().unwrap(),
        "--metrics-file",
        metrics.to_str().unwrap(),
        "--log-level",
        "debug",
    ];
    args.extend_from_slice(&CREDENTIAL_ARGS);
    args.extend_from_slice(extra);
    let mut env = SECRETS.to_vec();
    let mut runs = Vec::new();
    for json in ["0", "1"] {
        env.push(("APITAP_LOG_JSON", json));
        let run = apitap_env(&args, &env, None).await;
        assert_clean(&format!("{what} (stderr, JSON logs {json})"), &run.stderr);
        assert_clean(&format!("{what} (stdout)"), &run.stdout);
        assert_clean(&format!("{what} (files)"), &files_in(dir));
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        runs.push(run);
        env.pop();
    }
    runs.pop().unwrap()
}

/// A server whose every answer shows what it was sent: the URL and the headers.
fn echo(status: StatusCode) -> Router {
    Router::new().fallback(move |uri: Uri, headers: HeaderMap| async move {
        let shown = format!("{uri} {headers:?}");
        (
            status,
            format!("{{\"error\": {}}}", serde_json::to_string(&shown).unwrap()),
        )
            .into_response()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_error_log_or_summary() {
    let db = client().await;
    let schema = fresh_schema(&db, "secrets").await;
    let table = format!("{schema}.t");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fast = [
        "--retry",
        "{max_attempts: 2, min_delay_secs: 0, max_delay_secs: 0}",
    ];
    unreachable_and_refusing_sources(&table, d, &fast).await;
    slow_cut_and_malformed_sources(&table, d, &fast).await;
    a_load_with_rejects(&db, &table, d).await;
    a_resumable_backfill(&db, &schema, d, &fast).await;
}

/// DNS, connection refused, TLS to a plain port; an error whose body echoes every credential
/// back, after retries (503s).
async fn unreachable_and_refusing_sources(table: &str, d: &std::path::Path, fast: &[&str]) {
    let plain = serve(echo(StatusCode::OK)).await;
    for (what, url) in [
        (
            "DNS failure",
            "http://apitap-no-such-host.invalid/x".to_string(),
        ),
        ("connection refused", "http://127.0.0.1:1/x".to_string()),
        ("TLS failure", format!("https://{plain}/x")),
    ] {
        let run = load_clean(what, &url, table, d, fast).await;
        assert_eq!(run.code, 1, "{what}: {}", run.stderr);
    }

    // An error whose body echoes every credential back, after retries (503s).
    let addr = serve(echo(StatusCode::SERVICE_UNAVAILABLE)).await;
    let run = load_clean(
        "an echoed error body",
        &format!("http://{addr}/x"),
        table,
        d,
        fast,
    )
    .await;
    assert!(run.stderr.contains("HTTP 503"), "{}", run.stderr);
    assert!(
        run.stderr.contains("***"),
        "the echo is shown, masked: {}",
        run.stderr
    );
}

/// A timeout; a body cut mid-way, and a record that is not JSON, both quoting the request.
async fn slow_cut_and_malformed_sources(table: &str, d: &std::path::Path, fast: &[&str]) {
    let slow = serve(Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        "{}"
    }))
    .await;
    let mut timeout = fast.to_vec();
    timeout.extend_from_slice(&["--read-timeout", "0.2"]);
    let run = load_clean("a timeout", &format!("http://{slow}/x"), table, d, &timeout).await;
    assert_eq!(run.code, 1);

    // A body cut mid-way, and a record that is not JSON, both quoting the request.
    let cut = serve(Router::new().fallback(|uri: Uri| async move {
        let first = format!("{{\"id\": 1, \"url\": \"{uri}\"}}\n{{\"id\": ");
        let stream = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(bytes::Bytes::from(first)),
            Err(std::io::Error::other("cut")),
        ]);
        Body::from_stream(stream)
    }))
    .await;
    let run = load_clean("a cut body", &format!("http://{cut}/x"), table, d, fast).await;
    assert_eq!(run.code, 1);
    let garbage =
        serve(Router::new().fallback(|uri: Uri| async move {
            format!("{{\"id\": 1, \"u\": \"{uri}\"}} {uri}\n")
        }))
        .await;
    let run = load_clean(
        "a malformed record",
        &format!("http://{garbage}/x"),
        table,
        d,
        fast,
    )
    .await;
    assert_eq!(run.code, 1);
}

/// Success: the summary, and a reject file whose records quote the request.
async fn a_load_with_rejects(db: &tokio_postgres::Client, table: &str, d: &std::path::Path) {
    let rows = serve(Router::new().fallback(|uri: Uri| async move {
        let page: u32 = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "page")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(1);
        if page > 3 {
            return "{\"data\": []}".to_string();
        }
        format!("{{\"data\": [{{\"id\": {page}, \"u\": \"{uri}\"}}, {{\"id\": \"bad {uri}\"}}]}}")
    }))
    .await;
    db.batch_execute(&format!("CREATE TABLE {table} (id bigint, u text)"))
        .await
        .unwrap();
    let rejects = d.join("rejects.ndjson");
    let run = load_clean(
        "a load with rejects",
        &format!("http://{rows}/x"),
        table,
        d,
        &[
            "--records-path",
            "/data",
            "--pagination",
            "{kind: page_number}",
            "--on-error",
            "reject",
            "--reject-file",
            rejects.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(std::fs::read_to_string(&rejects).unwrap().contains("***"));
}

/// A backfill that fails at page 3 keeps the position of its committed pages, whose URLs
/// carry the query's secrets: the state holds none of them.
async fn a_resumable_backfill(
    db: &tokio_postgres::Client,
    schema: &str,
    d: &std::path::Path,
    fast: &[&str],
) {
    let failing = serve(Router::new().fallback(|uri: Uri| async move {
        let page: u32 = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "page")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(1);
        if page >= 3 {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("no page {uri}")).into_response();
        }
        format!("{{\"data\": [{{\"id\": {page}}}]}}").into_response()
    }))
    .await;
    let mut backfill = fast.to_vec();
    let key = format!("{schema}-backfill");
    backfill.extend_from_slice(&[
        "--records-path",
        "/data",
        "--pagination",
        "{kind: page_number}",
        "--commit-every",
        "1",
        "--state-key",
        &key,
    ]);
    let run = load_clean(
        "a resumable backfill",
        &format!("http://{failing}/x"),
        &format!("{schema}.backfill"),
        d,
        &backfill,
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let state: Vec<String> = db
        .query(
            "SELECT coalesce(resume, '') || coalesce(cursor_value, '') FROM apitap._state WHERE key = $1",
            &[&key],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(state.len(), 1, "the backfill saved its position");
    assert!(state[0].contains("page"), "{state:?}");
    assert_clean("apitap._state", &state.join("\n"));
}

/// `apitap run`: a module whose source fails with an error body echoing its request; the
/// module summaries (stderr and --summary-json) keep the secrets out.
#[cfg(feature = "sql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_module_summaries() {
    let db = client().await;
    let schema = fresh_schema(&db, "secrets_run").await;
    let addr = serve(echo(StatusCode::UNAUTHORIZED)).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("sql")).unwrap();
    std::fs::write(
        d.join("pipelines.yaml"),
        format!(
            "sources:\n  - name: s\n    url: http://{addr}/x\n    table_destination_name: t\n    retry: {{max_attempts: 1}}\n    headers:\n      - key: X-Key\n        value: ${{APITAP_T_HEADER}}\n      - key: X-Marked\n        value: marked-SECRET-9z9z\n        secret: true\n    query_params:\n      - key: access_token\n        value: ${{APITAP_T_QUERY}}\ntargets:\n  - name: pg\n    type: postgres\n    url_env: DATABASE_URL\n    schema: {schema}\n"
        ),
    )
    .unwrap();
    std::fs::write(d.join("sql/m.sql"), "SELECT * FROM {{ use_source(\"s\") }}").unwrap();
    let summary = d.join("summary.json");
    let run = apitap_env(
        &[
            "run",
            "-m",
            d.join("sql").to_str().unwrap(),
            "-y",
            d.join("pipelines.yaml").to_str().unwrap(),
            "--summary-json",
            summary.to_str().unwrap(),
            "--log-level",
            "debug",
        ],
        &SECRETS,
        None,
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("HTTP 401"), "{}", run.stderr);
    let written = std::fs::read_to_string(&summary).unwrap();
    for text in [&run.stderr, &run.stdout, &written] {
        assert_clean("apitap run", text);
        assert!(!text.contains("marked-SECRET-9z9z"), "{text}");
    }
}

/// Counts are never secrets: `rows=${ROWS}` in a query is no secret at all, and a numeric
/// credential (`api_key=1000`) is masked where it stands as a value but never in apitap's own
/// figures — the summary line, `--summary-json` (redacting the JSON as text made it
/// `"rows":***`, which no script can parse) and the metrics all say 1000 rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_never_masked() {
    let db = client().await;
    let schema = fresh_schema(&db, "secrets_count").await;
    let rows: String = (1..=1000).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    let body_bytes = rows.len();
    let addr = serve(Router::new().fallback(move || async move { rows })).await;
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let metrics = dir.path().join("metrics.prom");
    let run = apitap_env(
        &[
            "load",
            &format!("http://{addr}/rows"),
            "--table",
            &format!("{schema}.t"),
            "--query",
            "rows=${APITAP_T_ROWS}",
            "--query",
            "api_key=${APITAP_T_NUMERIC_KEY}",
            "--summary-json",
            summary.to_str().unwrap(),
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
        &[("APITAP_T_ROWS", "1000"), ("APITAP_T_NUMERIC_KEY", "1000")],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains(": 1000 rows, "), "{}", run.stderr);
    let text = std::fs::read_to_string(&summary).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("--summary-json is not JSON ({e}): {text}"));
    assert_eq!(json["rows"], 1000, "{text}");
    assert_eq!(json["bytes"], body_bytes, "{text}");
    let exposition = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        exposition
            .lines()
            .any(|l| l == "apitap_rows_committed_total{module=\"load\"} 1000"),
        "{exposition}"
    );
}
