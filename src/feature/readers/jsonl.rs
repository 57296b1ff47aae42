//! JSON lines: one object per line. `yelp` adds the Yelp Open Dataset's own type
//! rules (stars 1..=5 as int or float, date a string or epoch milliseconds).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::{Map, Value};

use super::{HashingReader, LabelValue, ReadError, ReadSummary, ReaderSpec, Record, RowError};

pub(super) fn read<R: Read>(
    path: &Path,
    input: HashingReader<R>,
    spec: &ReaderSpec,
    yelp: bool,
    summary: &mut ReadSummary,
    accept: &mut impl FnMut(Record) -> Result<(), RowError>,
) -> Result<HashingReader<R>, ReadError> {
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| ReadError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if n == 0 {
            break;
        }
        line += 1;
        let bytes = buf.trim_ascii();
        if bytes.is_empty() {
            continue; // blank lines (a trailing newline, say) are not rows
        }
        let outcome = parse_line(line, bytes, spec, yelp).and_then(&mut *accept);
        summary.record(outcome);
    }
    Ok(reader.into_inner())
}

/// Parses one line into a record. Public to the crate: the streaming decoder reuses it.
pub(crate) fn parse_line(
    line: u64,
    bytes: &[u8],
    spec: &ReaderSpec,
    yelp: bool,
) -> Result<Record, RowError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        if std::str::from_utf8(bytes).is_err() {
            RowError::new(line, "not_utf8", "line is not valid UTF-8")
        } else {
            RowError::new(line, "not_json", format!("not JSON: {e}"))
        }
    })?;
    let Value::Object(object) = value else {
        return Err(RowError::new(
            line,
            "not_object",
            "line is JSON but not an object",
        ));
    };
    record_from_object(line, &object, spec, yelp, || format!("line-{line}"))
}

/// Validates an object's fields into a record; `fallback_id` names rows without an id.
/// Also used by the streaming decoder, so files and topics accept the same messages.
pub(crate) fn record_from_object(
    line: u64,
    object: &Map<String, Value>,
    spec: &ReaderSpec,
    yelp: bool,
    fallback_id: impl FnOnce() -> String,
) -> Result<Record, RowError> {
    let text = match object.get(&spec.text_field) {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => {
            return Err(RowError::new(
                line,
                "missing_text",
                format!("no {:?} field", spec.text_field),
            ));
        }
        Some(other) => {
            return Err(RowError::new(
                line,
                "wrong_type",
                format!(
                    "{:?} is {}, not a string",
                    spec.text_field,
                    type_name(other)
                ),
            ));
        }
    };
    spec.check_text(line, &text)?;

    let id = match object.get(&spec.id_field) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        None | Some(Value::Null) => fallback_id(),
        Some(other) => {
            return Err(RowError::new(
                line,
                "wrong_type",
                format!("id {:?} is {}", spec.id_field, type_name(other)),
            ));
        }
    };

    let label = match &spec.label_field {
        None => None,
        Some(field) => match object.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_f64().map(LabelValue::Number),
            Some(Value::String(s)) => Some(LabelValue::Text(s.clone())),
            Some(other) => {
                return Err(RowError::new(
                    line,
                    "wrong_type",
                    format!("label {field:?} is {}", type_name(other)),
                ));
            }
        },
    };

    if yelp {
        check_yelp(line, object)?;
    }
    Ok(Record {
        line,
        id,
        text,
        label,
    })
}

