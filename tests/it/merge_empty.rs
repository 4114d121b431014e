//! `--mode merge` into an empty table: the records of keys met for the first time are COPYed
//! straight into it, the others staged and applied after them (src/sink/merge_empty.rs),
//! against the real PostgreSQL. Every case checks the rows the upsert would have left.

use crate::common::*;

async fn pairs(db: &tokio_postgres::Client, sql: &str) -> Vec<(String, String)> {
    db.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn merge(table: &str, key: &str, input: &[u8]) -> Run {
    apitap(
        &[
            "load",
            "-",
            "--table",
            table,
            "--mode",
            "merge",
            "--key",
            key,
            "--log-level",
            "apitap=info",
        ],
        Some(input.to_vec()),
    )
    .await
}

/// Asserts the merge succeeded, and returns what went straight into the table ([`copied`]).
fn merged(run: &Run) -> Option<(u64, u64)> {
    assert_eq!(run.code, 0, "{}", run.stderr);
    copied(run)
}

fn row(first: &str, second: &str) -> (String, String) {
    (first.to_string(), second.to_string())
}

/// What the log says went straight into the table and what was staged, or `None` when the
/// merge staged every row.
fn copied(run: &Run) -> Option<(u64, u64)> {
    let field = |line: &str, name: &str| -> u64 {
        let at = line.find(&format!(" {name}=")).unwrap() + name.len() + 2;
        line[at..].split(' ').next().unwrap().parse().unwrap()
    };
    let line = run.stderr.lines().find(|l| l.contains(" into_target="))?;
    Some((field(line, "into_target"), field(line, "staged")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_keys_go_straight_into_an_empty_table_and_the_last_record_still_wins() {
    let db = client().await;
    let schema = fresh_schema(&db, "merge_empty").await;
    let table = format!("{schema}.t");
    let create = format!(
        "DROP TABLE IF EXISTS {table};
         CREATE TABLE {table} (id bigint PRIMARY KEY, name text UNIQUE, seen timestamptz DEFAULT now())"
    );
    let named = format!("SELECT id::text, name FROM {table} WHERE seen IS NOT NULL ORDER BY id");

    // No repeats: every row COPYed, defaults filled.
    db.batch_execute(&create).await.unwrap();
    let run = merge(
        &table,
        "id",
        b"{\"id\": 2, \"name\": \"b\"}\n{\"id\": 1, \"name\": \"a\"}\n",
    )
    .await;
    assert_eq!(merged(&run), Some((2, 0)), "{}", run.stderr);
    assert_eq!(pairs(&db, &named).await, vec![row("1", "a"), row("2", "b")]);

    // A repeated key: its later record is staged and wins.
    db.batch_execute(&create).await.unwrap();
    let run = merge(
        &table,
        "id",
        b"{\"id\": 1, \"name\": \"a\"}\n{\"id\": 2, \"name\": \"b\"}\n{\"id\": 1, \"name\": \"A\"}\n",
    )
    .await;
    assert_eq!(merged(&run), Some((2, 1)), "{}", run.stderr);
    assert_eq!(pairs(&db, &named).await, vec![row("1", "A"), row("2", "b")]);

    // Two keys with one name: the other unique index refuses the COPY, named, and the
    // table stays empty.
    db.batch_execute(&create).await.unwrap();
    let run = merge(
        &table,
        "id",
        b"{\"id\": 1, \"name\": \"same\"}\n{\"id\": 2, \"name\": \"same\"}\n",
    )
    .await;
    assert_fails(
        &run,
        "PostgreSQL rejected COPY on apitap_test_merge_empty.t: duplicate key value violates unique constraint \"t_name_key\"",
    );
    assert_eq!(count(&db, &table).await, 0);

    // A table that is not empty is merged through the staging table.
    db.batch_execute(&create).await.unwrap();
    db.batch_execute(&format!("INSERT INTO {table} (id, name) VALUES (9, 'z')"))
        .await
        .unwrap();
    let run = merge(
        &table,
        "id",
        b"{\"id\": 9, \"name\": \"Z\"}\n{\"id\": 1, \"name\": \"a\"}\n",
    )
    .await;
    assert_eq!(merged(&run), None, "{}", run.stderr);
    assert_eq!(pairs(&db, &named).await, vec![row("1", "a"), row("9", "Z")]);

    // A trigger of the user's: ON CONFLICT DO UPDATE fires UPDATE statement triggers, which
    // COPY would not, so the rows are staged; the row trigger runs on each inserted row.
    db.batch_execute(&create).await.unwrap();
    db.batch_execute(&format!(
        "CREATE FUNCTION {schema}.shout() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN NEW.name := upper(NEW.name); RETURN NEW; END $$;
         CREATE TRIGGER shout BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {schema}.shout()"
    ))
    .await
    .unwrap();
    let run = merge(&table, "id", b"{\"id\": 1, \"name\": \"a\"}\n").await;
    assert_eq!(merged(&run), None, "{}", run.stderr);
    assert_eq!(pairs(&db, &named).await, vec![row("1", "A")]);

    // A deferrable key would be checked only at COMMIT by COPY: such a table is merged as
    // before, and ON CONFLICT refuses it, naming why.
    db.batch_execute(&format!(
        "DROP TABLE {table}; CREATE TABLE {table} (id bigint PRIMARY KEY DEFERRABLE, name text)"
    ))
    .await
    .unwrap();
    let run = merge(
        &table,
        "id",
        b"{\"id\": 1, \"name\": \"a\"}\n{\"id\": 1, \"name\": \"b\"}\n",
    )
    .await;
    assert_fails(
        &run,
        "ON CONFLICT does not support deferrable unique constraints/exclusion constraints as arbiters",
    );
    assert_eq!(count(&db, &table).await, 0);
}

/// More repeated rows than wait in memory: they go to the staging table mid-load, between
/// two COPYs into the table, and each key still ends with its last record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_repeating_every_key_ends_with_each_key_s_last_record() {
    let db = client().await;
    let schema = fresh_schema(&db, "merge_empty_many").await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, v bigint NOT NULL)"
    ))
    .await
    .unwrap();
    // Every key once in order, then again in a scrambled order: the second record wins.
    const KEYS: u64 = 400_000;
    let mut input = Vec::new();
    let mut expected_sum = 0u64;
    for n in 0..2 * KEYS {
        let id = if n < KEYS { n } else { (n * 7_919) % KEYS };
        if n >= KEYS {
            expected_sum += n;
        }
        input.extend_from_slice(format!("{{\"id\": {id}, \"v\": {n}}}\n").as_bytes());
    }
    let run = merge(&table, "id", &input).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (into_target, staged) = copied(&run).expect("COPYed into the table");
    assert_eq!(into_target + staged, 2 * KEYS, "{}", run.stderr);
    assert!(staged >= KEYS, "{}", run.stderr);
    let row = db
        .query_one(
            &format!("SELECT count(*), sum(v)::bigint, min(v) FROM {table}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), KEYS as i64);
    assert_eq!(row.get::<_, i64>(1), expected_sum as i64);
    assert_eq!(row.get::<_, i64>(2), KEYS as i64);
}

/// Keys PostgreSQL reads as one whatever their spelling (a uuid in capitals, one instant
/// at two offsets) are one key to the COPY path too: the later record wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spelled_two_ways_are_one_key() {
    let db = client().await;
    let schema = fresh_schema(&db, "merge_empty_spelling").await;
    for (key_type, first, second) in [
        (
            "uuid",
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ),
        (
            "timestamptz",
            "2024-01-01T01:00:00+01:00",
            "2024-01-01T00:00:00Z",
        ),
    ] {
        let table = format!("{schema}.t_{key_type}");
        db.batch_execute(&format!(
            "CREATE TABLE {table} (k {key_type} PRIMARY KEY, v text)"
        ))
        .await
        .unwrap();
        let input = format!(
            "{{\"k\": \"{first}\", \"v\": \"first\"}}\n{{\"k\": \"{second}\", \"v\": \"second\"}}\n"
        );
        let run = merge(&table, "k", input.as_bytes()).await;
        assert_eq!(run.code, 0, "{key_type}: {}", run.stderr);
        assert_eq!(copied(&run), Some((1, 1)), "{key_type}: {}", run.stderr);
        let got = pairs(&db, &format!("SELECT k::text, v FROM {table}")).await;
        assert_eq!(got.len(), 1, "{key_type}: {got:?}");
        assert_eq!(got[0].1, "second", "{key_type}");
    }
}

/// Keys PostgreSQL calls equal though their bytes differ (citext, a nondeterministic
/// collation, char(n)'s trailing spaces, numeric scale) cannot be told apart by their
/// bytes: such merges stage every row in input order, and the last record wins even where
/// a byte-for-byte repeat comes between two spellings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_equal_only_to_postgres_are_staged_in_order() {
    let db = client().await;
    let schema = fresh_schema(&db, "merge_empty_unlike").await;
    db.batch_execute(&format!(
        "CREATE EXTENSION IF NOT EXISTS citext;
         CREATE COLLATION {schema}.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
    ))
    .await
    .unwrap();
    for (name, key_type, spelled, respelled) in [
        ("citext", "citext".to_string(), "\"A\"", "\"a\""),
        (
            "collation",
            format!("text COLLATE {schema}.ci"),
            "\"A\"",
            "\"a\"",
        ),
        ("bpchar", "char(3)".to_string(), "\"a\"", "\"a  \""),
        ("numeric", "numeric".to_string(), "1.0", "1.00"),
    ] {
        let table = format!("{schema}.t_{name}");
        db.batch_execute(&format!(
            "CREATE TABLE {table} (k {key_type} PRIMARY KEY, v text)"
        ))
        .await
        .unwrap();
        let input = format!(
            "{{\"k\": {spelled}, \"v\": \"1\"}}\n{{\"k\": {spelled}, \"v\": \"2\"}}\n{{\"k\": {respelled}, \"v\": \"3\"}}\n"
        );
        let run = merge(&table, "k", input.as_bytes()).await;
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        assert_eq!(copied(&run), None, "{name}: {}", run.stderr);
        let got = pairs(&db, &format!("SELECT k::text, v FROM {table}")).await;
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        assert_eq!(got[0].1, "3", "{name}: {got:?}");
    }
}

