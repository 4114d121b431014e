//! `apitap load` end to end: real binary, real PostgreSQL, real HTTP on 127.0.0.1.

use std::io::Write;

use crate::common::*;

/// A new table inferred from the demo API over HTTP, checked row by row against the rows the
/// API generated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_api_over_http_creates_and_fills_a_typed_table() {
    let db = client().await;
    let schema = fresh_schema(&db, "demo_http").await;
    let addr = serve(apitap::demo::router()).await;
    let n = 20_000u64;
    let run = apitap(
        &[
            "load",
            &format!("http://{addr}/rows.ndjson?rows={n}"),
            "--table",
            &format!("{schema}.items"),
            "--summary-json",
            "-",
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["rows"], n);
    assert_eq!(summary["created_table"], true);
    assert_eq!(summary["table"], format!("{schema}.items"));
    assert!(
        run.stderr
            .contains(&format!("into {schema}.items (created): {n} rows")),
        "{}",
        run.stderr
    );

    let types: Vec<(String, String)> = db
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = 'items' ORDER BY ordinal_position",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected = [
        ("id", "bigint"),
        ("uuid", "text"),
        ("customer_id", "bigint"),
        ("amount", "double precision"),
        ("quantity", "bigint"),
        ("is_active", "boolean"),
        ("status", "text"),
        ("title", "text"),
        ("description", "text"),
        ("created_at", "timestamp with time zone"),
        ("due_date", "date"),
        ("metadata", "jsonb"),
    ];
    assert_eq!(
        types,
        expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    );

    let rows = db
        .query(
            &format!(
                "SELECT id, amount, (extract(epoch FROM created_at) * 1000000)::bigint,
                        due_date::text, metadata::text, description
                 FROM {schema}.items ORDER BY id"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len() as u64, n);
    for (row, i) in rows.iter().zip(1..) {
        let mut raw = Vec::new();
        apitap::demo::write_row(i, &mut raw);
        let want: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(row.get::<_, i64>(0), i as i64);
        let amount: Option<f64> = row.get(1);
        assert_eq!(amount, want["amount"].as_f64(), "row {i}");
        let created = chrono::DateTime::parse_from_rfc3339(want["created_at"].as_str().unwrap())
            .unwrap()
            .timestamp_micros();
        assert_eq!(row.get::<_, i64>(2), created, "row {i}");
        let due: Option<String> = row.get(3);
        assert_eq!(due.as_deref(), want["due_date"].as_str(), "row {i}");
        let metadata: Option<String> = row.get(4);
        let metadata: serde_json::Value = metadata
            .map(|m| serde_json::from_str(&m).unwrap())
            .unwrap_or(serde_json::Value::Null);
        assert_eq!(metadata, want["metadata"], "row {i}");
        let description: Option<String> = row.get(5);
        assert_eq!(
            description.as_deref(),
            want["description"].as_str(),
            "row {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_array_files_gzip_and_stdin_load_the_same_rows() {
    let db = client().await;
    let schema = fresh_schema(&db, "inputs").await;
    let n = 3000u64;
    let dir = tempfile::tempdir().unwrap();

    // One JSON array, pretty-printed over many lines.
    let mut array = b"[\n".to_vec();
    for i in 1..=n {
        if i > 1 {
            array.extend_from_slice(b",\n  ");
        }
        apitap::demo::write_row(i, &mut array);
    }
    array.extend_from_slice(b"\n]\n");
    let array_path = dir.path().join("rows.json");
    std::fs::write(&array_path, &array).unwrap();

    let gz_path = dir.path().join("rows.ndjson.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&demo_ndjson(n)).unwrap();
    std::fs::write(&gz_path, gz.finish().unwrap()).unwrap();

    for (table, source, stdin) in [
        ("from_array", array_path.to_str().unwrap(), None),
        ("from_gzip", gz_path.to_str().unwrap(), None),
        ("from_stdin", "-", Some(demo_ndjson(n))),
    ] {
        let run = apitap(
            &["load", source, "--table", &format!("{schema}.{table}")],
            stdin,
        )
        .await;
        assert_eq!(run.code, 0, "{table}: {}", run.stderr);
        let row = db
            .query_one(
                &format!("SELECT count(*), sum(id)::bigint, count(amount), count(metadata) FROM {schema}.{table}"),
                &[],
            )
            .await
            .unwrap();
        let got: (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
        let reference = db
            .query_one(
                &format!("SELECT count(*), sum(id)::bigint, count(amount), count(metadata) FROM {schema}.from_array"),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(got.0, n as i64, "{table}");
        assert_eq!(got.1, (n * (n + 1) / 2) as i64, "{table}");
        assert_eq!(
            (got.2, got.3),
            (reference.get(2), reference.get(3)),
            "{table}"
        );
    }
}

/// Columns the input never mentions keep their defaults; fields that match are loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_tables_keep_defaults_for_absent_fields() {
    let db = client().await;
    let schema = fresh_schema(&db, "defaults").await;
    db.batch_execute(&format!(
        "CREATE TABLE {schema}.events (
            seq bigserial PRIMARY KEY, name text NOT NULL,
            loaded_at timestamptz NOT NULL DEFAULT now(), note text)"
    ))
    .await
    .unwrap();
    let input = b"{\"name\": \"a\"}\n{\"name\": \"b\", \"note\": \"x\"}\n".to_vec();
    let run = apitap(
        &["load", "-", "--table", &format!("{schema}.events")],
        Some(input),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows = db
        .query(
            &format!(
                "SELECT seq, name, note, loaded_at IS NOT NULL FROM {schema}.events ORDER BY seq"
            ),
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(i64, String, Option<String>, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "a".into(), None, true),
            (2, "b".into(), Some("x".into()), true)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_swaps_rows_and_refuses_to_empty_a_table() {
    let db = client().await;
    let schema = fresh_schema(&db, "replace").await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint); INSERT INTO {table} VALUES (100), (200)"
    ))
    .await
    .unwrap();
    let run = apitap(
        &["load", "-", "--table", &table, "--mode", "replace"],
        Some(b"{\"id\": 1}\n{\"id\": 2}\n{\"id\": 3}\n".to_vec()),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let ids: Vec<i64> = db
        .query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);

    let run = apitap(
        &["load", "-", "--table", &table, "--mode", "replace"],
        Some(Vec::new()),
    )
    .await;
    assert_fails(
        &run,
        &format!(
            "refusing to replace the rows of {table} with nothing: the source had no records (pass --allow-empty to empty the table)"
        ),
    );
    assert_eq!(count(&db, &table).await, 3);

    let run = apitap(
        &[
            "load",
            "-",
            "--table",
            &table,
            "--mode",
            "replace",
            "--allow-empty",
        ],
        Some(Vec::new()),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(count(&db, &table).await, 0);
}

/// `sslmode=require` encrypts (the server's snakeoil certificate is accepted), while
/// `verify-full` checks the certificate and refuses a self-signed one.
/// The demo API's paginated and JSON-array endpoints serve the same deterministic rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_api_serves_pages_and_arrays() {
    let addr = serve(apitap::demo::router()).await;
    let http = apitap::source::http::http_client(&apitap::source::HttpSettings::default()).unwrap();
    let get = |path: String| {
        let http = http.clone();
        async move {
            let body = http
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            serde_json::from_str::<serde_json::Value>(&body).unwrap()
        }
    };
    let page = get("/rows?rows=2500&page=3&per_page=1000".into()).await;
    assert_eq!(page["page"], 3);
    assert_eq!(page["total"], 2500);
    let ids: Vec<u64> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (2001..=2500).collect::<Vec<_>>());
    let mut row = Vec::new();
    apitap::demo::write_row(2001, &mut row);
    assert_eq!(
        page["data"][0],
        serde_json::from_slice::<serde_json::Value>(&row).unwrap()
    );
    let past_the_end = get("/rows?rows=2500&page=4&per_page=1000".into()).await;
    assert_eq!(past_the_end["data"], serde_json::json!([]));
    // Asked twice, the rendered chunks come from the cache: same bytes.
    for _ in 0..2 {
        let array = get("/rows.json?rows=1500".into()).await;
        assert_eq!(array.as_array().unwrap().len(), 1500);
        assert_eq!(array[1499]["id"], 1500);
    }
}

/// `{"data": [...], "page": …}`: the records are the array at --records-path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_inside_a_document_load_from_their_pointer() {
    let db = client().await;
    let schema = fresh_schema(&db, "records_path").await;
    let addr = serve(apitap::demo::router()).await;
    let run = apitap(
        &[
            "load",
            &format!("http://{addr}/rows?rows=5000&page=2&per_page=2000"),
            "--records-path",
            "/data",
            "--table",
            &format!("{schema}.page"),
        ],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let row = db
        .query_one(
            &format!("SELECT count(*), min(id), max(id) FROM {schema}.page"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (2000, 2001, 4000)
    );
}

/// `--copy-streams N` spreads the COPY over N connections into a staging table that the
/// load's transaction publishes: the same rows land, and a failure leaves neither the target
/// changed nor a staging table behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_copy_streams_land_the_same_rows_all_or_nothing() {
    let db = client().await;
    let schema = fresh_schema(&db, "streams").await;
    let table = format!("{schema}.t");
    // A staging table left by a killed load (its connection, pid 0, is gone) is swept.
    db.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS apitap;
         CREATE UNLOGGED TABLE IF NOT EXISTS apitap.stage_0_0 (id bigint);
         COMMENT ON TABLE apitap.stage_0_0 IS '0'",
    )
    .await
    .unwrap();
    let before = staging_tables(&db).await - 1;
    let input = demo_ndjson(20_000);
    let run = apitap(
        &[
            "load",
            "-",
            "--table",
            &table,
            "--copy-streams",
            "3",
            "--batch-size",
            "1000",
        ],
        Some(input.clone()),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        id_facts(&db, &table).await,
        (20_000, 20_000, 20_000 * 20_001 / 2)
    );
    the_same_values_as_one_copy(&db, &schema, &table, input.clone()).await;
    // A replace through the streams swaps the same rows in, in place of the old ones.
    let run = apitap(
        &[
            "load",
            "-",
            "--table",
            &table,
            "--mode",
            "replace",
            "--copy-streams",
            "2",
            "--batch-size",
            "1000",
        ],
        Some(input.clone()),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(count(&db, &table).await, 20_000);

    // A bad record late in the input: the target keeps its rows, no staging table is left.
    let mut bad = input;
    bad.extend_from_slice(b"{\"id\": \"x\"}\n");
    let run = apitap(
        &["load", "-", "--table", &table, "--copy-streams", "2"],
        Some(bad),
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("line 20001 (record 20001)"),
        "{}",
        run.stderr
    );
    assert_eq!(count(&db, &table).await, 20_000);
    assert_eq!(staging_tables(&db).await, before);

    let merge = apitap(
        &[
            "load",
            "-",
            "--table",
            &table,
            "--copy-streams",
            "2",
            "--mode",
            "merge",
            "--key",
            "id",
        ],
        Some(b"{\"id\": 1}\n".to_vec()),
    )
    .await;
    assert_fails(&merge, "--copy-streams cannot be used with --mode merge");
}

/// `input` loaded with a single COPY lands the very rows `table` holds.
async fn the_same_values_as_one_copy(
    db: &tokio_postgres::Client,
    schema: &str,
    table: &str,
    input: Vec<u8>,
) {
    let single = format!("{schema}.single");
    let run = apitap(&["load", "-", "--table", &single], Some(input)).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let differences: i64 = db
        .query_one(
            &format!(
                "SELECT count(*) FROM ((SELECT * FROM {table} EXCEPT ALL SELECT * FROM {single})
                 UNION ALL (SELECT * FROM {single} EXCEPT ALL SELECT * FROM {table})) d"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(differences, 0);
}

/// How many `apitap.stage_*` tables (left by `--copy-streams`) exist.
async fn staging_tables(db: &tokio_postgres::Client) -> i64 {
    db.query_one(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'apitap' AND c.relname LIKE 'stage%'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Where the server (or a pooler in front of it) refuses COPY FROM STDIN, the load goes
/// through the batched INSERT fallback by itself, merges included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_without_copy_get_batched_inserts() {
    let db = client().await;
    let schema = fresh_schema(&db, "no_copy").await;
    let table = format!("{schema}.t");
    let url = copy_refusing_database_url().await;
    let env = [("DATABASE_URL", url.as_str())];
    let run = apitap_env(
        &[
            "load", "-", "--table", &table, "--key", "id", "--mode", "merge",
        ],
        &env,
        Some(b"{\"id\": 1, \"name\": \"a\"}\n{\"id\": 2, \"name\": \"b\"}\n".to_vec()),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the server refuses COPY FROM STDIN; loading with batched INSERTs"),
        "{}",
        run.stderr
    );
    let run = apitap_env(
        &["load", "-", "--table", &table, "--key", "id", "--mode", "merge"],
        &env,
        Some(b"{\"id\": 2, \"name\": \"x\"}\n{\"id\": 3, \"name\": \"c\"}\n{\"id\": 2, \"name\": \"y\"}\n".to_vec()),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows: Vec<String> = db
        .query(
            &format!("SELECT concat_ws('|', id, name) FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, vec!["1|a", "2|y", "3|c"]);
}
