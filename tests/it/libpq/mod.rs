//! Connections exactly as libpq makes them: each case's connection string, environment and
//! files are given to psql (libpq's own client) and to `apitap load`, in turn, against a
//! server that records what each sends (whether it asks for TLS, its startup parameters, its
//! password, the address it reached), and the two records must match field by field. A
//! difference apitap keeps on purpose is a case of its own, asserting apitap's message; each
//! is listed in docs/connections.md. Skipped, saying so, where psql is not installed.

mod cases;
mod server;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use server::{Attempt, FakeServer};

/// One set of connection settings.
pub struct Case {
    pub name: &'static str,
    /// `-d` for psql, `--database-url` for apitap; `{port}`, `{dir}` (the server's socket
    /// folder) and `{home}` are filled in.
    pub conninfo: Option<&'static str>,
    pub env: Vec<(&'static str, &'static str)>,
    /// Files in `{home}`: name, text, mode.
    pub files: Vec<(&'static str, &'static str, u32)>,
    /// Reaches the server only through the socket where psql looks by default.
    pub local: bool,
    /// A difference kept on purpose: apitap refuses, saying this.
    pub kept: Option<&'static str>,
}

/// A case given `conninfo`.
pub fn string(name: &'static str, conninfo: &'static str) -> Case {
    Case {
        name,
        conninfo: Some(conninfo),
        env: Vec::new(),
        files: Vec::new(),
        local: false,
        kept: None,
    }
}

/// A case given no connection string: the environment and files alone.
pub fn no_string(name: &'static str) -> Case {
    Case {
        conninfo: None,
        ..string(name, "")
    }
}

impl Case {
    pub fn env(mut self, name: &'static str, value: &'static str) -> Case {
        self.env.push((name, value));
        self
    }

    pub fn file(mut self, name: &'static str, text: &'static str, mode: u32) -> Case {
        self.files.push((name, text, mode));
        self
    }

    /// `text` as the service file, named by `PGSERVICEFILE`.
    pub fn service_file(self, text: &'static str) -> Case {
        self.env("PGSERVICEFILE", "{home}/svc.conf")
            .file("svc.conf", text, 0o600)
    }

    pub fn local(mut self) -> Case {
        self.local = true;
        self
    }

    pub fn kept(mut self, message: &'static str) -> Case {
        self.kept = Some(message);
        self
    }
}

