//! The docs cannot drift from the program: every shell example in README.md and docs/ runs
//! here, and every flag `--help` lists is documented.
//!
//! Each page's ` ```sh ` blocks run in order, in one scratch folder per page (so a file one
//! block writes is there for the next), each in its own `bash -euo pipefail`, against a
//! database of the page's own (created here, dropped after) and the demo API (`apitap
//! demo-api`, which the pages tell readers to start on 127.0.0.1:8080; here it is served on a
//! free port and the address in each block is rewritten to it). `apitap` is the binary under
//! test, `examples/` the repository's. A block must exit 0, or the code its fence names
//! (` ```sh exit=1 `). A block fenced ` ```sh norun ` is not run: it may only hold commands
//! the suite runs in other ways or that install software (`scripts/…`, `cargo install`,
//! `cargo bench`), which this checks.

use std::path::{Path, PathBuf};

use crate::common::*;

/// The address the pages use for the demo API.
const DEMO_ADDRESS: &str = "127.0.0.1:8080";

/// Commands a `norun` block may hold.
const NOT_RUN_HERE: [&str; 3] = ["scripts/", "cargo install", "cargo bench"];

/// One ` ```sh ` block of a page.
#[derive(Debug, PartialEq)]
struct Example {
    /// The line of its opening fence.
    line: usize,
    text: String,
    /// The exit code it must end with; `None` when it is not run here.
    exit: Option<i32>,
}

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page of docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![repository().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repository().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The ` ```sh ` blocks of a markdown text, in order.
fn examples(markdown: &str) -> Vec<Example> {
    let mut found = Vec::new();
    let mut open: Option<(usize, Option<i32>, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => {
                let mut words = info.split_whitespace();
                if words.next() == Some("sh") {
                    let mut exit = Some(0);
                    for word in words {
                        if word == "norun" {
                            exit = None;
                        } else if let Some(code) = word.strip_prefix("exit=") {
                            exit = Some(code.parse().expect("exit=N holds a number"));
                        }
                    }
                    open = Some((i + 1, exit, String::new()));
                } else {
                    // Another language's block: skip to its end.
                    open = Some((0, None, String::new()));
                }
            }
            (Some((line, exit, text)), Some(_)) => {
                if *line > 0 {
                    found.push(Example {
                        line: *line,
                        text: std::mem::take(text),
                        exit: *exit,
                    });
                }
                open = None;
            }
            (Some((_, _, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    found
}

/// The commands of a block, one per line, comments and continuations joined.
fn commands(text: &str) -> Vec<String> {
    text.replace("\\\n", " ")
        .lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// A command without the `NAME=value` assignments before it (`METHODS="a b" scripts/…`).
fn without_assignments(command: &str) -> &str {
    let mut rest = command.trim_start();
    loop {
        let name_end = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        if name_end == 0 || !rest[name_end..].starts_with('=') {
            return rest;
        }
        let value = &rest[name_end + 1..];
        let end = match value.strip_prefix('"') {
            Some(quoted) => quoted.find('"').map_or(value.len(), |i| i + 2),
            None => value.find(' ').unwrap_or(value.len()),
        };
        rest = value[end..].trim_start();
    }
}

/// A database of the page's own, empty; its URL.
async fn page_database(name: &str) -> String {
    let admin = client().await;
    let database = format!("apitap_docs_{name}");
    // One statement each: a multi-statement string runs in a transaction, which these refuse.
    for statement in [
        format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        format!("CREATE DATABASE {database}"),
    ] {
        admin.batch_execute(&statement).await.unwrap();
    }
    let url = database_url();
    let base = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
    format!("{base}/{database}")
}

/// Runs the page's examples; a description of each that ended otherwise than it must.
async fn run_page(page: &Path, demo: &str) -> Vec<String> {
    let markdown = std::fs::read_to_string(page).unwrap();
    let name = page.file_stem().unwrap().to_string_lossy().to_lowercase();
    let shown = page
        .strip_prefix(repository())
        .unwrap()
        .display()
        .to_string();
    let database = page_database(&name.replace('-', "_")).await;
    let scratch = tempfile::tempdir().unwrap();
    let home = scratch.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::symlink(
        repository().join("examples"),
        scratch.path().join("examples"),
    )
    .unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_apitap")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut failures = Vec::new();
    for example in examples(&markdown) {
        let Some(expected) = example.exit else {
            continue;
        };
        let script = example.text.replace(DEMO_ADDRESS, demo);
        let output = tokio::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(scratch.path())
            .env("PATH", &path)
            .env("HOME", &home)
            .env("DATABASE_URL", &database)
            .env("DEMO_API", format!("http://{demo}"))
            .env("DEMO_ROWS", "2000")
            .env_remove("RUST_LOG")
            .env_remove("PGSERVICEFILE")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(std::time::Duration::from_secs(120), output)
            .await
            .unwrap_or_else(|_| panic!("{shown}:{}: the example ran past 120 s", example.line))
            .unwrap();
        let code = output.status.code().unwrap_or(-1);
        if code != expected {
            failures.push(format!(
                "{shown}:{}: exited {code}, not {expected}\n{}\nstdout:\n{}\nstderr:\n{}",
                example.line,
                example.text,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    let admin = client().await;
    let database = format!("apitap_docs_{}", name.replace('-', "_"));
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .await;
    failures
}

#[tokio::test]
async fn every_shell_example_in_the_docs_runs() {
    let demo = serve(apitap::demo::router()).await.to_string();
    let mut failures = Vec::new();
    let mut ran = 0;
    for page in pages() {
        let markdown = std::fs::read_to_string(&page).unwrap();
        for example in examples(&markdown).iter().filter(|e| e.exit.is_none()) {
            for command in commands(&example.text) {
                let program = without_assignments(&command);
                assert!(
                    NOT_RUN_HERE.iter().any(|p| program.starts_with(p)),
                    "{}:{}: a `sh norun` block runs {command:?}, which the docs test could run: take `norun` off",
                    page.display(),
                    example.line
                );
            }
        }
        ran += examples(&markdown)
            .iter()
            .filter(|e| e.exit.is_some())
            .count();
        failures.extend(run_page(&page, &demo).await);
    }
    assert!(ran >= 20, "only {ran} examples found in the docs");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every long flag in the `--help` of each command.
async fn help_flags() -> Vec<(String, String)> {
    let mut flags = Vec::new();
    for command in ["load", "run", "check", "demo-api", "completions", "man"] {
        let run = apitap(&[command, "--help"], None).await;
        assert_eq!(run.code, 0, "{command} --help: {}", run.stderr);
        let options = run.stdout.split("\nExamples:\n").next().unwrap_or_default();
        for word in options.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            let is_flag =
                word.len() > 2 && word.starts_with("--") && word.as_bytes()[2].is_ascii_lowercase();
            if is_flag && !flags.iter().any(|(_, f)| f == word) {
                flags.push((command.to_string(), word.to_string()));
            }
        }
    }
    flags
}

#[tokio::test]
async fn every_flag_of_help_is_documented() {
    let docs: String = pages()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let flags = help_flags().await;
    assert!(flags.len() > 50, "too few flags found in --help: {flags:?}");
    let missing: Vec<String> = flags
        .iter()
        .filter(|(_, flag)| !["--help", "--version"].contains(&flag.as_str()))
        .filter(|(_, flag)| {
            // The flag as a word: `--key` is not documented by `--key-file`.
            !docs.match_indices(flag.as_str()).any(|(at, _)| {
                let next = docs[at + flag.len()..].chars().next();
                !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
            })
        })
        .map(|(command, flag)| format!("apitap {command} {flag}"))
        .collect();
    assert!(
        missing.is_empty(),
        "flags in --help that README.md and docs/ never mention: {missing:?}"
    );
}

#[test]
fn examples_are_found_with_their_lines_and_exit_codes() {
    let page = "# T\n```sh\napitap load a \\\n  --table t\n```\ntext\n```yaml\na: 1\n```\n```sh exit=1\nfalse\n```\n```sh norun\nscripts/test.sh\n```\n";
    assert_eq!(
        examples(page),
        vec![
            Example {
                line: 2,
                text: "apitap load a \\\n  --table t\n".into(),
                exit: Some(0)
            },
            Example {
                line: 10,
                text: "false\n".into(),
                exit: Some(1)
            },
            Example {
                line: 13,
                text: "scripts/test.sh\n".into(),
                exit: None
            },
        ]
    );
    assert_eq!(
        commands("# a comment\napitap load a \\\n  --table t\n\n"),
        vec!["apitap load a    --table t"]
    );
    assert_eq!(
        without_assignments("METHODS=\"a b\" RUNS=3 scripts/bench.sh 10"),
        "scripts/bench.sh 10"
    );
    assert_eq!(without_assignments("apitap load x"), "apitap load x");
}