/// Another session writing to the table right now: the merge does not wait for it to take
/// the table for itself, it stages every row as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_in_use_is_merged_through_staging() {
    let db = client().await;
    let schema = fresh_schema(&db, "merge_empty_busy").await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, name text)"
    ))
    .await
    .unwrap();
    let writer = client().await;
    writer
        .batch_execute(&format!("BEGIN; LOCK TABLE {table} IN ROW EXCLUSIVE MODE"))
        .await
        .unwrap();
    let run = merge(
        &table,
        "id",
        b"{\"id\": 1, \"name\": \"a\"}\n{\"id\": 1, \"name\": \"b\"}\n",
    )
    .await;
    writer.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(merged(&run), None, "{}", run.stderr);
    assert!(
        run.stderr.contains("another session is using the table"),
        "{}",
        run.stderr
    );
    assert_eq!(
        pairs(&db, &format!("SELECT id::text, name FROM {table}")).await,
        vec![row("1", "b")]
    );
}

/// A backfill committing every page: the first page goes straight into the empty table, the
/// later ones, into a table no longer empty, through staging; the last record of each key
/// wins across pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_committing_page_by_page_keeps_the_last_record() {
    let db = client().await;
    let schema = fresh_schema(&db, "merge_empty_pages").await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, v text)"
    ))
    .await
    .unwrap();
    let pages = axum::Router::new().route(
        "/pages",
        axum::routing::get(
            |axum::extract::Query(q): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >| async move {
                match q.get("page").map(String::as_str) {
                    Some("1") => "{\"id\": 1, \"v\": \"a\"}\n{\"id\": 2, \"v\": \"a\"}\n",
                    Some("2") => "{\"id\": 2, \"v\": \"b\"}\n{\"id\": 3, \"v\": \"b\"}\n",
                    _ => "{\"id\": 1, \"v\": \"c\"}\n",
                }
            },
        ),
    );
    let addr = serve(pages).await;
    let url = format!("http://{addr}/pages");
    let run = apitap(
        &[
            "load",
            &url,
            "--table",
            &table,
            "--mode",
            "merge",
            "--key",
            "id",
            "--pagination",
            "{kind: page_number, page_size: 2}",
            "--commit-every",
            "1",
            "--state-key",
            &format!("pages-{schema}"),
            "--log-level",
            "apitap=info",
        ],
        None,
    )
    .await;
    assert_eq!(merged(&run), Some((2, 0)), "{}", run.stderr);
    assert_eq!(
        pairs(&db, &format!("SELECT id::text, v FROM {table} ORDER BY id")).await,
        vec![row("1", "c"), row("2", "b"), row("3", "b")]
    );
}

