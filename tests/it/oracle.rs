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
//! Each value is also read one object down (`{"id": 1, "o": {"v": …}}`, `--nested flatten`
//! into the column `o__v`) against PostgreSQL's reading of the path (`#> '{o,v}'`): a
//! flattened field must land exactly as the same field at the top.
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

/// Where the corpus's value sits in each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `{"id": 1, "v": …}`, into a column `v`.
    Flat,
    /// `{"id": 1, "o": {"v": …}}`, loaded with `--nested flatten` into the column `o__v`
    /// and compared with PostgreSQL's reading of the path `o.v` (`#>`) into the same type.
    Nested,
    /// `{"id": 1, "a": […]}`, loaded with `--nested tables --key id`: the element is the
    /// `value` of the child table's one row, compared with PostgreSQL's reading of the
    /// array's first element (`#> '{a,0}'`, as `json_array_elements` gives it).
    Element,
}

impl Shape {
    fn column(self) -> &'static str {
        match self {
            Shape::Flat => "v",
            Shape::Nested => "o__v",
            Shape::Element => "value",
        }
    }

    /// The corpus line numbered `id` (its line number in the corpus), if this shape has
    /// one: whole lines (`@…`) are only read flat.
    fn line(self, case: &str, id: usize) -> Option<String> {
        match (self, case.strip_prefix('@')) {
            (Shape::Flat, Some(raw)) => Some(raw.replace("{id}", &id.to_string())),
            (Shape::Flat, None) => Some(format!("{{\"id\": {id}, \"v\": {case}}}")),
            (Shape::Nested | Shape::Element, Some(_)) => None,
            (Shape::Nested, None) => Some(format!("{{\"id\": {id}, \"o\": {{\"v\": {case}}}}}")),
            (Shape::Element, None) => Some(format!("{{\"id\": {id}, \"a\": [{case}]}}")),
        }
    }

    /// PostgreSQL's own reading of a line into `table`, returning the value's text.
    fn populate(self, table: &str) -> String {
        match self {
            Shape::Flat => format!(
                "INSERT INTO {table} SELECT * FROM json_populate_record(NULL::{table}, $1::text::json) RETURNING v::text"
            ),
            Shape::Nested => format!(
                "INSERT INTO {table} SELECT * FROM json_populate_record(NULL::{table}, \
                 json_build_object('id', $1::text::json -> 'id', 'o__v', $1::text::json #> '{{o,v}}')) \
                 RETURNING o__v::text"
            ),
            Shape::Element => format!(
                "INSERT INTO {table} SELECT * FROM json_populate_record(NULL::{table}, \
                 json_build_object('id', $1::text::json -> 'id', 'value', $1::text::json #> '{{a,0}}')) \
                 RETURNING value::text"
            ),
        }
    }
}

