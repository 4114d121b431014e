//! `--copy-streams` into a table the load creates: the streams fill a table that then takes
//! the new table's place, with no second pass over the rows (no INSERT from staging), with
//! the schema's default privileges, all or nothing, leaving nothing behind.

use crate::common::*;

/// What a replace killed after its streams' new table was committed leaves behind: that
/// table, under the swap's building name, marked with a connection (pid 0) that is gone.
/// Returns the table's oid.
async fn leave_a_killed_replace_s_table(
    db: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> u32 {
    let oid: u32 = db
        .query_one(&format!("SELECT '{table}'::regclass::oid"), &[])
        .await
        .unwrap()
        .get(0);
    db.batch_execute(&format!(
        "CREATE TABLE {schema}.apitap_replace_{oid} (id bigint);
         COMMENT ON TABLE {schema}.apitap_replace_{oid} IS '0'"
    ))
    .await
    .unwrap();
    oid
}

/// How many tables named `apitap_*` (apitap's own) are in `schema`.
async fn apitap_tables_in(db: &tokio_postgres::Client, schema: &str) -> i64 {
    db.query_one(
        &format!(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = '{schema}' AND c.relname LIKE 'apitap\\_%'"
        ),
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// Tables named like the streams' own, in any schema.
async fn stream_tables(db: &tokio_postgres::Client) -> Vec<String> {
    db.query(
        "SELECT c.oid::regclass::text FROM pg_class c
         WHERE c.relkind = 'r' AND c.relname LIKE 'apitap\\_stage\\_%'",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_fill_a_new_table_in_place_without_a_second_pass() {
    let db = client().await;
    let schema = fresh_schema(&db, "streams_new").await;
    // Tables created in the schema are readable by a role, by default privileges.
    db.batch_execute(&format!(
        "DO $$ BEGIN CREATE ROLE apitap_test_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO apitap_test_reader;
         CREATE TABLE {schema}.apitap_stage_0_0 (id bigint);
         COMMENT ON TABLE {schema}.apitap_stage_0_0 IS '0'"
    ))
    .await
    .unwrap();
    let table = format!("{schema}.items");
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("apitap.prom");
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
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
        Some(input.clone()),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        id_facts(&db, &table).await,
        (20_000, 20_000, 20_000 * 20_001 / 2)
    );
    // Three COPYs and a commit went to the server; no INSERT moved the rows a second time.
    let text = std::fs::read_to_string(&metrics).unwrap();
    for line in [
        "apitap_server_round_trips_total{module=\"load\",statement=\"copy\"} 3",
        "apitap_server_round_trips_total{module=\"load\",statement=\"commit\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert!(!text.contains("statement=\"insert\""), "{text}");
    let readable: bool = db
        .query_one(
            &format!("SELECT has_table_privilege('apitap_test_reader', '{table}', 'SELECT')"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(readable, "the schema's default privileges did not apply");
    let comment: Option<String> = db
        .query_one(&format!("SELECT obj_description('{table}'::regclass)"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(comment, None);
    // The table a killed load left behind (its connection, pid 0, is gone) was swept.
    assert_eq!(stream_tables(&db).await, Vec::<String>::new());

    // A bad record late in the input: no table, and nothing left behind.
    let failed = format!("{schema}.failed");
    let mut bad = input;
    bad.extend_from_slice(b"{\"id\": \"x\"}\n");
    let run = apitap(
        &["load", "-", "--table", &failed, "--copy-streams", "2"],
        Some(bad),
    )
    .await;
    assert_fails(&run, "line 20001 (record 20001)");
    assert!(!table_exists(&db, &failed).await);
    assert_eq!(stream_tables(&db).await, Vec::<String>::new());
}

/// A replace by swap through the streams: they fill the replace's new table, which the swap
/// puts in the old one's place with its keys, indexes, identity, comment and grants; a failed
/// replace leaves the old table and nothing else; a new table a killed replace left is swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_fill_a_replace_s_new_table_without_a_second_pass() {
    let db = client().await;
    let schema = fresh_schema(&db, "streams_swap").await;
    let table = format!("{schema}.items");
    db.batch_execute(&format!(
        "DO $$ BEGIN CREATE ROLE apitap_test_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
         CREATE TABLE {table} (n bigint GENERATED ALWAYS AS IDENTITY, id bigint PRIMARY KEY, name text);
         CREATE INDEX items_name ON {table} (name);
         COMMENT ON TABLE {table} IS 'keep me';
         GRANT SELECT ON {table} TO apitap_test_reader;
         INSERT INTO {table} (id, name) SELECT i, 'old' FROM generate_series(1, 5) i"
    ))
    .await
    .unwrap();
    leave_a_killed_replace_s_table(&db, &schema, &table).await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("apitap.prom");
    let replace = |input: Vec<u8>| {
        let (table, metrics) = (table.clone(), metrics.clone());
        async move {
            apitap(
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
                    "--metrics-file",
                    metrics.to_str().unwrap(),
                ],
                Some(input),
            )
            .await
        }
    };
    let input: Vec<u8> = (1..=10_000)
        .flat_map(|i| format!("{{\"id\": {i}, \"name\": \"new {i}\"}}\n").into_bytes())
        .collect();
    let run = replace(input.clone()).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        id_facts(&db, &table).await,
        (10_000, 10_000, 10_000 * 10_001 / 2)
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "apitap_server_round_trips_total{module=\"load\",statement=\"copy\"} 2"),
        "{text}"
    );
    assert!(!text.contains("statement=\"insert\""), "{text}");
    let kept = db
        .query_one(
            &format!(
                "SELECT obj_description('{table}'::regclass),
                        has_table_privilege('apitap_test_reader', '{table}', 'SELECT'),
                        (SELECT count(*) FROM pg_indexes WHERE schemaname = '{schema}' AND tablename = 'items'),
                        (SELECT max(n) FROM {table}) > 5"
            ),
            &[],
        )
        .await
        .unwrap();
    let kept: (Option<String>, bool, i64, bool) =
        (kept.get(0), kept.get(1), kept.get(2), kept.get(3));
    assert_eq!(kept, (Some("keep me".into()), true, 2, true));
    let left = apitap_tables_in(&db, &schema).await;
    assert_eq!(
        left, 0,
        "the killed replace's table, or this one's, is still there"
    );

    // A bad record late in the input: the table as it was, nothing left beside it.
    let mut bad = input;
    bad.extend_from_slice(b"{\"id\": \"x\"}\n");
    let run = replace(bad).await;
    assert_fails(&run, "line 10001 (record 10001)");
    assert_eq!(
        id_facts(&db, &table).await,
        (10_000, 10_000, 10_000 * 10_001 / 2)
    );
    let left = apitap_tables_in(&db, &schema).await;
    assert_eq!(left, 0);
}

/// A replace without streams after a replace with streams was killed: the table the killed
/// one left under the building name is dropped, not in the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_replace_sweeps_what_a_killed_streams_replace_left() {
    let db = client().await;
    let schema = fresh_schema(&db, "streams_swap_left").await;
    let table = format!("{schema}.items");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, name text);
         INSERT INTO {table} VALUES (1, 'old')"
    ))
    .await
    .unwrap();
    let oid = leave_a_killed_replace_s_table(&db, &schema, &table).await;
    let run = apitap(
        &["load", "-", "--table", &table, "--mode", "replace"],
        Some(b"{\"id\": 2, \"name\": \"new\"}\n".to_vec()),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(count(&db, &table).await, 1);
    assert!(!table_exists(&db, &format!("{schema}.apitap_replace_{oid}")).await);
}
