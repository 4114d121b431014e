//! Reject files, interruptions and readers during a load: what a load leaves behind when
//! records are bad, when it is stopped, and what other sessions see meanwhile.

use std::time::Duration;

use crate::common::*;
use crate::errors::{assert_one_line_error, slow_rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_and_sigterm_roll_back_and_exit_130() {
    let db = client().await;
    let schema = fresh_schema(&db, "interrupt").await;
    let table = guarded_table(&db, &schema).await;
    let addr = serve(slow_rows(1000, Duration::from_millis(20))).await;
    for signal in ["-INT", "-TERM"] {
        let child = command(&[
            "load",
            &format!("http://{addr}/slow"),
            "--table",
            &table,
            "--batch-size",
            "100",
        ])
        .spawn()
        .unwrap();
        // Interrupt it mid-COPY, with rows already sent.
        let backend = wait_for_copy(&db, &schema, 1000).await;
        let status = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let output = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(130), "{signal}: {stderr}");
        assert!(
            stderr.contains(&format!("apitap: interrupted; {table} is unchanged")),
            "{signal}: {stderr}"
        );
        assert_unchanged(&db, &table).await;
        // The next load is found by its COPY: this one's backend, still ending its COPY
        // after apitap exited, must not stand in for it (the next signal would then come
        // before that load could catch it).
        wait_until(
            &db,
            "the interrupted load's backend to end",
            "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
            &[&backend],
        )
        .await;
    }
}

/// During a replace, by swap or in place, other sessions keep seeing the old rows until the
/// new ones commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_old_rows_until_replace_commits() {
    let db = client().await;
    for strategy in ["swap", "delete"] {
        let schema = fresh_schema(&db, &format!("readers_{strategy}")).await;
        let table = guarded_table(&db, &schema).await;
        let addr = serve(slow_rows(20, Duration::from_millis(50))).await;
        let child = command(&[
            "load",
            &format!("http://{addr}/slow"),
            "--table",
            &table,
            "--mode",
            "replace",
            "--replace-with",
            strategy,
            "--batch-size",
            "100",
        ])
        .spawn()
        .unwrap();
        // Mid-load: part of the COPY has run, but is not visible.
        wait_for_copy(&db, &schema, 1000).await;
        assert_unchanged(&db, &table).await;
        let output = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            output.status.success(),
            "{strategy}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(count(&db, &table).await, 10_000, "{strategy}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_records_go_to_the_reject_file_and_the_rest_loads() {
    let db = client().await;
    let schema = fresh_schema(&db, "rejects").await;
    let table = guarded_table(&db, &schema).await;
    let dir = tempfile::tempdir().unwrap();
    let reject_file = dir.path().join("rejects.ndjson");
    let input = concat!(
        "{\"id\": 2, \"name\": \"a\"}\n",
        "{\"id\": \"two\", \"name\": \"b\"}\n",
        "{\"id\": 3, \"name\": \"c\"}\n",
        "{\"id\": 4, \"name\" \"d\"}\n",
        "{\"id\": 5, \"name\": \"e\"}\n"
    );
    let args = |max: Option<&'static str>| {
        let mut a = vec![
            "load".to_string(),
            "-".into(),
            "--table".into(),
            table.clone(),
            "--on-error".into(),
            "reject".into(),
            "--reject-file".into(),
            reject_file.to_str().unwrap().into(),
            "--summary-json".into(),
            "-".into(),
        ];
        if let Some(max) = max {
            a.extend(["--max-rejects".to_string(), max.to_string()]);
        }
        a
    };

    // Past --max-rejects the load fails: nothing loaded, no reject file.
    let strict = args(Some("1"));
    let strict: Vec<&str> = strict.iter().map(String::as_str).collect();
    let run = apitap(&strict, Some(input.as_bytes().to_vec())).await;
    assert_one_line_error(
        &run,
        "2 records were rejected, more than --max-rejects 1 allows",
    );
    assert_unchanged(&db, &table).await;
    assert!(!reject_file.exists());
    assert!(!dir.path().join("rejects.ndjson.partial").exists());

    let lenient = args(None);
    let lenient: Vec<&str> = lenient.iter().map(String::as_str).collect();
    let run = apitap(&lenient, Some(input.as_bytes().to_vec())).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        (summary["rows"].as_u64(), summary["rejected"].as_u64()),
        (Some(3), Some(2))
    );
    let ids: Vec<i64> = db
        .query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 5]);
    let rejects: Vec<serde_json::Value> = std::fs::read_to_string(&reject_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rejects.len(), 2);
    assert_eq!(rejects[0]["record"], 2);
    assert_eq!(rejects[0]["line"], 2);
    assert_eq!(rejects[0]["source"], "stdin");
    assert_eq!(
        rejects[0]["reason"],
        "line 2 (record 2): column \"id\": \"two\" is not an integer (bigint)"
    );
    assert_eq!(
        rejects[0]["record_text"],
        "{\"id\": \"two\", \"name\": \"b\"}"
    );
    assert_eq!(rejects[1]["record"], 4);
    assert_eq!(
        rejects[1]["reason"],
        "line 4, column 18 (record 4): malformed JSON: expected ':' after the key, found '\"'"
    );
    assert!(!dir.path().join("rejects.ndjson.partial").exists());
}

