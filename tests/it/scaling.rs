//! What docs/scaling.md promises of partitioned tables on one server: rows go to their
//! partitions through the parent, merge and `--copy-streams` work through it, a row no
//! partition takes is refused (or set aside) and named, and a replace by swap — which would
//! detach the partitions — is refused before any row moves, while `--replace-with delete`
//! works.

use crate::common::*;

/// `(partition, id, v)` of every row, in id order.
async fn placed(db: &tokio_postgres::Client, table: &str) -> Vec<(String, i64, String)> {
    db.query(
        &format!("SELECT tableoid::regclass::text, id, v FROM {table} ORDER BY id"),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn records(rows: &[(i64, &str, &str)]) -> Vec<u8> {
    rows.iter()
        .map(|(id, day, v)| format!("{{\"id\":{id},\"day\":\"{day}\",\"v\":\"{v}\"}}\n"))
        .collect::<String>()
        .into_bytes()
}

/// A row no partition takes fails the load, naming the row, and nothing of it lands; with
/// --on-error reject it goes to the reject file while the others load.
async fn a_row_no_partition_takes_is_refused_or_set_aside(
    db: &tokio_postgres::Client,
    table: &str,
) {
    let before = placed(db, table).await;
    let run = apitap(
        &["load", "-", "--table", table],
        Some(records(&[(6, "2024-01-08", "f"), (7, "2024-03-01", "g")])),
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("no partition of relation")
            && run.stderr.contains("the table is unchanged"),
        "{}",
        run.stderr
    );
    assert_eq!(placed(db, table).await, before);
    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejects.ndjson");
    let run = apitap(
        &[
            "load",
            "-",
            "--table",
            table,
            "--on-error",
            "reject",
            "--reject-file",
            rejects.to_str().unwrap(),
        ],
        Some(records(&[(6, "2024-01-08", "f"), (7, "2024-03-01", "g")])),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rejected = std::fs::read_to_string(&rejects).unwrap();
    assert_eq!(rejected.lines().count(), 1, "{rejected}");
    assert!(
        rejected.contains("no partition of relation") && rejected.contains("2024-03-01"),
        "{rejected}"
    );
    assert_eq!(placed(db, table).await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_tables_load_through_their_parent() {
    let db = client().await;
    let schema = fresh_schema(&db, "partitioned").await;
    let table = format!("{schema}.events");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint, day date, v text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
         CREATE TABLE {schema}.jan PARTITION OF {table} FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
         CREATE TABLE {schema}.feb PARTITION OF {table} FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');"
    ))
    .await
    .unwrap();
    let jan = format!("{schema}.jan");
    let feb = format!("{schema}.feb");
    let load = |extra: &'static [&'static str], rows: Vec<u8>| {
        let table = table.clone();
        async move {
            let mut args = vec!["load", "-", "--table", table.as_str()];
            args.extend_from_slice(extra);
            apitap(&args, Some(rows)).await
        }
    };

    let run = load(
        &[],
        records(&[(1, "2024-01-05", "a"), (2, "2024-02-05", "b")]),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = load(
        &["--copy-streams", "2"],
        records(&[(3, "2024-01-06", "c"), (4, "2024-02-06", "d")]),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = load(
        &["--mode", "merge", "--key", "id,day"],
        records(&[(1, "2024-01-05", "a2"), (5, "2024-02-07", "e")]),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let row = |p: &str, id: i64, v: &str| (p.to_string(), id, v.to_string());
    assert_eq!(
        placed(&db, &table).await,
        vec![
            row(&jan, 1, "a2"),
            row(&feb, 2, "b"),
            row(&jan, 3, "c"),
            row(&feb, 4, "d"),
            row(&feb, 5, "e"),
        ]
    );

    a_row_no_partition_takes_is_refused_or_set_aside(&db, &table).await;

    // A swap would leave the partitions behind: refused before any row moves.
    let run = load(&["--mode", "replace"], records(&[(8, "2024-01-09", "h")])).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("it is partitioned")
            && run.stderr.contains("pass --replace-with delete"),
        "{}",
        run.stderr
    );
    assert_eq!(placed(&db, &table).await.len(), 6);
    let run = load(
        &["--mode", "replace", "--replace-with", "delete"],
        records(&[(8, "2024-01-09", "h"), (9, "2024-02-09", "i")]),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        placed(&db, &table).await,
        vec![row(&jan, 8, "h"), row(&feb, 9, "i")]
    );
}
