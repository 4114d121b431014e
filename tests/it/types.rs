//! Column types and names: every type round-trips exactly, columns widen for values that
//! outgrew them, inference keeps values exact, awkward field names map to fixed columns.

use crate::common::*;

/// Every supported column type, with the edge values that break loaders: bigints past 2^53,
/// microsecond timestamps with offsets, unicode, backslashes, tabs and newlines, the strings
/// "NULL" and "\N", nested JSON, NULLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_exactly() {
    let db = client().await;
    let schema = fresh_schema(&db, "types").await;
    db.batch_execute(&format!(
        "CREATE TABLE {schema}.all_types (
            n int, i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision,
            num numeric, b boolean, t text, vc varchar(20), ch char(3),
            tstz timestamptz, ts timestamp, d date, tm time, u uuid,
            j json, jb jsonb, by bytea)"
    ))
    .await
    .unwrap();
    let input = concat!(
        r#"{"n": 1, "i2": -32768, "i4": 2147483647, "i8": 9007199254740993, "f4": 1.5, "f8": 0.1, "num": 123456789012345678901234567890.123456789, "b": true, "t": "héllo \"q\" back\\slash\ttab\nnewline 日本 🎉", "vc": "NULL", "ch": "\\N", "tstz": "2024-02-29T23:59:59.123456+05:30", "ts": "2024-01-01T10:00:00.000001", "d": "1999-12-31", "tm": "23:59:59.999999", "u": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "j": {"a": [1, 2.5, {"b": null}], "s": "x\"y"}, "jb": {"z": 1, "a": [true, false]}, "by": "AAEC/w=="}"#,
        "\n",
        r#"{"n": 2, "i2": null, "i4": null, "i8": null, "f4": null, "f8": null, "num": null, "b": null, "t": null, "vc": null, "ch": null, "tstz": null, "ts": null, "d": null, "tm": null, "u": null, "j": null, "jb": null, "by": null}"#,
        "\n",
        r#"{"n": 3, "i8": -9223372036854775808, "num": "-0.000012", "b": "false", "t": 42, "f8": -1e300, "j": "plain string", "jb": [1, "two"], "by": "\\x00ff", "tstz": "1970-01-01T00:00:00Z", "d": "infinity", "i4": "17"}"#,
        "\n"
    );
    // The same rows, the same values, through COPY and through the INSERT fallback.
    for method in ["copy", "insert"] {
        db.batch_execute(&format!("TRUNCATE {schema}.all_types"))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("types.ndjson");
        std::fs::write(&path, input).unwrap();
        let run = apitap(
            &[
                "load",
                path.to_str().unwrap(),
                "--table",
                &format!("{schema}.all_types"),
                "--method",
                method,
            ],
            None,
        )
        .await;
        assert_eq!(run.code, 0, "{method}: {}", run.stderr);

        let rows = db
            .query(
                &format!(
                    "SELECT i2::text, i4::text, i8::text, f4::text, f8::text, num::text, b::text,
                            t, vc, ch::text, tstz::text, ts::text, d::text, tm::text, u::text,
                            j::text, jb::text, by::text
                     FROM {schema}.all_types ORDER BY n"
                ),
                &[],
            )
            .await
            .unwrap();
        let got: Vec<Vec<Option<String>>> = rows
            .iter()
            .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
            .collect();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            got[0],
            vec![
                s("-32768"),
                s("2147483647"),
                s("9007199254740993"),
                s("1.5"),
                s("0.1"),
                s("123456789012345678901234567890.123456789"),
                s("true"),
                s("héllo \"q\" back\\slash\ttab\nnewline 日本 🎉"),
                s("NULL"),
                s("\\N"),
                s("2024-02-29 18:29:59.123456+00"),
                s("2024-01-01 10:00:00.000001"),
                s("1999-12-31"),
                s("23:59:59.999999"),
                s("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                // json keeps its text exactly as written, as PostgreSQL does.
                s(r#"{"a": [1, 2.5, {"b": null}], "s": "x\"y"}"#),
                s(r#"{"a": [true, false], "z": 1}"#),
                s("\\x000102ff"),
            ]
        );
        assert_eq!(got[1], vec![None; 18]);
        assert_eq!(got[2][1], s("17"));
        assert_eq!(got[2][2], s("-9223372036854775808"));
        assert_eq!(got[2][4], s("-1e+300"));
        assert_eq!(got[2][5], s("-0.000012"));
        assert_eq!(got[2][6], s("false"));
        assert_eq!(got[2][7], s("42"));
        assert_eq!(got[2][10], s("1970-01-01 00:00:00+00"));
        assert_eq!(got[2][12], s("infinity"));
        assert_eq!(got[2][15], s(r#""plain string""#));
        assert_eq!(got[2][16], s(r#"[1, "two"]"#));
        assert_eq!(got[2][17], s("\\x00ff"));
    }
}

/// Values that outgrow an integer column widen it in the load's transaction (int → bigint →
/// numeric) under the default `--schema evolve`; `freeze` refuses instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_columns_widen_for_values_that_outgrew_them() {
    let db = client().await;
    let schema = fresh_schema(&db, "widen").await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id integer PRIMARY KEY, qty smallint, price integer, note text);
         INSERT INTO {table} VALUES (1, 1, 1, 'old')"
    ))
    .await
    .unwrap();
    let input = b"{\"id\": 3000000000, \"qty\": 40000, \"price\": 12.5, \"note\": \"new\"}\n{\"id\": 2, \"qty\": 2, \"price\": 7, \"note\": null}\n".to_vec();

    let frozen = apitap(
        &["load", "-", "--table", &table, "--schema", "freeze"],
        Some(input.clone()),
    )
    .await;
    assert_eq!(frozen.code, 1, "{}", frozen.stderr);
    assert!(
        frozen
            .stderr
            .contains("line 1 (record 1): column \"id\": 3000000000 is out of range for integer"),
        "{}",
        frozen.stderr
    );

    let run = apitap(
        &["load", "-", "--table", &table, "--summary-json", "-"],
        Some(input),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "apitap: widened 3 column(s) of {table} for sampled values their types could not hold: id: integer → bigint, qty: smallint → integer, price: integer → numeric"
        )),
        "{}",
        run.stderr
    );
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["widened_columns"].as_array().unwrap().len(), 3);
    let rows: Vec<String> = db
        .query(
            &format!(
                "SELECT concat_ws('|', id, qty, price, pg_typeof(id), pg_typeof(qty), pg_typeof(price), note)
                 FROM {table} ORDER BY id"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        rows,
        vec![
            "1|1|1|bigint|integer|numeric|old",
            "2|2|7|bigint|integer|numeric",
            "3000000000|40000|12.5|bigint|integer|numeric|new",
        ]
    );
}

