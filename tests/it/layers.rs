//! The crate's top-level modules import each other without circles, so that each can be read
//! and changed from the bottom up (ARCHITECTURE.md shows the layers). The test reads the
//! source: every `crate::…` path (in `use` lines and in code) and every `super::` chain that
//! climbs to the crate root is an edge from the module of the file it is in to the module it
//! names; a strongly connected group of two or more modules is a circle, reported with the
//! lines that make it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where one module names another: the file and line.
type Edges = BTreeMap<(String, String), Vec<String>>;

#[test]
fn top_level_modules_import_each_other_without_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(&src, f)).collect();
    assert!(
        modules.len() > 10 && modules.contains("sink") && modules.contains("base"),
        "the crate's modules were not found under {}: {modules:?}",
        src.display()
    );
    let mut edges = Edges::new();
    for file in &files {
        let Some(from) = top_module(&src, file) else {
            continue;
        };
        let depth = module_depth(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let shown = file.strip_prefix(&src).unwrap().display().to_string();
        for (line, to) in references(&text, depth) {
            if to != from && modules.contains(&to) {
                edges
                    .entry((from.clone(), to))
                    .or_default()
                    .push(format!("src/{shown}:{line}"));
            }
        }
    }
    let circles = circles(&modules, &edges);
    assert!(circles.is_empty(), "{}", describe(&circles, &edges));
}

/// The check finds a circle when there is one, and names its lines.
#[test]
fn a_circle_is_found_and_named() {
    let a = "use crate::b::Thing;\n// crate::c is only a comment\nfn f() { crate::c::g() }\n";
    let b = "use crate::{base::X, a::{Y, Z}};\n";
    let c = "fn g() {}\n";
    let mut edges = Edges::new();
    for (from, text) in [("a", a), ("b", b), ("c", c)] {
        for (line, to) in references(text, 1) {
            if to != from {
                edges
                    .entry((from.to_string(), to))
                    .or_default()
                    .push(format!("{from}.rs:{line}"));
            }
        }
    }
    let modules: BTreeSet<String> = ["a", "b", "c", "base"].map(String::from).into();
    assert_eq!(
        edges.keys().cloned().collect::<Vec<_>>(),
        [("a", "b"), ("a", "c"), ("b", "a"), ("b", "base")]
            .map(|(f, t)| (f.to_string(), t.to_string()))
    );
    let found = circles(&modules, &edges);
    assert_eq!(found, vec![vec!["a".to_string(), "b".to_string()]]);
    assert_eq!(
        describe(&found, &edges),
        "the crate's modules import each other in a circle:\n  a, b\n    a -> b (a.rs:1)\n    b -> a (b.rs:1)\n"
    );
    // `super::` from a file two levels down climbs to the root with two of them.
    assert_eq!(
        references("use super::super::sink::X;\nuse super::Y;\n", 2),
        vec![(1, "sink".to_string())]
    );
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// The top-level module a file belongs to; `None` for the crate root and the binary.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

/// How many `super::` climb from this file's module to the crate root.
fn module_depth(src: &Path, file: &Path) -> usize {
    let relative = file.strip_prefix(src).unwrap();
    let parts = relative.components().count();
    if relative.file_name().is_some_and(|n| n == "mod.rs") {
        parts - 1
    } else {
        parts
    }
}

/// The top-level modules a file's code names, with their lines: `crate::x…`, the items of
/// `crate::{x…, y…}`, and `super::` chains of `depth` links (which reach the crate root).
/// Comments are skipped.
fn references(text: &str, depth: usize) -> Vec<(usize, String)> {
    let climb = "super::".repeat(depth);
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        for prefix in ["crate::", climb.as_str()] {
            let mut rest = code;
            while let Some(at) = rest.find(prefix) {
                let before = &rest[..at];
                rest = &rest[at + prefix.len()..];
                // `super::super::` also holds `super::` at its second link: count chains whole.
                if prefix.starts_with("super") && before.ends_with("super::") {
                    continue;
                }
                for name in names_after(rest) {
                    found.push((i + 1, name));
                }
            }
        }
    }
    found
}

/// The first name of a path (`sink::X` → `sink`), or of each item of a group
/// (`{a::X, b}` → `a`, `b`).
fn names_after(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = rest.strip_prefix('{') else {
        return vec![ident(rest)]
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect();
    };
    let (mut names, mut level, mut item_start) = (Vec::new(), 0, true);
    for (i, c) in group.char_indices() {
        match c {
            '{' => level += 1,
            '}' if level == 0 => break,
            '}' => level -= 1,
            ',' if level == 0 => item_start = true,
            c if item_start && !c.is_whitespace() => {
                item_start = false;
                names.push(ident(&group[i..]));
            }
            _ => {}
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

/// Every group of two or more modules that reach each other (Tarjan's strongly connected
/// components), each sorted, in order.
fn circles(modules: &BTreeSet<String>, edges: &Edges) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a Edges,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(walk: &mut Walk<'a>, node: &'a str) {
        let n = walk.index.len();
        walk.index.insert(node, n);
        walk.low.insert(node, n);
        walk.stack.push(node);
        let next: Vec<&'a str> = walk
            .edges
            .keys()
            .filter(|(from, _)| from == node)
            .map(|(_, to)| to.as_str())
            .collect();
        for to in next {
            if !walk.index.contains_key(to) {
                visit(walk, to);
                let low = walk.low[node].min(walk.low[to]);
                walk.low.insert(node, low);
            } else if walk.stack.contains(&to) {
                let low = walk.low[node].min(walk.index[to]);
                walk.low.insert(node, low);
            }
        }
        if walk.low[node] == walk.index[node] {
            let mut group = Vec::new();
            while let Some(top) = walk.stack.pop() {
                group.push(top.to_string());
                if top == node {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                walk.found.push(group);
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for module in modules {
        if !walk.index.contains_key(module.as_str()) {
            visit(&mut walk, module);
        }
    }
    walk.found.sort();
    walk.found
}

/// Each circle with the imports inside it and the first line of each.
fn describe(circles: &[Vec<String>], edges: &Edges) -> String {
    let mut text = String::from("the crate's modules import each other in a circle:\n");
    for group in circles {
        text.push_str(&format!("  {}\n", group.join(", ")));
        for ((from, to), lines) in edges {
            if group.contains(from) && group.contains(to) {
                let more = match lines.len() {
                    1 => String::new(),
                    n => format!(" and {} more", n - 1),
                };
                text.push_str(&format!("    {from} -> {to} ({}{more})\n", lines[0]));
            }
        }
    }
    text
}
