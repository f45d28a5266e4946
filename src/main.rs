//! The `wick` binary: parse arguments, set up logging, run the command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = wick::cli::Cli::parse();
    wick::telemetry::init(cli.log_format);
    match wick::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