/// What a client did: its connections, as the server saw them, and what it said.
struct Outcome {
    attempts: Vec<String>,
    stderr: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_settings_reach_the_server_as_psql_sends_them() {
    if std::process::Command::new("psql")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("libpq: psql is not installed, so there is no libpq to compare with; skipped");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let default_dir = psql_default_socket_dir();
    let server = FakeServer::start(root.path(), default_dir.as_deref()).await;
    if server.default_socket.is_none() {
        eprintln!(
            "libpq: cannot listen where psql looks by default ({default_dir:?}); \
             the cases without a host are skipped"
        );
    }
    let mut differences = Vec::new();
    for (i, case) in cases::all().into_iter().enumerate() {
        if case.local && server.default_socket.is_none() {
            continue;
        }
        let home = root.path().join(format!("case{i}"));
        std::fs::create_dir(&home).unwrap();
        let psql = run(Client::Psql, &case, &server, &home).await;
        let apitap = run(Client::Apitap, &case, &server, &home).await;
        if let Some(difference) = compare(&case, &psql, &apitap) {
            differences.push(difference);
        }
    }
    assert!(
        differences.is_empty(),
        "{} cases differ from libpq:\n\n{}",
        differences.len(),
        differences.join("\n\n")
    );
}

/// `None` when apitap did what psql did, or what the case keeps on purpose.
fn compare(case: &Case, psql: &Outcome, apitap: &Outcome) -> Option<String> {
    let same = match case.kept {
        None => psql.attempts == apitap.attempts,
        Some(message) => {
            !psql.attempts.is_empty()
                && apitap.attempts.is_empty()
                && apitap.stderr.contains(message)
        }
    };
    (!same).then(|| {
        format!(
            "{} ({}):\n  psql:   {}\n          {}\n  apitap: {}\n          {}",
            case.name,
            case.kept.map_or("the same expected".into(), |m| format!(
                "apitap must refuse: {m}"
            )),
            psql.attempts.join("\n          "),
            psql.stderr.trim().replace('\n', "\n          "),
            apitap.attempts.join("\n          "),
            apitap.stderr.trim().replace('\n', "\n          "),
        )
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Client {
    Psql,
    Apitap,
}

/// Runs one client with the case's settings, in a clean environment whose `HOME` is `home`.
async fn run(client: Client, case: &Case, server: &FakeServer, home: &Path) -> Outcome {
    let fill = |text: &str| {
        text.replace("{port}", &server.port.to_string())
            .replace("{dir}", server.socket_dir.to_str().unwrap())
            .replace(
                "{dir%}",
                &server.socket_dir.to_str().unwrap().replace('/', "%2F"),
            )
            .replace("{home}", home.to_str().unwrap())
    };
    for (name, text, mode) in &case.files {
        let path = home.join(name);
        std::fs::write(&path, fill(text)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let input = home.join("rows.ndjson");
    std::fs::write(&input, "{\"id\": 1}\n").unwrap();
    let mut command = match client {
        Client::Psql => {
            let mut c = tokio::process::Command::new("psql");
            c.args(["-X", "-w", "-c", "select 1"]);
            if let Some(conninfo) = case.conninfo {
                c.args(["-d", &fill(conninfo)]);
            }
            c
        }
        Client::Apitap => {
            let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_apitap"));
            // A preview connects as a load does, and writes nothing should a case ever reach
            // a real server.
            let input = input.to_str().unwrap();
            c.args(["load", input, "--table", "libpq_t", "--preview"]);
            if let Some(conninfo) = case.conninfo {
                c.args(["--database-url", &fill(conninfo)]);
            }
            c
        }
    };
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .stdin(Stdio::null());
    // Without a port, both would try 5432, where the suite's real server may be.
    if !case.env.iter().any(|(name, _)| *name == "PGPORT") {
        command.env("PGPORT", server.port.to_string());
    }
    for (name, value) in &case.env {
        command.env(name, fill(value));
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("{}: a client hung", case.name))
        .unwrap();
    let own_name = if client == Client::Psql {
        "psql"
    } else {
        "apitap"
    };
    Outcome {
        attempts: server
            .take()
            .await
            .iter()
            .map(|attempt| describe(attempt, own_name))
            .collect(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// An attempt in the words compared: the client's own fallback application name and its
/// client encoding (apitap always speaks UTF8) left out, and the session settings libpq
/// sends from `PGTZ`, `PGDATESTYLE` and `PGGEQO` counted with `options`' `-c` settings.
fn describe(attempt: &Attempt, own_name: &str) -> String {
    let mut params: BTreeMap<&str, &str> = attempt
        .params
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "client_encoding" | "options"))
        .filter(|(name, _)| !matches!(name.as_str(), "timezone" | "datestyle" | "geqo"))
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    if params.get("application_name") == Some(&own_name) {
        params.remove("application_name");
    }
    let options = attempt.params.get("options").map_or("", String::as_str);
    let mut words = option_words(options).into_iter();
    let mut settings = Vec::new();
    while let Some(word) = words.next() {
        settings.push(match word.as_str() {
            "-c" => format!("-c {}", words.next().unwrap_or_default()),
            _ => word,
        });
    }
    for name in ["timezone", "datestyle", "geqo"] {
        if let Some(value) = attempt.params.get(name) {
            settings.push(format!("-c {name}={value}"));
        }
    }
    settings.sort();
    format!(
        "{}{}{} {params:?} options={settings:?} password={:?}",
        attempt.listener,
        if attempt.asked_gss { " asked GSS" } else { "" },
        if attempt.asked_tls { " asked TLS" } else { "" },
        attempt.password,
    )
}

/// `options` split as the server splits it: at blanks, a backslash escaping the next character.
fn option_words(options: &str) -> Vec<String> {
    let mut words = vec![String::new()];
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => words.last_mut().unwrap().extend(chars.next()),
            c if c.is_whitespace() => words.push(String::new()),
            c => words.last_mut().unwrap().push(c),
        }
    }
    words.retain(|w| !w.is_empty());
    words
}

/// Where psql looks for a socket when no host is given, from its own message.
fn psql_default_socket_dir() -> Option<PathBuf> {
    let output = std::process::Command::new("psql")
        .args(["-X", "-w", "-p", "1", "-c", "select 1"])
        .env_clear()
        .output()
        .ok()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let path = stderr
        .split("socket \"")
        .nth(1)?
        .split("/.s.PGSQL")
        .next()?;
    Some(PathBuf::from(path))
}

/// `target_session_attrs` chooses among the hosts by asking each server, as libpq does; the
/// suite's server is a primary, given twice, so a standby is found nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_session_attrs_choose_the_session() {
    let db = crate::common::client().await;
    let schema = crate::common::fresh_schema(&db, "libpq_attrs").await;
    let table = format!("{schema}.t");
    let url = reqwest::Url::parse(&crate::common::database_url()).unwrap();
    let (host, port) = (url.host_str().unwrap(), url.port().unwrap_or(5432));
    let load = async |attrs: &str| {
        let conninfo = format!(
            "{} host={host},{host} port={port} target_session_attrs={attrs}",
            keyword_string(&url)
        );
        crate::common::apitap(
            &["load", "-", "--table", &table, "--database-url", &conninfo],
            Some(b"{\"a\": 1}\n".to_vec()),
        )
        .await
    };
    for attrs in ["primary", "read-write", "prefer-standby", "any"] {
        let run = load(attrs).await;
        assert_eq!(run.code, 0, "{attrs}: {}", run.stderr);
    }
    assert_eq!(crate::common::count(&db, &table).await, 4);
    for (attrs, why) in [
        ("standby", "server is not in hot standby mode"),
        ("read-only", "session is not read-only"),
    ] {
        let run = load(attrs).await;
        crate::common::assert_fails(&run, &format!("{host}:{port}: {why}; {host}:{port}: {why}"));
    }
}

/// The session settings libpq takes from `PGTZ` and `PGDATESTYLE` are the session's, and a
/// timestamp without an offset is read in that time zone, as psql's `\copy` would read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgtz_and_pgdatestyle_set_the_session() {
    let db = crate::common::client().await;
    let schema = crate::common::fresh_schema(&db, "libpq_tz").await;
    let table = format!("{schema}.t");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (at timestamptz, zone text DEFAULT current_setting('TimeZone'), \
         style text DEFAULT current_setting('DateStyle'))"
    ))
    .await
    .unwrap();
    let run = crate::common::apitap_env(
        &["load", "-", "--table", &table],
        &[("PGTZ", "Asia/Tokyo"), ("PGDATESTYLE", "ISO, DMY")],
        Some(b"{\"at\": \"2024-01-01 10:00:00\"}\n".to_vec()),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let row = db
        .query_one(&format!("SELECT at::text, zone, style FROM {table}"), &[])
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2)
        ),
        (
            "2024-01-01 01:00:00+00".into(),
            "Asia/Tokyo".into(),
            "ISO, DMY".into()
        )
    );
}

/// The suite's connection URL's user, password and database as `key=value` pairs.
fn keyword_string(url: &reqwest::Url) -> String {
    let mut out = format!(
        "user={} dbname={}",
        url.username(),
        url.path().trim_start_matches('/')
    );
    if let Some(password) = url.password() {
        out.push_str(&format!(" password={password}"));
    }
    out
}
