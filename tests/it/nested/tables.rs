//! `--nested tables`: each array becomes a child table whose rows are its elements, each
//! landing as PostgreSQL's `json_array_elements` reads the array, in order, linked to its
//! parent row; the family commits together or not at all.

use super::{EVENTS, columns};
use crate::common::*;

/// `apitap load SOURCE --table TABLE --nested tables EXTRA…`.
pub(super) async fn tables(source: &str, table: &str, extra: &[&str]) -> Run {
    let mut args = vec!["load", source, "--table", table, "--nested", "tables"];
    args.extend_from_slice(extra);
    apitap(&args, None).await
}

/// The records of `input`, one per row of `schema.raw (doc json)`.
async fn raw_records(db: &tokio_postgres::Client, schema: &str, input: &str) {
    db.batch_execute(&format!(
        "CREATE TABLE {schema}.raw (doc json); CREATE TABLE {schema}.probe (v text)"
    ))
    .await
    .unwrap();
    let copy =
        format!("COPY {schema}.raw FROM STDIN (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')");
    let sink = db.copy_in::<_, bytes::Bytes>(&copy).await.unwrap();
    futures_util::pin_mut!(sink);
    use futures_util::SinkExt;
    sink.send(bytes::Bytes::from(input.to_string()))
        .await
        .unwrap();
    sink.finish().await.unwrap();
}

/// A child table of the records in `schema.raw` (linked by their `id`): the elements at
/// `arrays` — each array's path from the record or from an element of the array before it.
struct Child<'a> {
    table: &'a str,
    arrays: &'a [&'a str],
    /// The elements are not objects: `value` holds each whole.
    scalar: bool,
}

