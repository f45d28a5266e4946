//! The usage tables: [`UsageRow`] (one per model request) and the daily rollup per key and
//! model, written together by [`insert`]; [`query`] totals a [`Range`] grouped by key, model
//! or day, for `GET /v1/usage` and `wick usage` alike ([`UsageReport`] is their one JSON
//! shape). Days are UTC. Pure SQL and date arithmetic; runs on whichever thread holds the
//! [`Store`].

use std::fmt;
use std::str::FromStr;

use rusqlite::{params, Transaction};

use super::{Store, StoreError};

const DAY: i64 = 86_400;

/// What one request used, as the access log saw it when its response was done.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    /// Arrival, unix seconds.
    pub ts: i64,
    pub request_id: String,
    /// The key's name; `None` when the server has no keys.
    pub key: Option<std::sync::Arc<str>>,
    /// The path, e.g. `/v1/chat/completions`.
    pub route: String,
    pub model: String,
    pub status: u16,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub duration_ms: f64,
    /// Arrival to the first token; `None` when no token came.
    pub ttft_ms: Option<f64>,
    /// One per choice, comma-separated, as the access log writes them.
    pub finish_reasons: String,
}

/// Writes `rows` and adds them to the daily rollup, inside the caller's transaction.
pub fn insert(tx: &Transaction<'_>, rows: &[UsageRow]) -> rusqlite::Result<()> {
    let mut row_stmt = tx.prepare_cached(
        "INSERT INTO usage_requests (ts, request_id, key, route, model, status, prompt_tokens,
            cached_tokens, completion_tokens, duration_ms, ttft_ms, finish_reasons)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    let mut day_stmt = tx.prepare_cached(
        "INSERT INTO usage_daily (day, key, model, requests, prompt_tokens, cached_tokens,
            completion_tokens)
         VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6)
         ON CONFLICT (day, key, model) DO UPDATE SET
            requests = requests + 1,
            prompt_tokens = prompt_tokens + excluded.prompt_tokens,
            cached_tokens = cached_tokens + excluded.cached_tokens,
            completion_tokens = completion_tokens + excluded.completion_tokens",
    )?;
    for r in rows {
        let key = r.key.as_deref().unwrap_or("");
        row_stmt.execute(params![
            r.ts,
            r.request_id,
            key,
            r.route,
            r.model,
            r.status,
            sql_int(r.prompt_tokens),
            sql_int(r.cached_tokens),
            sql_int(r.completion_tokens),
            r.duration_ms,
            r.ttft_ms,
            r.finish_reasons,
        ])?;
        day_stmt.execute(params![
            format_day(r.ts.div_euclid(DAY)),
            key,
            r.model,
            sql_int(r.prompt_tokens),
            sql_int(r.cached_tokens),
            sql_int(r.completion_tokens),
        ])?;
    }
    Ok(())
}

/// A count as SQLite's integer (saturating: no count comes near 2^63).
fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What the totals are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupBy {
    #[default]
    Key,
    Model,
    Day,
}

impl GroupBy {
    /// The name, as the query parameter and the JSON field.
    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Key => "key",
            GroupBy::Model => "model",
            GroupBy::Day => "day",
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "key" => Ok(GroupBy::Key),
            "model" => Ok(GroupBy::Model),
            "day" => Ok(GroupBy::Day),
            other => Err(format!("expected key, model or day, got {other:?}")),
        }
    }
}

/// A time range in unix seconds: `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: i64,
    pub end: i64,
}

/// Which bound of a range a parse error is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct RangeError {
    /// `start` or `end`.
    pub param: &'static str,
    pub message: String,
}

impl Range {
    /// The range from optional `start` / `end` (unix seconds or `YYYY-MM-DD`, UTC midnight),
    /// as of `now`. Defaults: the last 30 days, today included (whole UTC days: the 29 days
    /// before today's and tomorrow's midnight); only `end`: the 30 days before it.
    pub fn resolve(start: Option<&str>, end: Option<&str>, now: i64) -> Result<Self, RangeError> {
        let bound = |param, v: Option<&str>| {
            v.map(|s| parse_time(s).map_err(|message| RangeError { param, message }))
                .transpose()
        };
        let (start, end) = (bound("start", start)?, bound("end", end)?);
        let end = end.unwrap_or((now.div_euclid(DAY) + 1) * DAY);
        let start = start.unwrap_or(end - 30 * DAY);
        if start >= end {
            return Err(RangeError {
                param: "start",
                message: format!("must be before end ({start} >= {end})"),
            });
        }
        Ok(Self { start, end })
    }

    /// Whole UTC days: the daily rollup answers it exactly.
    fn whole_days(&self) -> bool {
        self.start % DAY == 0 && self.end % DAY == 0
    }
}

/// Unix seconds (`1733270400`) or a UTC date (`2024-12-04`).
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map_err(|_| format!("{s:?} is out of range for unix seconds"));
    }
    parse_day(s)
        .map(|d| d * DAY)
        .ok_or_else(|| format!("expected unix seconds or a date YYYY-MM-DD, got {s:?}"))
}