/// `--widen-to-text` makes a column text when it refuses a sampled value, converting the
/// values already in it; without it the value fails the load, table unchanged. Both under a
/// plain append and under a replace by swap (where the new, empty table is altered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_widen_to_text_only_when_asked() {
    let db = client().await;
    let schema = fresh_schema(&db, "widen_text").await;
    for mode in ["append", "replace"] {
        let table = format!("{schema}.{mode}");
        db.batch_execute(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, code integer, seen timestamptz, ok boolean);
             INSERT INTO {table} VALUES (1, 5, '2024-01-01 00:00:00+00', true)"
        ))
        .await
        .unwrap();
        let input =
            b"{\"id\": 2, \"code\": \"A-7\", \"seen\": \"yesterday\", \"ok\": \"t\"}\n".to_vec();
        let args = ["load", "-", "--table", &table, "--mode", mode];

        let refused = apitap(&args, Some(input.clone())).await;
        assert_fails(
            &refused,
            "stdin: line 1 (record 1): column \"code\": \"A-7\" is not an integer (integer)",
        );

        let mut asked = args.to_vec();
        asked.push("--widen-to-text");
        let run = apitap(&asked, Some(input)).await;
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "apitap: widened 2 column(s) of {table} for sampled values their types could not hold: code: integer → text, seen: timestamptz → text"
            )),
            "{mode}: {}",
            run.stderr
        );
        let rows: Vec<String> = db
            .query(
                &format!(
                    "SELECT concat_ws('|', id, code, seen, ok, pg_typeof(code), pg_typeof(seen), pg_typeof(ok))
                     FROM {table} ORDER BY id"
                ),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut expected = vec!["2|A-7|yesterday|t|text|text|boolean"];
        if mode == "append" {
            expected.insert(0, "1|5|2024-01-01 00:00:00+00|t|text|text|boolean");
        }
        assert_eq!(rows, expected, "{mode}");
    }
}

