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
//! Changed and lenient must not happen, except for differences the README documents (bytea
//! from base64). Stricter cases are allowed only where the README lists their rule under
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
    /// apitap refuses what PostgreSQL loads, under this README rule.
    Stricter(&'static str),
    /// A documented difference (README): apitap loads a different value, or loads what
    /// PostgreSQL refuses.
    Documented(&'static str),
}

use Expect::{Documented, Same, Stricter};

/// README rules of "Stricter than PostgreSQL" that corpus lines fall under.
const NO_BYTEA_ESCAPE: &str = "bytea only from base64 or \\x hex";
const BASE64: &str = "bytea from base64";
const ISO_DATES: &str = "dates and times only in ISO 8601 forms";
const SPECIAL_WORDS: &str = "no date/time words but infinity, epoch and allballs";
const HEX_FLOAT: &str = "floats only in decimal";
const FREEZE: &str = "--schema freeze refuses fields without a column";

/// One column type and its corpus: the JSON text of the value after `"v": `, or a whole line
/// (with `{id}` for its id) when it starts with `@`.
struct Corpus {
    tag: &'static str,
    sql_type: &'static str,
    cases: &'static [(&'static str, Expect)],
}

const INTEGERS: &[(&str, Expect)] = &[
    ("0", Same),
    ("-0", Same),
    ("32767", Same),
    ("-32768", Same),
    ("32768", Same),
    ("-32769", Same),
    ("1.0", Same),
    ("1.5", Same),
    ("1e2", Same),
    ("1E+2", Same),
    ("\"12\"", Same),
    ("\" 12 \"", Same),
    ("\"+5\"", Same),
    ("\"0x10\"", Same),
    ("\"1_000\"", Same),
    ("01", Same),
    ("-", Same),
    ("1.2.3", Same),
    ("+1", Same),
    ("true", Same),
    ("\"abc\"", Same),
    ("[1]", Same),
    ("{\"a\": 1}", Same),
    ("null", Same),
    ("\"\"", Same),
    ("2147483647", Same),
    ("-2147483648", Same),
    ("2147483648", Same),
    ("9223372036854775807", Same),
    ("-9223372036854775808", Same),
    ("9223372036854775808", Same),
    ("9007199254740993", Same),
    ("\"-9223372036854775808\"", Same),
];

const FLOATS: &[(&str, Expect)] = &[
    ("0.1", Same),
    ("1.5", Same),
    ("-0", Same),
    ("-0.0", Same),
    ("1e-400", Same),
    ("5e-324", Same),
    ("1e-50", Same),
    ("1e-40", Same),
    ("3.4028235e38", Same),
    ("3.5e38", Same),
    ("1.7976931348623157e308", Same),
    ("1.8e308", Same),
    ("1E400", Same),
    ("\"NaN\"", Same),
    ("\"nan\"", Same),
    ("\"Infinity\"", Same),
    ("\"inf\"", Same),
    ("\"-Infinity\"", Same),
    ("\"-inf\"", Same),
    ("\" 1.5 \"", Same),
    ("\"1.5\"", Same),
    ("\"1e5\"", Same),
    ("\"0x10\"", Stricter(HEX_FLOAT)),
    ("\" .5 \"", Same),
    ("\"1e\"", Same),
    ("16777217", Same),
    ("9007199254740993", Same),
    ("123456789012345678901234567890", Same),
    ("0.30000001192092896", Same),
    ("1.5E+3", Same),
    ("0.1e1", Same),
    (".5", Same),
    ("-.5", Same),
    ("1.", Same),
    ("+1", Same),
    ("true", Same),
    ("[1]", Same),
    ("\"abc\"", Same),
    ("null", Same),
];

const NUMERICS: &[(&str, Expect)] = &[
    ("0", Same),
    ("-0", Same),
    ("-0.0", Same),
    ("1.50", Same),
    ("1e400", Same),
    ("1e-400", Same),
    ("1E+2", Same),
    ("-1.0E-2", Same),
    ("123456789012345678901234567890.123456789", Same),
    ("9007199254740993", Same),
    ("\"NaN\"", Same),
    ("\"Infinity\"", Same),
    ("\"-Infinity\"", Same),
    ("\"inf\"", Same),
    ("\" 1.5 \"", Same),
    ("\"1e5\"", Same),
    ("\".5\"", Same),
    ("\"5.\"", Same),
    ("\"abc\"", Same),
    ("\"1,5\"", Same),
    ("1e131071", Same),
    ("1e131072", Same),
    ("1e-16383", Same),
    ("1e-16384", Same),
    ("true", Same),
    ("[1]", Same),
    ("01", Same),
];

