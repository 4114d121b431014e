use super::*;

fn infer(records: &[&str]) -> Vec<(String, PgType)> {
    let mut sample = Sample::default();
    for r in records {
        sample.add(r.as_bytes());
    }
    sample
        .infer()
        .columns
        .into_iter()
        .map(|c| (c.name, c.pg_type))
        .collect()
}

#[test]
fn infers_the_documented_mapping_in_field_order() {
    let got = infer(&[
        r#"{"id": 1, "amount": 2, "flag": true, "at": "2024-01-01T00:00:00Z", "day": "2024-01-01", "name": "x", "obj": {"a": 1}, "list": [1], "none": null, "big": 18446744073709551615, "local": "2024-01-01 10:00:00"}"#,
        r#"{"id": 9007199254740993, "amount": 2.5, "flag": null, "at": null, "day": "2024-02-03", "name": "2024-01-01", "obj": null, "list": null, "none": null, "big": 1, "local": null}"#,
    ]);
    assert_eq!(
        got,
        vec![
            ("id".into(), PgType::Int8),
            ("amount".into(), PgType::Float8),
            ("flag".into(), PgType::Bool),
            ("at".into(), PgType::Timestamptz),
            ("day".into(), PgType::Date),
            ("name".into(), PgType::Text),
            ("obj".into(), PgType::Jsonb),
            ("list".into(), PgType::Jsonb),
            ("none".into(), PgType::Text),
            ("big".into(), PgType::Numeric),
            ("local".into(), PgType::Timestamp),
        ]
    );
}

#[test]
fn integer_columns_widen_only_as_far_as_the_values_need() {
    let mut sample = Sample::default();
    for r in [
        r#"{"small": 5, "mid": 40000, "big": 3000000000, "frac": 1.5, "huge": 18446744073709551615, "text": "x", "none": null}"#,
        r#"{"small": -7, "mid": 1, "big": 2, "frac": 2, "huge": 1, "text": 1, "none": null}"#,
    ] {
        sample.add(r.as_bytes());
    }
    let w = |name: &str, t: PgType| sample.widening(name, t, false);
    assert_eq!(w("small", PgType::Int2), None);
    assert_eq!(w("mid", PgType::Int2), Some(PgType::Int4));
    assert_eq!(w("mid", PgType::Int4), None);
    assert_eq!(w("big", PgType::Int4), Some(PgType::Int8));
    assert_eq!(w("big", PgType::Int8), None);
    assert_eq!(w("frac", PgType::Int8), Some(PgType::Numeric));
    assert_eq!(w("huge", PgType::Int8), Some(PgType::Numeric));
    assert_eq!(w("huge", PgType::Numeric), None);
    assert_eq!(w("big", PgType::Float8), None);
    assert_eq!(w("text", PgType::Int4), None);
    assert_eq!(w("none", PgType::Int2), None);
    assert_eq!(w("absent", PgType::Int2), None);
}

#[test]
fn columns_become_text_when_asked_only_for_values_they_refuse() {
    let mut sample = Sample::default();
    for r in [
        r#"{"code": 5, "at": "2024-01-01T00:00:00Z", "ok": "t", "n": "12.5", "id": "A-1", "tag": {"a": 1}}"#,
        r#"{"code": "B-7", "at": "yesterday", "ok": true, "n": 3, "id": "b9c1e2d4-0000-4000-8000-000000000000", "tag": "x"}"#,
    ] {
        sample.add(r.as_bytes());
    }
    let w = |name: &str, t: PgType| sample.widening(name, t, true);
    assert_eq!(w("code", PgType::Int4), Some(PgType::Text));
    assert_eq!(w("at", PgType::Timestamptz), Some(PgType::Text));
    assert_eq!(w("ok", PgType::Bool), None);
    assert_eq!(w("n", PgType::Numeric), None);
    assert_eq!(w("id", PgType::Uuid), Some(PgType::Text));
    assert_eq!(w("tag", PgType::Jsonb), None);
    assert_eq!(w("tag", PgType::Text), None);
    assert_eq!(w("absent", PgType::Int4), None);
    assert_eq!(sample.widening("code", PgType::Int4, false), None);
}

#[test]
fn mixed_kinds_widen_safely() {
    let got = infer(&[
        r#"{"a": 1, "b": true, "c": {"x": 1}, "d": "2024-01-01"}"#,
        r#"{"a": "one", "b": 1, "c": 2, "d": "2024-01-01T00:00:00Z"}"#,
        r#"{"e": 1}"#,
    ]);
    assert_eq!(
        got,
        vec![
            ("a".into(), PgType::Text),
            ("b".into(), PgType::Text),
            ("c".into(), PgType::Jsonb),
            ("d".into(), PgType::Text),
            ("e".into(), PgType::Int8),
        ]
    );
}

