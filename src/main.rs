//! The `wick` binary: parse arguments, set up logging, run the command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // candle's CPU thread pool runs only the small elementwise ops here (the matmuls and the
    // attention run on our kernels' pool). Its spin barriers cost more than they save on a
    // few cores and take those cores from our pool, so it gets one thread unless told
    // otherwise. Set before any thread exists.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
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