const BOOLEANS: &[(&str, Expect)] = &[
    ("true", Same),
    ("false", Same),
    ("1", Same),
    ("0", Same),
    ("2", Same),
    ("1.0", Same),
    ("\"t\"", Same),
    ("\"f\"", Same),
    ("\"yes\"", Same),
    ("\"no\"", Same),
    ("\"on\"", Same),
    ("\"off\"", Same),
    ("\"of\"", Same),
    ("\"o\"", Same),
    ("\"tr\"", Same),
    ("\"TRUE\"", Same),
    ("\" true \"", Same),
    ("\"1\"", Same),
    ("\"0\"", Same),
    ("\"y\"", Same),
    ("\"n\"", Same),
    ("\"\"", Same),
    ("\"truth\"", Same),
    ("null", Same),
    ("[true]", Same),
];

const TEXTS: &[(&str, Expect)] = &[
    ("\"plain\"", Same),
    ("\"tab\\there\"", Same),
    ("\"raw\ttab\"", Same),
    ("\"raw\u{1f}unit separator\"", Same),
    ("\"a\\u0000b\"", Same),
    ("\"\\ud800\"", Same),
    ("\"\\udc00\"", Same),
    ("\"\\ud83c\\udf89\"", Same),
    ("\"é 日本 🎉\"", Same),
    ("\"\\u00e9\"", Same),
    ("\"a\\/b\"", Same),
    ("\"\\u001f\"", Same),
    ("\"\\x\"", Same),
    ("\"NULL\"", Same),
    ("\"\\\\N\"", Same),
    ("\"\"", Same),
    ("1.50E+2", Same),
    ("-0", Same),
    ("true", Same),
    ("{\"x\":  1, \"y\" : [1 , 2]}", Same),
    ("[1, 2]", Same),
    ("null", Same),
    ("\"unterminated", Same),
    ("'single'", Same),
    ("NaN", Same),
    ("Infinity", Same),
    ("tru", Same),
    ("nul", Same),
    ("@{\"id\": {id}, \"v\": \"x\",}", Same),
    ("@{\"id\": {id} \"v\": \"x\"}", Same),
    ("@{\"id\": {id}, \"v\": \"x\"} {\"id\": 0}", Same),
    ("@[{\"id\": {id}, \"v\": \"x\"}]", Same),
    ("@{,\"id\": {id}, \"v\": \"x\"}", Same),
    ("@{\"id\": {id}, , \"v\": \"x\"}", Same),
    ("@{\"id\": {id}, \"v\": [1,]}", Same),
    ("@{\"id\": {id}, \"v\": [1 2]}", Same),
    ("@{\"id\": {id}, \"v\": {\"a\" 1}}", Same),
    ("@{\"id\": {id}, \"v\": {\"a\": 1 \"b\": 2}}", Same),
    ("@{\"id\": {id}, \"v\": \"x\", \"v\": \"y\"}", Same),
    ("@{\"id\": {id}, \"v\": \"x\", \"v\": null}", Same),
    ("@{\"id\": {id}, \"v\": \"x\\u00\"}", Same),
    ("@{\"id\": {id}, \"v\": \"x\\q\"}", Same),
    ("@{\"id\": {id}, \"v\": {\"k\": \"\\u0000\"}}", Same),
    ("@{\"id\": {id}, \"v\": \"x\"", Same),
    ("@{\"id\": {id}, \"v\": \"x\"}}", Same),
    ("@{\"id\": {id}, \"v\" : \"spaced\" }", Same),
    ("@{\"id\": {id}, \"V\": \"other case\"}", Stricter(FREEZE)),
    ("@{\"id\": {id}}", Same),
];

const VARCHARS: &[(&str, Expect)] = &[
    ("\"abc\"", Same),
    ("\"abcd\"", Same),
    ("\"日本語\"", Same),
    ("\"abc \"", Same),
    ("123", Same),
    ("1234", Same),
];

