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