/// Rows PostgreSQL itself refuses (a key that exists, a CHECK) are found by splitting the
/// failed COPY (or INSERT, with `--method insert`), set aside with the server's reason, and
/// everything else loads in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_server_refuses_go_to_the_reject_file_too() {
    for method in ["copy", "insert"] {
        rows_the_server_refuses_are_set_aside(method).await;
    }
}

/// Records 2 to 40 (qty -5 at 17, against a CHECK), with record 9 repeating the existing key
/// 1, record 31 not decoding and record 32 repeating record 30's key.
fn refusable_records() -> String {
    let mut input = String::new();
    for id in 2..=40 {
        let qty = if id == 17 { -5 } else { id };
        input.push_str(&format!("{{\"id\": {id}, \"qty\": {qty}}}\n"));
        if id == 9 {
            input.push_str("{\"id\": 1, \"qty\": 3}\n"); // record 9: the key exists
        }
        if id == 30 {
            input.push_str("{\"id\": \"x\", \"qty\": 3}\n"); // record 31: does not decode
            input.push_str("{\"id\": 30, \"qty\": 3}\n"); // record 32: repeats record 30
        }
    }
    input
}

async fn rows_the_server_refuses_are_set_aside(method: &str) {
    let db = client().await;
    let schema = fresh_schema(&db, &format!("refused_{method}")).await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, qty integer CHECK (qty >= 0));
         INSERT INTO {table} VALUES (1, 10)"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reject_file = dir.path().join("rejects.ndjson");
    let input = refusable_records();
    let run = apitap(
        &[
            "load",
            "-",
            "--table",
            &table,
            "--batch-size",
            "8",
            "--on-error",
            "reject",
            "--reject-file",
            reject_file.to_str().unwrap(),
            "--summary-json",
            "-",
            "--method",
            method,
            "--insert-batch",
            "8",
        ],
        Some(input.into_bytes()),
    )
    .await;
    assert_eq!(run.code, 0, "{method}: {}", run.stderr);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        (summary["rows"].as_u64(), summary["rejected"].as_u64()),
        (Some(38), Some(4))
    );
    let ids: Vec<i64> = db
        .query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<i64> = (1..=40).filter(|id| *id != 17).collect();
    assert_eq!(ids, expected, "{method}");
    let mut rejects: Vec<serde_json::Value> = std::fs::read_to_string(&reject_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rejects.sort_by_key(|r| r["record"].as_u64());
    let summary: Vec<(u64, String, String)> = rejects
        .iter()
        .map(|r| {
            (
                r["record"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
                r["record_text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                9,
                "PostgreSQL refused the row: duplicate key value violates unique constraint \"t_pkey\"; Key (id)=(1) already exists.".to_string(),
                "{\"id\":1,\"qty\":3}".to_string()
            ),
            (
                17,
                "PostgreSQL refused the row: new row for relation \"t\" violates check constraint \"t_qty_check\"; Failing row contains (17, -5).".to_string(),
                "{\"id\":17,\"qty\":-5}".to_string()
            ),
            (
                31,
                "line 31 (record 31): column \"id\": \"x\" is not an integer (bigint)".to_string(),
                "{\"id\": \"x\", \"qty\": 3}".to_string()
            ),
            (
                32,
                "PostgreSQL refused the row: duplicate key value violates unique constraint \"t_pkey\"; Key (id)=(30) already exists.".to_string(),
                "{\"id\":30,\"qty\":3}".to_string()
            ),
        ],
        "{method}"
    );
    assert_eq!(rejects[0]["line"], serde_json::Value::Null);
    assert_eq!(rejects[2]["line"], 31);
}
