//! Events as they arrive: `{"id", "time", "text", "entity"?, "source"?, ...metadata}` in a
//! JSON array, a single JSON object, or NDJSON (one object per line). A body is checked as a
//! whole: one bad event refuses the request, naming its position and field.

use crate::error::{MonitorError, Result};
use serde_json::{Map, Value};
use std::collections::HashSet;

/// Longest event id, characters.
pub const MAX_ID_CHARS: usize = 256;
/// Longest event text, characters.
pub const MAX_TEXT_CHARS: usize = 100_000;

/// One event, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The sender's id (idempotency key).
    pub id: String,
    /// Seconds since the Unix epoch.
    pub time: i64,
    /// The text to classify.
    pub text: String,
    /// Entities the sender named (`entity`: a string or a list); empty when none.
    pub entities: Vec<String>,
    /// Every other field, kept as sent (`source` included).
    pub meta: Map<String, Value>,
}

/// The events of a request body; `now` (seconds since the epoch) and `max_future_secs` bound
/// how far ahead an event's time may be.
pub fn parse_body(body: &[u8], now: i64, max_future_secs: i64) -> Result<Vec<Event>> {
    let objects = objects_of(body, "events")?;
    let mut seen = HashSet::new();
    let mut events = Vec::with_capacity(objects.len());
    for (position, value) in objects {
        let event = event_of(value, now, max_future_secs).map_err(|(field, message)| {
            MonitorError::Event {
                position: position.clone(),
                field: field.into(),
                message,
            }
        })?;
        if !seen.insert(event.id.clone()) {
            return Err(MonitorError::Event {
                position,
                field: "id".into(),
                message: format!("id {:?} appears twice in this request", event.id),
            });
        }
        events.push(event);
    }
    Ok(events)
}

/// The JSON values of a body that is a JSON array, one JSON object, or NDJSON, each with its
/// position (`#3`, `line 3`); `what` names them in messages.
pub(crate) fn objects_of(body: &[u8], what: &str) -> Result<Vec<(String, Value)>> {
    let text = std::str::from_utf8(body)
        .map_err(|e| MonitorError::Body(format!("the body is not UTF-8: {e}")))?;
    let trimmed = text.trim_start();
    let objects: Vec<(String, Value)> = if trimmed.starts_with('[') {
        let Value::Array(items) = serde_json::from_str(text)
            .map_err(|e| MonitorError::Body(format!("the body is not a JSON array: {e}")))?
        else {
            unreachable!("a body starting with '[' parses as an array");
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("#{i}"), v))
            .collect()
    } else if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(text) {
        vec![("#0".to_string(), v)]
    } else {
        ndjson(text)?
    };
    if objects.is_empty() {
        return Err(MonitorError::Body(format!("the body holds no {what}")));
    }
    Ok(objects)
}

fn ndjson(text: &str) -> Result<Vec<(String, Value)>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map(|v| (format!("line {}", i + 1), v))
                .map_err(|e| {
                    MonitorError::Body(format!(
                        "line {}: not a JSON object ({e}); send a JSON array, one object, or \
                         one object per line",
                        i + 1
                    ))
                })
        })
        .collect()
}

/// A field's name and what is wrong with it.
pub(crate) type FieldError = (&'static str, String);

fn event_of(value: Value, now: i64, max_future_secs: i64) -> Result<Event, FieldError> {
    let Value::Object(mut o) = value else {
        return Err(("(event)", "an event must be a JSON object".into()));
    };
    let id = id_of(o.remove("id"))?;
    let time = time_of(o.remove("time"))?;
    if time > now + max_future_secs {
        return Err((
            "time",
            format!(
                "{} is more than {max_future_secs} s after the monitor's clock ({})",
                rfc3339(time),
                rfc3339(now)
            ),
        ));
    }
    let text = match o.remove("text") {
        Some(Value::String(t)) if !t.trim().is_empty() => t,
        Some(Value::String(_)) => return Err(("text", "the text is empty".into())),
        None | Some(Value::Null) => return Err(("text", "missing".into())),
        Some(_) => return Err(("text", "must be a string".into())),
    };
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(("text", format!("longer than {MAX_TEXT_CHARS} characters")));
    }
    let entities = entities_of(o.remove("entity"))?;
    Ok(Event {
        id,
        time,
        text,
        entities,
        meta: o,
    })
}

/// An event id: a string or a whole number, 1 to [`MAX_ID_CHARS`] characters.
pub(crate) fn id_of(v: Option<Value>) -> Result<String, FieldError> {
    let id = match v {
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        None | Some(Value::Null) => return Err(("id", "missing".into())),
        Some(_) => return Err(("id", "must be a string or a whole number".into())),
    };
    if id.is_empty() || id.chars().count() > MAX_ID_CHARS {
        return Err(("id", format!("must have 1 to {MAX_ID_CHARS} characters")));
    }
    Ok(id)
}

