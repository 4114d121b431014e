//! Unit tests of `scan`.

use super::*;

fn fields(record: &str) -> Result<Vec<(String, Kind, String)>, String> {
    let mut out = Vec::new();
    scan_record::<SyntaxError>(record, |key, _, value| {
        out.push((key.to_string(), value.kind, value.text(record).to_string()));
        Ok(())
    })
    .map_err(|e| format!("{} at {}", e.message, e.offset))?;
    Ok(out)
}

#[test]
fn scans_fields_with_their_kinds_and_text() {
    let got = fields(r#" {"a": 1.5e3, "b" : "x\"y", "c": [1, {"d": null}], "e": {}, "f": true, "g": null, "h": -0} "#).unwrap();
    let kinds: Vec<(&str, Kind, &str)> = got
        .iter()
        .map(|(k, kind, t)| (k.as_str(), *kind, t.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("a", Kind::Number, "1.5e3"),
            ("b", Kind::String, "x\\\"y"),
            ("c", Kind::Array, "[1, {\"d\": null}]"),
            ("e", Kind::Object, "{}"),
            ("f", Kind::True, "true"),
            ("g", Kind::Null, "null"),
            ("h", Kind::Number, "-0"),
        ]
    );
    assert_eq!(fields("{}").unwrap(), vec![]);
}

#[test]
fn refuses_everything_rfc_8259_does() {
    for (bad, at) in [
        (r#"{"a": 01}"#, 6),
        (r#"{"a": 1.2.3}"#, 6),
        (r#"{"a": -}"#, 6),
        (r#"{"a": .5}"#, 6),
        (r#"{"a": 1.}"#, 6),
        (r#"{"a": +1}"#, 6),
        (r#"{"a": 1e}"#, 6),
        (r#"{"a": 0x10}"#, 6),
        (r#"{"a": 1 "b": 2}"#, 8),
        (r#"{,"a": 1}"#, 1),
        (r#"{"a": 1,}"#, 8),
        (r#"{"a": [1,]}"#, 9),
        (r#"{"a": [1 2]}"#, 9),
        (r#"{"a": [,1]}"#, 7),
        (r#"{"a": {"b" 1}}"#, 11),
        (r#"{"a": {"b": 1,}}"#, 14),
        (r#"{"a": [1}"#, 8),
        ("{\"a\": \"x\ty\"}", 8),
        (r#"{"a": "x\q"}"#, 8),
        (r#"{"a": "\ud800"}"#, 7),
        (r#"{"a": "\udc00"}"#, 7),
        (r#"{"a": "\u12"}"#, 7),
        (r#"{"a": tru}"#, 6),
        (r#"{"a": nulls}"#, 6),
        (r#"{"a": NaN}"#, 6),
        (r#"{"a": 'x'}"#, 6),
        (r#"{"a": 1} {"b": 2}"#, 9),
        (r#"[{"a": 1}]"#, 0),
        (r#"{"a": 1"#, 7),
        (r#"{"a": "x"#, 6),
        ("", 0),
        (r#"{"a": 1}}"#, 8),
    ] {
        let err = fields(bad).expect_err(bad);
        assert!(err.ends_with(&format!(" at {at}")), "{bad}: {err}");
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = format!(
        "{{\"a\": {}{}}}",
        "[".repeat(MAX_DEPTH),
        "]".repeat(MAX_DEPTH)
    );
    assert!(fields(&deep).is_ok());
    let deeper = format!("{{\"a\": {}{}}}", "[".repeat(200_000), "]".repeat(200_000));
    assert!(
        fields(&deeper)
            .unwrap_err()
            .starts_with("nested deeper than 10000 levels")
    );
    let unclosed = format!("{{\"a\": {}", "[{\"b\":".repeat(1000));
    assert!(fields(&unclosed).is_err());
}

#[test]
fn nul_escapes_are_flagged_and_strings_unescape() {
    let record = r#"{"a": "x\u0000", "b": {"k": ["\u0000"]}, "c": "\\u0000", "d": "\ud83c\udf89\t\u00e9\/"}"#;
    let mut got = Vec::new();
    scan_record::<SyntaxError>(record, |_, _, v| {
        got.push((v.nul, v.escaped));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        got,
        vec![(true, true), (true, false), (false, true), (false, true)]
    );
    let mut out = String::new();
    unescape(r#"\ud83c\udf89\t\u00e9\/\"\\"#, &mut out);
    assert_eq!(out, "🎉\té/\"\\");
}

use proptest::prelude::*;

/// serde_json is a second RFC 8259 parser: on any text, the scanner accepts a record
/// exactly when serde_json reads it as one object (nesting kept shallow, under
/// serde_json's own limit of 128, and numbers within a double's range, which serde_json
/// needs for a `Value`).
fn agrees_with_serde_json(text: &str) -> Result<(), TestCaseError> {
    let ours = scan_record::<SyntaxError>(text, |_, _, _| Ok(())).is_ok();
    let object = text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{');
    let parsed = serde_json::from_str::<serde_json::Value>(text);
    // A number past a double's range is valid JSON that serde_json cannot make a Value.
    prop_assume!(!matches!(&parsed, Err(e) if e.to_string().contains("number out of range")));
    let theirs = object && parsed.is_ok();
    prop_assert_eq!(ours, theirs, "{:?}", text);
    Ok(())
}

/// JSON-like text: valid documents, then cut, spliced and sprinkled with the characters
/// that make JSON go wrong.
fn json_like() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        "-?(0|[1-9][0-9]{0,3})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?",
        "\"([a-z\\\\\"\t]|\\\\u[0-9a-fA-F]{4}|\\\\[nrtbf/])*\"",
    ];
    let value = leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("\"[a-z]{0,3}\"", inner), 0..4).prop_map(|v| {
                let fields: Vec<String> = v.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    });
    let record = prop::collection::vec(("\"[a-z]{0,3}\"", value), 0..5).prop_map(|v| {
        let fields: Vec<String> = v.into_iter().map(|(k, v)| format!("{k} : {v}")).collect();
        format!("{{{}}}", fields.join(", "))
    });
    (record, any::<u16>(), "[ ,:\\[\\]{}\"0.e+\\\\-]{0,2}").prop_map(|(text, at, noise)| {
        let mut text: String = text;
        let at = usize::from(at) % (text.len() + 1);
        let at = (0..=at)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        if noise.is_empty() || at % 3 == 0 {
            return text;
        }
        text.insert_str(at, &noise);
        text
    })
}

proptest! {
    #[test]
    fn the_scanner_agrees_with_serde_json(text in json_like()) {
        agrees_with_serde_json(&text)?;
    }

    /// Any text, multi-byte characters included: no panic, and every key and value the
    /// scanner hands out is a slice of the text on character boundaries.
    #[test]
    fn no_text_makes_the_scanner_panic(chars in prop::collection::vec(any::<char>(), 0..200)) {
        let text: String = chars.into_iter().collect();
        let _ = scan_record::<SyntaxError>(&text, |key, _, value| {
            let _ = (key.len(), value.text(&text), value.json(&text));
            Ok(())
        });
    }
}

proptest! {
    /// The word-at-a-time run finders (sixteen bytes with SSE2, eight in a u64) stop exactly
    /// where a byte-by-byte loop does.
    #[test]
    fn ordinary_runs_end_where_the_byte_loop_ends(
        bytes in prop::collection::vec(
            prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..=0xff, b'a'..=b'z'],
            0..80,
        ),
        from in 0usize..80,
    ) {
        let from = from.min(bytes.len());
        let mut expected = from;
        while expected < bytes.len() && STRING_BYTES[bytes[expected] as usize] == 0 {
            expected += 1;
        }
        prop_assert_eq!(ordinary_run(&bytes, from), expected);
        prop_assert_eq!(ordinary_run_swar(&bytes, from), expected);
    }
}

/// A field as scanned: key, kind, and the value's span.
type Scanned = (String, Kind, u32, u32);

/// Every field of the record at `from` in `text`, or the error's message and offset.
fn scanned_at(text: &str, from: usize) -> Result<Vec<Scanned>, (String, usize)> {
    let mut out = Vec::new();
    let mut each = EachField {
        each: |key: &str, _, value: Value| {
            out.push((key.to_string(), value.kind, value.start, value.end));
            Ok::<(), SyntaxError>(())
        },
        value: Value::default(),
    };
    scan_fields(text, from, &mut each).map_err(|e| (e.message, e.offset))?;
    Ok(out)
}

proptest! {
    /// A record scanned where it lies in a batch (after other records' text) gives what it
    /// gives alone: the same fields with spans moved by its start, or the same error at the
    /// same offset counted from its own start.
    #[test]
    fn a_record_scanned_inside_a_batch_is_scanned_as_alone(
        text in json_like(),
        before in "[ -~é\n]{0,40}",
    ) {
        let alone = scanned_at(&text, 0);
        let batch = format!("{before}{text}");
        let shift = before.len() as u32;
        let inside = scanned_at(&batch, before.len()).map(|fields| {
            fields
                .into_iter()
                .map(|(key, kind, start, end)| (key, kind, start - shift, end - shift))
                .collect::<Vec<_>>()
        });
        prop_assert_eq!(alone, inside);
    }
}
