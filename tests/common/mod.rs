//! Helpers for the integration tests: the real `apitap` binary, a real PostgreSQL (from
//! DATABASE_URL, which scripts/test.sh sets) and HTTP servers on 127.0.0.1.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};

use axum::Router;
use axum::serve::ListenerExt;

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A connection for checking results; the session time zone is UTC so text casts of
/// timestamptz are stable.
pub async fn client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach PostgreSQL at DATABASE_URL: {e}; run scripts/test.sh")
        });
    tokio::spawn(connection);
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    client
}

/// A schema of the test's own, empty.
pub async fn fresh_schema(client: &tokio_postgres::Client, name: &str) -> String {
    let schema = format!("apitap_test_{name}");
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await
        .unwrap();
    schema
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

fn finish(output: Output) -> Run {
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_apitap"));
    cmd.args(args)
        .env("DATABASE_URL", database_url())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `apitap ARGS` to completion (off the async runtime), feeding `stdin` if given.
pub async fn apitap(args: &[&str], stdin: Option<Vec<u8>>) -> Run {
    apitap_env(args, &[], stdin).await
}

/// Like [`apitap`], with extra environment variables.
pub async fn apitap_env(args: &[&str], env: &[(&str, &str)], stdin: Option<Vec<u8>>) -> Run {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = command(&args);
        cmd.envs(env);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("run apitap");
        if let Some(input) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        finish(child.wait_with_output().unwrap())
    })
    .await
    .unwrap()
}

/// Serves `router` on 127.0.0.1 (TCP_NODELAY, as real servers do) until the test ends.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// NDJSON of demo rows `1..=n`.
pub fn demo_ndjson(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 1..=n {
        apitap::demo::write_row(i, &mut out);
        out.push(b'\n');
    }
    out
}

pub async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

pub async fn table_exists(client: &tokio_postgres::Client, table: &str) -> bool {
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .unwrap()
        .get(0)
}

/// The run failed (exit code 1) with `expected` in its message, without a panic.
#[track_caller]
pub fn assert_fails(run: &Run, expected: &str) {
    assert_eq!(run.code, 1, "expected a failure; stderr: {}", run.stderr);
    assert!(
        run.stderr.contains(expected),
        "expected {expected:?} in: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}
