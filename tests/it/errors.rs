//! Every failure gives one clear line on stderr, a non-zero exit, and leaves the target
//! exactly as it was.

use std::convert::Infallible;
use std::time::Duration;

use crate::common::*;
use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;

/// One line: the error, on stderr, with no panic or backtrace.
#[track_caller]
fn assert_one_line_error(run: &Run, expected: &str) {
    assert_fails(run, expected);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {}", run.stderr);
    assert!(lines[0].starts_with("apitap: error: "), "{}", lines[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_names_the_line_and_column() {
    let db = client().await;
    let schema = fresh_schema(&db, "malformed").await;
    let table = guarded_table(&db, &schema).await;
    let input = b"{\"id\": 2, \"name\": \"a\"}\n{\"id\": 3, \"name\": \"b\"}\n{\"id\": 4, \"name\" \"c\"}\n".to_vec();
    let run = apitap(&["load", "-", "--table", &table], Some(input)).await;
    assert_one_line_error(
        &run,
        &format!(
            "loading stdin into {table} failed; the table is unchanged: stdin: line 3, column 18 (record 3): malformed JSON: expected ':' after the key, found '\"'"
        ),
    );
    assert_unchanged(&db, &table).await;

    // Into a missing table: it must still be missing afterwards.
    let missing = format!("{schema}.never");
    let run = apitap(
        &["load", "-", "--table", &missing],
        Some(b"{\"a\": 1}\n{\"a\": }\n".to_vec()),
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(!table_exists(&db, &missing).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_name_the_column_record_and_value() {
    let db = client().await;
    let schema = fresh_schema(&db, "wrong_type").await;
    let table = guarded_table(&db, &schema).await;
    let mut input = Vec::new();
    for i in 2..10_000 {
        input.extend_from_slice(format!("{{\"id\": {i}, \"name\": \"n{i}\"}}\n").as_bytes());
    }
    input.extend_from_slice(b"{\"id\": \"12x\", \"name\": \"bad\"}\n");
    let run = apitap(&["load", "-", "--table", &table], Some(input)).await;
    assert_one_line_error(
        &run,
        "stdin: line 9999 (record 9999): column \"id\": \"12x\" is not an integer (bigint)",
    );
    assert_unchanged(&db, &table).await;

    // (Under the default --schema evolve the column would widen to numeric instead.)
    let run = apitap(
        &["load", "-", "--table", &table, "--schema", "freeze"],
        Some(b"{\"id\": 18446744073709551616}\n".to_vec()),
    )
    .await;
    assert_one_line_error(
        &run,
        "line 1 (record 1): column \"id\": 18446744073709551616 is out of range for bigint",
    );
    assert_unchanged(&db, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_fields_follow_the_schema_policy() {
    let db = client().await;
    let schema = fresh_schema(&db, "fields").await;
    let table = guarded_table(&db, &schema).await;
    let input =
        || Some(b"{\"id\": 2, \"name\": \"a\", \"colour\": \"red\", \"size\": 3}\n".to_vec());

    let run = apitap(
        &["load", "-", "--table", &table, "--schema", "freeze"],
        input(),
    )
    .await;
    assert_one_line_error(
        &run,
        &format!(
            "line 1 (record 1): field \"colour\" is not a column of {table}, and --schema freeze adds none; add the column, or use --schema evolve (add it) or --schema discard (drop such fields)"
        ),
    );
    assert_unchanged(&db, &table).await;

    let run = apitap(
        &["load", "-", "--table", &table, "--schema", "discard"],
        input(),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "apitap: discarded 2 field(s) without a column in {table}: colour, size"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(count(&db, &table).await, 2);

    // The default evolves the table: new nullable columns, in the load's transaction.
    let run = apitap(
        &["load", "-", "--table", &table],
        Some(b"{\"id\": 3, \"name\": \"b\", \"colour\": \"red\", \"size\": 3}\n".to_vec()),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "apitap: added 2 column(s) to {table} for new fields: colour, size"
        )),
        "{}",
        run.stderr
    );
    let row = db
        .query_one(
            &format!("SELECT colour, size FROM {table} WHERE id = 3"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i64>(1)),
        ("red".to_string(), 3)
    );

    // A failed load rolls its new columns back with everything else.
    let run = apitap(
        &["load", "-", "--table", &table],
        Some(b"{\"id\": 4, \"weight\": 1.5}\n{\"id\": \"x\"}\n".to_vec()),
    )
    .await;
    assert_eq!(run.code, 1);
    let weight: bool = db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND column_name = 'weight')",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!weight, "the column added by a failed load must not remain");

    // A field first seen after the sample of a new table is not silently dropped.
    let late = format!("{schema}.late");
    let input = b"{\"a\": 1}\n{\"a\": 2}\n{\"a\": 3}\n{\"a\": 4, \"b\": true}\n".to_vec();
    let run = apitap(
        &["load", "-", "--table", &late, "--sample", "2"],
        Some(input),
    )
    .await;
    assert_one_line_error(
        &run,
        &format!(
            "line 4 (record 4): field \"b\" first appears after the 2 records the columns of the new table {late} were inferred from; re-run with a larger --sample, or pass --schema discard to drop such fields"
        ),
    );
    assert!(!table_exists(&db, &late).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraint_violations_roll_back_the_whole_load() {
    let db = client().await;
    let schema = fresh_schema(&db, "constraint").await;
    let table = guarded_table(&db, &schema).await;
    let mut input = Vec::new();
    for i in 2..50_000 {
        input.extend_from_slice(format!("{{\"id\": {i}, \"name\": \"n\"}}\n").as_bytes());
    }
    input.extend_from_slice(b"{\"id\": 1, \"name\": \"duplicate\"}\n");
    let run = apitap(&["load", "-", "--table", &table], Some(input)).await;
    assert_one_line_error(
        &run,
        &format!(
            "PostgreSQL rejected COPY on {table}: duplicate key value violates unique constraint \"t_pkey\"; Key (id)=(1) already exists."
        ),
    );
    assert!(run.stderr.contains("COPY t, line 49999"), "{}", run.stderr);
    assert_unchanged(&db, &table).await;

    // The INSERT fallback fails the same way, in its own words.
    let input = b"{\"id\": 2, \"name\": \"n\"}\n{\"id\": 1, \"name\": \"duplicate\"}\n".to_vec();
    let run = apitap(
        &["load", "-", "--table", &table, "--method", "insert"],
        Some(input),
    )
    .await;
    assert_one_line_error(
        &run,
        &format!(
            "PostgreSQL rejected INSERT on {table}: duplicate key value violates unique constraint \"t_pkey\""
        ),
    );
    assert_unchanged(&db, &table).await;
}

fn text_body(
    status: StatusCode,
    content_type: &'static str,
    body: &'static str,
) -> axum::response::Response {
    axum::response::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_failures_are_reported_with_status_url_and_body() {
    let db = client().await;
    let schema = fresh_schema(&db, "http").await;
    let table = guarded_table(&db, &schema).await;
    let router = Router::new()
        .route(
            "/missing",
            get(|| async {
                text_body(
                    StatusCode::NOT_FOUND,
                    "application/json",
                    "{\"error\": \"no such export\"}",
                )
            }),
        )
        .route(
            "/login",
            get(|| async {
                text_body(
                    StatusCode::OK,
                    "text/html",
                    "<!DOCTYPE html><html><body>Please sign in</body></html>",
                )
            }),
        );
    let addr = serve(router).await;

    let run = apitap(
        &[
            "load",
            &format!("http://{addr}/missing?token=hunter2"),
            "--table",
            &table,
        ],
        None,
    )
    .await;
    assert_one_line_error(
        &run,
        &format!(
            "HTTP 404 Not Found from http://{addr}/missing?token=***: {{\"error\": \"no such export\"}}"
        ),
    );
    assert!(!run.stderr.contains("hunter2"));

    let run = apitap(
        &["load", &format!("http://{addr}/login"), "--table", &table],
        None,
    )
    .await;
    assert_one_line_error(
        &run,
        &format!(
            "http://{addr}/login: the input is not JSON (it looks like HTML or XML): <!DOCTYPE html><html><body>Please sign in</body></html>"
        ),
    );

    // Nothing listens on port 1; connection errors are retried, then reported.
    let run = apitap(
        &[
            "load",
            "http://127.0.0.1:1/rows.ndjson",
            "--table",
            &table,
            "--retry",
            "{max_attempts: 2, min_delay_secs: 0.01, max_delay_secs: 0.01}",
        ],
        None,
    )
    .await;
    assert_one_line_error(
        &run,
        "could not fetch http://127.0.0.1:1/rows.ndjson (after 2 attempts): ",
    );
    assert!(
        run.stderr.to_lowercase().contains("connection refused"),
        "{}",
        run.stderr
    );
    assert_unchanged(&db, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_path_that_finds_nothing_is_an_error() {
    let db = client().await;
    let schema = fresh_schema(&db, "records_path_errors").await;
    let table = guarded_table(&db, &schema).await;
    let input = b"{\"items\": [{\"id\": 2, \"name\": \"a\"}], \"next\": null}".to_vec();
    let run = apitap(
        &["load", "-", "--table", &table, "--records-path", "/data"],
        Some(input),
    )
    .await;
    assert_one_line_error(&run, "stdin: line 1: the document has no array at /data");
    assert_unchanged(&db, &table).await;
    let run = apitap(
        &["load", "-", "--table", &table, "--records-path", "data"],
        Some(Vec::new()),
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("--records-path: JSON pointer \"data\" must start with '/'"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_mid_stream_every_time_fails_the_load() {
    let db = client().await;
    let schema = fresh_schema(&db, "cut").await;
    let table = guarded_table(&db, &schema).await;
    let router = Router::new().route(
        "/cut",
        get(|| async {
            let mut rows = Vec::new();
            for i in 2..5000 {
                rows.extend_from_slice(format!("{{\"id\": {i}, \"name\": \"n\"}}\n").as_bytes());
            }
            let chunks = futures_util::stream::unfold(0, move |k| {
                let rows = rows.clone();
                async move {
                    let item = match k {
                        0 => Ok(Bytes::from(rows)),
                        1 => Ok(Bytes::from_static(b"{\"id\": 5000, \"na")),
                        2 => {
                            // The client has the headers and part of the body by now.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            Err(std::io::Error::other("server went away"))
                        }
                        _ => return None,
                    };
                    Some((item, k + 1))
                }
            });
            Body::from_stream(chunks)
        }),
    );
    let addr = serve(router).await;
    let run = apitap(
        &[
            "load",
            &format!("http://{addr}/cut"),
            "--table",
            &table,
            "--retry",
            "{max_attempts: 2, min_delay_secs: 0, max_delay_secs: 0}",
        ],
        None,
    )
    .await;
    assert_one_line_error(&run, &format!("reading http://{addr}/cut failed: "));
    assert_unchanged(&db, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_postgres_names_the_target_without_the_password() {
    let run = apitap(
        &[
            "load",
            "-",
            "--table",
            "t",
            "--database-url",
            "postgres://loader:s3cretpw@127.0.0.1:1/warehouse",
        ],
        Some(b"{\"a\": 1}\n".to_vec()),
    )
    .await;
    assert_one_line_error(
        &run,
        "could not connect to PostgreSQL at loader@127.0.0.1:1/warehouse: ",
    );
    assert!(
        run.stderr.to_lowercase().contains("connection refused"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("s3cretpw"));
}

/// An endpoint that sends `chunks` chunks of 500 rows, `pause` apart.
fn slow_rows(chunks: u64, pause: Duration) -> Router {
    Router::new().route(
        "/slow",
        get(move || async move {
            let stream = futures_util::stream::unfold(0u64, move |k| async move {
                if k == chunks {
                    return None;
                }
                if k > 0 {
                    tokio::time::sleep(pause).await;
                }
                let mut out = Vec::new();
                for i in k * 500 + 1..=(k + 1) * 500 {
                    out.extend_from_slice(
                        format!("{{\"id\": {}, \"name\": \"new\"}}\n", i + 1).as_bytes(),
                    );
                }
                Some((Ok::<_, Infallible>(Bytes::from(out)), k + 1))
            });
            Body::from_stream(stream)
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_and_sigterm_roll_back_and_exit_130() {
    let db = client().await;
    let schema = fresh_schema(&db, "interrupt").await;
    let table = guarded_table(&db, &schema).await;
    let addr = serve(slow_rows(1000, Duration::from_millis(20))).await;
    for signal in ["-INT", "-TERM"] {
        let child = command(&[
            "load",
            &format!("http://{addr}/slow"),
            "--table",
            &table,
            "--batch-size",
            "100",
        ])
        .spawn()
        .unwrap();
        // Interrupt it mid-COPY, with rows already sent.
        wait_for_copy(&db, &schema, 1000).await;
        let status = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let output = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(130), "{signal}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "apitap: interrupted; nothing was written to {table}"
            )),
            "{signal}: {stderr}"
        );
        assert_unchanged(&db, &table).await;
    }
}

/// During a replace, by swap or in place, other sessions keep seeing the old rows until the
/// new ones commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_old_rows_until_replace_commits() {
    let db = client().await;
    for strategy in ["swap", "delete"] {
        let schema = fresh_schema(&db, &format!("readers_{strategy}")).await;
        let table = guarded_table(&db, &schema).await;
        let addr = serve(slow_rows(20, Duration::from_millis(50))).await;
        let child = command(&[
            "load",
            &format!("http://{addr}/slow"),
            "--table",
            &table,
            "--mode",
            "replace",
            "--replace-with",
            strategy,
            "--batch-size",
            "100",
        ])
        .spawn()
        .unwrap();
        // Mid-load: part of the COPY has run, but is not visible.
        wait_for_copy(&db, &schema, 1000).await;
        assert_unchanged(&db, &table).await;
        let output = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            output.status.success(),
            "{strategy}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(count(&db, &table).await, 10_000, "{strategy}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_records_go_to_the_reject_file_and_the_rest_loads() {
    let db = client().await;
    let schema = fresh_schema(&db, "rejects").await;
    let table = guarded_table(&db, &schema).await;
    let dir = tempfile::tempdir().unwrap();
    let reject_file = dir.path().join("rejects.ndjson");
    let input = concat!(
        "{\"id\": 2, \"name\": \"a\"}\n",
        "{\"id\": \"two\", \"name\": \"b\"}\n",
        "{\"id\": 3, \"name\": \"c\"}\n",
        "{\"id\": 4, \"name\" \"d\"}\n",
        "{\"id\": 5, \"name\": \"e\"}\n"
    );
    let args = |max: Option<&'static str>| {
        let mut a = vec![
            "load".to_string(),
            "-".into(),
            "--table".into(),
            table.clone(),
            "--on-error".into(),
            "reject".into(),
            "--reject-file".into(),
            reject_file.to_str().unwrap().into(),
            "--summary-json".into(),
            "-".into(),
        ];
        if let Some(max) = max {
            a.extend(["--max-rejects".to_string(), max.to_string()]);
        }
        a
    };

    // Past --max-rejects the load fails: nothing loaded, no reject file.
    let strict = args(Some("1"));
    let strict: Vec<&str> = strict.iter().map(String::as_str).collect();
    let run = apitap(&strict, Some(input.as_bytes().to_vec())).await;
    assert_one_line_error(
        &run,
        "2 records were rejected, more than --max-rejects 1 allows",
    );
    assert_unchanged(&db, &table).await;
    assert!(!reject_file.exists());
    assert!(!dir.path().join("rejects.ndjson.partial").exists());

    let lenient = args(None);
    let lenient: Vec<&str> = lenient.iter().map(String::as_str).collect();
    let run = apitap(&lenient, Some(input.as_bytes().to_vec())).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        (summary["rows"].as_u64(), summary["rejected"].as_u64()),
        (Some(3), Some(2))
    );
    let ids: Vec<i64> = db
        .query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 5]);
    let rejects: Vec<serde_json::Value> = std::fs::read_to_string(&reject_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rejects.len(), 2);
    assert_eq!(rejects[0]["record"], 2);
    assert_eq!(rejects[0]["line"], 2);
    assert_eq!(rejects[0]["source"], "stdin");
    assert_eq!(
        rejects[0]["reason"],
        "line 2 (record 2): column \"id\": \"two\" is not an integer (bigint)"
    );
    assert_eq!(
        rejects[0]["record_text"],
        "{\"id\": \"two\", \"name\": \"b\"}"
    );
    assert_eq!(rejects[1]["record"], 4);
    assert_eq!(
        rejects[1]["reason"],
        "line 4, column 18 (record 4): malformed JSON: expected ':' after the key, found '\"'"
    );
    assert!(!dir.path().join("rejects.ndjson.partial").exists());
}

/// Rows PostgreSQL itself refuses (a key that exists, a CHECK) are found by splitting the
/// failed COPY (or INSERT, with `--method insert`), set aside with the server's reason, and
/// everything else loads in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_server_refuses_go_to_the_reject_file_too() {
    for method in ["copy", "insert"] {
        rows_the_server_refuses_are_set_aside(method).await;
    }
}

async fn rows_the_server_refuses_are_set_aside(method: &str) {
    let db = client().await;
    let schema = fresh_schema(&db, &format!("refused_{method}")).await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, qty integer CHECK (qty >= 0));
         INSERT INTO {table} VALUES (1, 10)"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reject_file = dir.path().join("rejects.ndjson");
    let mut input = String::new();
    for id in 2..=40 {
        let qty = if id == 17 { -5 } else { id };
        input.push_str(&format!("{{\"id\": {id}, \"qty\": {qty}}}\n"));
        if id == 9 {
            input.push_str("{\"id\": 1, \"qty\": 3}\n"); // record 9: the key exists
        }
        if id == 30 {
            input.push_str("{\"id\": \"x\", \"qty\": 3}\n"); // record 31: does not decode
            input.push_str("{\"id\": 30, \"qty\": 3}\n"); // record 32: repeats record 30
        }
    }
    let run = apitap(
        &[
            "load",
            "-",
            "--table",
            &table,
            "--batch-size",
            "8",
            "--on-error",
            "reject",
            "--reject-file",
            reject_file.to_str().unwrap(),
            "--summary-json",
            "-",
            "--method",
            method,
            "--insert-batch",
            "8",
        ],
        Some(input.into_bytes()),
    )
    .await;
    assert_eq!(run.code, 0, "{method}: {}", run.stderr);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        (summary["rows"].as_u64(), summary["rejected"].as_u64()),
        (Some(38), Some(4))
    );
    let ids: Vec<i64> = db
        .query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<i64> = (1..=40).filter(|id| *id != 17).collect();
    assert_eq!(ids, expected, "{method}");
    let mut rejects: Vec<serde_json::Value> = std::fs::read_to_string(&reject_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rejects.sort_by_key(|r| r["record"].as_u64());
    let summary: Vec<(u64, String, String)> = rejects
        .iter()
        .map(|r| {
            (
                r["record"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
                r["record_text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                9,
                "PostgreSQL refused the row: duplicate key value violates unique constraint \"t_pkey\"; Key (id)=(1) already exists.".to_string(),
                "{\"id\":1,\"qty\":3}".to_string()
            ),
            (
                17,
                "PostgreSQL refused the row: new row for relation \"t\" violates check constraint \"t_qty_check\"; Failing row contains (17, -5).".to_string(),
                "{\"id\":17,\"qty\":-5}".to_string()
            ),
            (
                31,
                "line 31 (record 31): column \"id\": \"x\" is not an integer (bigint)".to_string(),
                "{\"id\": \"x\", \"qty\": 3}".to_string()
            ),
            (
                32,
                "PostgreSQL refused the row: duplicate key value violates unique constraint \"t_pkey\"; Key (id)=(30) already exists.".to_string(),
                "{\"id\":30,\"qty\":3}".to_string()
            ),
        ],
        "{method}"
    );
    assert_eq!(rejects[0]["line"], serde_json::Value::Null);
    assert_eq!(rejects[2]["line"], 31);
}