/// Checks every row and column of `child` against PostgreSQL's reading of the arrays:
/// `json_array_elements … WITH ORDINALITY` gives the rows and their positions, and each
/// column equals `json_populate_record` of the element's path into a column of its type.
/// Returns how many rows were compared.
async fn assert_elements_as_postgres_reads(
    db: &tokio_postgres::Client,
    schema: &str,
    child: &Child<'_>,
) -> i64 {
    let mut from = format!("{schema}.raw r");
    let mut on = vec!["t._parent_id::text = r.doc->>'id'".to_string()];
    let mut parent = "r.doc".to_string();
    let depth = child.arrays.len();
    for (level, path) in child.arrays.iter().enumerate() {
        let path = path.replace('.', ",");
        let array = format!("{parent} #> '{{{path}}}'");
        from.push_str(&format!(
            " CROSS JOIN LATERAL json_array_elements(CASE WHEN json_typeof({array}) = 'array' THEN {array} END) \
             WITH ORDINALITY e{level}(value, ord)"
        ));
        let column = match depth - 1 - level {
            0 => "_idx".to_string(),
            1 => "_parent_idx".to_string(),
            up => format!("_parent{up}_idx"),
        };
        on.push(format!("t.{column} = e{level}.ord - 1"));
        parent = format!("e{level}.value");
    }
    let elements = format!("SELECT count(*) FROM {from}");
    let expected: i64 = db.query_one(&elements, &[]).await.unwrap().get(0);
    let table = format!("{schema}.{}", child.table);
    assert_eq!(count(db, &table).await, expected, "rows of {table}");
    let joined = format!("{from} JOIN {table} t ON {}", on.join(" AND "));
    let matched: i64 = db
        .query_one(&format!("SELECT count(*) FROM {joined}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(matched, expected, "rows of {table} that name their element");
    let mut compared = 0;
    for (column, sql_type) in columns(db, schema, child.table).await {
        if column.starts_with("_parent") || column == "_idx" {
            continue;
        }
        db.batch_execute(&format!(
            "ALTER TABLE {schema}.probe ALTER COLUMN v TYPE {sql_type} USING NULL"
        ))
        .await
        .unwrap();
        let element = match child.scalar {
            true => parent.clone(),
            false => format!("{parent} #> '{{{}}}'", column.replace("__", ",")),
        };
        let read = format!(
            "(json_populate_record(NULL::{schema}.probe, json_build_object('v', {element}))).v::text"
        );
        let differ: Vec<(Option<String>, Option<String>)> = db
            .query(
                &format!(
                    "SELECT t.{column}::text, {read} FROM {joined} WHERE t.{column}::text IS DISTINCT FROM {read}"
                ),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert!(
            differ.is_empty(),
            "{table}.{column} ({sql_type}) differs from PostgreSQL's reading: {differ:?}"
        );
        compared += 1;
    }
    assert!(compared > 0, "no column of {table} compared");
    expected
}

/// The table's primary key columns, in order.
async fn primary_key(db: &tokio_postgres::Client, table: &str) -> Vec<String> {
    db.query(
        "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
         ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[]) \
         WHERE i.indrelid = $1::text::regclass AND i.indisprimary \
         ORDER BY array_position(i.indkey::int2[], a.attnum)",
        &[&table],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_events_become_tables_each_element_as_postgres_reads_it() {
    let db = client().await;
    let schema = fresh_schema(&db, "tables_events").await;
    let table = format!("{schema}.events");
    let run = tables(EVENTS, &table, &["--key", "id"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "apitap: child tables: {table}__payload__commits (created): 3 rows; \
             {table}__payload__issue__labels (created): 1 rows"
        )),
        "{}",
        run.stderr
    );
    let root: Vec<String> = columns(&db, &schema, "events")
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(root.contains(&"payload__issue__number".to_string()));
    assert!(
        !root
            .iter()
            .any(|c| c == "payload__commits" || c == "payload__issue__labels")
    );
    assert_eq!(primary_key(&db, &table).await, ["id"]);
    assert_eq!(
        primary_key(&db, &format!("{table}__payload__commits")).await,
        ["_parent_id", "_idx"]
    );
    let input = std::fs::read_to_string(EVENTS).unwrap();
    raw_records(&db, &schema, &input).await;
    let commits = Child {
        table: "events__payload__commits",
        arrays: &["payload.commits"],
        scalar: false,
    };
    assert_eq!(
        assert_elements_as_postgres_reads(&db, &schema, &commits).await,
        3
    );
    let labels = Child {
        table: "events__payload__issue__labels",
        arrays: &["payload.issue.labels"],
        scalar: false,
    };
    assert_eq!(
        assert_elements_as_postgres_reads(&db, &schema, &labels).await,
        1
    );
    // The SQL docs/nested.md gives to join them back.
    let joined: Vec<(String, String)> = db
        .query(
            &format!(
                "SELECT e.id, c.sha FROM {table} e JOIN {table}__payload__commits c ON c._parent_id = e.id \
                 ORDER BY e.id, c._idx"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(joined.len(), 3);
    assert_eq!(joined[0].0, "34518203511");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tweets_become_three_levels_of_tables_linked_to_parent_and_root() {
    let db = client().await;
    let schema = fresh_schema(&db, "tables_tweets").await;
    let dir = tempfile::tempdir().unwrap();
    let tweets = dir.path().join("tweets.ndjson");
    let dump = command(&["demo-api", "--dump-tweets", "1000"])
        .output()
        .unwrap();
    assert!(dump.status.success());
    std::fs::write(&tweets, &dump.stdout).unwrap();
    let table = format!("{schema}.tweets");
    let run = tables(
        tweets.to_str().unwrap(),
        &table,
        &["--key", "id", "--sample", "200"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(count(&db, &table).await, 1000);
    raw_records(&db, &schema, &String::from_utf8(dump.stdout).unwrap()).await;
    let mut rows = 0;
    for (child, arrays, scalar) in [
        (
            "tweets__entities__hashtags",
            &["entities.hashtags"][..],
            false,
        ),
        (
            "tweets__entities__hashtags__indices",
            &["entities.hashtags", "indices"][..],
            true,
        ),
        (
            "tweets__entities__user_mentions",
            &["entities.user_mentions"][..],
            false,
        ),
        (
            "tweets__entities__urls__indices",
            &["entities.urls", "indices"][..],
            true,
        ),
    ] {
        let child = Child {
            table: child,
            arrays,
            scalar,
        };
        rows += assert_elements_as_postgres_reads(&db, &schema, &child).await;
    }
    assert!(rows > 2000, "only {rows} child rows compared");
    assert_eq!(
        primary_key(&db, &format!("{table}__entities__hashtags__indices")).await,
        ["_parent_id", "_parent_idx", "_idx"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_root_rows_get_generated_ids_their_children_link_to() {
    let db = client().await;
    let schema = fresh_schema(&db, "tables_no_key").await;
    let table = format!("{schema}.events");
    let run = tables(EVENTS, &table, &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(primary_key(&db, &table).await, ["_apitap_id"]);
    let children = format!("{table}__payload__commits");
    assert_eq!(
        primary_key(&db, &children).await,
        ["_parent__apitap_id", "_idx"]
    );
    let linked: Vec<(String, i64)> = db
        .query(
            &format!(
                "SELECT e.id, count(*) FROM {table} e JOIN {children} c ON c._parent__apitap_id = e._apitap_id \
                 GROUP BY e.id ORDER BY e.id"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        linked,
        [
            ("34518203511".to_string(), 2),
            ("34518203555".to_string(), 1)
        ]
    );
    // A second load appends records with ids of their own; its summary lists the children.
    let run = tables(EVENTS, &table, &["--summary-json", "-"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(
        summary["child_tables"],
        serde_json::json!([
            {"table": format!("{children}"), "rows": 3, "created_table": false, "added_columns": []},
            {"table": format!("{table}__payload__issue__labels"), "rows": 1, "created_table": false, "added_columns": []},
        ])
    );
    let ids: i64 = db
        .query_one(
            &format!("SELECT count(DISTINCT _apitap_id) FROM {table}"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ids, 12);
    assert_eq!(count(&db, &children).await, 6);
}

/// Writes `lines` to a file in `dir` and returns its path.
pub(super) fn input(dir: &tempfile::TempDir, name: &str, lines: &[&str]) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_arrays_each_have_a_named_outcome() {
    let db = client().await;
    let schema = fresh_schema(&db, "tables_awkward").await;
    let table = format!("{schema}.t");
    let dir = tempfile::tempdir().unwrap();
    let long: Vec<String> = (0..1_000_000).map(|i| i.to_string()).collect();
    let long = format!(r#"{{"id": 3, "long": [{}]}}"#, long.join(","));
    let source = input(
        &dir,
        "awkward.ndjson",
        &[
            r#"{"id": 1, "mixed": [1, "two", {"three": 3}], "grid": [[1, 2], [3]], "empty": []}"#,
            r#"{"id": 2, "mixed": [null], "grid": null, "empty": null, "long": []}"#,
            &long,
        ],
    );
    let run = tables(&source, &table, &["--key", "id"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let types: std::collections::BTreeMap<String, String> = columns(&db, &schema, "t__mixed")
        .await
        .into_iter()
        .collect();
    assert_eq!(types["value"], "jsonb");
    let mixed: Vec<Option<String>> = db
        .query(
            &format!("SELECT value::text FROM {table}__mixed ORDER BY _parent_id, _idx"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        mixed,
        [
            Some("1".to_string()),
            Some("\"two\"".to_string()),
            Some("{\"three\": 3}".to_string()),
            None
        ]
    );
    let grid: Vec<String> = db
        .query(
            &format!("SELECT value::text FROM {table}__grid ORDER BY _idx"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(grid, ["[1, 2]", "[3]"]);
    // Only ever empty in the sample: no element to make a table of, so it stays jsonb.
    let root: std::collections::BTreeMap<String, String> =
        columns(&db, &schema, "t").await.into_iter().collect();
    assert_eq!(root["empty"], "jsonb");
    let long: (i64, i64) = db
        .query_one(
            &format!("SELECT count(*), count(*) FILTER (WHERE value = _idx) FROM {table}__long"),
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(long, (1_000_000, 1_000_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preview_shows_every_table_of_the_family_and_writes_nothing() {
    let db = client().await;
    let schema = fresh_schema(&db, "tables_preview").await;
    let table = format!("{schema}.events");
    let run = tables(EVENTS, &table, &["--key", "id", "--preview", "2"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    for expected in [
        format!("DDL: CREATE TABLE \"{schema}\".\"events__payload__commits\" (\"_parent_id\" text, \"_idx\" integer, \"sha\" text"),
        format!("child table {table}__payload__commits (created)"),
        "    column \"_idx\" integer: the element's position in its array, from 0".to_string(),
        "    row: {\"_parent_id\":\"34518203511\",\"_idx\":0,\"sha\":\"553c2077f0edc3d5dc5d17262f6aa498e69d6f8e\"".to_string(),
        format!("child table {table}__payload__issue__labels (created)"),
    ] {
        assert!(run.stdout.contains(&expected), "{expected:?} not in:\n{}", run.stdout);
    }
    assert!(!table_exists(&db, &table).await);
    assert!(!table_exists(&db, &format!("{table}__payload__commits")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_tables_cannot_do_yet_is_refused_before_anything_is_read() {
    for (extra, other) in [
        (&["--method", "insert"][..], "--method insert"),
        (&["--copy-streams", "2"][..], "--copy-streams"),
    ] {
        let run = tables(EVENTS, "t", extra).await;
        assert_fails(
            &run,
            &format!(
                "apitap: error: --nested tables cannot be used with {other} yet: it writes a family of tables by binary COPY in one transaction"
            ),
        );
    }
    let run = apitap(&["load", EVENTS, "--table", "t", "--key", "id"], None).await;
    assert_fails(
        &run,
        "apitap: error: --key only applies to --mode merge and --nested tables",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrays_that_would_share_a_table_are_refused_and_no_records_load_nothing() {
    let db = client().await;
    let schema = fresh_schema(&db, "tables_collide").await;
    let table = format!("{schema}.t");
    let dir = tempfile::tempdir().unwrap();
    let source = input(
        &dir,
        "collide.ndjson",
        &[r#"{"id": 2, "x__y": [1], "x": {"y": [2]}}"#],
    );
    let run = tables(&source, &table, &["--key", "id"]).await;
    assert_fails(
        &run,
        &format!(
            "the arrays \"x__y\" and \"x.y\" would both be table {table}__x__y; rename one field, or load with --nested flatten"
        ),
    );
    assert!(!table_exists(&db, &table).await);
    let empty = input(&dir, "empty.ndjson", &[]);
    let run = tables(&empty, &table, &["--key", "id"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains(": 0 rows"), "{}", run.stderr);
}

/// A child table made beforehand (with the columns and key the load would give it) is
/// loaded into as it is, beside a root table the load creates and COPYs into with FREEZE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_table_that_exists_already_is_loaded_into_beside_a_new_root() {
    let db = client().await;
    let schema = fresh_schema(&db, "tables_existing_child").await;
    let table = format!("{schema}.events");
    db.batch_execute(&format!(
        "CREATE TABLE {table}__payload__issue__labels (_parent_id text, _idx integer, id bigint, name text, color text, \"default\" boolean, PRIMARY KEY (_parent_id, _idx))"
    ))
    .await
    .unwrap();
    let run = tables(EVENTS, &table, &["--key", "id"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("{table}__payload__issue__labels: 1 rows")),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_child_table_without_a_link_column_is_refused_under_freeze() {
    let db = client().await;
    let schema = fresh_schema(&db, "tables_no_link").await;
    let table = format!("{schema}.events");
    db.batch_execute(&format!(
        "CREATE TABLE {table}__payload__issue__labels (_parent_id text, id bigint, name text, color text, \"default\" boolean)"
    ))
    .await
    .unwrap();
    let run = tables(EVENTS, &table, &["--key", "id", "--schema", "freeze"]).await;
    assert_fails(
        &run,
        &format!(
            "cannot load {table}__payload__issue__labels: it has no column \"_idx\", which its rows need (a link to their parent, \
             or the element); add it, or load with --schema evolve"
        ),
    );
    assert!(!table_exists(&db, &table).await);
}