/// Days since 1970-01-01 of `YYYY-MM-DD`, if it is a real date.
fn parse_day(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = &s[r];
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let days = days_from_civil(y, m, d);
    ((1..=12).contains(&m) && d >= 1 && civil_from_days(days) == (y, m, d)).then_some(days)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (the inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// `YYYY-MM-DD` of day number `days`.
pub fn format_day(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The totals of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageTotal {
    /// The key's name (`None`: requests to a server without keys), the model, or the day.
    pub group: Option<String>,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
}

/// The answer of `GET /v1/usage` and `wick usage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    pub group_by: GroupBy,
    pub range: Range,
    /// Ordered by the group.
    pub data: Vec<UsageTotal>,
}

impl UsageReport {
    /// `{"object": "list", "group_by", "start", "end", "data": [{<group_by>: .., "requests",
    /// "prompt_tokens", "cached_tokens", "completion_tokens", "total_tokens"}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let data: Vec<serde_json::Value> = self
            .data
            .iter()
            .map(|t| {
                let mut o = serde_json::Map::new();
                o.insert(self.group_by.name().into(), t.group.clone().into());
                o.insert("requests".into(), t.requests.into());
                o.insert("prompt_tokens".into(), t.prompt_tokens.into());
                o.insert("cached_tokens".into(), t.cached_tokens.into());
                o.insert("completion_tokens".into(), t.completion_tokens.into());
                o.insert(
                    "total_tokens".into(),
                    (t.prompt_tokens + t.completion_tokens).into(),
                );
                o.into()
            })
            .collect();
        serde_json::json!({
            "object": "list",
            "group_by": self.group_by.name(),
            "start": self.range.start,
            "end": self.range.end,
            "data": data,
        })
    }

    /// A plain-text table, one line per group, numbers right-aligned.
    pub fn table(&self) -> String {
        let head = [
            self.group_by.name(),
            "requests",
            "prompt_tokens",
            "cached_tokens",
            "completion_tokens",
            "total_tokens",
        ];
        let mut rows: Vec<[String; 6]> = vec![head.map(str::to_string)];
        for t in &self.data {
            rows.push([
                t.group.clone().unwrap_or_else(|| "-".into()),
                t.requests.to_string(),
                t.prompt_tokens.to_string(),
                t.cached_tokens.to_string(),
                t.completion_tokens.to_string(),
                (t.prompt_tokens + t.completion_tokens).to_string(),
            ]);
        }
        let widths: Vec<usize> = (0..6)
            .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for r in &rows {
            let mut line = format!("{:<w$}", r[0], w = widths[0]);
            for i in 1..6 {
                line.push_str(&format!("  {:>w$}", r[i], w = widths[i]));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The totals over `range` grouped by `group_by`: from the daily rollup when the range is
/// whole UTC days, else from the rows (the same numbers either way).
pub fn query(store: &Store, range: Range, group_by: GroupBy) -> Result<UsageReport, StoreError> {
    let days = range.whole_days();
    let col = match (group_by, days) {
        (GroupBy::Key, _) => "key",
        (GroupBy::Model, _) => "model",
        (GroupBy::Day, true) => "day",
        (GroupBy::Day, false) => "date(ts, 'unixepoch')",
    };
    let (requests, table, filter) = if days {
        ("SUM(requests)", "usage_daily", "day >= ?1 AND day < ?2")
    } else {
        ("COUNT(*)", "usage_requests", "ts >= ?1 AND ts < ?2")
    };
    let sql = format!(
        "SELECT {col}, {requests}, SUM(prompt_tokens), SUM(cached_tokens),
                SUM(completion_tokens)
         FROM {table} WHERE {filter} GROUP BY 1 ORDER BY 1"
    );
    let err = |source| StoreError::Sqlite {
        path: store.path().to_path_buf(),
        source,
    };
    let mut stmt = store.conn.prepare(&sql).map_err(err)?;
    let map = |r: &rusqlite::Row<'_>| -> rusqlite::Result<UsageTotal> {
        let group: String = r.get(0)?;
        let n = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
        Ok(UsageTotal {
            group: (!(group.is_empty() && group_by == GroupBy::Key)).then_some(group),
            requests: n(1)?,
            prompt_tokens: n(2)?,
            cached_tokens: n(3)?,
            completion_tokens: n(4)?,
        })
    };
    let rows = if days {
        let (a, b) = (format_day(range.start / DAY), format_day(range.end / DAY));
        stmt.query_map(params![a, b], map)
    } else {
        stmt.query_map(params![range.start, range.end], map)
    };
    let data = rows
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(err)?;
    Ok(UsageReport {
        group_by,
        range,
        data,
    })
}

/// [`query`] on a connection of its own to the database `db`, which must exist (WAL: the
/// writer goes on meanwhile). For `GET /v1/usage` (on `spawn_blocking`) and `wick usage`.
pub fn read(
    db: &std::path::Path,
    range: Range,
    group_by: GroupBy,
) -> Result<UsageReport, StoreError> {
    let store = Store::open_existing(db, std::time::Duration::from_secs(2))?;
    query(&store, range, group_by)
}