#[test]
fn inference_keeps_every_value_exact() {
    let got = infer(&[
        r#"{"wei": 123456789012345678901234567890, "mixed": 0.5, "neg0": -0, "digits": 1.5, "f": 0.1, "ints": 1}"#,
        r#"{"wei": 1, "mixed": 9007199254740993, "neg0": 3, "digits": 1234567890.123456789, "f": 2.5e3, "ints": 9007199254740993}"#,
        r#"{"huge": 1e400, "tiny": 5e-324, "big_int_float": 1.5, "u64": 18446744073709551615}"#,
        r#"{"big_int_float": 9007199254740992}"#,
    ]);
    assert_eq!(
        got,
        vec![
            ("wei".into(), PgType::Numeric),
            ("mixed".into(), PgType::Numeric),
            ("neg0".into(), PgType::Int8),
            ("digits".into(), PgType::Numeric),
            ("f".into(), PgType::Float8),
            ("ints".into(), PgType::Int8),
            ("huge".into(), PgType::Numeric),
            ("tiny".into(), PgType::Float8),
            // 2^53 itself is a double exactly.
            ("big_int_float".into(), PgType::Float8),
            ("u64".into(), PgType::Numeric),
        ]
    );
}

#[test]
fn the_sample_skips_only_records_the_decoder_refuses() {
    let mut sample = Sample::default();
    for r in [
        r#"{"id": 1, "c": 1e400}"#,
        r#"{"id": 2, "c": 01}"#,
        r#"[1, 2]"#,
        r#"{"id": 3, "kéy": "x", "c": 2}"#,
    ] {
        sample.add(r.as_bytes());
    }
    assert_eq!(sample.records(), 2);
    assert_eq!(sample.field_names(), vec!["id", "c", "kéy"]);
    assert_eq!(
        sample
            .infer()
            .columns
            .iter()
            .map(|c| c.pg_type)
            .collect::<Vec<_>>(),
        vec![PgType::Int8, PgType::Numeric, PgType::Text]
    );
}

fn flattened(depth: usize, records: &[&str]) -> Vec<(String, Vec<String>, PgType)> {
    let mut sample = Sample::new(depth);
    for r in records {
        sample.add(r.as_bytes());
    }
    sample
        .infer()
        .columns
        .into_iter()
        .map(|c| (c.field_name().into_owned(), c.parents, c.pg_type))
        .collect()
}

#[test]
fn flattening_makes_columns_of_objects_that_held_only_objects() {
    let got = flattened(
        10,
        &[
            r#"{"id": 1, "user": {"id": 7, "name": "a", "place": {"city": "x"}}, "tags": [1], "mixed": {"a": 1}, "empty": {}}"#,
            r#"{"id": 2, "user": null, "mixed": "text", "later": 1}"#,
            r#"{"id": 3, "user": {"id": 8, "since": "2024-01-01"}, "empty": {}}"#,
        ],
    );
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            ("id".into(), vec![], PgType::Int8),
            ("user__id".into(), strings(&["user"]), PgType::Int8),
            ("user__name".into(), strings(&["user"]), PgType::Text),
            (
                "user__place__city".into(),
                strings(&["user", "place"]),
                PgType::Text
            ),
            // A field first seen in a later record's object sits with its object's fields.
            ("user__since".into(), strings(&["user"]), PgType::Date),
            // Arrays stay whole; so does a field that was an object once and text once, and
            // an object that never had a field.
            ("tags".into(), vec![], PgType::Jsonb),
            ("mixed".into(), vec![], PgType::Jsonb),
            ("empty".into(), vec![], PgType::Jsonb),
            ("later".into(), vec![], PgType::Int8),
        ]
    );
}

#[test]
fn flattening_stops_at_the_depth_asked_for() {
    let record = r#"{"a": {"b": {"c": {"d": 1}}}}"#;
    let names = |depth| {
        flattened(depth, &[record])
            .into_iter()
            .map(|(name, _, t)| (name, t))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(0), vec![("a".to_string(), PgType::Jsonb)]);
    assert_eq!(names(1), vec![("a__b".to_string(), PgType::Jsonb)]);
    assert_eq!(names(3), vec![("a__b__c__d".to_string(), PgType::Int8)]);
    assert_eq!(names(10), names(3));
    // Far deeper records than any depth cannot overflow the sample's recursion.
    let deep = format!("{}1{}", r#"{"a":"#.repeat(5000), "}".repeat(5000));
    let got = names(MAX_FLATTEN_DEPTH);
    assert_eq!(got.len(), 1);
    let deep_got = flattened(MAX_FLATTEN_DEPTH, &[deep.as_str()]);
    assert_eq!(deep_got.len(), 1);
    assert_eq!(deep_got[0].1.len(), MAX_FLATTEN_DEPTH);
    assert_eq!(deep_got[0].2, PgType::Jsonb);
}

#[test]
fn a_flattened_field_widens_by_its_joined_name() {
    let mut sample = Sample::new(10);
    sample.add(br#"{"user": {"n": 40000, "code": "A-1"}}"#);
    assert_eq!(
        sample.field_names(),
        vec!["user__n".to_string(), "user__code".to_string()]
    );
    assert_eq!(
        sample.widening("user__n", PgType::Int2, false),
        Some(PgType::Int4)
    );
    assert_eq!(
        sample.widening("user__code", PgType::Int4, true),
        Some(PgType::Text)
    );
    assert_eq!(sample.rule("user__n"), Some("integers within 64 bits"));
}
