//! `--nested flatten`: the fields of objects become columns named by their path, each value
//! landing as PostgreSQL reads that path (`#>`) into the column's type.

use crate::common::*;

mod rules;
mod tables;
mod tables_modes;

pub(super) const EVENTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/data/github_events.ndjson"
);

/// `apitap load SOURCE --table TABLE --nested flatten EXTRA…`.
pub(super) async fn flatten(source: &str, table: &str, extra: &[&str]) -> Run {
    let mut args = vec!["load", source, "--table", table, "--nested", "flatten"];
    args.extend_from_slice(extra);
    apitap(&args, None).await
}

/// The table's columns and their types, in order.
pub(super) async fn columns(
    db: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> Vec<(String, String)> {
    db.query(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = format('%I.%I', $1::text, $2::text)::regclass AND attnum > 0 \
         AND NOT attisdropped ORDER BY attnum",
        &[&schema, &table],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Checks every column of `schema.table` against PostgreSQL's own reading of its path in the
/// records of `input` (matched by their `id`): `json_populate_record` of `record #> path`
/// into a column of the same type, compared as text.
async fn assert_as_postgres_reads_paths(
    db: &tokio_postgres::Client,
    schema: &str,
    table: &str,
    input: &str,
) {
    db.batch_execute(&format!(
        "CREATE TABLE {schema}.raw (doc json); CREATE TABLE {schema}.probe (v text)"
    ))
    .await
    .unwrap();
    for line in input.lines() {
        db.execute(
            &format!("INSERT INTO {schema}.raw VALUES ($1::text::json)"),
            &[&line],
        )
        .await
        .unwrap();
    }
    let mut compared = 0;
    for (column, sql_type) in columns(db, schema, table).await {
        db.batch_execute(&format!(
            "ALTER TABLE {schema}.probe ALTER COLUMN v TYPE {sql_type} USING NULL"
        ))
        .await
        .unwrap();
        let path = column.split("__").collect::<Vec<_>>().join(",");
        let differ = db
            .query(
                &format!(
                    "SELECT r.doc->>'id', t.{column}::text, \
                     (json_populate_record(NULL::{schema}.probe, json_build_object('v', r.doc #> '{{{path}}}'))).v::text \
                     FROM {schema}.raw r JOIN {schema}.{table} t ON t.id::text = r.doc->>'id' \
                     WHERE t.{column}::text IS DISTINCT FROM \
                     (json_populate_record(NULL::{schema}.probe, json_build_object('v', r.doc #> '{{{path}}}'))).v::text"
                ),
                &[],
            )
            .await
            .unwrap();
        let differ: Vec<(String, Option<String>, Option<String>)> = differ
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert!(
            differ.is_empty(),
            "column {column} ({sql_type}) differs from PostgreSQL's reading of its path: {differ:?}"
        );
        compared += 1;
    }
    assert!(compared > 20, "only {compared} columns compared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flatten_makes_columns_of_objects_each_value_as_postgres_reads_its_path() {
    let db = client().await;
    let schema = fresh_schema(&db, "nested_flatten").await;
    let table = format!("{schema}.events");
    let run = flatten(EVENTS, &table, &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("into {table} (created): 6 rows")),
        "{}",
        run.stderr
    );
    let got = columns(&db, &schema, "events").await;
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    // Columns follow the records' fields, an object's fields in its place (a field first
    // seen in a later record's object among them); arrays stay whole.
    assert_eq!(
        &names[..12],
        [
            "id",
            "type",
            "actor__id",
            "actor__login",
            "actor__display_login",
            "actor__gravatar_id",
            "actor__url",
            "actor__avatar_url",
            "repo__id",
            "repo__name",
            "repo__url",
            "payload__repository_id",
        ]
    );
    let types: std::collections::BTreeMap<&str, &str> =
        got.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    assert_eq!(types["payload__commits"], "jsonb");
    assert_eq!(types["payload__issue__number"], "bigint");
    assert_eq!(types["payload__issue__labels"], "jsonb");
    assert_eq!(
        types["payload__issue__closed_at"],
        "timestamp with time zone"
    );
    assert_eq!(types["payload__issue__user__site_admin"], "boolean");
    assert_eq!(types["org__login"], "text");
    assert!(!types.contains_key("payload"));
    assert!(!types.contains_key("actor"));
    let input = std::fs::read_to_string(EVENTS).unwrap();
    assert_as_postgres_reads_paths(&db, &schema, "events", &input).await;

    // Worker threads decode flattened records as the load's own thread does.
    let threaded = format!("{schema}.threaded");
    let run = flatten(
        EVENTS,
        &threaded,
        &["--decode-threads", "2", "--batch-size", "1"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let differ: i64 = db
        .query_one(
            &format!(
                "SELECT count(*) FROM ((TABLE {table} EXCEPT ALL TABLE {threaded}) \
                 UNION ALL (TABLE {threaded} EXCEPT ALL TABLE {table})) d"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(differ, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flattened_tweets_land_as_postgres_reads_each_path() {
    let db = client().await;
    let schema = fresh_schema(&db, "nested_tweets").await;
    let dir = tempfile::tempdir().unwrap();
    let tweets = dir.path().join("tweets.ndjson");
    let dump = command(&["demo-api", "--dump-tweets", "1000"])
        .output()
        .unwrap();
    assert!(dump.status.success());
    std::fs::write(&tweets, &dump.stdout).unwrap();
    let table = format!("{schema}.tweets");
    let run = flatten(tweets.to_str().unwrap(), &table, &["--sample", "100"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(count(&db, &table).await, 1000);
    let text = String::from_utf8(dump.stdout).unwrap();
    assert_as_postgres_reads_paths(&db, &schema, "tweets", &text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_nesting_keeps_deeper_objects_whole_and_deep_records_load() {
    let db = client().await;
    let schema = fresh_schema(&db, "nested_depth").await;
    let table = format!("{schema}.events");
    let run = flatten(EVENTS, &table, &["--max-nesting", "1"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let got = columns(&db, &schema, "events").await;
    assert!(
        got.contains(&("payload__issue".into(), "jsonb".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&("actor__login".into(), "text".into())),
        "{got:?}"
    );
    assert!(!got.iter().any(|(n, _)| n.starts_with("payload__issue__")));
    let input = std::fs::read_to_string(EVENTS).unwrap();
    assert_as_postgres_reads_paths(&db, &schema, "events", &input).await;

    // A record nested 5,000 objects deep: ten levels become the column's name, the rest
    // lands whole.
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("deep.ndjson");
    let record = format!(
        "{{\"id\": \"1\", \"a\": {}1{}}}\n",
        "{\"a\": ".repeat(5000),
        "}".repeat(5000)
    );
    std::fs::write(&deep, &record).unwrap();
    let table = format!("{schema}.deep");
    let run = flatten(deep.to_str().unwrap(), &table, &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let got = columns(&db, &schema, "deep").await;
    let name = ["a"; 11].join("__");
    assert_eq!(
        got,
        [("id".into(), "text".into()), (name.clone(), "jsonb".into())]
    );
    let rest = format!("{}1{}", "{\"a\": ".repeat(4990), "}".repeat(4990));
    let landed: String = db
        .query_one(&format!("SELECT {name}::text FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        landed == rest,
        "the deepest column holds the rest of the record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flatten_settings_that_cannot_work_are_named() {
    for (args, message) in [
        (
            vec!["--max-nesting", "2"],
            "--max-nesting needs --nested flatten",
        ),
        (
            vec!["--nested", "flatten", "--max-nesting", "0"],
            "--max-nesting: must be from 1 to 64",
        ),
        (
            vec!["--nested", "flatten", "--max-nesting", "65"],
            "--max-nesting: must be from 1 to 64",
        ),
    ] {
        let mut all = vec!["load", EVENTS, "--table", "t", "--preview"];
        all.extend(args);
        let run = apitap(&all, None).await;
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(run.stderr.contains(message), "{}", run.stderr);
    }
}

#[cfg(feature = "sql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_source_flattens_with_nested_flatten() {
    let db = client().await;
    let schema = fresh_schema(&db, "nested_run").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sql")).unwrap();
    std::fs::write(
        dir.path().join("pipelines.yaml"),
        format!(
            "sources:\n  - name: events\n    url: {EVENTS}\n    nested: flatten\n    max_nesting: 2\n    \
             columns: {{payload.issue.number: integer}}\n    \
             table_destination_name: issues\ntargets:\n  - name: pg\n    type: postgres\n    url_env: DATABASE_URL\n    \
             schema: {schema}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sql/issues.sql"),
        "SELECT id, actor__login, payload__issue__number, payload__issue__user \
         FROM {{ use_source(\"events\") }} WHERE type = 'IssuesEvent'",
    )
    .unwrap();
    let cwd = dir.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        command(&["run", "-m", "sql", "-y", "pipelines.yaml"])
            .current_dir(cwd)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let rows: Vec<(String, i32, String)> = db
        .query(
            &format!(
                "SELECT actor__login, payload__issue__number, payload__issue__user->>'login' \
                 FROM {schema}.issues ORDER BY id"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    // The type given by the field's path reached the output.
    let types = columns(&db, &schema, "issues").await;
    assert!(
        types.contains(&("payload__issue__number".into(), "integer".into())),
        "{types:?}"
    );
    assert_eq!(
        rows,
        [
            ("mojombo".to_string(), 1347, "mojombo".to_string()),
            ("torvalds".to_string(), 1347, "mojombo".to_string()),
        ]
    );
}
