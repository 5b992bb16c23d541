//! The `discord-indexer` binary: parse arguments, run one subcommand, print the
//! one error in one place and choose the exit code (see `cli::exit`).

use std::process::ExitCode;

use clap::Parser;
use discord_indexer::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cli::exit::FATAL);
        }
    };
    let code = match runtime.block_on(cli::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            cli::write_err(format_args!("error: {}", cli::error_text(&e)));
            ExitCode::from(cli::exit::FATAL)
        }
    };
    // Every write was awaited before `run` returned; what may still run is
    // work a stop abandoned (a batch being embedded), not worth waiting for.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}
