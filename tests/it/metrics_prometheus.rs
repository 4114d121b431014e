//! Metrics as an operator meets them: a real Prometheus server (Debian's `prometheus`
//! package; scripts/test.sh installs it) scrapes `apitap run --schedule --metrics-listen`, and
//! the test asks Prometheus, through its HTTP query API, what arrived; `/healthz` follows a
//! module that fails and recovers.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use crate::common::*;

/// A Prometheus server of the test's own, scraping `target` every second.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: apitap\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus is needed for the metrics tests (scripts/test.sh installs it)");
        let prometheus = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let ready = format!("http://{addr}/-/ready");
        poll("Prometheus to be ready", || async {
            reqwest::get(&ready)
                .await
                .is_ok_and(|r| r.status().is_success())
                .then_some(())
        })
        .await;
        prometheus
    }

    /// The series an instant query selects, with their values.
    async fn query(&self, query: &str) -> Option<Vec<serde_json::Value>> {
        let url = reqwest::Url::parse_with_params(
            &format!("http://{}/api/v1/query", self.addr),
            [("query", query)],
        )
        .unwrap();
        let body = reqwest::get(url).await.ok()?.bytes().await.ok()?;
        let answer: serde_json::Value = serde_json::from_slice(&body).ok()?;
        assert_eq!(answer["status"], "success", "{query}: {answer}");
        answer["data"]["result"].as_array().cloned()
    }

    /// The value of `query`, an instant query that must select one series, once it has one.
    async fn value(&self, query: &str) -> Option<f64> {
        let result = self.query(query).await?;
        assert!(
            result.len() <= 1,
            "{query} selects several series: {result:?}"
        );
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Waits until Prometheus has scraped a value of `query` that `expected` accepts; returns
    /// it.
    async fn wait_for(&self, query: &str, expected: impl Fn(f64) -> bool) -> f64 {
        poll(&format!("Prometheus to have {query}"), || async {
            self.value(query).await.filter(|v| expected(*v))
        })
        .await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const POSTS: &str =
    "{\"id\":1,\"title\":\"a\"}\n{\"id\":2,\"title\":\"b\"}\n{\"id\":3,\"title\":\"c\"}\n";

/// `/posts`, three records; `/flaky`, the same or a 500 while `broken` is set.
fn api(broken: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/posts", get(|| async { POSTS }))
        .route(
            "/flaky",
            get(move || {
                let broken = broken.load(Ordering::SeqCst);
                async move {
                    if broken {
                        (StatusCode::INTERNAL_SERVER_ERROR, "database on fire")
                    } else {
                        (StatusCode::OK, POSTS)
                    }
                }
            }),
        )
}

/// The body and status of `GET url`.
async fn get_text(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_scheduled_run_and_healthz_follows_failures() {
    // reqwest, as apitap builds it, brings no TLS provider of its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let started = chrono::Utc::now().timestamp() as f64;
    let db = client().await;
    let schema = fresh_schema(&db, "metrics_run").await;
    let broken = Arc::new(AtomicBool::new(true));
    let api_addr = serve(api(broken.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    write_pipelines(dir.path(), api_addr, &schema);

    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let prometheus = Prometheus::start(metrics_addr).await;
    let stderr = std::fs::File::create(dir.path().join("apitap.log")).unwrap();
    let mut apitap = command(&[
        "run",
        "--schedule",
        "-m",
        dir.path().join("sql").to_str().unwrap(),
        "-y",
        dir.path().join("pipelines.yaml").to_str().unwrap(),
        "--metrics-listen",
        &metrics_addr.to_string(),
    ])
    .stderr(stderr)
    .spawn()
    .unwrap();
    let healthz = format!("http://{metrics_addr}/healthz");

    the_module_that_ran_once_is_exact(&prometheus, started).await;
    assert_eq!(count(&db, &format!("{schema}.good")).await, 6);
    every_dashboard_query_finds_series(&prometheus).await;
    the_failing_module_is_named_until_it_recovers(&prometheus, &healthz, &broken).await;
    apitap.kill().unwrap();
    apitap.wait().unwrap();
}

/// A config of three sources on the test API and two modules: `good` runs once, at the start,
/// reading two sources; `flaky` runs every second.
fn write_pipelines(dir: &std::path::Path, api_addr: SocketAddr, schema: &str) {
    std::fs::write(
        dir.join("pipelines.yaml"),
        format!(
            "sources:\n  - name: posts\n    url: http://{api_addr}/posts\n  - name: more\n    url: http://{api_addr}/posts\n  - name: flaky\n    url: http://{api_addr}/flaky\n    retry: {{max_attempts: 1}}\ntargets:\n  - name: pg\n    type: postgres\n    url_env: DATABASE_URL\n    schema: {schema}\n"
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.join("sql")).unwrap();
    std::fs::write(
        dir.join("sql/good.sql"),
        "{{ sink(name=\"pg\", table=\"good\") }}\nSELECT * FROM {{ use_source(\"posts\") }} UNION ALL SELECT * FROM {{ use_source(\"more\") }}",
    )
    .unwrap();
    std::fs::write(
        dir.join("sql/flaky.sql"),
        "{{ sink(name=\"pg\", table=\"flaky\") }}\n{{ schedule(\"* * * * * *\") }}\nSELECT * FROM {{ use_source(\"flaky\") }}",
    )
    .unwrap();
}

/// The module that ran once: every figure exact, as Prometheus stored it.
async fn the_module_that_ran_once_is_exact(prometheus: &Prometheus, started: f64) {
    let good = |name: &str| format!("{name}{{job=\"apitap\",module=\"good\"}}");
    let source = |name: &str, source: &str, extra: &str| {
        format!("{name}{{job=\"apitap\",module=\"good\",source=\"{source}\"{extra}}}")
    };
    let success = "{job=\"apitap\",module=\"good\",outcome=\"success\"}";
    assert_eq!(
        prometheus
            .wait_for(&format!("apitap_runs_total{success}"), |v| v == 1.0)
            .await,
        1.0
    );
    for (query, expected) in [
        (good("apitap_rows_committed_total"), 6.0),
        (good("apitap_rows_sent_total"), 6.0),
        (good("apitap_copy_rows_total"), 6.0),
        (good("apitap_rejected_records_total"), 0.0),
        (good("apitap_runs_in_flight"), 0.0),
        (good("apitap_last_run_failed"), 0.0),
        (good("apitap_run_duration_seconds_count"), 1.0),
        (
            "apitap_runs_total{job=\"apitap\",module=\"good\",outcome=\"failure\"}".into(),
            0.0,
        ),
        (
            "apitap_server_round_trips_total{job=\"apitap\",module=\"good\",statement=\"copy\"}"
                .into(),
            1.0,
        ),
        (
            "apitap_server_round_trips_total{job=\"apitap\",module=\"good\",statement=\"commit\"}"
                .into(),
            1.0,
        ),
        (
            "apitap_build_info{job=\"apitap\",version=\"0.1.0\"}".into(),
            1.0,
        ),
        ("up{job=\"apitap\"}".into(), 1.0),
    ] {
        assert_eq!(
            prometheus.value(&query).await,
            Some(expected),
            "{query} in Prometheus"
        );
    }
    // Each source of the module has its own series.
    for name in ["posts", "more"] {
        for (query, expected) in [
            (
                source("apitap_http_responses_total", name, ",status_class=\"2xx\""),
                1.0,
            ),
            (
                source("apitap_source_bytes_total", name, ""),
                POSTS.len() as f64,
            ),
            (source("apitap_source_pages_total", name, ""), 0.0),
            (source("apitap_http_retries_total", name, ""), 0.0),
            (source("apitap_throttle_waits_total", name, ""), 0.0),
        ] {
            assert_eq!(
                prometheus.value(&query).await,
                Some(expected),
                "{query} in Prometheus"
            );
        }
    }
    let last_success = prometheus
        .value(&good("apitap_last_success_timestamp_seconds"))
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        (started - 1.0..=now + 1.0).contains(&last_success),
        "last success at {last_success}, the test ran from {started} to {now}"
    );
}

/// Every query of the bundled Grafana dashboard is valid PromQL over these series and finds
/// some.
async fn every_dashboard_query_finds_series(prometheus: &Prometheus) {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/grafana/apitap.json"
        ))
        .unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let query = target["expr"]
                .as_str()
                .unwrap()
                .replace("$module", ".*")
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h");
            poll(
                &format!("dashboard query {query} to find series"),
                || async { prometheus.query(&query).await.filter(|r| !r.is_empty()) },
            )
            .await;
        }
    }
}

/// The scheduled module fails while its API is `broken`: the failure is in Prometheus and
/// /healthz says which module and why; mended, the next run succeeds and health comes back.
async fn the_failing_module_is_named_until_it_recovers(
    prometheus: &Prometheus,
    healthz: &str,
    broken: &AtomicBool,
) {
    prometheus
        .wait_for(
            "apitap_last_run_failed{job=\"apitap\",module=\"flaky\"}",
            |v| v == 1.0,
        )
        .await;
    prometheus
        .wait_for(
            "apitap_http_responses_total{job=\"apitap\",module=\"flaky\",source=\"flaky\",status_class=\"5xx\"}",
            |v| v >= 1.0,
        )
        .await;
    let (status, body) = get_text(healthz).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("module flaky: last run failed at ")
            && body.contains("500 Internal Server Error")
            && body.contains("database on fire")
            && body.lines().count() == 1,
        "{body}"
    );

    // Mended, the next run succeeds and health comes back.
    broken.store(false, Ordering::SeqCst);
    poll("/healthz to answer 200", || async {
        let (status, body) = get_text(healthz).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(get_text(healthz).await, (200, "ok\n".to_string()));
    prometheus
        .wait_for(
            "apitap_last_run_failed{job=\"apitap\",module=\"flaky\"}",
            |v| v == 0.0,
        )
        .await;
    let failures = prometheus
        .value("apitap_runs_total{job=\"apitap\",module=\"flaky\",outcome=\"failure\"}")
        .await
        .unwrap();
    assert!(failures >= 1.0, "{failures}");
    prometheus
        .wait_for(
            "apitap_runs_total{job=\"apitap\",module=\"flaky\",outcome=\"success\"}",
            |v| v >= 1.0,
        )
        .await;
}