/// Into a table the load creates, the COPY freezes its rows as an append into a new table
/// does (VACUUM need not pass over them), and a repeated key still ends with its last record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_the_merge_creates_gets_its_rows_frozen() {
    let db = client().await;
    let schema = fresh_schema(&db, "merge_empty_new").await;
    db.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_visibility")
        .await
        .unwrap();
    let table = format!("{schema}.t");
    let input: String = (1..=2_000)
        .map(|id| format!("{{\"id\": {id}, \"name\": \"n{id}\"}}\n"))
        .collect();
    let run = merge(&table, "id", input.as_bytes()).await;
    assert_eq!(merged(&run), Some((2_000, 0)), "{}", run.stderr);
    let frozen: bool = db
        .query_one(
            "SELECT bool_and(all_frozen) FROM pg_visibility_map($1::text::regclass)",
            &[&table],
        )
        .await
        .unwrap()
        .get(0);
    assert!(frozen, "the merge's rows are not frozen");

    let again = format!("{schema}.t2");
    let run = merge(
        &again,
        "id",
        b"{\"id\": 1, \"name\": \"a\"}\n{\"id\": 1, \"name\": \"b\"}\n",
    )
    .await;
    assert_eq!(merged(&run), Some((1, 1)), "{}", run.stderr);
    assert_eq!(
        pairs(&db, &format!("SELECT id::text, name FROM {again}")).await,
        vec![row("1", "b")]
    );
}