/// Field names PostgreSQL cannot take as they are (too long, equal in their first 63 bytes,
/// empty, a system column's) land in one fixed mapped column each, and a second run of the
/// same data finds those columns again; two fields that would share a column are refused
/// before any DDL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_field_names_map_to_the_same_columns_every_run() {
    let db = client().await;
    let schema = fresh_schema(&db, "names").await;
    let table = format!("{schema}.bbox");
    let long = "a_very_long_generated_key_name_".repeat(3);
    let record = |id: u32| {
        format!(
            "{{\"id\": {id}, \"xmin\": 1.5, \"xmax\": 2.5, \"ctid\": \"c\", \"tableoid\": 7, \"\": \"empty\", \"{long}x\": {id}, \"{long}y\": 0}}\n"
        )
    };
    for run_no in 1..=2 {
        let input = (1..=3)
            .map(|i| record(i + (run_no - 1) * 3))
            .collect::<String>();
        let run = apitap(&["load", "-", "--table", &table], Some(input.into_bytes())).await;
        assert_eq!(run.code, 0, "run {run_no}: {}", run.stderr);
        assert!(
            run.stderr.contains(
                "field name(s) PostgreSQL cannot take as they are load into other columns"
            ),
            "{}",
            run.stderr
        );
    }
    let columns: Vec<String> = db
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0 ORDER BY attnum",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let hashed = |key: &str| format!("{}_{:08x}", &key[..54], crc32fast::hash(key.as_bytes()));
    assert_eq!(
        columns,
        vec![
            "id".to_string(),
            "xmin_".into(),
            "xmax_".into(),
            "ctid_".into(),
            "tableoid_".into(),
            "_".into(),
            hashed(&format!("{long}x")),
            hashed(&format!("{long}y")),
        ]
    );
    let row = db
        .query_one(
            &format!(
                "SELECT xmin_::text, \"_\", \"{}\"::text FROM {table} WHERE id = 5",
                hashed(&format!("{long}x"))
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2)
        ),
        ("1.5".into(), "empty".into(), "5".into())
    );

    // "xmin" and "xmin_" would both be column xmin_: refused before anything is created.
    let clash = format!("{schema}.clash");
    let run = apitap(
        &["load", "-", "--table", &clash],
        Some(b"{\"xmin\": 1, \"xmin_\": 2}\n".to_vec()),
    )
    .await;
    assert_fails(
        &run,
        "fields \"xmin\" and \"xmin_\" would both be column \"xmin_\"",
    );
    assert!(!table_exists(&db, &clash).await);
}

/// A new table's columns hold every sampled value exactly: blockchain amounts past 64 bits,
/// an integer past 2^53 beside a fraction, digits a double would round away, `-0`, `1e400`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inferred_columns_keep_every_value_exact() {
    let db = client().await;
    let schema = fresh_schema(&db, "exact_infer").await;
    let table = format!("{schema}.t");
    let input = concat!(
        r#"{"id": 1, "wei": 123456789012345678901234567890, "mixed": 0.5, "digits": 1234567890.123456789, "neg0": -0, "c": 1e400}"#,
        "\n",
        r#"{"id": 2, "wei": 1, "mixed": 9007199254740993, "digits": 2.5, "neg0": 7, "c": 1}"#,
        "\n"
    );
    let run = apitap(
        &["load", "-", "--table", &table],
        Some(input.as_bytes().to_vec()),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let types: Vec<String> = db
        .query(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
             WHERE attrelid = $1::text::regclass AND attnum > 0 ORDER BY attnum",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        types,
        [
            "bigint", "numeric", "numeric", "numeric", "bigint", "numeric"
        ]
    );
    let row: Vec<String> = db
        .query_one(
            &format!("SELECT wei::text, mixed::text, digits::text, neg0::text, left(c::text, 5) FROM {table} ORDER BY id LIMIT 1"),
            &[],
        )
        .await
        .map(|r| (0..5).map(|i| r.get(i)).collect())
        .unwrap();
    assert_eq!(
        row,
        [
            "123456789012345678901234567890",
            "0.5",
            "1234567890.123456789",
            "0",
            "10000"
        ]
    );
    let mixed: String = db
        .query_one(
            &format!("SELECT mixed::text FROM {table} WHERE id = 2"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(mixed, "9007199254740993");
}
