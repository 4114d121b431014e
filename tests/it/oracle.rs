//! PostgreSQL as the oracle of what a JSON value means in a column.
//!
//! For every column type apitap writes, a corpus of awkward JSON lines is loaded twice into
//! the same DDL: by apitap (`--schema freeze --on-error reject`), and line by line by
//! PostgreSQL's own JSON → row conversion (`json_populate_record`) under a savepoint. Each
//! line is then classified:
//!
//! - *same*: both refused it, or both loaded the same value (compared as PostgreSQL's text);
//! - *changed*: both loaded it, with different values;
//! - *lenient*: apitap loaded what PostgreSQL refuses;
//! - *stricter*: apitap refused what PostgreSQL loads.
//!
//! Changed and lenient must not happen, except for differences docs/types.md documents (bytea
//! from base64). Stricter cases are allowed only where docs/types.md lists their rule under
//! "Stricter than PostgreSQL". Every line says which it expects, so a change of behaviour in
//! either direction fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::common::*;

/// What a corpus line should give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The same outcome as PostgreSQL.
    Same,
    /// apitap refuses what PostgreSQL loads, under this rule of docs/types.md.
    Stricter(&'static str),
    /// A documented difference (docs/types.md): apitap loads a different value, or loads what
    /// PostgreSQL refuses.
    Documented(&'static str),
}

use Expect::{Documented, Same, Stricter};

mod corpus;
use corpus::CORPORA;

/// What happened to one line on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Loaded(Option<String>),
    Refused(String),
}

/// The corpus line numbered `id` (its line number in the file).
fn line(case: &str, id: usize) -> String {
    match case.strip_prefix('@') {
        Some(raw) => raw.replace("{id}", &id.to_string()),
        None => format!("{{\"id\": {id}, \"v\": {case}}}"),
    }
}

/// Loads the corpus with apitap; each line's outcome, by line number.
async fn apitap_outcomes(
    db: &tokio_postgres::Client,
    table: &str,
    lines: &[String],
    database_url: &str,
) -> BTreeMap<usize, Outcome> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.ndjson");
    let rejects = dir.path().join("rejects.ndjson");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let run = apitap_env(
        &[
            "load",
            input.to_str().unwrap(),
            "--table",
            table,
            "--schema",
            "freeze",
            "--on-error",
            "reject",
            "--reject-file",
            rejects.to_str().unwrap(),
            "--batch-size",
            "7",
        ],
        &[("DATABASE_URL", database_url)],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{table}: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let mut outcomes = BTreeMap::new();
    for row in db
        .query(&format!("SELECT id, v::text FROM {table}"), &[])
        .await
        .unwrap()
    {
        let id: i64 = row.get(0);
        outcomes.insert(id as usize, Outcome::Loaded(row.get(1)));
    }
    let text = std::fs::read_to_string(&rejects).unwrap_or_default();
    for reject in text.lines() {
        let reject: serde_json::Value = serde_json::from_str(reject).unwrap();
        let record = reject["record"].as_u64().unwrap() as usize;
        let reason = reject["reason"].as_str().unwrap().to_string();
        assert!(
            outcomes
                .insert(record, Outcome::Refused(reason.clone()))
                .is_none(),
            "{table}: record {record} both loaded and rejected ({reason})"
        );
    }
    outcomes
}

/// Loads each line with PostgreSQL's own conversion; each line's outcome.
async fn postgres_outcomes(
    db: &mut tokio_postgres::Client,
    table: &str,
    lines: &[String],
) -> BTreeMap<usize, Outcome> {
    let mut outcomes = BTreeMap::new();
    let insert = format!(
        "INSERT INTO {table} SELECT * FROM json_populate_record(NULL::{table}, $1::text::json) RETURNING v::text"
    );
    let mut transaction = db.transaction().await.unwrap();
    for (i, text) in lines.iter().enumerate() {
        let savepoint = transaction.savepoint("line").await.unwrap();
        let outcome = match savepoint.query_one(&insert, &[text]).await {
            Ok(row) => {
                savepoint.commit().await.unwrap();
                Outcome::Loaded(row.get(0))
            }
            Err(e) => {
                savepoint.rollback().await.unwrap();
                Outcome::Refused(
                    e.as_db_error()
                        .map_or_else(|| e.to_string(), |d| d.message().to_string()),
                )
            }
        };
        outcomes.insert(i + 1, outcome);
    }
    transaction.commit().await.unwrap();
    outcomes
}

