//! Incremental loads: the highest cursor value is stored in `apitap._state` in the same
//! transaction as the rows, and sent back to the API on the next run.

use std::sync::{Arc, Mutex};

use crate::common::*;
use axum::Router;
use axum::routing::get;

type Events = Arc<Mutex<Vec<String>>>;

/// `/events?since=T`: the events updated after T (all without it), each as
/// `{"id": …, "updated_at": …}`; remembers every `since` it was given.
fn events_api(events: Events, seen: Arc<Mutex<Vec<Option<String>>>>) -> Router {
    Router::new().route(
        "/events",
        get(
            move |axum::extract::Query(q): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >| {
                let (events, seen) = (events.clone(), seen.clone());
                async move {
                    let since = q.get("since").cloned();
                    seen.lock().unwrap().push(since.clone());
                    events
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|e| {
                            let at = e
                                .split("\"updated_at\": \"")
                                .nth(1)
                                .and_then(|rest| rest.split('"').next())
                                .unwrap_or_default();
                            since.as_deref().is_none_or(|s| at > s)
                        })
                        .map(|e| format!("{e}\n"))
                        .collect::<String>()
                }
            },
        ),
    )
}

fn event(id: &str, second: u32) -> String {
    format!("{{\"id\": {id}, \"updated_at\": \"2024-01-01T00:00:{second:02}Z\"}}")
}

