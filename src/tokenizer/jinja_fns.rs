//! The functions and filters Hugging Face adds to its chat-template environment, written for
//! minijinja: `raise_exception`, `strftime_now` (UTC) and a `tojson` that prints exactly what
//! Python's `json.dumps` does (minijinja's own escapes `<`, `>`, `&` and `'` for HTML and uses
//! other separators, which would change the prompt).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};

/// Carried as the source of the minijinja error that `raise_exception` returns, so the
/// renderer can tell a template's deliberate refusal from a broken template.
#[derive(Debug)]
pub(super) struct RaisedException(pub(super) String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

/// `raise_exception(message)`: aborts rendering with `message`.
pub(super) fn raise_exception(message: Value) -> Result<Value, Error> {
    let message = message
        .as_str()
        .map_or_else(|| message.to_string(), str::to_string);
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedException(message)))
}

/// `strftime_now(format)`: the current UTC time, formatted.
pub(super) fn strftime_now(format: &str) -> Result<String, Error> {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
    format_utc(seconds, format).map_err(|message| Error::new(ErrorKind::InvalidOperation, message))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// (year, month 1-12, day 1-31) of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// C `strftime` for a UTC time, for the directives chat templates use: `%Y %y %m %d %e %j
/// %B %b %h %A %a %H %I %M %S %p %%`. Anything else is an error naming the directive.
pub(super) fn format_utc(unix_seconds: i64, format: &str) -> Result<String, String> {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let month_name = MONTHS[month as usize - 1];
    let weekday = WEEKDAYS[(days + 4).rem_euclid(7) as usize];
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap_day = i64::from(month > 2 && is_leap(year));
    let day_of_year = cumulative[month as usize - 1] + i64::from(day) + leap_day;

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let directive = chars.next().ok_or("strftime format ends with a lone '%'")?;
        // Writing into a String cannot fail.
        let _ = match directive {
            'Y' => write!(out, "{year}"),
            'y' => write!(out, "{:02}", year.rem_euclid(100)),
            'm' => write!(out, "{month:02}"),
            'd' => write!(out, "{day:02}"),
            'e' => write!(out, "{day:>2}"),
            'j' => write!(out, "{day_of_year:03}"),
            'B' => write!(out, "{month_name}"),
            'b' | 'h' => write!(out, "{}", &month_name[..3]),
            'A' => write!(out, "{weekday}"),
            'a' => write!(out, "{}", &weekday[..3]),
            'H' => write!(out, "{hour:02}"),
            'I' => write!(out, "{:02}", (hour + 11) % 12 + 1),
            'M' => write!(out, "{minute:02}"),
            'S' => write!(out, "{second:02}"),
            'p' => write!(out, "{}", if hour < 12 { "AM" } else { "PM" }),
            '%' => write!(out, "%"),
            other => return Err(format!("strftime directive %{other} is not supported")),
        };
    }
    Ok(out)
}

/// How `tojson` lays out its output: Python `json.dumps` options.
struct JsonStyle {
    indent: Option<String>,
    item_separator: String,
    key_separator: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

impl JsonStyle {
    fn from_kwargs(kwargs: &Kwargs) -> Result<Self, Error> {
        let indent = match kwargs.get::<Option<Value>>("indent")? {
            None => None,
            Some(v) if v.is_none() => None,
            Some(v) => match (v.as_i64(), v.as_str()) {
                (Some(n), _) => Some(" ".repeat(usize::try_from(n).unwrap_or(0))),
                (None, Some(s)) => Some(s.to_string()),
                _ => return Err(invalid("tojson: indent must be an integer or a string")),
            },
        };
        // Python's defaults: ", " between items unless indenting, ": " after keys.
        let (mut item_separator, mut key_separator) = match indent {
            Some(_) => (",".to_string(), ": ".to_string()),
            None => (", ".to_string(), ": ".to_string()),
        };
        if let Some(separators) = kwargs.get::<Option<Value>>("separators")? {
            if !separators.is_none() {
                let pair: Vec<Value> = separators.try_iter()?.collect();
                match pair.as_slice() {
                    [item, key] if item.as_str().is_some() && key.as_str().is_some() => {
                        item_separator = item.to_string();
                        key_separator = key.to_string();
                    }
                    _ => return Err(invalid("tojson: separators must be two strings")),
                }
            }
        }
        let style = Self {
            indent,
            item_separator,
            key_separator,
            sort_keys: kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false),
            ensure_ascii: kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
        };
        kwargs.assert_all_used()?;
        Ok(style)
    }
}

fn invalid(message: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.to_string())
}

/// `value | tojson(indent=None, separators=None, sort_keys=False, ensure_ascii=False)`,
/// byte-for-byte Python's `json.dumps` with those arguments (HF's override of the filter).
pub(super) fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let style = JsonStyle::from_kwargs(&kwargs)?;
    let mut out = String::new();
    write_json(&mut out, value, &style, 0)?;
    Ok(Value::from_safe_string(out))
}

fn write_json(
    out: &mut String,
    value: &Value,
    style: &JsonStyle,
    depth: usize,
) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number if value.is_integer() => out.push_str(&value.to_string()),
        ValueKind::Number => out.push_str(&python_float(f64::try_from(value.clone())?)),
        ValueKind::String => write_json_string(out, value.as_str().unwrap_or_default(), style),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            let list = Container {
                brackets: ('[', ']'),
                items: &items,
                depth,
            };
            write_container(out, list, style, |out, item, depth| {
                write_json(out, item, style, depth)
            })?;
        }
        ValueKind::Map => {
            let mut entries: Vec<(String, Value)> = value
                .try_iter()?
                .map(|key| Ok((json_key(&key)?, value.get_item(&key)?)))
                .collect::<Result<_, Error>>()?;
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            let object = Container {
                brackets: ('{', '}'),
                items: &entries,
                depth,
            };
            write_container(out, object, style, |out, (key, item), depth| {
                write_json_string(out, key, style);
                out.push_str(&style.key_separator);
                write_json(out, item, style, depth)
            })?;
        }
        other => {
            return Err(invalid(&format!(
                "tojson: a value of kind {other} is not JSON serializable"
            )))
        }
    }
    Ok(())
}

