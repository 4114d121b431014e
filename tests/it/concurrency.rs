//! Overlapping runs: a second run of one incremental load waits for the first and loads only
//! what is new; one that cannot get the lock in time fails, naming who holds it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::common::*;
use axum::Router;
use axum::extract::Query;
use axum::routing::get;

/// apitap's advisory locks: (this, hashtext('state:KEY' or 'table:"schema"."table"')).
const NAMESPACE: i32 = 0x6170_6974;

/// `/rows?after=N`: rows N+1..=total as NDJSON, each answer held until `gate` gives a permit;
/// counts the requests and remembers each `after`.
fn gated_api(
    total: Arc<AtomicU64>,
    gate: Arc<tokio::sync::Semaphore>,
    asked: Arc<std::sync::Mutex<Vec<Option<String>>>>,
) -> Router {
    Router::new().route(
        "/rows",
        get(
            move |Query(q): Query<std::collections::HashMap<String, String>>| {
                let (total, gate, asked) = (total.clone(), gate.clone(), asked.clone());
                async move {
                    asked.lock().unwrap().push(q.get("after").cloned());
                    let _permit = gate.acquire().await.unwrap();
                    let after: u64 = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                    (after + 1..=total.load(Ordering::SeqCst))
                        .map(|id| format!("{{\"id\": {id}, \"name\": \"row {id}\"}}\n"))
                        .collect::<String>()
                }
            },
        ),
    )
}

