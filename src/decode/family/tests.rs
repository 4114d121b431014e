//! Unit tests of `--nested tables` decoding: child rows, their links, and records as units.

use super::*;
use crate::decode::{Decoded, Framer, RecordDecoder};
use crate::schema::{Column, PgType};
use arrow_cast::display::{ArrayFormatter, FormatOptions};

fn column(name: &str, pg_type: PgType) -> Column {
    Column::new(name, pg_type)
}

/// tags: ["a", …] (scalars); items: [{"n": 1, "sub": [true, …]}, …] (objects, with an
/// array of their own).
fn spec() -> FamilySpec {
    let child = |label: &str, parent, path: &[&str], columns: Vec<(Column, Fill)>, scalar| {
        let (columns, fills) = columns.into_iter().unzip();
        ChildSpec {
            label: label.into(),
            parent,
            path: path.iter().map(|p| p.to_string()).collect(),
            columns: TableSchema { columns },
            fills,
            scalar,
        }
    };
    let parent_id = || (column("_parent_id", PgType::Int8), Fill::Link(0));
    let idx = || (column("_idx", PgType::Int4), Fill::Index);
    FamilySpec {
        root_identity: vec![0],
        generated_id: None,
        children: vec![
            child(
                "tags[]",
                None,
                &["tags"],
                vec![
                    parent_id(),
                    idx(),
                    (column("value", PgType::Text), Fill::Element),
                ],
                true,
            ),
            child(
                "items[]",
                None,
                &["items"],
                vec![
                    parent_id(),
                    idx(),
                    (column("n", PgType::Int8), Fill::Element),
                ],
                false,
            ),
            child(
                "items[].sub[]",
                Some(1),
                &["sub"],
                vec![
                    parent_id(),
                    (column("_parent_idx", PgType::Int4), Fill::Link(1)),
                    idx(),
                    (column("value", PgType::Bool), Fill::Element),
                ],
                true,
            ),
        ],
    }
}

fn root() -> TableSchema {
    TableSchema {
        columns: vec![column("id", PgType::Int8)],
    }
}

fn decode(input: &str, reject: bool, spec: FamilySpec) -> Result<Vec<Decoded>, DecodeError> {
    let options = DecodeOptions {
        batch_size: 100,
        reject_unknown_fields: true,
        unknown_field_hint: "has no column".into(),
        must_stay_null: vec![],
        reject,
        zone: None,
        max_batch_bytes: crate::decode::MAX_BATCH_BYTES,
        plus_infinity: true,
        family: Some(Arc::new(spec)),
    };
    let mut decoder = RecordDecoder::new(&root(), options);
    let mut framer = Framer::new(None, 1 << 20);
    let mut out = Vec::new();
    let mut push = |r: &[u8], at| {
        out.extend(decoder.push(r, at)?);
        Ok(())
    };
    framer.push(input.as_bytes(), &mut push)?;
    framer.finish(&mut push)?;
    out.extend(decoder.finish()?);
    Ok(out)
}

/// Each row of `batch` as its values joined by `|`.
fn rows(batch: &RecordBatch) -> Vec<String> {
    let options = FormatOptions::default().with_null("∅");
    let formatters: Vec<ArrayFormatter<'_>> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
        .collect();
    (0..batch.num_rows())
        .map(|r| {
            let values: Vec<String> = formatters.iter().map(|f| f.value(r).to_string()).collect();
            values.join("|")
        })
        .collect()
}

const RECORDS: &str = r#"{"id":1,"tags":["a","b"],"items":[{"n":10,"sub":[true,false]},{"n":11},null]}
{"id":2,"tags":null,"items":[]}
{"id":3,"items":[{"n":12,"sub":[]},{"sub":[null,true],"n":13}]}
"#;

#[test]
fn every_element_is_a_row_linked_to_its_parent_in_order() {
    let out = decode(RECORDS, false, spec()).unwrap();
    assert_eq!(out.len(), 1);
    let d = &out[0];
    assert_eq!(rows(&d.batch), ["1", "2", "3"]);
    assert_eq!(d.children.len(), 3);
    assert_eq!(rows(&d.children[0].batch), ["1|0|a", "1|1|b"]);
    assert_eq!(
        rows(&d.children[1].batch),
        ["1|0|10", "1|1|11", "1|2|∅", "3|0|12", "3|1|13"]
    );
    assert_eq!(
        rows(&d.children[2].batch),
        ["1|0|0|true", "1|0|1|false", "3|1|0|∅", "3|1|1|true"]
    );
}

