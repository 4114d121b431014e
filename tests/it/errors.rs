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
pub fn assert_one_line_error(run: &Run, expected: &str) {
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
pub fn slow_rows(chunks: u64, pause: Duration) -> Router {
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