/// A JSON array or object to write: its brackets, its items, and how deep it sits.
struct Container<'a, T> {
    brackets: (char, char),
    items: &'a [T],
    depth: usize,
}

/// Writes the container's items between its brackets, one per line when indenting, as Python
/// does.
fn write_container<T>(
    out: &mut String,
    Container {
        brackets,
        items,
        depth,
    }: Container<'_, T>,
    style: &JsonStyle,
    mut write_item: impl FnMut(&mut String, &T, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(brackets.0);
    if items.is_empty() {
        out.push(brackets.1);
        return Ok(());
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(indent) = &style.indent {
            out.push('\n');
            out.push_str(&indent.repeat(level));
        }
    };
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&style.item_separator);
        }
        newline(out, depth + 1);
        write_item(out, item, depth + 1)?;
    }
    newline(out, depth);
    out.push(brackets.1);
    Ok(())
}

/// A map key as Python's `json.dumps` writes it: strings as they are, scalars converted.
fn json_key(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::None => Ok("null".into()),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.into()),
        ValueKind::Number if key.is_integer() => Ok(key.to_string()),
        ValueKind::Number => Ok(python_float(f64::try_from(key.clone())?)),
        other => Err(invalid(&format!(
            "tojson: keys must be str, int, float, bool or None, not {other}"
        ))),
    }
}

fn write_json_string(out: &mut String, s: &str, style: &JsonStyle) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 || (style.ensure_ascii && !(' '..='~').contains(&c)) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation for exponents in
/// -4..16 (always with a fractional part), scientific with a signed two-digit exponent
/// otherwise; `NaN` and `Infinity` as `json.dumps` writes them.
fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    let scientific = format!("{:e}", x.abs());
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("invariant: {:e} output has an exponent");
    let exponent: i32 = exponent
        .parse()
        .expect("invariant: {:e} exponent is an integer");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let body = if (-4..16).contains(&exponent) {
        match usize::try_from(exponent) {
            Err(_) => format!("0.{}{digits}", "0".repeat((-exponent - 1) as usize)),
            Ok(e) if digits.len() <= e + 1 => {
                format!("{digits}{}.0", "0".repeat(e + 1 - digits.len()))
            }
            Ok(e) => format!("{}.{}", &digits[..=e], &digits[e + 1..]),
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let mantissa = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{exp_sign}{:02}", exponent.abs())
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_print_like_python_repr() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1.5, "1.5"),
            (123456.789, "123456.789"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.25e-7, "1.25e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345678901234566e17, "1.2345678901234566e+17"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e22, "1e+22"),
            (5e-324, "5e-324"),
            (-2.5e300, "-2.5e+300"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (x, expected) in cases {
            assert_eq!(python_float(x), expected, "{x:e}");
        }
    }

    fn dumps(source: &str, value: serde_json::Value) -> String {
        let mut env = minijinja::Environment::new();
        env.add_filter("tojson", tojson);
        env.render_str(
            source,
            minijinja::context! { x => Value::from_serialize(value) },
        )
        .expect("renders")
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let value = json!({"name": "get_weather", "args": [1, 2.5, null, true], "html": "<a href='x'>&</a>", "text": "é\n\"\u{1}"});
        // Keys keep their order (serde_json's preserve_order), as Python dicts do.
        assert_eq!(
            dumps("{{ x | tojson }}", value.clone()),
            r#"{"name": "get_weather", "args": [1, 2.5, null, true], "html": "<a href='x'>&</a>", "text": "é\n\"\u0001"}"#
        );
        assert_eq!(
            dumps("{{ x | tojson(ensure_ascii=true) }}", json!("é😀")),
            r#""\u00e9\ud83d\ude00""#
        );
        assert_eq!(
            dumps("{{ x | tojson(indent=2) }}", json!({"a": [1, {}], "b": []})),
            "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}"
        );
        assert_eq!(
            dumps(
                "{{ x | tojson(separators=(',', ':')) }}",
                json!({"a": [1, 2]})
            ),
            r#"{"a":[1,2]}"#
        );
        let mut env = minijinja::Environment::new();
        env.add_filter("tojson", tojson);
        let err = env
            .render_str("{{ 1 | tojson(bogus=1) }}", ())
            .expect_err("unknown kwarg");
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn strftime_formats_utc_dates() {
        // 2024-02-29T13:05:09Z, a Thursday.
        let t = 1_709_211_909;
        assert_eq!(format_utc(t, "%d %b %Y").expect("formats"), "29 Feb 2024");
        assert_eq!(
            format_utc(t, "%A, %B %e %H:%M:%S %p %I %j %y %%").expect("formats"),
            "Thursday, February 29 13:05:09 PM 01 060 24 %"
        );
        assert_eq!(
            format_utc(0, "%Y-%m-%d %a").expect("formats"),
            "1970-01-01 Thu"
        );
        assert_eq!(
            format_utc(-86_400, "%Y-%m-%d").expect("formats"),
            "1969-12-31"
        );
        assert!(format_utc(t, "%Z").expect_err("unsupported").contains("%Z"));
        assert!(strftime_now("%Y").is_ok());
    }
}
