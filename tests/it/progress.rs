//! The progress display as a user sees it: apitap runs in a real terminal (a tmux pane) and
//! the test reads the screen. The source is a server that sends the first half of a body,
//! then waits until the test has read the screen, so the state read is the state asserted.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::Notify;

use crate::common::*;

/// The body and, per route, the signal that lets its second half go.
struct Gated {
    body: Vec<u8>,
    sized: Notify,
    streamed: Notify,
}

/// Sends the first half of the body, waits for `release`, then sends the rest.
fn halves(gated: Arc<Gated>, sized: bool) -> Body {
    let stream = futures_util::stream::unfold(0u8, move |step| {
        let gated = gated.clone();
        async move {
            let half = gated.body.len() / 2;
            match step {
                0 => Some((Ok::<_, std::io::Error>(gated.body[..half].to_vec()), 1)),
                1 => {
                    if sized {
                        gated.sized.notified().await;
                    } else {
                        gated.streamed.notified().await;
                    }
                    Some((Ok(gated.body[half..].to_vec()), 2))
                }
                _ => None,
            }
        }
    });
    Body::from_stream(stream)
}

fn router(gated: Arc<Gated>) -> Router {
    Router::new()
        .route(
            "/sized.ndjson",
            get(|State(g): State<Arc<Gated>>| async move {
                let length = g.body.len().to_string();
                ([(header::CONTENT_LENGTH, length)], halves(g, true)).into_response()
            }),
        )
        .route(
            "/unsized.ndjson",
            get(|State(g): State<Arc<Gated>>| async move { halves(g, false).into_response() }),
        )
        .with_state(gated)
}

/// One tmux server of the test's own, with one pane running a shell command.
struct Terminal {
    socket: String,
}

impl Terminal {
    fn open(name: &str, command: &str) -> Terminal {
        let socket = format!("apitap-test-{name}-{}", std::process::id());
        let status = std::process::Command::new("tmux")
            .args(["-L", &socket, "new-session", "-d", "-x", "220", "-y", "10"])
            .arg(command)
            .status()
            .expect("tmux is needed for the progress tests (scripts/test.sh installs it)");
        assert!(status.success());
        Terminal { socket }
    }

    fn screen(&self) -> String {
        let out = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Reads the screen until `shown` holds for it; panics with the screen after a minute.
    async fn wait_for(&self, what: &str, shown: impl Fn(&str) -> bool) -> String {
        for _ in 0..600 {
            let screen = self.screen();
            if shown(&screen) {
                return screen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the screen never showed {what}:\n{}", self.screen());
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// The shell command that loads `url` into `table` and then says how apitap exited.
fn load_command(url: &str, table: &str, extra: &str) -> String {
    format!(
        "env DATABASE_URL='{db}' {bin} load {url} --table {table} {extra}; echo EXIT=$?; sleep 600",
        db = database_url(),
        bin = env!("CARGO_BIN_EXE_apitap"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_size_shows_a_bar_with_percentage_and_eta_then_the_summary() {
    let db = client().await;
    let schema = fresh_schema(&db, "progress").await;
    let rows = 20_000;
    let gated = Arc::new(Gated {
        body: demo_ndjson(rows),
        sized: Notify::new(),
        streamed: Notify::new(),
    });
    let addr = serve(router(gated.clone())).await;

    let table = format!("{schema}.sized");
    let terminal = Terminal::open(
        "sized",
        &load_command(&format!("http://{addr}/sized.ndjson"), &table, ""),
    );
    let screen = terminal
        .wait_for("the bar at 50%", |s| s.contains("]  50%  "))
        .await;
    let bar = screen.lines().find(|l| l.contains("]  50%  ")).unwrap();
    let total = indicatif::HumanBytes(gated.body.len() as u64).to_string();
    assert!(bar.contains(&format!("/{total}")), "{bar}");
    assert!(bar.contains(" rows written"), "{bar}");
    assert!(bar.contains("ETA "), "{bar}");
    assert!(
        bar.starts_with(&format!("http://{addr}/sized.ndjson [")),
        "{bar}"
    );
    gated.sized.notify_one();
    let screen = terminal
        .wait_for("apitap's exit", |s| s.contains("EXIT="))
        .await;
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(
        screen.contains(&format!(
            "apitap: loaded http://{addr}/sized.ndjson into {table} (created): {rows} rows"
        )),
        "{screen}"
    );
    // The bar is gone once the load ends; the summary is what stays.
    assert!(!screen.contains("ETA"), "{screen}");
    assert_eq!(count(&db, &table).await, rows as i64);

    // Without a Content-Length: a spinner with rows and bytes, no percentage.
    let table = format!("{schema}.unsized");
    let terminal = Terminal::open(
        "unsized",
        &load_command(&format!("http://{addr}/unsized.ndjson"), &table, ""),
    );
    let screen = terminal
        .wait_for("the spinner", |s| {
            s.contains(" read  ") && s.contains("rows/s")
        })
        .await;
    let line = screen.lines().find(|l| l.contains("rows/s")).unwrap();
    assert!(line.contains(" rows written  "), "{line}");
    assert!(!line.contains('%') && !line.contains("ETA"), "{line}");
    gated.streamed.notify_one();
    let screen = terminal
        .wait_for("apitap's exit", |s| s.contains("EXIT="))
        .await;
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert_eq!(count(&db, &table).await, rows as i64);
}

/// `--progress never` keeps a terminal clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_means_never() {
    let db = client().await;
    let schema = fresh_schema(&db, "progress_file").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.ndjson");
    std::fs::write(&file, demo_ndjson(5_000)).unwrap();
    let table = format!("{schema}.t");
    let terminal = Terminal::open(
        "never",
        &load_command(file.to_str().unwrap(), &table, "--progress never -q"),
    );
    let screen = terminal
        .wait_for("apitap's exit", |s| s.contains("EXIT="))
        .await;
    assert_eq!(screen.trim(), "EXIT=0", "{screen}");
    assert_eq!(count(&db, &table).await, 5_000);
}
