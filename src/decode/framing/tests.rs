//! Unit tests of `framing`.

use super::*;

fn frame(format: Option<Format>, chunks: &[&[u8]]) -> Result<Vec<(String, u64, u64)>, String> {
    let mut framer = Framer::new(format, 1 << 20);
    let mut out = Vec::new();
    let mut emit = |r: &[u8], p: Position| {
        out.push((String::from_utf8_lossy(r).into_owned(), p.line, p.column));
        Ok::<(), DecodeError>(())
    };
    for chunk in chunks {
        framer.push(chunk, &mut emit).map_err(|e| e.to_string())?;
    }
    framer.finish(&mut emit).map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn ndjson_lines_across_chunks_with_blank_lines_and_crlf() {
    let got = frame(None, &[b"\n{\"a\":1}\r\n\n{\"a\"", b":2}\n  \n{\"a\":3}"]).unwrap();
    assert_eq!(
        got,
        vec![
            ("{\"a\":1}".into(), 2, 1),
            ("{\"a\":2}".into(), 4, 1),
            ("{\"a\":3}".into(), 6, 1)
        ]
    );
}

#[test]
fn array_elements_across_chunks_with_positions() {
    let got = frame(
        None,
        &[
            b"\xef\xbb\xbf [\n  {\"a\": \"x]}\\\"\"},",
            b" {\"b\": [1, {}]}\n, 7 ,{\"c\"",
            b":null}]\n",
        ],
    )
    .unwrap();
    assert_eq!(
        got,
        vec![
            ("{\"a\": \"x]}\\\"\"}".into(), 2, 3),
            ("{\"b\": [1, {}]}".into(), 2, 19),
            ("7".into(), 3, 3),
            ("{\"c\":null}".into(), 3, 6),
        ]
    );
    assert_eq!(frame(None, &[b"[]"]).unwrap(), vec![]);
}

#[test]
fn broken_structure_is_reported_with_its_line() {
    assert_eq!(
        frame(None, &[b"[{\"a\":1}\n{\"a\":2}]"]).unwrap_err(),
        "line 2: expected ',' or ']' after an array element, found '{'"
    );
    assert_eq!(
        frame(None, &[b"[{\"a\":1},"]).unwrap_err(),
        "line 1: the input ended before the JSON array was closed with ']'"
    );
    assert_eq!(
        frame(None, &[b"[1] x"]).unwrap_err(),
        "line 1: unexpected data after the end of the JSON array"
    );
    assert_eq!(
        frame(None, &[b"[1,]"]).unwrap_err(),
        "line 1: expected an element after ',', found ']'"
    );
}

#[test]
fn html_is_not_json() {
    assert_eq!(
        frame(
            None,
            &[b"\n<!DOCTYPE html>\n<html><body>Sign in</body></html>"]
        )
        .unwrap_err(),
        "the input is not JSON (it looks like HTML or XML): <!DOCTYPE html> <html><body>Sign in</body></html>"
    );
}

#[test]
fn forced_ndjson_keeps_array_lines_as_records() {
    let got = frame(Some(Format::Ndjson), &[b"[1]\n[2]\n"]).unwrap();
    assert_eq!(got.len(), 2);
}

#[test]
fn records_over_the_limit_fail() {
    let mut framer = Framer::new(None, 8);
    let err = framer
        .push(b"{\"a\":1}\n{\"abcdef\":1}\n", &mut |_, _| {
            Ok::<(), DecodeError>(())
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2: a record is longer than the limit of 8 bytes"
    );
}

#[test]
fn oversized_records_are_skipped_in_place_when_asked() {
    let frame_small = |format, chunks: &[&[u8]], skip: bool| {
        let framer = Framer::new(format, 10);
        let mut framer = if skip {
            framer.skipping_oversized()
        } else {
            framer
        };
        let mut out = Vec::new();
        let mut emit = |r: &[u8], p: Position| {
            out.push((String::from_utf8_lossy(r).into_owned(), p.line));
            Ok::<(), DecodeError>(())
        };
        for chunk in chunks {
            framer.push(chunk, &mut emit).map_err(|e| e.to_string())?;
        }
        framer.finish(&mut emit).map_err(|e| e.to_string())?;
        Ok::<_, String>(out)
    };
    let lines: &[&[u8]] = &[
        b"{\"a\":1}\n{\"a\":\"lo",
        b"ng long long\"}\n{\"a\":2}\n{\"b\":\"xxxxxxxxx\"}",
    ];
    assert_eq!(
        frame_small(None, lines, true).unwrap(),
        vec![
            ("{\"a\":1}".to_string(), 1),
            (String::new(), 2),
            ("{\"a\":2}".to_string(), 3),
            (String::new(), 4),
        ]
    );
    assert_eq!(
        frame_small(None, lines, false).unwrap_err(),
        "line 2: a record is longer than the limit of 10 bytes"
    );
    let array: &[&[u8]] = &[b"[{\"a\":1}, {\"a\":[1,2,", b"3,4,5,6]}, {\"a\":2}]"];
    assert_eq!(
        frame_small(None, array, true).unwrap(),
        vec![
            ("{\"a\":1}".to_string(), 1),
            (String::new(), 1),
            ("{\"a\":2}".to_string(), 1),
        ]
    );
}
