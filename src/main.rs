//! The one `seawall` binary: every operator and standalone command.

mod args;
mod commands;
mod output;
mod progress_view;
mod repo_open;
mod sample;

use clap::Parser;
use std::process::ExitCode;

/// Exit status when a backup finished but some files were skipped or changed while read.
pub const EXIT_INCOMPLETE: u8 = 3;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    init_logging(cli.global.verbose, cli.global.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("seawall: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(commands::run(cli));
    // Blocking I/O tasks that outlived an error must not hold the process open.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("seawall: error: {}", output::one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    // The AWS SDK warns at length about each credential provider it tries
    // and fails; Seawall's own error says what is missing, once. -v shows them.
    let default = match verbose {
        0 => format!("{default},aws_config=error,aws_smithy_runtime=error"),
        _ => default.to_string(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SEAWALL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: a journal or log file gets plain text.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