fn time_of(v: Option<Value>) -> Result<i64, FieldError> {
    match v {
        Some(Value::String(s)) => s
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_second())
            .map_err(|e| ("time", format!("{s:?} is not an RFC 3339 time ({e})"))),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(secs) if secs.is_finite() && (0.0..1e11).contains(&secs) => {
                Ok(secs.floor() as i64)
            }
            _ => Err(("time", format!("{n} is not seconds since 1970"))),
        },
        None | Some(Value::Null) => Err(("time", "missing".into())),
        Some(_) => Err((
            "time",
            "must be an RFC 3339 string or seconds since 1970".into(),
        )),
    }
}

fn entities_of(v: Option<Value>) -> Result<Vec<String>, FieldError> {
    let bad = || {
        (
            "entity",
            "must be a string or a list of strings".to_string(),
        )
    };
    let names = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad()),
    };
    let mut out: Vec<String> = names
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// `event` as the JSON object [`parse_body`] reads back.
pub fn to_json(event: &Event) -> Value {
    let mut o = event.meta.clone();
    o.insert("id".into(), event.id.clone().into());
    o.insert("time".into(), rfc3339(event.time).into());
    o.insert("text".into(), event.text.clone().into());
    match event.entities.as_slice() {
        [] => {}
        [one] => {
            o.insert("entity".into(), one.clone().into());
        }
        many => {
            o.insert("entity".into(), many.to_vec().into());
        }
    }
    Value::Object(o)
}

/// `secs` as an RFC 3339 UTC time.
pub fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}

/// The wall clock, seconds since the epoch.
pub fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn err(body: &str) -> String {
        parse_body(body.as_bytes(), NOW, 300)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn arrays_objects_and_ndjson_are_read() {
        let array = r#"[{"id": "a", "time": "2026-01-01T00:00:00Z", "text": "hi", "entity": "Acme", "source": "web"},
                        {"id": 7, "time": 1767225600.5, "text": "yo", "entity": ["B", "A", "B"]}]"#;
        let events = parse_body(array.as_bytes(), NOW, 300).unwrap();
        assert_eq!(events[0].time, 1_767_225_600);
        assert_eq!(events[0].entities, vec!["Acme"]);
        assert_eq!(events[0].meta["source"], "web");
        assert_eq!(events[1].id, "7");
        assert_eq!(events[1].time, 1_767_225_600);
        assert_eq!(events[1].entities, vec!["A", "B"]);
        let one = "{\n \"id\": \"x\", \"time\": 5, \"text\": \"t\"\n}";
        assert_eq!(parse_body(one.as_bytes(), NOW, 300).unwrap().len(), 1);
        let lines = "{\"id\": \"x\", \"time\": 5, \"text\": \"t\"}\n\n{\"id\": \"y\", \"time\": 6, \"text\": \"u\"}\n";
        assert_eq!(parse_body(lines.as_bytes(), NOW, 300).unwrap().len(), 2);
    }

    #[test]
    fn bad_events_name_their_position_and_field() {
        let cases = [
            (
                r#"[{"time": 5, "text": "t"}]"#,
                "event #0: field `id`: missing",
            ),
            (r#"[{"id": "a", "text": "t"}]"#, "field `time`: missing"),
            (
                r#"[{"id": "a", "time": "yesterday", "text": "t"}]"#,
                "\"yesterday\" is not an RFC 3339",
            ),
            (
                r#"[{"id": "a", "time": 2000000000, "text": "t"}]"#,
                "after the monitor's clock",
            ),
            (
                r#"[{"id": "a", "time": 5, "text": "  "}]"#,
                "field `text`: the text is empty",
            ),
            (r#"[{"id": "a", "time": 5}]"#, "field `text`: missing"),
            (
                r#"[{"id": "a", "time": 5, "text": "t", "entity": 3}]"#,
                "field `entity`",
            ),
            (
                r#"[{"id": "a", "time": 5, "text": "t"}, {"id": "a", "time": 6, "text": "u"}]"#,
                "event #1: field `id`: id \"a\" appears twice",
            ),
            (
                "{\"id\": \"a\", \"time\": 5, \"text\": \"t\"}\n{\"id\": \"b\", \"time\": 5}",
                "event line 2: field `text`",
            ),
            (
                "{\"id\": \"a\", \"time\": 5, \"text\": \"t\"}\nnot json",
                "line 2: not a JSON object",
            ),
            ("[1, 2", "not a JSON array"),
            ("[]", "no events"),
            (
                r#"[{"id": "a", "time": -5, "text": "t"}]"#,
                "not seconds since 1970",
            ),
        ];
        for (body, needle) in cases {
            let e = err(body);
            assert!(e.contains(needle), "{body}: {e}");
        }
    }
}
