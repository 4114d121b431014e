//! Citus: loads into distributed and reference tables that stay distributed and reference
//! tables. They run against the coordinator in APITAP_TEST_CITUS_URL (`scripts/citus.sh test`
//! starts a coordinator and two workers and runs them); without it each test says it was
//! skipped and passes, as in CI, where Citus is not installed.

use crate::common::*;

/// The coordinator's URL and a session on it, or `None` (said on stderr) without one.
async fn coordinator(test: &str) -> Option<(String, tokio_postgres::Client)> {
    let Ok(url) = std::env::var("APITAP_TEST_CITUS_URL") else {
        eprintln!(
            "SKIPPED {test}: APITAP_TEST_CITUS_URL is not set (scripts/citus.sh test runs the Citus tests)"
        );
        return None;
    };
    // Citus turns TLS on with its own certificate; the test's own session does not judge it.
    let config: tokio_postgres::Config = url.parse().unwrap();
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    Some((url, client))
}

/// A fresh schema on the cluster.
async fn fresh(db: &tokio_postgres::Client, schema: &str) {
    db.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
    db.batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
}

/// `apitap load` of `rows` demo rows (ids 1..=rows) into `table` on the coordinator.
async fn load(url: &str, rows: u64, table: &str, extra: &[&str]) -> Run {
    let mut args = vec!["load", "-", "--table", table, "--database-url", url];
    args.extend_from_slice(extra);
    apitap(&args, Some(demo_ndjson(rows))).await
}

/// (partition method, replication model, colocation id, shards) of a Citus table.
async fn citus_table(
    db: &tokio_postgres::Client,
    table: &str,
) -> Option<(String, String, i32, i64)> {
    db.query_opt(
        "SELECT partmethod::text, repmodel::text, colocationid,
                (SELECT count(*) FROM pg_dist_shard s WHERE s.logicalrelid = p.logicalrelid)
         FROM pg_dist_partition p WHERE logicalrelid = $1::text::regclass",
        &[&table],
    )
    .await
    .unwrap()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
}

