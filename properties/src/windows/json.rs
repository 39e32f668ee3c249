//! Lenient readers for the JSON that PowerShell's `ConvertTo-Json` writes.
//!
//! Windows PowerShell 5.1 and PowerShell 7 differ, and both have quirks: a
//! pipeline of one object is an object rather than an array and of none is
//! `null`; 5.1 sometimes wraps arrays as `{"value": [...], "Count": n}`;
//! enums are numbers; numbers may come as strings; dates come as
//! `/Date(ms)/`, ISO 8601, DMTF (`yyyymmddHHMMSS.ffffff+UUU`, from
//! `Get-WmiObject`), `yyyyMMdd` (registry), `M/d/yyyy` (`InstalledOn`) or a
//! hex FILETIME. Every reader here returns `None` for a value it does not
//! understand instead of failing the whole section.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value};

use crate::ParseError;

pub type Object = Map<String, Value>;

/// Unwrap Windows PowerShell's `{"value": [...], "Count": n}` array wrapper.
fn unwrap_array(v: &Value) -> &Value {
    if let Value::Object(o) = v {
        if o.len() <= 2 && o.contains_key("Count") {
            if let Some(inner @ Value::Array(_)) = o.get("value") {
                return inner;
            }
        }
    }
    v
}

/// A section that holds zero, one or many objects: `null` → none, an object →
/// one, an array → its objects (other items are skipped). Anything else is an
/// error.
pub fn objects(v: &Value) -> Result<Vec<&Object>, ParseError> {
    match unwrap_array(v) {
        Value::Null => Ok(Vec::new()),
        Value::Object(o) => Ok(vec![o]),
        Value::Array(items) => {
            let objs: Vec<&Object> = items.iter().filter_map(Value::as_object).collect();
            if objs.is_empty() && items.iter().any(|i| !i.is_null()) {
                return Err(ParseError::Invalid("expected objects in the array".into()));
            }
            Ok(objs)
        }
        other => Err(ParseError::Invalid(format!(
            "expected an object or an array, found {}",
            kind(other)
        ))),
    }
}

