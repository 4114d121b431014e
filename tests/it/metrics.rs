//! The metrics of a one-shot load: `--metrics-file`, exact, without secrets, and read by a
//! real node_exporter's textfile collector (Debian's `prometheus-node-exporter`; scripts/test.sh
//! installs it); a busy `--metrics-listen` address refused before any row moves.
//! (tests/it/metrics_prometheus.rs has a real Prometheus scrape a scheduled run.)

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use crate::common::*;

/// `/items`: a 503 first, then 1,000 demo rows.
fn failing_once() -> Router {
    let requests = Arc::new(AtomicU32::new(0));
    {
        let requests = requests.clone();
        Router::new().route(
            "/items",
            get(move || {
                let first = requests.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    if first {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [("retry-after", "0")],
                            Vec::new(),
                        )
                    } else {
                        (StatusCode::OK, [("retry-after", "0")], demo_ndjson(1000))
                    }
                }
            }),
        )
    }
}

/// A load that fails says so in its metrics file too.
async fn a_failed_load_says_so_in_its_file(
    dir: &std::path::Path,
    file: &std::path::Path,
    table: &str,
) {
    let bad = dir.join("bad.ndjson");
    std::fs::write(&bad, "{\"id\":1}\n{\"id\":\n").unwrap();
    let run = apitap(
        &[
            "load",
            bad.to_str().unwrap(),
            "--table",
            table,
            "--metrics-file",
            file.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let text = std::fs::read_to_string(file).unwrap();
    for line in [
        "apitap_runs_total{module=\"load\",outcome=\"failure\"} 1",
        "apitap_last_run_failed{module=\"load\"} 1",
        "apitap_rows_committed_total{module=\"load\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in the metrics file:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_load_writes_its_metrics_file_without_secrets() {
    // reqwest, as apitap builds it, brings no TLS provider of its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = client().await;
    let schema = fresh_schema(&db, "metrics_load").await;
    let addr = serve(failing_once()).await;
    let dir = tempfile::tempdir().unwrap();
    let collected = dir.path().join("textfiles");
    std::fs::create_dir(&collected).unwrap();
    let file = collected.join("apitap.prom");
    let table = format!("{schema}.items");
    let url = format!("http://{addr}/items?api_key=hush-key-1234567");
    let run = apitap_env(
        &[
            "load",
            &url,
            "--table",
            &table,
            "--header",
            "Authorization: Bearer ${TOKEN}",
            "--metrics-file",
            file.to_str().unwrap(),
        ],
        &[("TOKEN", "hush-token-7654321")],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = std::fs::read_to_string(&file).unwrap();
    for secret in ["hush-key-1234567", "hush-token-7654321"] {
        assert!(!text.contains(secret), "{secret} in the metrics:\n{text}");
    }
    let source = format!("source=\"http://{addr}/items?api_key=***\"");
    for line in [
        "apitap_rows_committed_total{module=\"load\"} 1000".to_string(),
        "apitap_copy_rows_total{module=\"load\"} 1000".to_string(),
        "apitap_runs_total{module=\"load\",outcome=\"success\"} 1".to_string(),
        "apitap_runs_total{module=\"load\",outcome=\"failure\"} 0".to_string(),
        "apitap_runs_in_flight{module=\"load\"} 0".to_string(),
        format!("apitap_http_responses_total{{module=\"load\",{source},status_class=\"5xx\"}} 1"),
        format!("apitap_http_responses_total{{module=\"load\",{source},status_class=\"2xx\"}} 1"),
        format!("apitap_http_retries_total{{module=\"load\",{source}}} 1"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in the metrics file:\n{text}"
        );
    }

    // node_exporter reads the file without complaint, counters typed as counters.
    let exported = through_node_exporter(&collected).await;
    for line in [
        "node_textfile_scrape_error 0",
        "# TYPE apitap_rows_committed_total counter",
        "apitap_rows_committed_total{module=\"load\"} 1000",
        "apitap_run_duration_seconds_count{module=\"load\"} 1",
        "apitap_build_info{version=\"0.1.0\"} 1",
    ] {
        assert!(
            exported.lines().any(|l| l == line),
            "no line {line:?} in node_exporter's metrics:\n{exported}"
        );
    }

    a_failed_load_says_so_in_its_file(dir.path(), &file, &table).await;
    assert_eq!(count(&db, &table).await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_address_in_use_is_refused_before_loading() {
    let db = client().await;
    let schema = fresh_schema(&db, "metrics_busy").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let table = format!("{schema}.items");
    let run = apitap(
        &["load", "-", "--table", &table, "--metrics-listen", &addr],
        Some(demo_ndjson(10)),
    )
    .await;
    assert_fails(
        &run,
        &format!(
            "apitap: error: could not listen on {addr} for --metrics-listen: Address already in use (os error 98)"
        ),
    );
    assert!(!table_exists(&db, &table).await);
}

/// The metrics a node_exporter of the test's own serves from the `*.prom` files in `dir`.
async fn through_node_exporter(dir: &Path) -> String {
    let port = free_port();
    let mut exporter = std::process::Command::new("prometheus-node-exporter")
        .args([
            "--collector.disable-defaults",
            "--collector.textfile",
            &format!("--collector.textfile.directory={}", dir.display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-node-exporter is needed for the metrics tests (scripts/test.sh installs it)");
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = poll("node_exporter to serve its metrics", || async {
        let response = reqwest::get(&url).await.ok()?;
        response.status().is_success().then_some(())?;
        response.text().await.ok()
    })
    .await;
    let _ = exporter.kill();
    let _ = exporter.wait();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_file_that_cannot_be_written_never_hides_the_load_s_own_error() {
    let db = client().await;
    let schema = fresh_schema(&db, "metrics_nofile").await;
    let table = format!("{schema}.items");
    let nowhere = "/nonexistent-apitap-dir/apitap.prom";
    // The load succeeded: the file is the failure.
    let run = apitap(
        &["load", "-", "--table", &table, "--metrics-file", nowhere],
        Some(demo_ndjson(10)),
    )
    .await;
    assert_fails(
        &run,
        &format!(
            "apitap: error: could not write --metrics-file {nowhere}: No such file or directory"
        ),
    );
    assert_eq!(count(&db, &table).await, 10);
    // The load failed: its error is the one reported, the file's is said before it.
    let run = apitap(
        &["load", "-", "--table", &table, "--metrics-file", nowhere],
        Some(b"{\"id\": \"x\"}\n".to_vec()),
    )
    .await;
    assert_fails(&run, "record 1");
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("apitap: error: loading stdin into") && last.contains("record 1"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("apitap: could not write --metrics-file {nowhere}")),
        "{}",
        run.stderr
    );
    assert_eq!(count(&db, &table).await, 10);
}
