//! `wick usage`: the usage totals of `wick.db`, read straight from the file (while the server
//! runs, through WAL, or with it stopped), as a table or as `GET /v1/usage`'s JSON. Runs on
//! the main thread; it opens its own connection and writes nothing.

use std::path::PathBuf;

use clap::Args;

use super::CommandError;
use crate::store::{self, usage, GroupBy, Range};

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// The server's data directory (its `--data-dir`). Default: the platform's data
    /// directory + `wick`.
    #[arg(long, env = "WICK_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// From (inclusive): unix seconds or a UTC date YYYY-MM-DD. Default: 30 days before --end.
    #[arg(long)]
    pub start: Option<String>,
    /// To (exclusive): unix seconds or a UTC date YYYY-MM-DD. Default: tomorrow (UTC), so
    /// the last 30 days include today.
    #[arg(long)]
    pub end: Option<String>,
    /// Totals per key, model or day.
    #[arg(long, default_value = "key", value_parser = parse_group_by)]
    pub group_by: GroupBy,
    /// Print `GET /v1/usage`'s JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

fn parse_group_by(s: &str) -> Result<GroupBy, String> {
    s.parse()
}

/// Prints the report of `args` to stdout.
pub fn run(args: &UsageArgs) -> Result<(), CommandError> {
    let dir =
        store::resolve_data_dir(args.data_dir.as_deref()).map_err(CommandError::InvalidArgs)?;
    let now = crate::api::unix_now() as i64;
    let range = Range::resolve(args.start.as_deref(), args.end.as_deref(), now)
        .map_err(|e| CommandError::InvalidArgs(format!("--{e}")))?;
    let report = usage::read(&dir.join(store::DB_FILE), range, args.group_by)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
