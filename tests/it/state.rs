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

/// Two modules reading one incremental source each keep their own cursor (under
/// `module/source`), so each gets every record; a state stored under the source's name alone
/// (the key before) is taken over by a module that has none.
#[cfg(feature = "sql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_module_keeps_its_own_cursor_of_a_shared_source() {
    let db = client().await;
    let schema = fresh_schema(&db, "state_modules").await;
    let source = format!("events_{schema}");
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
    for module in ["first", "second"] {
        std::fs::write(
            sql.join(format!("{module}.sql")),
            format!("{{{{ sink(table=\"{module}\", mode=\"append\") }}}} SELECT * FROM {{{{ use_source(\"{source}\") }}}}"),
        )
        .unwrap();
    }
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
    std::fs::write(
        sql.join("third.sql"),
        format!("{{{{ sink(table=\"third\", mode=\"append\") }}}} SELECT * FROM {{{{ use_source(\"{source}\") }}}}"),
    )
    .unwrap();
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
