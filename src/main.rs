//! The `apitap` binary: parses the command line and hands over to [`apitap::cli::run`].

use std::process::ExitCode;

use clap::Parser;

use apitap::cli::{Cli, Outcome, init_logging, run};

fn main() -> ExitCode {
    apitap::cli::output::install_panic_hook();
    let cli = Cli::parse();
    init_logging(&cli);
    // DataFusion plans and runs a module's SQL recursively; 8 MiB stacks (tokio's default
    // is 2 MiB) leave room for deep expressions. Untouched stack costs no memory.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(8 * 1024 * 1024)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("apitap: error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // Stages still draining after a failure or Ctrl-C hold nothing worth waiting for: the
    // transaction is already rolled back or will be when the connection closes.
    runtime.shutdown_background();
    match outcome {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        Err(e) => {
            apitap::base::say(&format!("apitap: error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}
