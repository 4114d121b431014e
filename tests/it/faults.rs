//! Fault injection: the PostgreSQL connection killed mid-COPY, the process killed mid-load,
//! then a rerun. No row may be lost or loaded twice, and the incremental state must always
//! equal the data.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::common::*;
use axum::Router;
use axum::body::Body;
use axum::extract::Query;
use axum::routing::get;
use bytes::Bytes;

/// `/rows?after=N`: rows `N+1..=total` as NDJSON, 500 at a time, 20 ms apart, so a load
/// is still in its COPY when the test strikes.
fn api(total: Arc<AtomicU64>) -> Router {
    Router::new().route(
        "/rows",
        get(
            move |Query(q): Query<std::collections::HashMap<String, String>>| {
                let total = total.load(Ordering::SeqCst);
                async move {
                    let after: u64 = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                    let stream = futures_util::stream::unfold(after, move |next| async move {
                        if next >= total {
                            return None;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let end = (next + 500).min(total);
                        let mut out = Vec::new();
                        for id in next + 1..=end {
                            out.extend_from_slice(
                                format!("{{\"id\": {id}, \"name\": \"row {id}\"}}\n").as_bytes(),
                            );
                        }
                        Some((Ok::<_, Infallible>(Bytes::from(out)), end))
                    });
                    Body::from_stream(stream)
                }
            },
        ),
    )
}

fn load_args(addr: std::net::SocketAddr, table: &str) -> Vec<String> {
    [
        "load",
        &format!("http://{addr}/rows"),
        "--table",
        table,
        "--cursor-field",
        "id",
        "--cursor-param",
        "after",
        "--batch-size",
        "100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Rows, distinct ids, highest id, and the stored cursor.
async fn facts(
    db: &tokio_postgres::Client,
    table: &str,
    key: &str,
) -> (i64, i64, i64, Option<String>) {
    let row = db
        .query_one(
            &format!("SELECT count(*), count(DISTINCT id), coalesce(max(id), 0) FROM {table}"),
            &[],
        )
        .await
        .unwrap();
    let state = db
        .query_opt(
            "SELECT cursor_value FROM apitap._state WHERE key = $1",
            &[&key],
        )
        .await
        .ok()
        .flatten()
        .and_then(|r| r.get(0));
    (row.get(0), row.get(1), row.get(2), state)
}

/// A fresh schema, and no state left for its table by an earlier run of the test.
async fn fresh(db: &tokio_postgres::Client, name: &str) -> (String, String) {
    let schema = fresh_schema(db, name).await;
    let table = format!("{schema}.t");
    let _ = db
        .execute("DELETE FROM apitap._state WHERE key = $1", &[&table])
        .await;
    (schema, table)
}

async fn run(args: &[String]) -> Run {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    apitap(&args, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_copy_loses_nothing_and_a_rerun_loads_each_row_once() {
    let db = client().await;
    let (schema, table) = fresh(&db, "fault_conn").await;
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, name text)"
    ))
    .await
    .unwrap();
    let total = Arc::new(AtomicU64::new(5_000));
    let addr = serve(api(total.clone())).await;
    let args = load_args(addr, &table);

    // A first, clean run: rows 1..=5000 and their state.
    let first = run(&args).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(
        facts(&db, &table, &table).await,
        (5_000, 5_000, 5_000, Some("5000".into()))
    );

    // More rows appear; this run's connection is killed in the middle of its COPY.
    total.store(20_000, Ordering::SeqCst);
    let killed = {
        let args = args.clone();
        tokio::spawn(async move { run(&args).await })
    };
    let pid = wait_for_copy(&db, &schema, 500).await;
    db.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let killed = killed.await.unwrap();
    assert_eq!(killed.code, 1, "{}", killed.stderr);
    assert!(
        killed.stderr.contains(&format!(
            "failed; the table is unchanged: lost the connection to PostgreSQL during COPY on {table}: \
             the server ended the session or the network failed (the server log says which)"
        )),
        "{}",
        killed.stderr
    );
    assert_eq!(
        facts(&db, &table, &table).await,
        (5_000, 5_000, 5_000, Some("5000".into()))
    );

    // The rerun asks for the rows after 5000, and gets each exactly once.
    let rerun = run(&args).await;
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    assert_eq!(
        facts(&db, &table, &table).await,
        (20_000, 20_000, 20_000, Some("20000".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_load_loses_nothing_and_a_rerun_loads_each_row_once() {
    let db = client().await;
    let (schema, table) = fresh(&db, "fault_kill").await;
    let total = Arc::new(AtomicU64::new(3_000));
    let addr = serve(api(total.clone())).await;
    let args = load_args(addr, &table);
    let first = run(&args).await;
    assert_eq!(first.code, 0, "{}", first.stderr);

    total.store(15_000, Ordering::SeqCst);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = command(&argv).spawn().unwrap();
    // Killed with rows of this run already in its COPY.
    wait_for_copy(&db, &schema, 500).await;
    // SIGKILL: no handler runs, no rollback is sent; the server must notice on its own.
    let status = std::process::Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), None, "killed by a signal");
    assert_eq!(
        facts(&db, &table, &table).await,
        (3_000, 3_000, 3_000, Some("3000".into()))
    );

    let rerun = run(&args).await;
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    assert_eq!(
        facts(&db, &table, &table).await,
        (15_000, 15_000, 15_000, Some("15000".into()))
    );
    // Nothing new: a third run loads nothing and changes nothing.
    let again = run(&args).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        facts(&db, &table, &table).await,
        (15_000, 15_000, 15_000, Some("15000".into()))
    );
}

/// `/pages?page=P[&after=N]`: NDJSON pages of 100 rows (ids above `after`, 1000 in all);
/// answers 500 for page 7 while `broken` is set, and records every page it was asked for.
fn paged_api(broken: Arc<AtomicU64>, asked: Arc<std::sync::Mutex<Vec<String>>>) -> Router {
    Router::new().route(
        "/pages",
        get(
            move |Query(q): Query<std::collections::HashMap<String, String>>| {
                let broken = broken.load(Ordering::SeqCst) == 1;
                let asked = asked.clone();
                async move {
                    let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                    let after: u64 = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                    asked.lock().unwrap().push(format!(
                        "page={page}{}",
                        q.get("after")
                            .map(|a| format!(" after={a}"))
                            .unwrap_or_default()
                    ));
                    if broken && page == 7 {
                        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new());
                    }
                    let first = after + (page - 1) * 100 + 1;
                    let body: String = (first..first + 100)
                        .filter(|id| *id <= 1000)
                        .map(|id| format!("{{\"id\": {id}, \"name\": \"row {id}\"}}\n"))
                        .collect();
                    (axum::http::StatusCode::OK, body)
                }
            },
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_committing_every_few_pages_resumes_after_its_last_commit() {
    let db = client().await;
    let (_, table) = fresh(&db, "fault_resume").await;
    let broken = Arc::new(AtomicU64::new(1));
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let addr = serve(paged_api(broken.clone(), asked.clone())).await;
    let args: Vec<String> = [
        "load",
        &format!("http://{addr}/pages"),
        "--table",
        &table,
        "--pagination",
        "{kind: page_number, page_size: 100}",
        "--commit-every",
        "3",
        "--cursor-field",
        "id",
        "--cursor-param",
        "after",
        "--retry",
        "{max_attempts: 1}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    // Page 7 fails: pages 1-6 were committed in two groups of three, with their state.
    let first = run(&args).await;
    assert_eq!(first.code, 1, "{}", first.stderr);
    assert!(
        first.stderr.contains(&format!(
            "failed; 600 rows in 2 commits are in the table, and a rerun resumes after them: \
             HTTP 503 Service Unavailable from http://{addr}/pages?page=7&per_page=100"
        )),
        "{}",
        first.stderr
    );
    assert_eq!(
        facts(&db, &table, &table).await,
        (600, 600, 600, Some("600".into()))
    );
    let resume: Option<String> = db
        .query_one("SELECT resume FROM apitap._state WHERE key = $1", &[&table])
        .await
        .unwrap()
        .get(0);
    assert!(resume.unwrap().contains("page=7"));

    // The rerun starts at page 7, with the query the backfill began with (no `after`).
    broken.store(0, Ordering::SeqCst);
    asked.lock().unwrap().clear();
    let rerun = run(&args).await;
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    assert_eq!(
        asked.lock().unwrap().clone(),
        vec!["page=7", "page=8", "page=9", "page=10", "page=11"]
    );
    assert_eq!(
        facts(&db, &table, &table).await,
        (1000, 1000, 1000, Some("1000".into()))
    );
    let resume: Option<String> = db
        .query_one("SELECT resume FROM apitap._state WHERE key = $1", &[&table])
        .await
        .unwrap()
        .get(0);
    assert_eq!(resume, None, "a finished backfill leaves nothing to resume");

    // The next run is an ordinary incremental one: after the highest id.
    asked.lock().unwrap().clear();
    let next = run(&args).await;
    assert_eq!(next.code, 0, "{}", next.stderr);
    assert_eq!(asked.lock().unwrap().clone(), vec!["page=1 after=1000"]);
    assert_eq!(
        facts(&db, &table, &table).await,
        (1000, 1000, 1000, Some("1000".into()))
    );
}

async fn stored_resume(db: &tokio_postgres::Client, key: &str) -> Option<String> {
    db.query_opt("SELECT resume FROM apitap._state WHERE key = $1", &[&key])
        .await
        .unwrap()
        .and_then(|row| row.get(0))
}

/// Regression: a finished `--commit-every` backfill without a cursor left its last position
/// behind, and the same command again started there, loading 100 of the 1,000 rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_backfill_without_a_cursor_leaves_nothing_to_resume() {
    let db = client().await;
    let (_, table) = fresh(&db, "fault_backfill_done").await;
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let addr = serve(paged_api(Arc::new(AtomicU64::new(0)), asked.clone())).await;
    let args: Vec<String> = [
        "load",
        &format!("http://{addr}/pages"),
        "--table",
        &table,
        "--pagination",
        "{kind: page_number, page_size: 100}",
        "--commit-every",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let all_pages: Vec<String> = (1..=11).map(|p| format!("page={p}")).collect();
    for (round, rows) in [(1, 1000), (2, 2000)] {
        asked.lock().unwrap().clear();
        let done = run(&args).await;
        assert_eq!(done.code, 0, "{}", done.stderr);
        assert_eq!(asked.lock().unwrap().clone(), all_pages, "round {round}");
        assert_eq!(facts(&db, &table, &table).await, (rows, 1000, 1000, None));
        assert_eq!(stored_resume(&db, &table).await, None, "round {round}");
    }
}

/// A position left by a failed backfill is cleared by a later load that read everything
/// (here one without --commit-every), so the next backfill starts at page 1 rather than
/// skipping the pages before the old position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_reads_everything_clears_an_old_backfill_position() {
    let db = client().await;
    let (_, table) = fresh(&db, "fault_backfill_stale").await;
    let broken = Arc::new(AtomicU64::new(1));
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let addr = serve(paged_api(broken.clone(), asked.clone())).await;
    let url = format!("http://{addr}/pages");
    let base = [
        "load",
        url.as_str(),
        "--table",
        &table,
        "--pagination",
        "{kind: page_number, page_size: 100}",
        "--retry",
        "{max_attempts: 1}",
    ];
    let backfill: Vec<String> = base
        .iter()
        .chain(&["--commit-every", "3"])
        .map(|s| s.to_string())
        .collect();
    let failed = run(&backfill).await;
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert!(stored_resume(&db, &table).await.unwrap().contains("page=7"));

    broken.store(0, Ordering::SeqCst);
    db.batch_execute(&format!("TRUNCATE {table}"))
        .await
        .unwrap();
    let whole: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    let done = run(&whole).await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert_eq!(facts(&db, &table, &table).await, (1000, 1000, 1000, None));
    assert_eq!(stored_resume(&db, &table).await, None);

    asked.lock().unwrap().clear();
    db.batch_execute(&format!("TRUNCATE {table}"))
        .await
        .unwrap();
    let again = run(&backfill).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        asked.lock().unwrap().first().map(String::as_str),
        Some("page=1")
    );
    assert_eq!(facts(&db, &table, &table).await, (1000, 1000, 1000, None));
}

/// `/slow_pages?page=P`: 400 NDJSON pages of 25 rows (ids 1..=10,000), each answered after
/// 20 ms, so a backfill of them takes seconds and can be killed anywhere in it.
fn slow_pages() -> Router {
    Router::new().route(
        "/slow_pages",
        get(
            move |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                tokio::time::sleep(Duration::from_millis(20)).await;
                let first = (page - 1) * 25 + 1;
                (first..first + 25)
                    .filter(|id| *id <= 10_000)
                    .map(|id| format!("{{\"id\": {id}, \"name\": \"row {id}\"}}\n"))
                    .collect::<String>()
            },
        ),
    )
}

/// The soak test of `--commit-every`: a backfill SIGKILLed at 20 random moments (seeded;
/// APITAP_SOAK_SEED replays a run), then rerun until it finishes, loads every row exactly
/// once, with the cursor at the highest id and no position left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_killed_at_random_moments_loads_every_row_exactly_once() {
    let db = client().await;
    let (_, table) = fresh(&db, "fault_soak").await;
    let addr = serve(slow_pages()).await;
    let url = format!("http://{addr}/slow_pages");
    let args = [
        "load",
        url.as_str(),
        "--table",
        &table,
        "--pagination",
        "{kind: page_number, page_size: 25}",
        "--commit-every",
        "2",
        "--cursor-field",
        "id",
    ];
    let seed: u64 = std::env::var("APITAP_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026);
    // xorshift64: the kill moments, reproducible from the seed.
    let mut state = seed.max(1);
    let mut next_delay = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        Duration::from_millis(state % 400)
    };
    let mut kills = 0;
    let mut finished = false;
    // Each run resumes after the last commit of the one before.
    while kills < 20 {
        let mut child = command(&args).spawn().unwrap();
        // The random moment itself is the point here, not a stand-in for a state.
        tokio::time::sleep(next_delay()).await;
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            assert!(
                status.success(),
                "seed {seed}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            finished = true;
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    assert_eq!(
        kills, 20,
        "seed {seed}: the backfill finished before 20 kills"
    );
    assert!(!finished);
    let (partial, ..) = facts(&db, &table, &table).await;
    assert!(partial > 0, "seed {seed}: no run got as far as a commit");
    let rerun = apitap(&args, None).await;
    assert_eq!(rerun.code, 0, "seed {seed}: {}", rerun.stderr);
    assert_eq!(
        facts(&db, &table, &table).await,
        (10_000, 10_000, 10_000, Some("10000".into())),
        "seed {seed}, after {kills} kills"
    );
    assert_eq!(stored_resume(&db, &table).await, None, "seed {seed}");
}