const TIMESTAMPS: &[(&str, Expect)] = &[
    ("\"2024-01-01T00:00:00Z\"", Same),
    ("\"2024-01-01t00:00:00z\"", Same),
    ("\"2024-01-01 00:00:00+05\"", Same),
    ("\"2024-01-01T00:00:00+05:30\"", Same),
    ("\"2024-01-01T00:00:00+0530\"", Same),
    ("\"2024-01-01T00:00:00-08:00\"", Same),
    ("\"2024-01-01T00:00:00 +05:30\"", Same),
    ("\"2024-01-01T00:00:00+15:59\"", Same),
    ("\"2024-01-01T00:00:00+16:00\"", Same),
    ("\"2024-01-01T10:00:00\"", Same),
    ("\"2024-01-01 10:00\"", Same),
    ("\"2024-01-01T00:00Z\"", Same),
    ("\"2024-01-01\"", Same),
    ("\"2024-01-01T00:00:00.5-08:00\"", Same),
    ("\"2024-01-01T00:00:00.123456Z\"", Same),
    ("\"2024-01-01T00:00:00.123456789Z\"", Same),
    ("\"2024-01-01T00:00:00.0000005Z\"", Same),
    ("\"2024-01-01T00:00:00.0000015Z\"", Same),
    ("\"2024-01-01T00:00:00.0000025Z\"", Same),
    ("\"2024-01-01T23:59:59.9999995Z\"", Same),
    ("\"2024-02-29T12:00:00Z\"", Same),
    ("\"2023-02-29T12:00:00Z\"", Same),
    ("\"2024-13-01T00:00:00Z\"", Same),
    ("\"0000-01-01T00:00:00Z\"", Same),
    ("\"0001-01-01T00:00:00Z\"", Same),
    ("\"9999-12-31T23:59:59Z\"", Same),
    ("\"2024-01-01T24:00:00Z\"", Same),
    ("\"2024-01-01T23:59:60Z\"", Same),
    ("\"2024-01-01T24:00:01Z\"", Same),
    ("\"infinity\"", Same),
    ("\"-infinity\"", Same),
    ("\"Infinity\"", Same),
    ("\"20240101T000000Z\"", Same),
    ("\"2024-1-1T00:00:00Z\"", Same),
    ("\"January 1, 2024\"", Stricter(ISO_DATES)),
    ("\"now\"", Stricter(SPECIAL_WORDS)),
    ("\"epoch\"", Same),
    ("\"1999-01-08 04:05:06 PST\"", Stricter(ISO_DATES)),
    ("\" 2024-01-01T00:00:00Z \"", Same),
    ("\"20240105T1000\"", Same),
    ("\"2024-01-05T1000\"", Same),
    ("\"2024-01-05  10:00\"", Same),
    ("\"2024-01-05T10\"", Same),
    ("\"2024-01-05T10:00:00.123+01:00:30\"", Same),
    ("\"2024-01-05 10:00:00 UTC\"", Same),
    ("\"2024-03-10T02:30:00\"", Same),
    ("\"2024-11-03T01:30:00\"", Same),
    ("\"2024-01-05T10:00.5\"", Stricter(ISO_DATES)),
    ("1704067200", Same),
    ("null", Same),
    ("\"\"", Same),
];

const DATES: &[(&str, Expect)] = &[
    ("\"2024-01-05\"", Same),
    ("\"2024-1-5\"", Same),
    ("\"20240105\"", Same),
    ("\"January 5, 2024\"", Stricter(ISO_DATES)),
    ("\"2024-01-05 10:00\"", Same),
    ("\"2024-01-05T23:00:00-05:00\"", Same),
    ("\"2024-01-05T23:00:00Z\"", Same),
    ("\"0000-01-01\"", Same),
    ("\"0001-01-01\"", Same),
    ("\"9999-12-31\"", Same),
    ("\"2023-02-29\"", Same),
    ("\"infinity\"", Same),
    ("\"-infinity\"", Same),
    ("\"epoch\"", Same),
    ("\"today\"", Stricter(SPECIAL_WORDS)),
    ("20240105", Same),
    ("\" 2024-01-05 \"", Same),
];

const TIMES: &[(&str, Expect)] = &[
    ("\"10:00:00\"", Same),
    ("\"10:00\"", Same),
    ("\"10:00:00.123456\"", Same),
    ("\"10:00:00.1234565\"", Same),
    ("\"10:00:00.1234575\"", Same),
    ("\"24:00:00\"", Same),
    ("\"23:59:60\"", Same),
    ("\"24:00:01\"", Same),
    ("\"23:60:00\"", Same),
    ("\"10:00:00+02\"", Same),
    ("\"10:00:00Z\"", Same),
    ("\"2024-01-05 10:00\"", Same),
    ("\"2024-01-05T10:00:00Z\"", Same),
    ("\"1:2:3\"", Same),
    ("\"allballs\"", Same),
    ("\"10:00:00 \"", Same),
    ("\"10:5\"", Same),
    ("\"T10:00:00\"", Same),
    ("\"100000\"", Same),
    ("\"1000\"", Same),
    ("\"10:00:00 UTC\"", Same),
    ("\"10:00:00.5+0530\"", Same),
    ("\"2024-01-05T10:00:00\"", Same),
    ("\"2024-01-05 10:00:00+02\"", Same),
    ("36000", Same),
];

