//! Unit tests of `plan`.

use super::*;
use crate::sink::plan::catalog::CatalogColumn;

fn fields(records: &[&str]) -> TableSchema {
    let mut s = crate::decode::Sample::default();
    for r in records {
        s.add(r.as_bytes());
    }
    s.infer()
}

fn dates() -> crate::sink::plan::catalog::SessionDates {
    crate::sink::plan::catalog::SessionDates {
        time_zone: "UTC".into(),
        plus_infinity: false,
    }
}

fn options() -> PlanOptions {
    PlanOptions {
        sample_limit: 10,
        ..PlanOptions::default()
    }
}

fn col(name: &str, pg_type: Option<PgType>, has_default: bool) -> CatalogColumn {
    CatalogColumn {
        name: name.into(),
        type_name: "x".into(),
        pg_type,
        has_default,
        generated: false,
    }
}

#[test]
fn new_tables_are_created_from_the_sample() {
    let target = TargetInfo {
        distribution: None,
        name: TableName {
            schema: Some("Demo".into()),
            table: "items".into(),
        },
        dates: dates(),
        schema_exists: false,
        oid: None,
        columns: None,
    };
    let plan = LoadPlan::new(&target, &fields(&[r#"{"id": 1, "Name": "x"}"#]), &options()).unwrap();
    assert_eq!(
        plan.create_schema
            .as_ref()
            .map(CreateSchema::sql)
            .as_deref(),
        Some(
            r#"SELECT pg_advisory_xact_lock(hashtext('apitap schema Demo')); CREATE SCHEMA IF NOT EXISTS "Demo""#
        )
    );
    assert_eq!(
        plan.create_table.as_ref().map(CreateTable::sql).as_deref(),
        Some(r#"CREATE TABLE "Demo"."items" ("id" bigint, "Name" text)"#)
    );
    assert_eq!(
        plan.copy_statement(false),
        r#"COPY "Demo"."items" ("id", "Name") FROM STDIN (FORMAT binary)"#
    );
}

#[test]
fn a_replace_by_swap_writes_every_statement_to_the_new_table() {
    let target = TargetInfo {
        distribution: None,
        name: TableName {
            schema: Some("s".into()),
            table: "t".into(),
        },
        dates: dates(),
        schema_exists: true,
        oid: Some(42),
        columns: Some(vec![col("id", Some(PgType::Int8), false)]),
    };
    let options = PlanOptions {
        replace_by_swap: true,
        ..options()
    };
    let plan = LoadPlan::new(&target, &fields(&[r#"{"id": 1, "note": "x"}"#]), &options).unwrap();
    assert_eq!(plan.table.to_string(), "s.t");
    assert_eq!(
        plan.ddl(),
        vec![
            r#"CREATE TABLE "s"."apitap_replace_42" (LIKE "s"."t" INCLUDING ALL EXCLUDING INDEXES) -- replace by swap: indexes, keys, triggers and grants follow after the rows, then it takes the table's place"#,
            r#"ALTER TABLE "s"."apitap_replace_42" ADD COLUMN "note" text"#,
        ]
    );
    assert_eq!(
        plan.copy_statement(plan.may_freeze()),
        r#"COPY "s"."apitap_replace_42" ("id", "note") FROM STDIN (FORMAT binary, FREEZE)"#
    );
    assert!(
        plan.insert_statement()
            .starts_with(r#"INSERT INTO "s"."apitap_replace_42" ("id", "note")"#)
    );
    assert_eq!(plan.delete_statement(), None);
}

#[test]
fn existing_tables_leave_unsampled_defaults_alone() {
    let target = TargetInfo {
        distribution: None,
        name: TableName {
            schema: Some("s".into()),
            table: "t".into(),
        },
        dates: dates(),
        schema_exists: true,
        oid: Some(1),
        columns: Some(vec![
            col("id", Some(PgType::Int4), true),
            col("loaded_at", Some(PgType::Timestamptz), true),
            col("note", Some(PgType::Text), false),
            col("odd", None, true),
        ]),
    };
    let plan = LoadPlan::new(&target, &fields(&[r#"{"id": 1}"#]), &options()).unwrap();
    assert_eq!(plan.copy_names(), vec!["id", "note"]);
    assert_eq!(plan.decode.columns[2].name, "loaded_at");
    let err = LoadPlan::new(&target, &fields(&[r#"{"odd": 1}"#]), &options()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot load s.t: column \"odd\" has type x, which apitap cannot load yet"
    );
}