async fn stored(db: &tokio_postgres::Client, key: &str) -> Option<String> {
    db.query_opt(
        "SELECT cursor_value FROM apitap._state WHERE key = $1",
        &[&key],
    )
    .await
    .ok()
    .flatten()
    .map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_is_stored_with_the_rows_and_sent_back() {
    let db = client().await;
    let schema = fresh_schema(&db, "state").await;
    let table = format!("{schema}.events");
    let key = format!("test-{schema}");
    db.batch_execute("CREATE SCHEMA IF NOT EXISTS apitap; CREATE TABLE IF NOT EXISTS apitap._state (key text PRIMARY KEY, cursor_value text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())")
        .await
        .unwrap();
    db.execute("DELETE FROM apitap._state WHERE key = $1", &[&key])
        .await
        .unwrap();
    let events: Events = Arc::new(Mutex::new(
        (1..=3).map(|i| event(&i.to_string(), i)).collect(),
    ));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let addr = serve(events_api(events.clone(), seen.clone())).await;
    let url = format!("http://{addr}/events");
    let args = [
        "load",
        &url,
        "--table",
        &table,
        "--cursor-field",
        "updated_at",
        "--cursor-param",
        "since",
        "--state-key",
        &key,
        "--summary-json",
        "-",
    ];

    let run = apitap(&args, None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(count(&db, &table).await, 3);
    assert_eq!(
        stored(&db, &key).await.as_deref(),
        Some("2024-01-01T00:00:03Z")
    );
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["cursor"], "2024-01-01T00:00:03Z");

    // The next run asks only for what is new.
    events
        .lock()
        .unwrap()
        .extend([event("4", 4), event("5", 5)]);
    let run = apitap(&args, None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        seen.lock().unwrap().last().cloned().flatten().as_deref(),
        Some("2024-01-01T00:00:03Z")
    );
    assert_eq!(count(&db, &table).await, 5);
    assert_eq!(
        stored(&db, &key).await.as_deref(),
        Some("2024-01-01T00:00:05Z")
    );

    // A failed load moves neither the rows nor the state.
    events
        .lock()
        .unwrap()
        .extend([event("6", 6), event("\"x\"", 7)]);
    let run = apitap(&args, None).await;
    assert_eq!(run.code, 1);
    assert_eq!(count(&db, &table).await, 5);
    assert_eq!(
        stored(&db, &key).await.as_deref(),
        Some("2024-01-01T00:00:05Z")
    );

    // --full-refresh asks for everything, and still records the new maximum.
    events.lock().unwrap().pop();
    db.batch_execute(&format!("TRUNCATE {table}"))
        .await
        .unwrap();
    let mut refresh = args.to_vec();
    refresh.push("--full-refresh");
    let run = apitap(&refresh, None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(seen.lock().unwrap().last().cloned().flatten(), None);
    assert_eq!(count(&db, &table).await, 6);
    assert_eq!(
        stored(&db, &key).await.as_deref(),
        Some("2024-01-01T00:00:06Z")
    );
}

/// A module appending everything `source` gives into a table named as the module.
#[cfg(feature = "sql")]
fn write_module(sql: &std::path::Path, module: &str, source: &str) {
    std::fs::write(
        sql.join(format!("{module}.sql")),
        format!("{{{{ sink(table=\"{module}\", mode=\"append\") }}}} SELECT * FROM {{{{ use_source(\"{source}\") }}}}"),
    )
    .unwrap();
}

/// No state stored for `source` under its bare name or any test module's.
#[cfg(feature = "sql")]
async fn forget_states(db: &tokio_postgres::Client, source: &str) {
    db.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS apitap; \
         CREATE TABLE IF NOT EXISTS apitap._state (key text PRIMARY KEY, cursor_value text, \
           resume text, updated_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .unwrap();
    db.execute(
        "DELETE FROM apitap._state WHERE key IN ($1, $2, $3, $4)",
        &[
            &source,
            &format!("first/{source}"),
            &format!("second/{source}"),
            &format!("third/{source}"),
        ],
    )
    .await
    .unwrap();
}

/// Two modules reading one incremental source each keep their own cursor (under
/// `module/source`), so each gets every record; a state stored under the source's name alone
/// (the key before) is taken over by a module that has none.
#[cfg(feature = "sql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_module_keeps_its_own_cursor_of_a_shared_source() {
    let db = client().await;
    let schema = fresh_schema(&db, "state_modules").await;
    let source = format!("events_{schema}");
    forget_states(&db, &source).await;
    let events: Events = Arc::new(Mutex::new(
        (1..=3).map(|i| event(&i.to_string(), i)).collect(),
    ));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let addr = serve(events_api(events.clone(), seen.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipelines.yaml"),
        format!(
            "sources:\n  - name: {source}\n    url: http://{addr}/events\n    cursor_field: updated_at\n    cursor_param: since\n\
             targets:\n  - name: pg\n    type: postgres\n    url_env: DATABASE_URL\n    schema: {schema}\n"
        ),
    )
    .unwrap();
    let sql = dir.path().join("sql");
    std::fs::create_dir(&sql).unwrap();
    write_module(&sql, "first", &source);
    write_module(&sql, "second", &source);
    let run = |module: Option<&'static str>| {
        let dir = dir.path().to_path_buf();
        async move {
            let (sql, yaml) = (dir.join("sql"), dir.join("pipelines.yaml"));
            let mut args = vec![
                "run",
                "-m",
                sql.to_str().unwrap(),
                "-y",
                yaml.to_str().unwrap(),
            ];
            if let Some(module) = module {
                args.extend(["--module", module]);
            }
            apitap(&args, None).await
        }
    };
    let done = run(None).await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    events
        .lock()
        .unwrap()
        .extend([event("4", 4), event("5", 5)]);
    // The second module runs alone first: it must not take the first module's records away.
    let done = run(Some("second")).await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    let done = run(Some("first")).await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    for module in ["first", "second"] {
        let ids: Vec<i64> = db
            .query(
                &format!("SELECT id FROM {schema}.{module} ORDER BY id"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(ids, [1, 2, 3, 4, 5], "module {module}");
        assert_eq!(
            stored(&db, &format!("{module}/{source}")).await.as_deref(),
            Some("2024-01-01T00:00:05Z")
        );
    }
    assert_eq!(
        stored(&db, &source).await,
        None,
        "nothing under the bare name"
    );

    // A state from before keys named the module: a module without its own takes it over.
    db.execute(
        "INSERT INTO apitap._state (key, cursor_value) VALUES ($1, '2024-01-01T00:00:04Z')",
        &[&source],
    )
    .await
    .unwrap();
    write_module(&sql, "third", &source);
    seen.lock().unwrap().clear();
    let done = run(Some("third")).await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert_eq!(
        seen.lock().unwrap().clone(),
        [Some("2024-01-01T00:00:04Z".to_string())]
    );
    assert_eq!(count(&db, &format!("{schema}.third")).await, 1);
    assert_eq!(
        stored(&db, &format!("third/{source}")).await.as_deref(),
        Some("2024-01-01T00:00:05Z")
    );
}

/// `/pages?page=P&token=T`: 10 NDJSON pages of 10 rows for the right token (401 without
/// it), page 4 failing while `broken` is set; records each request's page.
fn token_pages(
    broken: Arc<std::sync::atomic::AtomicBool>,
    asked: Arc<Mutex<Vec<String>>>,
) -> Router {
    Router::new().route(
        "/pages",
        get(
            move |axum::extract::Query(q): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >| {
                let (broken, asked) = (broken.clone(), asked.clone());
                async move {
                    let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                    asked.lock().unwrap().push(format!("page={page}"));
                    if q.get("token").map(String::as_str) != Some("tok-5ec2e7") {
                        return (axum::http::StatusCode::UNAUTHORIZED, String::new());
                    }
                    if page == 4 && broken.load(std::sync::atomic::Ordering::SeqCst) {
                        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new());
                    }
                    let rows = (page - 1) * 10 + 1..=(page * 10).min(95);
                    let body = rows.map(|id| format!("{{\"id\": {id}}}\n")).collect();
                    (axum::http::StatusCode::OK, body)
                }
            },
        ),
    )
}

/// The saved position of a backfill holds no secret, the rerun puts the configured one back,
/// and a position edited to point at another origin is refused before anything is sent there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_position_holds_no_secret_and_cannot_send_the_next_run_elsewhere() {
    let db = client().await;
    let schema = fresh_schema(&db, "state_position").await;
    let table = format!("{schema}.t");
    let key = format!("position-{schema}");
    let _ = db
        .execute("DELETE FROM apitap._state WHERE key = $1", &[&key])
        .await;
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (asked, elsewhere) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let addr = serve(token_pages(broken.clone(), asked.clone())).await;
    let other = serve(token_pages(broken.clone(), elsewhere.clone())).await;
    let url = format!("http://{addr}/pages");
    let args = [
        "load",
        &url,
        "--table",
        &table,
        "--state-key",
        &key,
        "--query",
        "token=tok-5ec2e7",
        "--pagination",
        "{kind: page_number, page_size: 10}",
        "--commit-every",
        "1",
        "--retry",
        "{max_attempts: 1}",
    ];
    let failed = apitap(&args, None).await;
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let resume = || async {
        db.query_one("SELECT resume FROM apitap._state WHERE key = $1", &[&key])
            .await
            .unwrap()
            .get::<_, Option<String>>(0)
            .unwrap()
    };
    let saved = resume().await;
    assert!(saved.contains("page=4"), "{saved}");
    assert!(
        !saved.contains("tok-5ec2e7"),
        "the state holds the token: {saved}"
    );

    // Someone who can write the state table points it at their own server.
    db.execute(
        "UPDATE apitap._state SET resume = replace(resume, $2, $3) WHERE key = $1",
        &[&key, &addr.to_string(), &other.to_string()],
    )
    .await
    .unwrap();
    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    let refused = apitap(&args, None).await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains(&format!("the saved page position (http://{other}/pages?"))
            && refused.stderr.contains(&format!(
                "is not on the configured source's origin (http://{addr}/pages?"
            )),
        "{}",
        refused.stderr
    );
    assert!(
        elsewhere.lock().unwrap().is_empty(),
        "a request went to the other server"
    );
    assert!(!refused.stderr.contains("tok-5ec2e7"));

    // Put back, the rerun resumes at page 4 with the configured token.
    db.execute(
        "UPDATE apitap._state SET resume = $2 WHERE key = $1",
        &[&key, &saved],
    )
    .await
    .unwrap();
    asked.lock().unwrap().clear();
    let resumed = apitap(&args, None).await;
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(
        asked.lock().unwrap().first().map(String::as_str),
        Some("page=4")
    );
    assert_eq!(count(&db, &table).await, 95);
}