/// The Yelp review schema: stars a number in 1..=5, date a string or epoch millis.
fn check_yelp(line: u64, object: &Map<String, Value>) -> Result<(), RowError> {
    match object.get("stars") {
        Some(Value::Number(n)) => {
            let stars = n.as_f64().unwrap_or(f64::NAN);
            if !(1.0..=5.0).contains(&stars) {
                return Err(RowError::new(
                    line,
                    "bad_stars",
                    format!("stars {n} is outside 1..=5"),
                ));
            }
        }
        Some(other) => {
            return Err(RowError::new(
                line,
                "bad_stars",
                format!("stars is {}, not a number", type_name(other)),
            ));
        }
        None => return Err(RowError::new(line, "bad_stars", "no stars field")),
    }
    match object.get("date") {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(()),
        Some(other) => Err(RowError::new(
            line,
            "bad_date",
            format!(
                "date is {}, not a string or epoch milliseconds",
                type_name(other)
            ),
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{read_str, spec};
    use super::*;
    use crate::config::DataFormat;

    const YELP: &[u8] =
        br#"{"review_id":"a","stars":5,"text":"Great tacos","date":"2018-07-07 22:09:11"}
{"review_id":"b","stars":1.0,"text":"Cold food","date":1531001351000}
{"review_id":"c","stars":"five","text":"x","date":"2018"}
{"review_id":"d","stars":9,"text":"x"}
{"review_id":"e","stars":3,"text":"x","date":true}
{"review_id":"f","stars":3,"text":""}
{"review_id":"g","stars":3,"text":42}
{"review_id":"h","stars":3}
not json at all
[1,2,3]

{"review_id":"i","stars":3.0,"text":"Fine"}
"#;

    #[test]
    fn yelp_accepts_int_and_float_stars_and_both_date_forms() {
        let spec = spec(DataFormat::Yelp, "text", "review_id", Some("stars"));
        let (records, summary) = read_str(YELP, ".json", &spec);
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "i"]);
        assert_eq!(records[0].label, Some(LabelValue::Number(5.0)));
        assert_eq!(records[1].label, Some(LabelValue::Number(1.0)));
        assert_eq!(records[2].line, 12);
        assert_eq!(summary.rows, 11, "blank line is not a row");
        assert_eq!(summary.malformed, 8);
    }

    #[test]
    fn yelp_malformed_rows_have_line_and_reason() {
        let spec = spec(DataFormat::Yelp, "text", "review_id", Some("stars"));
        let (_, summary) = read_str(YELP, ".json", &spec);
        let got: Vec<(u64, &str)> = summary.examples.iter().map(|e| (e.line, e.kind)).collect();
        assert_eq!(
            got,
            [
                (3, "bad_stars"),
                (4, "bad_stars"),
                (5, "bad_date"),
                (6, "empty_text"),
                (7, "wrong_type"),
                (8, "missing_text"),
                (9, "not_json"),
                (10, "not_object"),
            ]
        );
    }

    #[test]
    fn generic_jsonl_uses_configured_fields_and_numeric_ids() {
        let spec = spec(DataFormat::Jsonl, "body", "msg_id", Some("intent"));
        let data = br#"{"msg_id":17,"body":"where is my parcel","intent":"delivery"}
{"body":"refund please"}
{"msg_id":[1],"body":"x","intent":"a"}
{"msg_id":"z","body":"x","intent":{"a":1}}
"#;
        let (records, summary) = read_str(data, ".jsonl", &spec);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].id, "17");
        assert_eq!(records[0].label, Some(LabelValue::Text("delivery".into())));
        assert_eq!(records[1].id, "line-2");
        assert_eq!(records[1].label, None);
        assert_eq!(summary.malformed_by_reason["wrong_type"], 2);
    }

    #[test]
    fn invalid_utf8_and_oversized_text_are_malformed_not_fatal() {
        let spec = spec(DataFormat::Jsonl, "text", "id", None);
        let mut data = b"{\"text\":\"ok\"}\n{\"text\":\"\xff\xfe\"}\n".to_vec();
        data.extend_from_slice(format!("{{\"text\":\"{}\"}}\n", "x".repeat(101)).as_bytes());
        let (records, summary) = read_str(&data, ".jsonl", &spec);
        assert_eq!(records.len(), 1);
        assert_eq!(summary.malformed_by_reason["not_utf8"], 1);
        assert_eq!(summary.malformed_by_reason["text_too_long"], 1);
    }
}
