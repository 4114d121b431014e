//! Truthful endings: what a load says when its COMMIT never answers, when it is interrupted
//! during COMMIT, and when its reject file cannot take its name after the commit.

use crate::common::*;

/// A table whose COMMIT blocks: a deferred constraint trigger takes advisory lock 4242,
/// which the returned session holds until it lets go. COPY fires the trigger per row, and
/// deferred triggers run inside COMMIT.
async fn table_with_a_blocking_commit(
    db: &tokio_postgres::Client,
    schema: &str,
) -> (String, tokio_postgres::Client) {
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint, name text);
         CREATE FUNCTION {schema}.hold() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER hold AFTER INSERT ON {table}
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {schema}.hold()"
    ))
    .await
    .unwrap();
    let holder = client().await;
    holder
        .batch_execute("SELECT pg_advisory_lock(4242)")
        .await
        .unwrap();
    (table, holder)
}

/// The pid of the apitap session waiting inside its COMMIT.
async fn committing(db: &tokio_postgres::Client) -> i32 {
    const IN_COMMIT: &str = "SELECT pid FROM pg_stat_activity WHERE application_name = 'apitap' \
         AND query = 'COMMIT' AND state = 'active' AND wait_event_type = 'Lock'";
    wait_until(
        db,
        "apitap waiting inside its COMMIT",
        &format!("SELECT EXISTS ({IN_COMMIT})"),
        &[],
    )
    .await;
    db.query_one(IN_COMMIT, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_during_commit_is_reported_as_unknown_not_as_unchanged() {
    let db = client().await;
    let schema = fresh_schema(&db, "commit_lost").await;
    let (table, _holder) = table_with_a_blocking_commit(&db, &schema).await;
    let key = format!("commit-lost-{schema}");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), demo_ndjson(10)).unwrap();
    let path = file.path().to_str().unwrap().to_string();
    let load = {
        let (table, key) = (table.clone(), key.clone());
        tokio::spawn(async move {
            let args = [
                "load",
                &path,
                "--table",
                &table,
                "--cursor-field",
                "id",
                "--state-key",
                &key,
            ];
            apitap(&args, None).await
        })
    };
    let pid = committing(&db).await;
    db.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let run = load.await.unwrap();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "failed; whether it was committed is unknown, as the answer to its COMMIT never came; \
             look at the table and SELECT cursor_value, resume FROM apitap._state WHERE key = '{key}' \
             before loading again: the connection to PostgreSQL ended during COMMIT on {table}: \
             terminating connection due to administrator command"
        )),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("unchanged"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_during_commit_waits_for_its_outcome() {
    let db = client().await;
    let schema = fresh_schema(&db, "commit_interrupted").await;
    let (table, holder) = table_with_a_blocking_commit(&db, &schema).await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), demo_ndjson(10)).unwrap();
    let mut child = command(&["load", file.path().to_str().unwrap(), "--table", &table])
        .spawn()
        .unwrap();
    // stderr, line by line as apitap writes it.
    let (line_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    committing(&db).await;
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The COMMIT is released only once apitap has said it saw the interrupt and waits.
    let mut stderr = String::new();
    let waiting = "apitap: interrupted during COMMIT; waiting for the server's answer (interrupt again to stop waiting)";
    while !stderr.contains(waiting) {
        let line = tokio::time::timeout(std::time::Duration::from_secs(60), lines.recv())
            .await
            .unwrap_or_else(|_| panic!("waited 60 s for {waiting:?}; stderr so far: {stderr}"))
            .unwrap_or_else(|| panic!("apitap ended without {waiting:?}: {stderr}"));
        stderr.push_str(&line);
        stderr.push('\n');
    }
    holder
        .batch_execute("SELECT pg_advisory_unlock(4242)")
        .await
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    while let Some(line) = lines.recv().await {
        stderr.push_str(&line);
        stderr.push('\n');
    }
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("into {table}")), "{stderr}");
    assert_eq!(count(&db, &table).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reject_file_that_cannot_take_its_name_is_kept_and_named() {
    let db = client().await;
    let schema = fresh_schema(&db, "rejects_rename").await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!("CREATE TABLE {table} (id bigint)"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The final name is taken by a folder with something in it: the rename must fail.
    let target = dir.path().join("rejects.ndjson");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), "").unwrap();
    let run = apitap(
        &[
            "load",
            "-",
            "--table",
            &table,
            "--on-error",
            "reject",
            "--reject-file",
            target.to_str().unwrap(),
        ],
        Some(b"{\"id\": 1}\n{\"id\": \"two\"}\n{\"id\": 3}\n".to_vec()),
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let partial = dir.path().join("rejects.ndjson.partial");
    assert!(
        run.stderr.contains(&format!(
            "failed; all 2 rows are committed to the table: the load committed, but its reject file could not be renamed to {} (",
            target.display()
        )) && run.stderr.contains(&format!(
            "); the rejected records are in {}",
            partial.display()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(count(&db, &table).await, 2);
    let kept = std::fs::read_to_string(&partial).unwrap();
    assert_eq!(kept.lines().count(), 1, "{kept}");
    assert!(
        kept.contains("\"record_text\":\"{\\\"id\\\": \\\"two\\\"}\""),
        "{kept}"
    );
}