/// A section that holds exactly one object (the first one of an array).
pub fn object(v: &Value) -> Result<&Object, ParseError> {
    objects(v)?
        .into_iter()
        .next()
        .ok_or_else(|| ParseError::Invalid("expected an object, found nothing".into()))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Field lookup; exact name first, then ASCII case-insensitive (PowerShell
/// property names are case-insensitive).
pub fn field<'a>(o: &'a Object, key: &str) -> Option<&'a Value> {
    o.get(key).or_else(|| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// A trimmed, non-empty string; numbers and booleans are written out.
pub fn text(o: &Object, key: &str) -> Option<String> {
    match field(o, key)? {
        Value::String(s) => {
            let t = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            (!t.is_empty()).then(|| t.to_owned())
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A non-negative integer from a number or a numeric string.
pub fn uint(o: &Object, key: &str) -> Option<u64> {
    match field(o, key)? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1.8e19)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A boolean from `true`/`false`, `"True"`/`"False"` or `1`/`0`.
pub fn boolean(o: &Object, key: &str) -> Option<bool> {
    match field(o, key)? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_u64().map(|n| n != 0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The string inside a date value: a plain string, or the `value` /
/// `DateTime` member of Windows PowerShell's wrapped `DateTime`.
fn date_text(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s.trim()),
        Value::Object(o) => o.get("value").and_then(date_text),
        _ => None,
    }
}

/// A point in time, as RFC 3339 UTC with seconds precision.
pub fn instant(o: &Object, key: &str) -> Option<String> {
    let (dt, _) = parse_date(date_text(field(o, key)?)?)?;
    Some(
        dt.with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// A point in time as a UTC timestamp (for arithmetic).
pub fn timestamp(o: &Object, key: &str) -> Option<i64> {
    let (dt, _) = parse_date(date_text(field(o, key)?)?)?;
    Some(dt.timestamp())
}

/// A calendar day as `YYYY-MM-DD`: the date where the value was recorded
/// (its own offset), or the UTC date when it carries none.
pub fn day(o: &Object, key: &str) -> Option<String> {
    let (dt, _) = parse_date(date_text(field(o, key)?)?)?;
    Some(dt.date_naive().format("%Y-%m-%d").to_string())
}

/// `MM/DD/YYYY`, the form Linux DMI reports BIOS dates in.
pub fn dmi_day(o: &Object, key: &str) -> Option<String> {
    let (dt, _) = parse_date(date_text(field(o, key)?)?)?;
    Some(dt.date_naive().format("%m/%d/%Y").to_string())
}

/// Whether the parsed value was a date only (no time of day).
type DateOnly = bool;

/// Every date form PowerShell and WMI produce; `None` for anything else.
pub fn parse_date(s: &str) -> Option<(DateTime<FixedOffset>, DateOnly)> {
    let s = s.trim();
    let utc = FixedOffset::east_opt(0)?;
    // /Date(1700000000000)/ or /Date(1700000000000+0100)/ (ms since epoch, UTC).
    if let Some(inner) = s.strip_prefix("/Date(").and_then(|r| r.strip_suffix(")/")) {
        let (ms, offset) = match inner.rfind(['+', '-']).filter(|&i| i > 0) {
            Some(i) => (&inner[..i], Some(&inner[i..])),
            None => (inner, None),
        };
        let ms: i64 = ms.parse().ok()?;
        let at = DateTime::<Utc>::from_timestamp_millis(ms)?;
        let tz = match offset {
            // ±HHMM, as .NET writes it; any other offset is not a date.
            Some(o) => {
                if o.len() != 5 {
                    return None;
                }
                let sign = if o.starts_with('-') { -1 } else { 1 };
                let h: i32 = o.get(1..3)?.parse().ok()?;
                let m: i32 = o.get(3..5)?.parse().ok()?;
                FixedOffset::east_opt(sign * (h * 3600 + m * 60))?
            }
            None => utc,
        };
        return Some((at.with_timezone(&tz), false));
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some((dt, false));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return Some((utc.from_utc_datetime(&n), false));
        }
    }
    let bytes = s.as_bytes();
    // DMTF: yyyymmddHHMMSS.mmmmmmsUUU (UUU = offset in minutes).
    if bytes.len() == 25 && bytes[14] == b'.' && matches!(bytes[21], b'+' | b'-') {
        let n = NaiveDateTime::parse_from_str(s.get(..14)?, "%Y%m%d%H%M%S").ok()?;
        let minutes: i32 = s.get(22..)?.parse().ok()?;
        let sign = if bytes[21] == b'-' { -1 } else { 1 };
        let tz = FixedOffset::east_opt(sign * minutes * 60)?;
        return Some((tz.from_local_datetime(&n).single()?, false));
    }
    // FILETIME in hex (old InstalledOn values): 100 ns ticks since 1601.
    if bytes.len() == 16 && bytes.iter().all(u8::is_ascii_hexdigit) {
        let ticks = i64::from_str_radix(s, 16).ok()?;
        let secs = ticks / 10_000_000 - 11_644_473_600;
        let dt = DateTime::<Utc>::from_timestamp(secs, 0)?;
        return Some((dt.fixed_offset(), false));
    }
    let date = |d: NaiveDate| Some((utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?), true));
    // Registry InstallDate.
    if bytes.len() == 8 && bytes.iter().all(u8::is_ascii_digit) {
        return date(NaiveDate::parse_from_str(s, "%Y%m%d").ok()?);
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return date(d);
    }
    // M/d/yyyy (WMI InstalledOn, BIOS dates), possibly with a time after it;
    // d/M/yyyy when the first number cannot be a month.
    let first = s.split_whitespace().next()?;
    let mut parts = first.split('/');
    let (a, b, y) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (a, b, y): (u32, u32, i32) = (a.parse().ok()?, b.parse().ok()?, y.parse().ok()?);
    let (m, d) = if a > 12 { (b, a) } else { (a, b) };
    date(NaiveDate::from_ymd_opt(y, m, d)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> Option<String> {
        let o = json!({ "d": s });
        instant(o.as_object().unwrap(), "d")
    }

    fn on(v: Value) -> Option<String> {
        let o = json!({ "d": v });
        day(o.as_object().unwrap(), "d")
    }

    #[test]
    fn dates() {
        let want = Some("2023-11-14T22:13:20Z".to_owned());
        assert_eq!(at("/Date(1700000000000)/"), want);
        assert_eq!(at("/Date(1700000000000+0100)/"), want);
        assert_eq!(at("/Date(-1000)/").as_deref(), Some("1969-12-31T23:59:59Z"));
        assert_eq!(at("2023-11-14T22:13:20Z"), want);
        assert_eq!(at("2023-11-14T23:13:20.5123456+01:00"), want);
        assert_eq!(at("2023-11-14T22:13:20"), want);
        assert_eq!(at("2023-11-14T22:13:20.1234567"), want);
        assert_eq!(at("20231114231320.000000+060"), want);
        assert_eq!(at("20231114221320.500000-000"), want);
        assert_eq!(at("20231114").as_deref(), Some("2023-11-14T00:00:00Z"));
        assert_eq!(
            at("01d2fb39b3f35c00").as_deref().map(|s| &s[..10]),
            Some("2017-07-12")
        );
        for bad in [
            "",
            "garbage",
            "/Date(x)/",
            "/Date(99999999999999999999)/",
            "2023-13-45",
            "13/13/2023",
            "1/2/3/4",
            "2023111",
            "ü",
            // Host input cut inside a multi-byte character where the offset is sliced.
            "/Date(1+a€)/",
            "/Date(1-€€)/",
            "/Date(1+0€)/",
            "/Date(1+01000)/",
            "/Date(1+1)/",
            "2023111423132€.000000+060",
            "20231114231320.000000+€",
        ] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn days() {
        assert_eq!(on(json!("20240109")).as_deref(), Some("2024-01-09"));
        assert_eq!(on(json!("1/9/2024")).as_deref(), Some("2024-01-09"));
        assert_eq!(on(json!("18/08/2023")).as_deref(), Some("2023-08-18"));
        assert_eq!(
            on(json!("1/9/2024 12:00:00 AM")).as_deref(),
            Some("2024-01-09")
        );
        // Local midnight in +01:00 is still the 9th.
        assert_eq!(
            on(json!("/Date(1704754800000+0100)/")).as_deref(),
            Some("2024-01-09")
        );
        assert_eq!(
            on(json!("2024-01-09T00:00:00+01:00")).as_deref(),
            Some("2024-01-09")
        );
        // Windows PowerShell's wrapped DateTime.
        assert_eq!(
            on(json!({"value": "/Date(1704758400000)/", "DisplayHint": 2, "DateTime": "Tuesday, January 9, 2024 12:00:00 AM"})).as_deref(),
            Some("2024-01-09")
        );
        assert_eq!(on(json!(20240109)), None);
        assert_eq!(on(Value::Null), None);
    }

    #[test]
    fn shapes() {
        assert_eq!(objects(&Value::Null).unwrap().len(), 0);
        assert_eq!(objects(&json!({"a": 1})).unwrap().len(), 1);
        assert_eq!(
            objects(&json!([{"a": 1}, null, {"b": 2}])).unwrap().len(),
            2
        );
        assert_eq!(
            objects(&json!({"value": [{"a": 1}, {"a": 2}], "Count": 2}))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(objects(&json!([])).unwrap().len(), 0);
        assert!(objects(&json!("x")).is_err());
        assert!(objects(&json!(3)).is_err());
        assert!(objects(&json!([1, 2])).is_err());
        assert!(object(&Value::Null).is_err());
    }

    #[test]
    fn scalars() {
        let o = json!({"n": "42", "f": 4.0, "neg": -1, "b": "True", "s": "  x\u{0} ", "e": "", "big": 1e300, "Mixed": 7});
        let o = o.as_object().unwrap();
        assert_eq!(uint(o, "n"), Some(42));
        assert_eq!(uint(o, "f"), Some(4));
        assert_eq!(uint(o, "neg"), None);
        assert_eq!(uint(o, "big"), None);
        assert_eq!(uint(o, "mixed"), Some(7));
        assert_eq!(boolean(o, "b"), Some(true));
        assert_eq!(text(o, "s").as_deref(), Some("x"));
        assert_eq!(text(o, "e"), None);
        assert_eq!(text(o, "n").as_deref(), Some("42"));
        assert_eq!(text(o, "missing"), None);
    }
}