#[test]
fn a_record_whose_child_row_fails_is_set_aside_with_every_row_it_gave() {
    let input = format!(
        "{RECORDS}{}\n",
        r#"{"id":4,"tags":["c"],"items":[{"n":"x","sub":[true]}]}"#
    );
    let error = decode(&input, false, spec()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "line 4 (record 4): column \"items[].n\": \"x\" is not an integer (bigint)"
    );
    let out = decode(&input, true, spec()).unwrap();
    let d = &out[0];
    assert_eq!(rows(&d.batch), ["1", "2", "3"]);
    assert_eq!(rows(&d.children[0].batch), ["1|0|a", "1|1|b"]);
    assert_eq!(d.children[2].batch.num_rows(), 4);
    assert_eq!(d.rejected.len(), 1);
    assert_eq!(d.rejected[0].record, 4);
    assert!(d.rejected[0].text.contains(r#""n":"x""#));
}

#[test]
fn a_record_failing_in_its_own_columns_takes_its_children_with_it() {
    let input = format!("{RECORDS}{}\n", r#"{"id":"four","tags":["c"]}"#);
    let out = decode(&input, true, spec()).unwrap();
    let d = &out[0];
    assert_eq!(rows(&d.batch), ["1", "2", "3"]);
    assert_eq!(rows(&d.children[0].batch), ["1|0|a", "1|1|b"]);
}

#[test]
fn an_array_field_holding_something_else_is_named() {
    let error = decode(r#"{"id":1,"items":{"n":1}}"#, false, spec()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "line 1 (record 1): field \"items\" is an object, but its elements are loaded as rows of a child table, \
         so only an array or null fits there; load with --nested flatten or keep to keep it whole as jsonb"
    );
    let error = decode(r#"{"id":1,"items":[{"n":1},2]}"#, false, spec()).unwrap_err();
    assert!(
        error.to_string().starts_with(
            "line 1 (record 1): field \"items[]\" is a number, but its fields are loaded as columns"
        ),
        "{error}"
    );
    let error = decode(r#"{"id":1,"items":[{"n":1,"m":2}]}"#, false, spec()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "line 1 (record 1): field \"items[].m\" has no column"
    );
}

#[test]
fn without_a_key_the_root_rows_get_generated_ids_their_children_carry() {
    let mut spec = spec();
    let ids = RowIds::new();
    spec.generated_id = Some((1, ids));
    spec.root_identity = vec![1];
    for child in &mut spec.children {
        child.columns.columns[0] = column("_parent__apitap_id", PgType::Uuid);
    }
    let options = DecodeOptions {
        batch_size: 100,
        reject_unknown_fields: false,
        unknown_field_hint: String::new(),
        must_stay_null: vec![],
        reject: false,
        zone: None,
        max_batch_bytes: crate::decode::MAX_BATCH_BYTES,
        plus_infinity: true,
        family: Some(Arc::new(spec)),
    };
    let table = TableSchema {
        columns: vec![
            column("id", PgType::Int8),
            column("_apitap_id", PgType::Uuid),
        ],
    };
    let mut decoder = RecordDecoder::new(&table, options);
    for (i, line) in RECORDS.lines().enumerate() {
        let at = crate::decode::Position {
            line: i as u64 + 1,
            column: 1,
        };
        assert!(decoder.push(line.as_bytes(), at).unwrap().is_none());
    }
    let d = decoder.finish().unwrap().unwrap();
    let root = rows(&d.batch);
    let id = |row: usize| root[row].split('|').nth(1).unwrap().to_string();
    // 16 bytes, as hex.
    assert_eq!(id(0).len(), 32);
    assert_ne!(id(0), id(1));
    assert!(id(0) < id(1) && id(1) < id(2), "ids sort in input order");
    let tags = rows(&d.children[0].batch);
    assert_eq!(tags, [format!("{}|0|a", id(0)), format!("{}|1|b", id(0))]);
    let sub = rows(&d.children[2].batch);
    assert_eq!(sub[2], format!("{}|1|0|∅", id(2)));
    assert_eq!(uuid::Uuid::parse_str(&id(0)).unwrap().get_version_num(), 7);
}

#[test]
fn a_parent_whose_table_orders_its_columns_otherwise_links_its_children_the_same() {
    let mut spec = spec();
    // items as a table made by hand might have it: `_idx`, `n`, then `_parent_id`.
    let items = &mut spec.children[1];
    items.columns.columns.rotate_left(1);
    items.fills.rotate_left(1);
    assert_eq!(items.fills, [Fill::Index, Fill::Element, Fill::Link(0)]);
    let out = decode(RECORDS, false, spec).unwrap();
    let d = &out[0];
    assert_eq!(rows(&d.children[1].batch)[0], "0|10|1");
    assert_eq!(
        rows(&d.children[2].batch),
        ["1|0|0|true", "1|0|1|false", "3|1|0|∅", "3|1|1|true"]
    );
    assert_eq!(d.children[1].records, [1, 1, 1, 3, 3]);
}

#[test]
fn a_scalar_element_goes_to_the_value_column_wherever_the_table_has_it() {
    let mut spec = spec();
    // tags as a table made by hand might have it: a column of its own before `value`.
    let tags = &mut spec.children[0];
    tags.columns.columns.insert(2, column("note", PgType::Text));
    tags.fills.insert(2, Fill::Element);
    let out = decode(RECORDS, false, spec).unwrap();
    assert_eq!(rows(&out[0].children[0].batch), ["1|0|∅|a", "1|1|∅|b"]);
}
