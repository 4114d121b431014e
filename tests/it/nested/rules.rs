//! `--nested flatten`'s rules at their edges: a field that is no object, schema changes
//! inside objects, names that collide, keys and cursors named by path, the preview.

use super::{EVENTS, columns, flatten};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flattened_field_that_is_no_object_is_named_and_can_be_set_aside() {
    let db = client().await;
    let schema = fresh_schema(&db, "nested_not_object").await;
    let table = format!("{schema}.t");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    std::fs::write(
        &input,
        "{\"id\": 1, \"user\": {\"name\": \"a\"}}\n{\"id\": 2, \"user\": \"b\"}\n{\"id\": 3, \"user\": null}\n",
    )
    .unwrap();
    let input = input.to_str().unwrap();
    let load = [
        "load", input, "--table", &table, "--nested", "flatten", "--sample", "1",
    ];
    let run = apitap(&load, None).await;
    assert_fails(
        &run,
        &format!(
            "apitap: error: loading {input} into {table} failed; the table is unchanged: {input}: line 2 (record 2): field \"user\" is \
             a string, but its fields are loaded as columns (user__…), so only an object or null fits there; load with \
             --nested keep to keep it whole as jsonb"
        ),
    );
    assert!(!table_exists(&db, &table).await);

    let rejects = dir.path().join("rejects.ndjson");
    let reject = [
        "--on-error",
        "reject",
        "--reject-file",
        rejects.to_str().unwrap(),
    ];
    let run = apitap(&[&load[..], &reject[..]].concat(), None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows: Vec<(i64, Option<String>)> = db
        .query(
            &format!("SELECT id, user__name FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, [(1, Some("a".into())), (3, None)]);
    let rejected = std::fs::read_to_string(&rejects).unwrap();
    assert!(
        rejected.contains("\"record\":2") && rejected.contains("field \\\"user\\\" is a string"),
        "{rejected}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flattened_fields_follow_the_schema_rules() {
    let db = client().await;
    let schema = fresh_schema(&db, "nested_rules").await;
    let table = format!("{schema}.t");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let first = write("first.ndjson", "{\"id\": 1, \"user\": {\"n\": 5}}\n");
    let run = flatten(&first, &table, &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);

    // A new field inside the object adds its column; a wider value widens it.
    let second = write(
        "second.ndjson",
        "{\"id\": 2, \"user\": {\"n\": 3000000000, \"since\": \"2024-01-01\"}}\n",
    );
    let run = flatten(&second, &table, &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let got = columns(&db, &schema, "t").await;
    assert_eq!(
        got,
        [
            ("id".into(), "bigint".into()),
            ("user__n".into(), "bigint".into()),
            ("user__since".into(), "date".into()),
        ]
    );

    // Frozen, the new field is refused by its path.
    let third = write(
        "third.ndjson",
        "{\"id\": 3, \"user\": {\"n\": 1, \"new\": true}}\n",
    );
    let run = flatten(&third, &table, &["--schema", "freeze"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("field \"user.new\" is not a column of"),
        "{}",
        run.stderr
    );

    // After the sample: named by its path and record.
    let late = write(
        "late.ndjson",
        "{\"id\": 4, \"user\": {\"n\": 1}}\n{\"id\": 5, \"user\": {\"n\": 2, \"late\": 1}}\n",
    );
    let run = flatten(&late, &table, &["--sample", "1"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(
            "line 2 (record 2): field \"user.late\" first appears after the 1 sampled records"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(count(&db, &table).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_shows_the_flattened_columns() {
    let run = flatten(EVENTS, "events", &["--max-nesting", "1", "--preview", "1"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    for line in [
        "  column \"actor__login\" text: strings",
        "  column \"payload__issue\" jsonb: an object or array was seen",
        "  column \"payload__size\" bigint: integers within 64 bits",
    ] {
        assert!(run.stdout.contains(line), "{line} in:\n{}", run.stdout);
    }
    assert!(
        run.stdout.contains("\"actor__login\":\"octocat\""),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_named_like_a_path_beside_that_path_is_refused_naming_both() {
    let db = client().await;
    let schema = fresh_schema(&db, "nested_clash").await;
    let dir = tempfile::tempdir().unwrap();
    let clash = dir.path().join("clash.ndjson");
    std::fs::write(&clash, "{\"a__b\": 1, \"a\": {\"b\": 2}}\n").unwrap();
    let table = format!("{schema}.clash");
    let run = flatten(clash.to_str().unwrap(), &table, &[]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("fields \"a__b\" and \"a.b\" would both be column \"a__b\""),
        "{}",
        run.stderr
    );
    assert!(!table_exists(&db, &table).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flattened_rows_merge_on_a_flattened_key() {
    let db = client().await;
    let schema = fresh_schema(&db, "nested_merge").await;
    let table = format!("{schema}.users");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    for (round, text) in [
        "{\"user\": {\"id\": 1, \"name\": \"a\"}}\n{\"user\": {\"id\": 2, \"name\": \"b\"}}\n",
        "{\"user\": {\"id\": 2, \"name\": \"B\"}}\n{\"user\": {\"id\": 3, \"name\": \"c\"}}\n",
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(&input, text).unwrap();
        let run = flatten(
            input.to_str().unwrap(),
            &table,
            &["--mode", "merge", "--key", "user.id"],
        )
        .await;
        assert_eq!(run.code, 0, "round {round}: {}", run.stderr);
    }
    let rows: Vec<(i64, String)> = db
        .query(
            &format!("SELECT user__id, user__name FROM {table} ORDER BY 1"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, [(1, "a".into()), (2, "B".into()), (3, "c".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flattened_field_is_a_cursor_by_its_path_not_its_last_key() {
    let db = client().await;
    let schema = fresh_schema(&db, "nested_cursor").await;
    let table = format!("{schema}.t");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    // The nested `at` comes first and is always the greater: the cursor must be the top one.
    std::fs::write(
        &input,
        "{\"user\": {\"at\": 100}, \"at\": 1}\n{\"user\": {\"at\": 200}, \"at\": 2}\n",
    )
    .unwrap();
    for (field, stored) in [("at", "2"), ("user.at", "200")] {
        let key = format!("{schema}/{field}");
        let run = flatten(
            input.to_str().unwrap(),
            &table,
            &["--cursor-field", field, "--state-key", &key],
        )
        .await;
        assert_eq!(run.code, 0, "{field}: {}", run.stderr);
        let cursor: String = db
            .query_one(
                "SELECT cursor_value FROM apitap._state WHERE key = $1",
                &[&key],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(cursor, stored, "{field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_wider_than_postgres_allows_is_refused_before_anything_is_made() {
    let db = client().await;
    let schema = fresh_schema(&db, "nested_wide").await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("wide.ndjson");
    let fields: Vec<String> = (0..2000).map(|i| format!("\"k{i}\": {i}")).collect();
    std::fs::write(
        &input,
        format!("{{\"id\": 1, \"o\": {{{}}}}}\n", fields.join(", ")),
    )
    .unwrap();
    let table = format!("{schema}.wide");
    let run = flatten(input.to_str().unwrap(), &table, &[]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "the table would have 2001 columns, more than PostgreSQL's limit of 1600; with --nested flatten, \
             a lower --max-nesting keeps deeper objects whole"
        ),
        "{}",
        run.stderr
    );
    assert!(!table_exists(&db, &table).await);
    // Kept whole, the same records load.
    let run = apitap(&["load", input.to_str().unwrap(), "--table", &table], None).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
}
