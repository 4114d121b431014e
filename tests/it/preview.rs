//! `apitap load --preview`: the plan and the first rows a load would produce, from the load's
//! own code, with nothing written — no table, no column, no state, no reject file.

use crate::common::*;

/// Records whose values exercise each inference rule, a field PostgreSQL cannot take as a
/// column name, and (line 4) a record the decoder refuses.
const RECORDS: &str = concat!(
    r#"{"id":1,"wei":123456789012345678901234567890,"price":0.5,"exact":1234567890.123456789,"at":"2024-01-01T10:00:00Z","tags":[1],"note":null,"xmin":3,"ok":true}"#,
    "\n",
    r#"{"id":2,"wei":1,"price":2,"exact":1,"at":"2024-01-02T10:00:00+02:00","tags":{"a":1},"note":null,"xmin":4,"ok":false}"#,
    "\n",
    r#"{"id":3,"wei":2,"price":3.25,"exact":2,"at":"2024-01-03T10:00:00Z","tags":null,"note":null,"xmin":5,"ok":null}"#,
    "\n",
    r#"{"id":"four","wei":3,"price":1,"exact":3,"at":"2024-01-04T10:00:00Z","tags":null,"note":null,"xmin":6,"ok":true}"#,
    "\n",
);

/// `apitap load INPUT --table TABLE --sample 3 EXTRA…`.
async fn preview(input: &std::path::Path, table: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "load",
        input.to_str().unwrap(),
        "--table",
        table,
        "--sample",
        "3",
    ];
    args.extend_from_slice(extra);
    apitap(&args, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_preview_shows_types_rules_ddl_and_rows_and_writes_nothing() {
    let db = client().await;
    let schema = fresh_schema(&db, "preview_new").await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    std::fs::write(&input, RECORDS).unwrap();
    let rejects = dir.path().join("rejects.ndjson");
    let table = format!("{schema}.t");
    let reject_args = [
        "--on-error",
        "reject",
        "--reject-file",
        rejects.to_str().unwrap(),
    ];
    let run = preview(
        &input,
        &table,
        &[&reject_args[..], &["--preview", "2"]].concat(),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let expected = format!(
        "load {input}
  into {table} (created), append
  column \"id\" bigint: integers within 64 bits
  column \"wei\" numeric: an integer past 64 bits
  column \"price\" double precision: numbers with a fraction or exponent, each held exactly by a double
  column \"exact\" numeric: a number a double cannot hold exactly (digits would be lost)
  column \"at\" timestamptz: timestamps with a UTC offset
  column \"tags\" jsonb: an object or array was seen
  column \"note\" text: only nulls were seen; text takes any value later
  column \"xmin_\" bigint: integers within 64 bits
  column \"ok\" boolean: only true and false
  DDL: CREATE TABLE \"{schema}\".\"t\" (\"id\" bigint, \"wei\" numeric, \"price\" double precision, \"exact\" numeric, \"at\" timestamptz, \"tags\" jsonb, \"note\" text, \"xmin_\" bigint, \"ok\" boolean)
  field \"xmin\" loads into column \"xmin_\"
  row: {{\"id\":1,",
        input = input.display()
    );
    assert!(run.stdout.starts_with(&expected), "{}", run.stdout);
    assert_eq!(run.stdout.matches("\n  row: ").count(), 2, "{}", run.stdout);
    assert!(
        run.stdout.ends_with("nothing was written (a preview)\n"),
        "{}",
        run.stdout
    );
    assert!(!table_exists(&db, &table).await);
    assert!(!rejects.exists());
    assert!(!dir.path().join("rejects.ndjson.partial").exists());

    // All four rows: the fourth would go to the reject file, and the preview says so.
    let run = preview(&input, &table, &[&reject_args[..], &["--preview"]].concat()).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.matches("\n  row: ").count(), 3, "{}", run.stdout);
    let set_aside: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  set aside: "))
        .collect();
    assert_eq!(set_aside.len(), 1, "{}", run.stdout);
    let entry: serde_json::Value = serde_json::from_str(set_aside[0]).unwrap();
    assert_eq!(entry["line"], 4);
    assert!(
        entry["record_text"].as_str().unwrap().contains("\"four\""),
        "{entry}"
    );
    assert!(!rejects.exists());
    assert!(!table_exists(&db, &table).await);

    // Without reject mode, the refused record fails the preview as it would fail the load.
    let run = preview(&input, &table, &["--preview"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("previewing the load of")
            && run.stderr.contains("nothing was written")
            && run.stderr.contains("line 4"),
        "{}",
        run.stderr
    );
}

/// An existing table: its columns are the table's, a new field would be added (shown, not
/// run), a merge names its keys, and the stored state is read but not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_preview_of_an_existing_table_shows_the_alter_and_the_merge_keys() {
    let db = client().await;
    let schema = fresh_schema(&db, "preview_old").await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, name text); INSERT INTO {table} VALUES (1, 'kept')"
    ))
    .await
    .unwrap();
    let input = concat!(
        r#"{"id":1,"name":"new","score":2.5}"#,
        "\n",
        r#"{"id":3000000000,"name":"x","score":1}"#,
        "\n"
    );
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
            "--preview",
        ],
        Some(input.as_bytes().to_vec()),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = &run.stdout;
    for line in [
        format!("  into {table} (exists), merge on (id)\n"),
        "  column \"id\" bigint: widened for sampled values (id: integer → bigint)\n".to_string(),
        "  column \"name\" text: the table's column\n".to_string(),
        "  column \"score\" double precision: numbers with a fraction or exponent, each held exactly by a double\n".to_string(),
        "  row: {\"id\":3000000000,\"name\":\"x\",\"score\":1.0}\n".to_string(),
    ] {
        assert!(out.contains(&line), "{line:?} missing from:\n{out}");
    }
    assert!(
        out.contains(&format!("  DDL: ALTER TABLE \"{schema}\".\"t\" ")),
        "{out}"
    );
    let columns: i64 = db
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 AND table_name = 't'",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(columns, 2);
    let name: String = db
        .query_one(&format!("SELECT name FROM {table} WHERE id = 1"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "kept");
}