async fn asked_count(asked: &std::sync::Mutex<Vec<Option<String>>>, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while asked.lock().unwrap().len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the API was never asked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_of_an_incremental_load_waits_and_loads_only_what_is_new() {
    let db = client().await;
    let schema = fresh_schema(&db, "overlap").await;
    let table = format!("{schema}.rows");
    let key = format!("overlap-{schema}");
    let _ = db
        .execute("DELETE FROM apitap._state WHERE key = $1", &[&key])
        .await;
    let total = Arc::new(AtomicU64::new(1000));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let addr = serve(gated_api(total.clone(), gate.clone(), asked.clone())).await;
    let args: Vec<String> = [
        "load",
        &format!("http://{addr}/rows"),
        "--table",
        &table,
        "--cursor-field",
        "id",
        "--cursor-param",
        "after",
        "--state-key",
        &key,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let start = |args: Vec<String>| {
        tokio::spawn(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            apitap(&args, None).await
        })
    };

    // The first run has read the state and is waiting for its rows.
    let first = start(args.clone());
    asked_count(&asked, 1).await;
    // The second starts meanwhile and must wait for the first's lock, not read the state.
    let second = start(args.clone());
    wait_until(
        &db,
        "the second run waiting for the lock",
        "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
           AND classid = $1::int8::oid AND objid = (hashtext($2)::int8 & 4294967295)::oid)",
        &[&i64::from(NAMESPACE), &format!("state:{key}")],
    )
    .await;
    assert_eq!(
        asked.lock().unwrap().len(),
        1,
        "the second run asked the API too early"
    );
    gate.add_permits(1000);
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(
        asked.lock().unwrap().clone(),
        [None, Some("1000".to_string())],
        "the second run asks for what came after the first's rows"
    );
    let row = db
        .query_one(
            &format!("SELECT count(*), count(DISTINCT id) FROM {table}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1000, 1000));
}

/// Holds apitap's lock on `name` from a session of the test's own, named `locker`.
async fn hold_lock(name: &str) -> (tokio_postgres::Client, i32) {
    let holder = client().await;
    holder
        .batch_execute("SET application_name = 'locker'")
        .await
        .unwrap();
    holder
        .execute(
            "SELECT pg_advisory_lock($1, hashtext($2))",
            &[&NAMESPACE, &name],
        )
        .await
        .unwrap();
    let pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    (holder, pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_cannot_get_the_lock_in_time_names_who_holds_it() {
    let db = client().await;
    let schema = fresh_schema(&db, "lock_held").await;
    let table = format!("{schema}.rows");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), demo_ndjson(10)).unwrap();
    let path = file.path().to_str().unwrap();

    // An incremental load: its state key.
    let key = format!("held-{schema}");
    let (holder, pid) = hold_lock(&format!("state:{key}")).await;
    let run = apitap(
        &[
            "load",
            path,
            "--table",
            &table,
            "--cursor-field",
            "id",
            "--state-key",
            &key,
            "--lock-timeout",
            "0.3",
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "another run is loading state key {key:?}: it is held by server process {pid} (application \"locker\", user "
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "did not come free in 0.3 s; wait for that run to end (or end it with SELECT pg_terminate_backend(pid)), \
             or wait longer with --lock-timeout (YAML lock_timeout_secs)"
        ),
        "{}",
        run.stderr
    );
    assert!(!table_exists(&db, &table).await);
    holder
        .batch_execute("SELECT pg_advisory_unlock_all()")
        .await
        .unwrap();

    // A replace: its table. An append into the same table does not wait.
    let (holder, pid) = hold_lock(&format!("table:\"{schema}\".\"rows\"")).await;
    let append = apitap(
        &["load", path, "--table", &table, "--lock-timeout", "0.3"],
        None,
    )
    .await;
    assert_eq!(append.code, 0, "{}", append.stderr);
    let replace = apitap(
        &[
            "load",
            path,
            "--table",
            &table,
            "--mode",
            "replace",
            "--lock-timeout",
            "0.3",
        ],
        None,
    )
    .await;
    assert_eq!(replace.code, 1, "{}", replace.stderr);
    assert!(
        replace.stderr.contains(&format!(
            "another run is loading table \"{schema}\".\"rows\": it is held by server process {pid} (application \"locker\""
        )),
        "{}",
        replace.stderr
    );
    assert_eq!(count(&db, &table).await, 10);
    holder
        .batch_execute("SELECT pg_advisory_unlock_all()")
        .await
        .unwrap();
    let replace = apitap(
        &[
            "load",
            path,
            "--table",
            &table,
            "--mode",
            "replace",
            "--lock-timeout",
            "0.3",
        ],
        None,
    )
    .await;
    assert_eq!(replace.code, 0, "{}", replace.stderr);
}

/// Whether a replace of `table` is waiting in the queue for its swap's lock.
const SWAP_WAITING: &str = "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'relation' \
     AND relation = $1::text::regclass AND mode = 'AccessExclusiveLock' AND NOT granted)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replace_behind_a_long_reader_never_leaves_other_readers_stuck() {
    let db = client().await;
    let schema = fresh_schema(&db, "swap_reader").await;
    let table = format!("{schema}.rows");
    let (old, new) = (
        tempfile::NamedTempFile::new().unwrap(),
        tempfile::NamedTempFile::new().unwrap(),
    );
    std::fs::write(old.path(), demo_ndjson(10)).unwrap();
    std::fs::write(new.path(), demo_ndjson(20)).unwrap();
    let created = apitap(
        &["load", old.path().to_str().unwrap(), "--table", &table],
        None,
    )
    .await;
    assert_eq!(created.code, 0, "{}", created.stderr);

    // A long reader: a transaction that has read the table and stays open.
    let reader = client().await;
    reader
        .batch_execute(&format!(
            "SET application_name = 'long-reader'; BEGIN; SELECT count(*) FROM {table}"
        ))
        .await
        .unwrap();
    let reader_pid: i32 = reader
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let replace = |timeout: &'static str| {
        let (path, table) = (new.path().to_str().unwrap().to_string(), table.clone());
        tokio::spawn(async move {
            let args = [
                "load",
                &path,
                "--table",
                &table,
                "--mode",
                "replace",
                "--lock-timeout",
                timeout,
            ];
            apitap(&args, None).await
        })
    };

    // While the replace tries for its lock, other readers still get through.
    let gives_up = replace("2");
    wait_until(
        &db,
        "the swap waiting for its lock",
        SWAP_WAITING,
        &[&table],
    )
    .await;
    let other = client().await;
    let read = tokio::time::timeout(
        Duration::from_secs(60),
        other.query_one(&format!("SELECT count(*) FROM {table}"), &[]),
    )
    .await
    .expect("a reader was stuck behind the swap")
    .unwrap();
    assert_eq!(read.get::<_, i64>(0), 10);
    let gave_up = gives_up.await.unwrap();
    assert_eq!(gave_up.code, 1, "{}", gave_up.stderr);
    assert!(
        gave_up.stderr.contains(&format!(
            "could not swap the new rows into {table}: it stayed in use for 2 s by server process {reader_pid} (application \"long-reader\", user "
        )),
        "{}",
        gave_up.stderr
    );
    assert_eq!(count(&db, &table).await, 10);

    // A reader that finishes while the replace waits lets it through.
    let goes_through = replace("60");
    wait_until(
        &db,
        "the swap waiting for its lock",
        SWAP_WAITING,
        &[&table],
    )
    .await;
    reader.batch_execute("COMMIT").await.unwrap();
    let done = goes_through.await.unwrap();
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert_eq!(count(&db, &table).await, 20);
}

