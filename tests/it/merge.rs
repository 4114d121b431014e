//! `--mode merge`: upserts through a staging table, in one transaction, against the real
//! PostgreSQL.

use crate::common::*;

async fn rows(db: &tokio_postgres::Client, sql: &str) -> Vec<(i64, String)> {
    db.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_updates_inserts_and_lets_the_last_record_win() {
    let db = client().await;
    let schema = fresh_schema(&db, "merge").await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, name text, seen timestamptz DEFAULT now());
         INSERT INTO {table} (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c')"
    ))
    .await
    .unwrap();
    let input = b"{\"id\": 1, \"name\": \"A\"}\n{\"id\": 4, \"name\": \"d\"}\n{\"id\": 4, \"name\": \"D\"}\n{\"id\": 3, \"name\": \"c\"}\n".to_vec();
    let run = apitap(
        &[
            "load",
            "-",
            "--table",
            &table,
            "--mode",
            "merge",
            "--key",
            "id",
            "--summary-json",
            "-",
        ],
        Some(input),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["mode"], "merge");
    assert_eq!(summary["rows"], 4);
    assert_eq!(
        rows(&db, &format!("SELECT id, name FROM {table} ORDER BY id")).await,
        vec![
            (1, "A".into()),
            (2, "b".into()),
            (3, "c".into()),
            (4, "D".into())
        ]
    );
    // Columns the records do not mention keep their values (or defaults for new rows).
    let seen: i64 = db
        .query_one(&format!("SELECT count(seen) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_keys_match_a_unique_index_in_any_order() {
    let db = client().await;
    let schema = fresh_schema(&db, "merge_composite").await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (tenant text, id bigint, name text);
         CREATE UNIQUE INDEX ON {table} (id, tenant);
         INSERT INTO {table} VALUES ('x', 1, 'old'), ('y', 1, 'other')"
    ))
    .await
    .unwrap();
    let input = b"{\"tenant\": \"x\", \"id\": 1, \"name\": \"new\"}\n{\"tenant\": \"z\", \"id\": 1, \"name\": \"third\"}\n".to_vec();
    let run = apitap(
        &[
            "load",
            "-",
            "--table",
            &table,
            "--mode",
            "merge",
            "--key",
            "tenant,id",
        ],
        Some(input),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let got: Vec<(String, String)> = db
        .query(
            &format!("SELECT tenant, name FROM {table} ORDER BY tenant"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("x".into(), "new".into()),
            ("y".into(), "other".into()),
            ("z".into(), "third".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_table_gets_the_keys_as_primary_key() {
    let db = client().await;
    let schema = fresh_schema(&db, "merge_new").await;
    let table = format!("{schema}.t");
    for (input, expected) in [
        (
            &b"{\"id\": 1, \"name\": \"a\"}\n{\"id\": 2, \"name\": \"b\"}\n"[..],
            vec![(1, "a".into()), (2, "b".into())],
        ),
        (
            &b"{\"id\": 2, \"name\": \"B\"}\n{\"id\": 3, \"name\": \"c\"}\n"[..],
            vec![(1, "a".into()), (2, "B".into()), (3, "c".into())],
        ),
    ] {
        let run = apitap(
            &[
                "load", "-", "--table", &table, "--mode", "merge", "--key", "id",
            ],
            Some(input.to_vec()),
        )
        .await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(
            rows(&db, &format!("SELECT id, name FROM {table} ORDER BY id")).await,
            expected
        );
    }
    let primary_key: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = $1::text::regclass AND contype = 'p'",
            &[&table],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(primary_key, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_without_a_unique_key_or_keys_fails_before_loading() {
    let db = client().await;
    let schema = fresh_schema(&db, "merge_errors").await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint, name text); INSERT INTO {table} VALUES (1, 'a')"
    ))
    .await
    .unwrap();
    let input = b"{\"id\": 1, \"name\": \"A\"}\n".to_vec();
    let run = apitap(
        &[
            "load", "-", "--table", &table, "--mode", "merge", "--key", "id",
        ],
        Some(input.clone()),
    )
    .await;
    assert_fails(
        &run,
        &format!(
            "cannot load {table}: merging on (id) needs a primary key or unique index on exactly those columns; create one, e.g. CREATE UNIQUE INDEX ON \"{schema}\".\"t\" (id)"
        ),
    );
    let run = apitap(
        &[
            "load", "-", "--table", &table, "--mode", "merge", "--key", "nope",
        ],
        Some(input.clone()),
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("merge key \"nope\" is not a field of the records (fields: id, name)"),
        "{}",
        run.stderr
    );
    let run = apitap(
        &["load", "-", "--table", &table, "--mode", "merge"],
        Some(input),
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("--mode merge needs --key COLUMN[,COLUMN…]"),
        "{}",
        run.stderr
    );
    assert_eq!(
        rows(&db, &format!("SELECT id, name FROM {table}")).await,
        vec![(1, "a".into())]
    );
}

/// The INSERT fallback merges too: each batch is one INSERT … ON CONFLICT DO UPDATE, a key
/// repeated within a batch keeping its last record, a later batch overriding an earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_insert_fallback_merges_with_the_last_record_winning() {
    let db = client().await;
    let schema = fresh_schema(&db, "merge_insert").await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, name text, seen timestamptz DEFAULT now());
         INSERT INTO {table} (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c')"
    ))
    .await
    .unwrap();
    // Batches of 3: [1→A, 4→d, 4→D] then [3→c, 1→Z].
    let input = b"{\"id\": 1, \"name\": \"A\"}\n{\"id\": 4, \"name\": \"d\"}\n{\"id\": 4, \"name\": \"D\"}\n{\"id\": 3, \"name\": \"c\"}\n{\"id\": 1, \"name\": \"Z\"}\n".to_vec();
    let run = apitap(
        &[
            "load",
            "-",
            "--table",
            &table,
            "--mode",
            "merge",
            "--key",
            "id",
            "--method",
            "insert",
            "--insert-batch",
            "3",
        ],
        Some(input),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        rows(&db, &format!("SELECT id, name FROM {table} ORDER BY id")).await,
        vec![
            (1, "Z".into()),
            (2, "b".into()),
            (3, "c".into()),
            (4, "D".into())
        ]
    );
    let seen: i64 = db
        .query_one(&format!("SELECT count(seen) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 4);
}

/// In reject mode a merge sets aside the rows the server refuses (here a CHECK), found by
/// merging the staged rows range by range, and merges the rest; the last record of a
/// repeated key still wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_sets_refused_rows_aside_in_reject_mode() {
    let db = client().await;
    let schema = fresh_schema(&db, "merge_refused").await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, qty integer CHECK (qty >= 0));
         INSERT INTO {table} VALUES (1, 10), (2, 20)"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reject_file = dir.path().join("rejects.ndjson");
    let mut input = String::new();
    for id in 1..=30 {
        // Record 7 is refused; records 31 and 32 repeat key 2, the last one wins.
        let qty = if id == 7 { -1 } else { id * 100 };
        input.push_str(&format!("{{\"id\": {id}, \"qty\": {qty}}}\n"));
    }
    input.push_str("{\"id\": 2, \"qty\": 5}\n{\"id\": 2, \"qty\": 6}\n");
    let run = apitap(
        &[
            "load",
            "-",
            "--table",
            &table,
            "--mode",
            "merge",
            "--key",
            "id",
            "--on-error",
            "reject",
            "--reject-file",
            reject_file.to_str().unwrap(),
            "--batch-size",
            "4",
        ],
        Some(input.into_bytes()),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows = rows(
        &db,
        &format!("SELECT id, qty::text FROM {table} ORDER BY id"),
    )
    .await;
    let expected: Vec<(i64, String)> = (1..=30)
        .filter(|id| *id != 7)
        .map(|id| {
            (
                id,
                if id == 2 {
                    "6".into()
                } else {
                    (id * 100).to_string()
                },
            )
        })
        .collect();
    assert_eq!(rows, expected);
    let rejected = std::fs::read_to_string(&reject_file).unwrap();
    let rejected: Vec<serde_json::Value> = rejected
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(rejected[0]["record"], 7);
    assert_eq!(rejected[0]["record_text"], "{\"id\":7,\"qty\":-1}");
    assert_eq!(
        rejected[0]["reason"],
        "PostgreSQL refused the row: new row for relation \"t\" violates check constraint \"t_qty_check\"; Failing row contains (7, -1)."
    );
}

/// A record that holds exactly what its row holds leaves the row untouched: no new row
/// version, no UPDATE trigger. What `=` calls equal but PostgreSQL stores differently
/// (numeric 1.0 and 1.00, float 0 and -0, JSON number spellings, citext 'abc' and 'ABC')
/// is a change, and the row takes the new value. Both the COPY and the INSERT path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_changes_nothing_leaves_its_row_untouched() {
    let db = client().await;
    let schema = fresh_schema(&db, "merge_unchanged").await;
    db.batch_execute("CREATE EXTENSION IF NOT EXISTS citext")
        .await
        .unwrap();
    for method in ["copy", "insert"] {
        let table = format!("{schema}.t_{method}");
        db.batch_execute(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, n numeric, f float8, j jsonb, js json,
                 c citext, s text, ts timestamptz, touched int NOT NULL DEFAULT 0);
             CREATE FUNCTION {schema}.touch_{method}() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN NEW.touched := OLD.touched + 1; RETURN NEW; END $$;
             CREATE TRIGGER touch BEFORE UPDATE ON {table}
                 FOR EACH ROW EXECUTE FUNCTION {schema}.touch_{method}();
             INSERT INTO {table} (id, n, f, j, js, c, s, ts)
                 SELECT i, 1.0, 0, '{{\"a\": 1.0}}', '{{\"a\": 1}}', 'abc', 'x',
                        '2024-01-01T00:00:00Z' FROM generate_series(1, 8) i"
        ))
        .await
        .unwrap();
        let xmin = format!("SELECT id, xmin::text FROM {table} WHERE id IN (1, 6, 8) ORDER BY id");
        let before = rows(&db, &xmin).await;
        let same = |id: u32| {
            format!(
                r#"{{"id": {id}, "n": 1.0, "f": 0, "j": {{"a": 1.0}}, "js": {{"a": 1}}, "c": "abc", "s": "x", "ts": "2024-01-01T00:00:00Z"}}"#
            )
        };
        let input = [
            same(1),
            same(2).replace(r#""n": 1.0"#, r#""n": 1.00"#),
            same(3).replace(r#""f": 0"#, r#""f": -0"#),
            same(4).replace(r#"{"a": 1.0}"#, r#"{"a": 1.00}"#),
            same(5).replace(r#""abc""#, r#""ABC""#),
            same(6).replace("2024-01-01T00:00:00Z", "2024-01-01T01:00:00+01:00"),
            same(7).replace(r#""x""#, "null"),
            same(9),
        ]
        .join("\n");
        let args = [
            "load", "-", "--table", &table, "--mode", "merge", "--key", "id", "--method", method,
        ];
        let run = apitap(&args, Some(input.into_bytes())).await;
        assert_eq!(run.code, 0, "{method}: {}", run.stderr);
        let after = rows(
            &db,
            &format!(
                "SELECT id, concat_ws(' ', touched, n, f, j, js, c, coalesce(s, 'NULL'), ts)
                 FROM {table} ORDER BY id"
            ),
        )
        .await;
        let row = |touched: u8, n: &str, f: &str, j: &str, c: &str, s: &str| {
            format!(r#"{touched} {n} {f} {j} {{"a": 1}} {c} {s} 2024-01-01 00:00:00+00"#)
        };
        let was = r#"{"a": 1.0}"#;
        let expected: Vec<(i64, String)> = vec![
            (1, row(0, "1.0", "0", was, "abc", "x")),
            (2, row(1, "1.00", "0", was, "abc", "x")),
            (3, row(1, "1.0", "-0", was, "abc", "x")),
            (4, row(1, "1.0", "0", r#"{"a": 1.00}"#, "abc", "x")),
            (5, row(1, "1.0", "0", was, "ABC", "x")),
            (6, row(0, "1.0", "0", was, "abc", "x")),
            (7, row(1, "1.0", "0", was, "abc", "NULL")),
            (8, row(0, "1.0", "0", was, "abc", "x")),
            (9, row(0, "1.0", "0", was, "abc", "x")),
        ];
        assert_eq!(after, expected, "{method}");
        // The untouched rows are the very row versions that were there.
        assert_eq!(rows(&db, &xmin).await, before, "{method}");
    }
}