/// Loads the corpus with apitap; each line's outcome, by line number.
async fn apitap_outcomes(
    db: &tokio_postgres::Client,
    (table, shape): (&str, Shape),
    lines: &[(usize, String)],
    database_url: &str,
) -> BTreeMap<usize, Outcome> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.ndjson");
    let rejects = dir.path().join("rejects.ndjson");
    let text: Vec<&str> = lines.iter().map(|(_, line)| line.as_str()).collect();
    std::fs::write(&input, text.join("\n") + "\n").unwrap();
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
            "--nested",
            match shape {
                Shape::Flat => "keep",
                Shape::Nested => "flatten",
                Shape::Element => "tables",
            },
        ],
        &[("DATABASE_URL", database_url)],
        None,
    )
    .await;
    assert_eq!(run.code, 0, "{table}: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let mut outcomes = BTreeMap::new();
    let query = match shape {
        Shape::Element => format!("SELECT _parent_id, value::text FROM {table}__a"),
        _ => format!("SELECT id, {}::text FROM {table}", shape.column()),
    };
    for row in db.query(&query, &[]).await.unwrap() {
        let id: i64 = row.get(0);
        outcomes.insert(id as usize, Outcome::Loaded(row.get(1)));
    }
    let text = std::fs::read_to_string(&rejects).unwrap_or_default();
    for reject in text.lines() {
        let reject: serde_json::Value = serde_json::from_str(reject).unwrap();
        let record = lines[reject["record"].as_u64().unwrap() as usize - 1].0;
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
    (table, shape): (&str, Shape),
    lines: &[(usize, String)],
) -> BTreeMap<usize, Outcome> {
    let mut outcomes = BTreeMap::new();
    let insert = shape.populate(table);
    let mut transaction = db.transaction().await.unwrap();
    for (id, text) in lines {
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
        outcomes.insert(*id, outcome);
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

/// Whether a line that differs from PostgreSQL as `got` says (`None`: not at all) is as it
/// expects; the documented rule it relies on goes into `rules_used`.
fn judge(expect: Expect, got: Option<&str>, rules_used: &mut BTreeSet<&'static str>) -> bool {
    match (expect, got) {
        (Same, None) => true,
        (Stricter(rule), Some("stricter")) | (Documented(rule), Some("changed" | "lenient")) => {
            rules_used.insert(rule);
            true
        }
        _ => false,
    }
}

/// Runs every corpus in a database whose sessions use `time_zone`, so that timestamps
/// without an offset are read in a zone that is not UTC, in each of `shapes`.
async fn run_oracle(
    database: &str,
    time_zone: &str,
    shapes: &[Shape],
) -> (String, BTreeSet<&'static str>) {
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
    for (corpus, &shape) in CORPORA
        .iter()
        .flat_map(|c| shapes.iter().map(move |s| (c, s)))
        // A value only the server refuses (past a length or precision) is set aside by
        // isolating its row, which a child table's row cannot be yet: it fails a family's
        // load (docs/nested.md), so those corpora are read as elements only where the
        // decoder itself judges every value.
        .filter(|(c, s)| **s != Shape::Element || !c.sql_type.contains('('))
    {
        let lines: Vec<(usize, String)> = corpus
            .cases
            .iter()
            .enumerate()
            .filter_map(|(i, (case, _))| Some((i + 1, shape.line(case, i + 1)?)))
            .collect();
        let prefix = match shape {
            Shape::Flat => "",
            Shape::Nested => "n",
            Shape::Element => "e",
        };
        let (a_table, p_table) = (
            format!("{prefix}a_{}", corpus.tag),
            format!("{prefix}p_{}", corpus.tag),
        );
        for table in [&a_table, &p_table] {
            db.batch_execute(&format!(
                "CREATE TABLE {table} (id bigint, {} {})",
                shape.column(),
                corpus.sql_type
            ))
            .await
            .unwrap();
        }
        if shape == Shape::Element {
            // The family apitap loads: the records' ids (the primary key the elements link
            // to, as `_parent_id`), and their elements.
            db.batch_execute(&format!(
                "DROP TABLE {a_table}; CREATE TABLE {a_table} (id bigint PRIMARY KEY); \
                 CREATE TABLE {a_table}__a (_parent_id bigint, _idx integer, value {}, PRIMARY KEY (_parent_id, _idx))",
                corpus.sql_type
            ))
            .await
            .unwrap();
        }
        let apitap = apitap_outcomes(&db, (&a_table, shape), &lines, &database_url).await;
        let postgres = postgres_outcomes(&mut db, (&p_table, shape), &lines).await;
        for (id, line) in &lines {
            let (_, expect) = &corpus.cases[id - 1];
            let id = *id;
            let a = apitap
                .get(&id)
                .cloned()
                .unwrap_or(Outcome::Refused("(no row, no reject)".into()));
            let p = &postgres[&id];
            let got = classify(&a, p);
            let ok = judge(*expect, got, &mut rules_used);
            if !ok || got.is_some() {
                let _ = writeln!(
                    report,
                    "{}{} {} {:?} [{}]: expected {:?}, got {}\n    apitap:   {:?}\n    postgres: {:?}",
                    if ok { "  " } else { "✗ " },
                    time_zone,
                    corpus.tag,
                    shape,
                    line,
                    expect,
                    got.unwrap_or("same"),
                    a,
                    p,
                );
            }
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
    // Read nested, once: the zone does not change how a path is followed.
    for (database, zone, shapes) in [
        (
            "apitap_oracle_utc",
            "UTC",
            &[Shape::Flat, Shape::Nested, Shape::Element][..],
        ),
        ("apitap_oracle_ny", "America/New_York", &[Shape::Flat][..]),
    ] {
        let (report, used) = run_oracle(database, zone, shapes).await;
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