const UUIDS: &[(&str, Expect)] = &[
    ("\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"", Same),
    ("\"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11\"", Same),
    ("\"a0eebc999c0b4ef8bb6d6bb9bd380a11\"", Same),
    ("\"{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}\"", Same),
    ("\"{a0eebc99-9c0b4ef8-bb6d-6bb9bd380a11}\"", Same),
    ("\"a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11\"", Same),
    ("\"urn:uuid:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"", Same),
    ("\" a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 \"", Same),
    ("\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1\"", Same),
    ("\"g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"", Same),
    ("\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-\"", Same),
    ("12", Same),
];

const JSONS: &[(&str, Expect)] = &[
    ("{\"a\":  1}", Same),
    ("{\"a\": 1, \"a\": 2}", Same),
    ("[1, {\"x\": null}]", Same),
    ("\"str\"", Same),
    ("\"esc\\u00e9\\n\"", Same),
    ("1.50", Same),
    ("1e400", Same),
    ("-0", Same),
    ("true", Same),
    ("null", Same),
    ("{\"k\": \"\\u0000\"}", Same),
    ("\"\\u0000\"", Same),
    ("[]", Same),
    ("{}", Same),
];

const BYTEAS: &[(&str, Expect)] = &[
    ("\"\\\\x00ff\"", Same),
    ("\"\\\\xDEADbeef\"", Same),
    ("\"\\\\x0g\"", Same),
    ("\"\\\\x0\"", Same),
    ("\"\\\\x\"", Same),
    ("\"AAEC/w==\"", Documented(BASE64)),
    ("\"hello world\"", Stricter(NO_BYTEA_ESCAPE)),
    ("\"\"", Same),
    ("12", Stricter(NO_BYTEA_ESCAPE)),
    ("null", Same),
];

const CORPORA: &[Corpus] = &[
    Corpus {
        tag: "int2",
        sql_type: "smallint",
        cases: INTEGERS,
    },
    Corpus {
        tag: "int4",
        sql_type: "integer",
        cases: INTEGERS,
    },
    Corpus {
        tag: "int8",
        sql_type: "bigint",
        cases: INTEGERS,
    },
    Corpus {
        tag: "float4",
        sql_type: "real",
        cases: FLOATS,
    },
    Corpus {
        tag: "float8",
        sql_type: "double precision",
        cases: FLOATS,
    },
    Corpus {
        tag: "numeric",
        sql_type: "numeric",
        cases: NUMERICS,
    },
    Corpus {
        tag: "bool",
        sql_type: "boolean",
        cases: BOOLEANS,
    },
    Corpus {
        tag: "text",
        sql_type: "text",
        cases: TEXTS,
    },
    Corpus {
        tag: "varchar",
        sql_type: "varchar(3)",
        cases: VARCHARS,
    },
    Corpus {
        tag: "timestamptz",
        sql_type: "timestamptz",
        cases: TIMESTAMPS,
    },
    Corpus {
        tag: "timestamp",
        sql_type: "timestamp",
        cases: TIMESTAMPS,
    },
    Corpus {
        tag: "date",
        sql_type: "date",
        cases: DATES,
    },
    Corpus {
        tag: "time",
        sql_type: "time",
        cases: TIMES,
    },
    Corpus {
        tag: "uuid",
        sql_type: "uuid",
        cases: UUIDS,
    },
    Corpus {
        tag: "json",
        sql_type: "json",
        cases: JSONS,
    },
    Corpus {
        tag: "jsonb",
        sql_type: "jsonb",
        cases: JSONS,
    },
    Corpus {
        tag: "bytea",
        sql_type: "bytea",
        cases: BYTEAS,
    },
];

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
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for rule in rules {
        assert!(
            readme.contains(rule),
            "README must list the rule {rule:?} (used by the oracle corpus)"
        );
    }
    assert!(
        failures.is_empty(),
        "lines the oracle disagrees with:\n{failures}"
    );
}