/// Classifies one line: `None` when both sides agree, else what differs.
fn classify(apitap: &Outcome, postgres: &Outcome) -> Option<&'static str> {
    match (apitap, postgres) {
        (Outcome::Loaded(a), Outcome::Loaded(p)) if a == p => None,
        (Outcome::Loaded(_), Outcome::Loaded(_)) => Some("changed"),
        (Outcome::Refused(_), Outcome::Refused(_)) => None,
        (Outcome::Loaded(_), Outcome::Refused(_)) => Some("lenient"),
        (Outcome::Refused(_), Outcome::Loaded(_)) => Some("stricter"),
    }
}

/// Runs every corpus in a database whose sessions use `time_zone`, so that timestamps
/// without an offset are read in a zone that is not UTC.
async fn run_oracle(database: &str, time_zone: &str) -> (String, BTreeSet<&'static str>) {
    let admin = client().await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await
        .unwrap();
    for statement in [
        format!("CREATE DATABASE {database}"),
        format!("ALTER DATABASE {database} SET TimeZone = '{time_zone}'"),
    ] {
        admin.batch_execute(&statement).await.unwrap();
    }
    let mut url: tokio_postgres::Config = database_url().parse().unwrap();
    url.dbname(database);
    let database_url = {
        let base = database_url();
        match base.rsplit_once('/') {
            Some((prefix, rest)) => {
                let query = rest.split_once('?').map(|(_, q)| format!("?{q}"));
                format!("{prefix}/{database}{}", query.unwrap_or_default())
            }
            None => base,
        }
    };
    let (mut db, connection) = url.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let mut report = String::new();
    let mut rules_used = BTreeSet::new();
    for corpus in CORPORA {
        let lines: Vec<String> = corpus
            .cases
            .iter()
            .enumerate()
            .map(|(i, (case, _))| line(case, i + 1))
            .collect();
        let (a_table, p_table) = (format!("a_{}", corpus.tag), format!("p_{}", corpus.tag));
        for table in [&a_table, &p_table] {
            db.batch_execute(&format!(
                "CREATE TABLE {table} (id bigint, v {})",
                corpus.sql_type
            ))
            .await
            .unwrap();
        }
        let apitap = apitap_outcomes(&db, &a_table, &lines, &database_url).await;
        let postgres = postgres_outcomes(&mut db, &p_table, &lines).await;
        for (i, (case, expect)) in corpus.cases.iter().enumerate() {
            let id = i + 1;
            let a = apitap
                .get(&id)
                .cloned()
                .unwrap_or(Outcome::Refused("(no row, no reject)".into()));
            let p = &postgres[&id];
            let got = classify(&a, p);
            let ok = match (expect, got) {
                (Same, None) => true,
                (Stricter(rule), Some("stricter")) => {
                    rules_used.insert(*rule);
                    true
                }
                (Documented(rule), Some("changed" | "lenient")) => {
                    rules_used.insert(*rule);
                    true
                }
                _ => false,
            };
            if !ok || got.is_some() {
                let _ = writeln!(
                    report,
                    "{}{} {} [{}]: expected {:?}, got {}\n    apitap:   {:?}\n    postgres: {:?}",
                    if ok { "  " } else { "✗ " },
                    time_zone,
                    corpus.tag,
                    lines[i],
                    expect,
                    got.unwrap_or("same"),
                    a,
                    p,
                );
            }
            let _ = case;
        }
    }
    drop(db);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await
        .unwrap();
    (report, rules_used)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_lands_as_postgres_reads_it_or_is_refused() {
    let mut failures = String::new();
    let mut rules = BTreeSet::new();
    for (database, zone) in [
        ("apitap_oracle_utc", "UTC"),
        ("apitap_oracle_ny", "America/New_York"),
    ] {
        let (report, used) = run_oracle(database, zone).await;
        print!("{report}");
        failures.extend(
            report
                .lines()
                .filter(|l| l.starts_with('✗'))
                .map(|l| format!("{l}\n")),
        );
        rules.extend(used);
    }
    let types =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/types.md")).unwrap();
    for rule in rules {
        assert!(
            types.contains(rule),
            "docs/types.md must list the rule {rule:?} (used by the oracle corpus)"
        );
    }
    assert!(
        failures.is_empty(),
        "lines the oracle disagrees with:\n{failures}"
    );
}