async fn indexes(db: &tokio_postgres::Client, table: &str) -> Vec<String> {
    db.query(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname || '.' || tablename = $1 ORDER BY 1",
        &[&table],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_as_psql_does_and_names_a_certificate_a_stricter_mode_refuses() {
    let Some((url, db)) = coordinator("citus connect").await else {
        return;
    };
    fresh(&db, "citus_connect").await;
    // Citus's own certificate is self-signed, X.509 v1, and valid for no time at all.
    let run = load(&url, 10, "citus_connect.t", &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = load(
        &format!("{url}?sslmode=require"),
        10,
        "citus_connect.t",
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(count(&db, "citus_connect.t").await, 20);
    let cert = tempfile::NamedTempFile::new().unwrap();
    let pem: String = db
        .query_one("SELECT pg_read_file('server.crt')", &[])
        .await
        .unwrap()
        .get(0);
    std::fs::write(cert.path(), pem).unwrap();
    let strict = format!(
        "{url}?sslmode=verify-ca&sslrootcert={}",
        cert.path().display()
    );
    let run = load(&strict, 10, "citus_connect.t", &[]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("TLS: the server's certificate expired at "),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_keeps_distributed_and_reference_tables_as_they_are() {
    let Some((url, db)) = coordinator("citus replace").await else {
        return;
    };
    fresh(&db, "citus_replace").await;
    for statement in [
        "CREATE TABLE citus_replace.orders (id bigint PRIMARY KEY, status text, amount numeric)",
        "CREATE INDEX orders_status ON citus_replace.orders (status)",
        "SELECT create_distributed_table('citus_replace.orders', 'id', shard_count => 8)",
        "CREATE TABLE citus_replace.countries (id bigint PRIMARY KEY, title text)",
        "SELECT create_reference_table('citus_replace.countries')",
    ] {
        db.batch_execute(statement).await.unwrap();
    }
    let orders = "citus_replace.orders";
    let before = citus_table(&db, orders).await.unwrap();
    assert_eq!(load(&url, 100, orders, &[]).await.code, 0);
    for (rows, extra) in [
        (60, &[][..]),
        (40, &["--copy-streams", "2"][..]),
        (30, &["--replace-with", "delete"][..]),
    ] {
        let mut args = vec!["--mode", "replace"];
        args.extend_from_slice(extra);
        let run = load(&url, rows, orders, &args).await;
        assert_eq!(run.code, 0, "{extra:?}: {}", run.stderr);
        assert_eq!(
            count(&db, orders).await,
            i64::try_from(rows).unwrap(),
            "{extra:?}"
        );
        assert_eq!(
            citus_table(&db, orders).await,
            Some(before.clone()),
            "{extra:?}: still distributed by the same column, colocated, in as many shards"
        );
        assert_eq!(indexes(&db, orders).await, ["orders_pkey", "orders_status"]);
    }
    let countries = "citus_replace.countries";
    for rows in [5, 3] {
        let run = load(&url, rows, countries, &["--mode", "replace"]).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(count(&db, countries).await, i64::try_from(rows).unwrap());
        let (method, model, ..) = citus_table(&db, countries).await.unwrap();
        assert_eq!(
            (method.as_str(), model.as_str()),
            ("n", "t"),
            "still a reference table"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_it_cannot_redo_is_refused_before_any_row_moves() {
    let Some((url, db)) = coordinator("citus refuse").await else {
        return;
    };
    fresh(&db, "citus_local").await;
    db.batch_execute("CREATE TABLE citus_local.t (id bigint, title text)")
        .await
        .unwrap();
    db.batch_execute("SELECT citus_add_local_table_to_metadata('citus_local.t')")
        .await
        .unwrap();
    assert_eq!(load(&url, 10, "citus_local.t", &[]).await.code, 0);
    let run = load(&url, 5, "citus_local.t", &["--mode", "replace"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "cannot load citus_local.t: it is a Citus local table, which a replace by swap cannot recreate; \
             pass --replace-with delete (YAML: replace_with: delete) to replace its rows in place"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(count(&db, "citus_local.t").await, 10);
    let run = load(
        &url,
        5,
        "citus_local.t",
        &["--mode", "replace", "--replace-with", "delete"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(count(&db, "citus_local.t").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_apitap_creates_are_distributed_on_request() {
    let Some((url, db)) = coordinator("citus create").await else {
        return;
    };
    fresh(&db, "citus_new").await;
    let run = load(
        &url,
        50,
        "citus_new.a",
        &["--distribute-by", "id", "--shard-count", "4"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (method, _, colocation, shards) = citus_table(&db, "citus_new.a").await.unwrap();
    assert_eq!((method.as_str(), shards), ("h", 4));
    let run = load(
        &url,
        50,
        "citus_new.b",
        &["--distribute-by", "id", "--colocate-with", "citus_new.a"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        citus_table(&db, "citus_new.b").await.map(|t| t.2),
        Some(colocation)
    );
    let run = load(&url, 7, "citus_new.c", &["--reference-table"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (method, model, ..) = citus_table(&db, "citus_new.c").await.unwrap();
    assert_eq!((method.as_str(), model.as_str()), ("n", "t"));
    assert_eq!(
        count(&db, "citus_new.a").await + count(&db, "citus_new.c").await,
        57
    );

    // An existing table that is not what was asked for is not silently left as it is.
    let run = load(&url, 5, "citus_new.c", &["--distribute-by", "id"]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "cannot load citus_new.c: the table exists and is not distributed by id; apitap distributes only tables it creates"
        ),
        "{}",
        run.stderr
    );

    // Merge keys must hold the distribution column, said before any data moves.
    let run = load(
        &url,
        5,
        "citus_new.d",
        &[
            "--distribute-by",
            "customer_id",
            "--mode",
            "merge",
            "--key",
            "id",
        ],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "it is distributed by customer_id, and Citus enforces a unique key only with the distribution column in it: \
             merge on keys that include customer_id (--key customer_id,id)"
        ),
        "{}",
        run.stderr
    );
    assert!(!table_exists(&db, "citus_new.d").await);
    merged_twice_a_new_distributed_table_rewrites_only_what_changed(&url, &db).await;
}

/// A merge that creates its table makes the key its primary key, on a distributed table;
/// merged again, records that change nothing leave their rows untouched (the same row
/// versions in the shards), and the one row that differs from its record is rewritten.
async fn merged_twice_a_new_distributed_table_rewrites_only_what_changed(
    url: &str,
    db: &tokio_postgres::Client,
) {
    let merge = ["--distribute-by", "id", "--mode", "merge", "--key", "id"];
    for rows in [20, 30] {
        let run = load(url, rows, "citus_new.m", &merge).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    assert_eq!(count(db, "citus_new.m").await, 30);
    assert_eq!(
        citus_table(db, "citus_new.m").await.map(|t| t.0),
        Some("h".into())
    );
    // Merged again, records that change nothing leave their rows untouched (the same row
    // versions in the shards); the one row that differs from its record is rewritten.
    db.batch_execute("UPDATE citus_new.m SET quantity = quantity + 1 WHERE id = 5")
        .await
        .unwrap();
    let versions = "SELECT id, xmin::text FROM citus_new.m ORDER BY id";
    let before = db.query(versions, &[]).await.unwrap();
    let run = load(url, 30, "citus_new.m", &merge).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = db.query(versions, &[]).await.unwrap();
    let rewritten: Vec<i64> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.get::<_, String>(1) != a.get::<_, String>(1))
        .map(|(_, a)| a.get(0))
        .collect();
    assert_eq!(rewritten, [5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_preview_shows_the_citus_calls_and_creates_nothing() {
    let Some((url, db)) = coordinator("citus preview").await else {
        return;
    };
    fresh(&db, "citus_preview").await;
    let run = load(
        &url,
        3,
        "citus_preview.a",
        &[
            "--distribute-by",
            "id",
            "--shard-count",
            "4",
            "--preview",
            "1",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(
            "  DDL: SELECT create_distributed_table('\"citus_preview\".\"a\"', 'id', shard_count => 4)\n"
        ),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("  row: {\"id\":1,"), "{}", run.stdout);
    assert!(!table_exists(&db, "citus_preview.a").await);
}
