//! The command line: clap types, logging setup and the `run` entry point `main` calls.
//!
//! Library errors are typed; here they meet `anyhow` for the one-line message on stderr.
//! Exit codes: 0 success, 1 the load failed, 2 bad usage, 130 interrupted (Ctrl-C/SIGTERM).

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

mod load;
mod metrics;
#[cfg(feature = "sql")]
mod modules;
pub mod output;

pub(crate) use load::LoadArgs;
mod pipelines;

/// Load JSON from HTTP APIs, files or stdin into PostgreSQL with binary COPY.
///
/// Without a command, runs the pipelines (`apitap -m DIR -y FILE` is `apitap run -m DIR -y FILE`),
/// as the original ApiTap did.
#[derive(Debug, Parser)]
#[command(name = "apitap", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,

    #[command(flatten)]
    pub(crate) run: pipelines::RunArgs,

    /// Log as JSON lines (also APITAP_LOG_JSON=1).
    #[arg(long, global = true)]
    pub(crate) log_json: bool,

    /// Log filter, e.g. `info` or `apitap=debug` (beats RUST_LOG; default: warn).
    #[arg(long, global = true, value_name = "FILTER")]
    pub(crate) log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Load NDJSON or a JSON array into a table, in one transaction.
    #[command(after_help = LOAD_EXAMPLES)]
    Load(Box<LoadArgs>),
    /// Run SQL modules over the sources of a YAML config, each into its table.
    #[command(after_help = RUN_EXAMPLES)]
    Run(pipelines::RunArgs),
    /// Check a config and its modules; with --preview, show what a run would do.
    #[command(after_help = CHECK_EXAMPLES)]
    Check(pipelines::CheckArgs),
    /// Serve the bundled demo API (deterministic rows as NDJSON, a JSON array or pages).
    #[command(after_help = DEMO_EXAMPLES)]
    DemoApi(DemoArgs),
    /// Print a shell completion script to stdout.
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (roff): `apitap.1` to stdout, or one page per command into a
    /// folder.
    #[command(after_help = MAN_EXAMPLES)]
    Man {
        /// Write apitap.1, apitap-load.1, … into this folder instead.
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
}

const LOAD_EXAMPLES: &str = "Examples:
  apitap load https://api.example.com/items.ndjson --table raw.items
  curl -s https://example.org/export.ndjson | apitap load - --table raw.events --mode replace
  apitap load ./users.json --table staging.users --mode merge --key id
  apitap load https://api.example.com/v1/items --records-path /data \\
      --pagination '{kind: cursor, cursor_path: /next, cursor_param: after}' \\
      --header 'Authorization: Bearer ${API_TOKEN}' --table raw.items
  apitap load ./dump.ndjson.zst --table raw.events --on-error reject --reject-file bad.ndjson
  apitap load ./events.ndjson --table gh.events --nested flatten   # actor.login → actor__login
  apitap load ./dump.ndjson --table raw.events --preview 5     # show the plan, write nothing";

const RUN_EXAMPLES: &str = "Examples:
  apitap run -m examples/sql -y examples/config/pipelines.yaml
  apitap -m examples/sql -y examples/config/pipelines.yaml     # the same, as the original ApiTap
  apitap run -m sql -y pipelines.yaml --module users --jobs 2 --summary-json -
  apitap run -m sql -y pipelines.yaml --schedule              # each module on its own schedule
  apitap run -m sql -y pipelines.yaml --schedule --metrics-listen 127.0.0.1:9464   # /metrics, /healthz
  apitap run -m sql -y pipelines.yaml -q --metrics-file /var/lib/node_exporter/apitap.prom   # from cron";

const CHECK_EXAMPLES: &str = "Examples:
  apitap check -m examples/sql -y examples/config/pipelines.yaml
  apitap check -m examples/sql -y examples/config/pipelines.yaml --preview 5";

const DEMO_EXAMPLES: &str = "Examples:
  apitap demo-api --listen 127.0.0.1:8080 &
  apitap load 'http://127.0.0.1:8080/rows.ndjson?rows=100000' --table demo.items
  apitap demo-api --dump 1000 > rows.ndjson
  apitap demo-api --dump-tweets 1000 > tweets.ndjson          # nested records";

const COMPLETIONS_EXAMPLES: &str = "Examples:
  apitap completions bash > ~/.local/share/bash-completion/completions/apitap
  apitap completions zsh > ~/.zfunc/_apitap        # with fpath+=~/.zfunc in ~/.zshrc
  apitap completions fish > ~/.config/fish/completions/apitap.fish
  apitap completions powershell >> $PROFILE";

const MAN_EXAMPLES: &str = "Examples:
  apitap man | man -l -
  sudo apitap man --out /usr/local/share/man/man1";

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Instead of serving, write this many rows as NDJSON to stdout and exit.
    #[arg(long, value_name = "ROWS", conflicts_with = "dump_tweets")]
    pub dump: Option<u64>,

    /// Instead of serving, write this many nested, tweet-shaped records as NDJSON to stdout
    /// and exit (as `/tweets.ndjson` serves them).
    #[arg(long, value_name = "ROWS")]
    pub dump_tweets: Option<u64>,
}

/// Logs go to stderr; `--log-level` or `RUST_LOG` filters them (default: warnings),
/// `--log-json` or `APITAP_LOG_JSON=1` makes them JSON lines.
pub fn init_logging(cli: &Cli) {
    let filter = match &cli.log_level {
        Some(level) => tracing_subscriber::EnvFilter::try_new(level).ok(),
        None => tracing_subscriber::EnvFilter::try_from_default_env().ok(),
    }
    .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("warn"));
    let json =
        cli.log_json || std::env::var("APITAP_LOG_JSON").is_ok_and(|v| v == "1" || v == "true");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let builder = builder.with_writer(output::RedactingStderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// What `main` should exit with.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Interrupted,
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command failed with, ready to print with `{:#}`.
pub async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        None => pipelines::run(cli.run).await,
        Some(Command::Run(args)) => pipelines::run(args).await,
        Some(Command::Check(args)) => pipelines::check(args).await,
        Some(Command::Load(args)) => load::run_load(*args).await,
        Some(Command::Completions { shell }) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "apitap", &mut std::io::stdout());
            Ok(Outcome::Done)
        }
        Some(Command::Man { out }) => {
            let command = <Cli as clap::CommandFactory>::command();
            match out {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .and_then(|()| clap_mangen::generate_to(command, &dir))
                        .map_err(|e| {
                            anyhow::anyhow!(
                                "could not write the manual pages into {}: {e}",
                                dir.display()
                            )
                        })?;
                }
                None => clap_mangen::Man::new(command).render(&mut std::io::stdout())?,
            }
            Ok(Outcome::Done)
        }
        Some(Command::DemoApi(args)) => {
            match (args.dump, args.dump_tweets) {
                (Some(rows), _) => crate::demo::dump(rows, &mut std::io::stdout().lock())?,
                (None, Some(rows)) => {
                    crate::demo::dump_tweets(rows, &mut std::io::stdout().lock())?;
                }
                (None, None) => crate::demo::serve(args.listen).await?,
            }
            Ok(Outcome::Done)
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled: a signal that comes while a load is starting is caught too,
/// instead of killing the process before it can say what it left.
pub(crate) fn interrupted() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt()).ok();
        let term = signal(SignalKind::terminate()).ok();
        async move {
            match (int, term) {
                (Some(mut int), Some(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The process's peak resident memory (Linux's VmHWM), to show that memory stays flat.
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