/// While a merge COPYs into an empty table, other sessions read it (and see nothing yet) but
/// their writes wait for the load: one that will not wait is refused, and the merge's rows
/// are what the table holds when it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_wait_for_a_merge_into_an_empty_table_readers_do_not() {
    let db = client().await;
    let schema = fresh_schema(&db, "merge_empty_lock").await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, v text)"
    ))
    .await
    .unwrap();
    // Page 2 is held back until the test has looked at the table mid-load.
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let held = gate.clone();
    let pages = axum::Router::new().route(
        "/pages",
        axum::routing::get(
            move |axum::extract::Query(q): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >| {
                let held = held.clone();
                async move {
                    if q.get("page").map(String::as_str) == Some("1") {
                        return "{\"id\": 1, \"v\": \"a\"}\n{\"id\": 2, \"v\": \"a\"}\n";
                    }
                    held.notified().await;
                    "{\"id\": 1, \"v\": \"b\"}\n"
                }
            },
        ),
    );
    let addr = serve(pages).await;
    let url = format!("http://{addr}/pages");
    let load = {
        let table = table.clone();
        tokio::spawn(async move {
            apitap(
                &[
                    "load",
                    &url,
                    "--table",
                    &table,
                    "--mode",
                    "merge",
                    "--key",
                    "id",
                    "--pagination",
                    "{kind: page_number, page_size: 2}",
                    // Planned from page 1 alone, so the load starts before page 2.
                    "--sample",
                    "2",
                    "--log-level",
                    "apitap=info",
                ],
                None,
            )
            .await
        })
    };
    // Until the load holds the table against writers.
    let held_lock = format!(
        "SELECT count(*) FROM pg_locks WHERE relation = '{table}'::regclass \
         AND mode = 'ShareRowExclusiveLock' AND granted"
    );
    let started = std::time::Instant::now();
    while db
        .query_one(&held_lock, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the merge never locked the table"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        count(&db, &table).await,
        0,
        "a reader sees the rows before COMMIT"
    );
    let refused = db
        .batch_execute(&format!(
            "SET lock_timeout = '200ms'; INSERT INTO {table} VALUES (3, 'other')"
        ))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE),
        "{refused}"
    );
    gate.notify_one();
    let run = load.await.unwrap();
    assert_eq!(merged(&run), Some((2, 1)), "{}", run.stderr);
    assert_eq!(
        pairs(&db, &format!("SELECT id::text, v FROM {table} ORDER BY id")).await,
        vec![row("1", "b"), row("2", "a")]
    );
}
