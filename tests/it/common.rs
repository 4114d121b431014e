//! Helpers for the integration tests: the real `apitap` binary, a real PostgreSQL (from
//! DATABASE_URL, which scripts/test.sh sets) and HTTP servers on 127.0.0.1.

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

/// A table holding one known row, to check that failed loads leave it alone.
pub async fn guarded_table(db: &tokio_postgres::Client, schema: &str) -> String {
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, name text); INSERT INTO {table} VALUES (1, 'kept')"
    ))
    .await
    .unwrap();
    table
}

/// The table made by [`guarded_table`] still holds just its row.
pub async fn assert_unchanged(db: &tokio_postgres::Client, table: &str) {
    let rows: Vec<(i64, String)> = db
        .query(&format!("SELECT id, name FROM {table}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![(1, "kept".to_string())]);
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

/// A connection string to the test PostgreSQL through a proxy on 127.0.0.1 that refuses
/// `COPY … FROM STDIN` (SQLSTATE 0A000) as some poolers and PostgreSQL-compatible servers
/// do, and passes every other message through. TLS is off so the proxy can read them.
pub async fn copy_refusing_database_url() -> String {
    let config: tokio_postgres::Config = database_url().parse().unwrap();
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .unwrap();
            tokio::spawn(proxy_refusing_copy(client, server));
        }
    });
    format!(
        "postgres://{}@{addr}/{}?sslmode=disable",
        config.get_user().unwrap_or("postgres"),
        config.get_dbname().unwrap_or("postgres")
    )
}

async fn proxy_refusing_copy(client: tokio::net::TcpStream, server: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The server itself answers, so replies stay in order with everything else in flight.
    const REFUSE: &[u8] = b"DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', \
        MESSAGE = 'COPY FROM STDIN is not supported by this proxy'; END $$";
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::spawn(async move { tokio::io::copy(&mut server_read, &mut client_write).await });
    // The startup message has no type byte.
    let Ok(len) = client_read.read_u32().await else {
        return;
    };
    let mut startup = len.to_be_bytes().to_vec();
    startup.resize(len as usize, 0);
    if client_read.read_exact(&mut startup[4..]).await.is_err()
        || server_write.write_all(&startup).await.is_err()
    {
        return;
    }
    loop {
        let Ok(kind) = client_read.read_u8().await else {
            return;
        };
        let Ok(len) = client_read.read_u32().await else {
            return;
        };
        let mut body = vec![0; len as usize - 4];
        if client_read.read_exact(&mut body).await.is_err() {
            return;
        }
        // A simple query is its SQL; a Parse is the statement's name, its SQL, then types.
        let sql_at = match kind {
            b'Q' => Some(0),
            b'P' => body.iter().position(|&b| b == 0).map(|end| end + 1),
            _ => None,
        };
        if let Some(at) = sql_at {
            let end = at + body[at..].iter().position(|&b| b == 0).unwrap_or(0);
            let sql = String::from_utf8_lossy(&body[at..end]).to_uppercase();
            if sql.trim_start().starts_with("COPY") && sql.contains("FROM STDIN") {
                body.splice(at..end, REFUSE.iter().copied());
            }
        }
        let mut message = vec![kind];
        message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        message.extend_from_slice(&body);
        if server_write.write_all(&message).await.is_err() {
            return;
        }
    }
}

/// Polls `sql` (a query returning one boolean, with `params`) until it is true, so a test
/// waits for a state of the server instead of sleeping and hoping it was reached.
///
/// # Panics
/// When it is still false after 60 s, naming `what`.
pub async fn wait_until(
    db: &tokio_postgres::Client,
    what: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let reached: bool = db.query_one(sql, params).await.unwrap().get(0);
        if reached {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited 60 s for {what}, in vain"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Waits until an apitap backend is COPYing into a table of `schema` and has received at
/// least `rows` rows there (`pg_stat_progress_copy`), and returns the backend's pid.
pub async fn wait_for_copy(db: &tokio_postgres::Client, schema: &str, rows: i64) -> i32 {
    const COPYING: &str = "SELECT a.pid FROM pg_stat_activity a
         JOIN pg_stat_progress_copy p ON p.pid = a.pid
         WHERE a.application_name = 'apitap' AND a.query LIKE 'COPY \"' || $1 || '\"%'
           AND p.tuples_processed >= $2";
    wait_until(
        db,
        &format!("a COPY into schema {schema} past {rows} rows"),
        &format!("SELECT EXISTS ({COPYING})"),
        &[&schema, &rows],
    )
    .await;
    db.query_one(&format!("{COPYING} LIMIT 1"), &[&schema, &rows])
        .await
        .unwrap()
        .get(0)
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Calls `check` until it returns something, for at most 60 s.
pub async fn poll<T, F, Fut>(what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited 60 s for {what}, in vain"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `(rows, distinct ids, sum of ids)` of `table`: what a load of demo rows `1..=n` must give,
/// `(n, n, n(n+1)/2)`, whatever the order the rows landed in.
pub async fn id_facts(db: &tokio_postgres::Client, table: &str) -> (i64, i64, i64) {
    let facts = db
        .query_one(
            &format!("SELECT count(*), count(DISTINCT id), sum(id)::bigint FROM {table}"),
            &[],
        )
        .await
        .unwrap();
    (facts.get(0), facts.get(1), facts.get(2))
}
