//! `Link` headers (RFC 8288), for paging by `rel="next"`.
//!
//! A header holds links separated by commas, each a `<URI-Reference>` followed by `;`
//! parameters; a URI may itself hold commas and semicolons (`<…?fields=id,name&page=2>`), a
//! `rel` may name several relations (`rel="next last"`), parameters come in any order, and a
//! response may send several `Link` header lines. Splitting on commas gets all of that wrong
//! and silently ends the paging early, so links are parsed here by the grammar.

/// One link: its target as written (maybe relative), and its relation types, lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub target: String,
    pub rels: Vec<String>,
}

/// Every link in `values` (the `Link` header lines of one response, in order). Text that
/// breaks the grammar ends the value it is in; the links before it are kept.
pub(crate) fn parse(values: &[String]) -> Vec<Link> {
    let mut links = Vec::new();
    for value in values {
        parse_value(value, &mut links);
    }
    links
}

/// The target of the first link with relation `next`.
pub(crate) fn next(values: &[String]) -> Option<String> {
    parse(values)
        .into_iter()
        .find(|l| l.rels.iter().any(|r| r == "next"))
        .map(|l| l.target)
}

fn parse_value(value: &str, links: &mut Vec<Link>) {
    let bytes = value.as_bytes();
    let mut at = 0;
    let skip_space = |at: &mut usize| {
        while *at < bytes.len() && matches!(bytes[*at], b' ' | b'\t') {
            *at += 1;
        }
    };
    loop {
        // Between links: whitespace and empty list elements.
        while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b',') {
            at += 1;
        }
        if at >= bytes.len() || bytes[at] != b'<' {
            return;
        }
        let Some(close) = value[at + 1..].find('>') else {
            return;
        };
        let target = value[at + 1..at + 1 + close].trim().to_string();
        at += close + 2;
        let mut rels = Vec::new();
        // Parameters: `; name[=value]`, until a comma or the end.
        loop {
            skip_space(&mut at);
            if at >= bytes.len() || bytes[at] == b',' {
                break;
            }
            if bytes[at] != b';' {
                return;
            }
            at += 1;
            skip_space(&mut at);
            let name_start = at;
            while at < bytes.len() && is_token(bytes[at]) {
                at += 1;
            }
            let name = value[name_start..at].to_ascii_lowercase();
            skip_space(&mut at);
            let mut param = String::new();
            if at < bytes.len() && bytes[at] == b'=' {
                at += 1;
                skip_space(&mut at);
                if at < bytes.len() && bytes[at] == b'"' {
                    at += 1;
                    let mut closed = false;
                    while at < bytes.len() {
                        match bytes[at] {
                            b'\\' if at + 1 < bytes.len() => {
                                param.push(char::from(bytes[at + 1]));
                                at += 2;
                            }
                            b'"' => {
                                at += 1;
                                closed = true;
                                break;
                            }
                            _ => {
                                let c = value[at..].chars().next().unwrap_or(' ');
                                param.push(c);
                                at += c.len_utf8();
                            }
                        }
                    }
                    if !closed {
                        return;
                    }
                } else {
                    let start = at;
                    while at < bytes.len() && is_token(bytes[at]) {
                        at += 1;
                    }
                    param.push_str(&value[start..at]);
                }
            }
            // RFC 8288: only the first rel parameter counts.
            if name == "rel" && rels.is_empty() {
                rels = param
                    .split_ascii_whitespace()
                    .map(str::to_ascii_lowercase)
                    .collect();
            }
        }
        links.push(Link { target, rels });
    }
}

/// RFC 9110 token characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next_of(values: &[&str]) -> Option<String> {
        next(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn links_follow_the_grammar() {
        // Commas and semicolons inside the URI.
        assert_eq!(
            next_of(&[
                r#"</items?fields=id,name;x&page=2>; rel="next", </items?fields=id,name&page=9>; rel="last""#
            ]),
            Some("/items?fields=id,name;x&page=2".into())
        );
        // Several relations, parameters in any order, case, unquoted values.
        assert_eq!(
            next_of(&[r#"<https://a/p3>; title="a, b; c"; REL="last Next""#]),
            Some("https://a/p3".into())
        );
        assert_eq!(
            next_of(&["<https://a/p3>;rel=next"]),
            Some("https://a/p3".into())
        );
        // Several header lines.
        assert_eq!(
            next_of(&[
                r#"<https://a/p1>; rel="prev""#,
                r#"<https://a/p3>; rel="next""#
            ]),
            Some("https://a/p3".into())
        );
        assert_eq!(next_of(&[r#"<https://a/p9>; rel="last""#]), None);
        assert_eq!(next_of(&[r#"<https://a/p>; rel="nextpage""#]), None);
        // Escapes in quoted strings; garbage ends the value without losing earlier links.
        assert_eq!(
            parse(&[r#"<a>; title="x\"y", <b>; rel="next", junk <c>; rel=next"#.to_string()]),
            vec![
                Link {
                    target: "a".into(),
                    rels: vec![]
                },
                Link {
                    target: "b".into(),
                    rels: vec!["next".into()]
                },
            ]
        );
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn no_header_makes_the_parser_panic(value in "\\PC{0,80}", bytes in prop::collection::vec(any::<char>(), 0..60)) {
            let _ = parse(&[value, bytes.into_iter().collect()]);
        }

        #[test]
        fn a_next_link_is_found_among_others(
            target in "[a-z0-9/?=&,;._-]{1,30}",
            before in prop::collection::vec("[a-z0-9/?=&,;._-]{1,20}", 0..3),
        ) {
            let mut parts: Vec<String> = before.iter().map(|t| format!("<{t}>; rel=\"prev\"")).collect();
            parts.push(format!("<{target}>; title=\"x, y\"; rel=\"last next\""));
            prop_assert_eq!(next(&[parts.join(", ")]), Some(target));
        }
    }
}