/// `/held`: ids 1..=6000 as NDJSON, the first 5,000 at once (more than the fetch stage's
/// read of a chunk) and the rest once `gate` opens; `/free`: ids 6001..=7000 at once.
fn two_parts(gate: Arc<tokio::sync::Notify>) -> Router {
    let rows = |ids: std::ops::RangeInclusive<u64>| -> String {
        ids.map(|id| format!("{{\"id\": {id}, \"name\": \"row {id}\"}}\n"))
            .collect()
    };
    Router::new()
        .route(
            "/held",
            get(move || {
                let gate = gate.clone();
                async move {
                    let first = futures_util::stream::once(async move {
                        Ok::<_, std::io::Error>(bytes::Bytes::from(rows(1..=5000)))
                    });
                    let rest = futures_util::stream::once(async move {
                        gate.notified().await;
                        Ok::<_, std::io::Error>(bytes::Bytes::from(rows(5001..=6000)))
                    });
                    axum::body::Body::from_stream(futures_util::StreamExt::chain(first, rest))
                }
            }),
        )
        .route("/free", get(move || async move { rows(6001..=7000) }))
        .route(
            "/other",
            get(|| async { "{\"id\": 1, \"score\": 1.5}\n{\"id\": 2, \"score\": 2.5}\n" }),
        )
}

/// Starts a load of `path` into `table` that samples 5 records and writes batches of 100.
fn start_load(
    addr: std::net::SocketAddr,
    path: &'static str,
    table: &str,
) -> tokio::task::JoinHandle<Run> {
    let (url, table) = (format!("http://{addr}{path}"), table.to_string());
    tokio::spawn(async move {
        let args = [
            "load",
            &url,
            "--table",
            &table,
            "--sample",
            "5",
            "--batch-size",
            "100",
        ];
        apitap(&args, None).await
    })
}

/// Waits until a CREATE TABLE into `schema` waits for another session's transaction.
async fn wait_for_blocked_create(db: &tokio_postgres::Client, schema: &str) {
    wait_until(
        db,
        "the second CREATE TABLE waiting for the first load",
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                        WHERE wait_event_type = 'Lock' AND query LIKE 'CREATE TABLE%' || $1 || '%')",
        &[&schema],
    )
    .await;
}

/// A load whose table another load created meanwhile without its columns stops, naming
/// them; the table keeps what the other load put in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_created_meanwhile_without_this_load_s_columns_is_not_loaded() {
    let db = client().await;
    let schema = fresh_schema(&db, "other_creator").await;
    let table = format!("{schema}.parts");
    let gate = Arc::new(tokio::sync::Notify::new());
    let addr = serve(two_parts(gate.clone())).await;
    let first = start_load(addr, "/held", &table);
    wait_for_copy(&db, &schema, 5).await;
    let second = start_load(addr, "/other", &table);
    wait_for_blocked_create(&db, &schema).await;
    gate.notify_one();
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_fails(
        &second,
        "another session created the table while this load was starting, without the columns score double precision this load needs",
    );
    assert_eq!(count(&db, &table).await, 6000);
}

/// Two loads creating one new table at once (a scripted backfill of two parts): the second
/// one's CREATE TABLE waits for the first's transaction, finds the table it made, and
/// appends into it. Both succeed, with every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_loads_creating_one_new_table_at_once_both_land() {
    let db = client().await;
    let schema = fresh_schema(&db, "two_creators").await;
    let table = format!("{schema}.parts");
    let gate = Arc::new(tokio::sync::Notify::new());
    let addr = serve(two_parts(gate.clone())).await;
    let load = |path: &'static str| {
        let (url, table) = (format!("http://{addr}{path}"), table.clone());
        tokio::spawn(async move {
            let args = [
                "load",
                &url,
                "--table",
                &table,
                "--sample",
                "5",
                "--batch-size",
                "5",
            ];
            apitap(&args, None).await
        })
    };
    // The first creates the table and COPYs its first rows, then waits for the rest.
    let first = load("/held");
    wait_for_copy(&db, &schema, 5).await;
    // The second plans the table as new too; its CREATE TABLE waits for the first.
    let second = load("/free");
    wait_until(
        &db,
        "the second CREATE TABLE waiting for the first load",
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                        WHERE wait_event_type = 'Lock' AND query LIKE 'CREATE TABLE%' || $1 || '%')",
        &[&schema],
    )
    .await;
    gate.notify_one();
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(first.stderr.contains("(created)"), "{}", first.stderr);
    assert!(!second.stderr.contains("(created)"), "{}", second.stderr);
    assert_eq!(id_facts(&db, &table).await, (7000, 7000, 7000 * 7001 / 2));
}
