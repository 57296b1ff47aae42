//! CSV with a header row; columns picked by name.

use std::io::Read;
use std::path::Path;

use super::{HashingReader, LabelValue, ReadError, ReadSummary, ReaderSpec, Record, RowError};

pub(super) fn read<R: Read>(
    path: &Path,
    input: HashingReader<R>,
    spec: &ReaderSpec,
    summary: &mut ReadSummary,
    accept: &mut impl FnMut(Record) -> Result<(), RowError>,
) -> Result<HashingReader<R>, ReadError> {
    let mut reader = ::csv::ReaderBuilder::new()
        .delimiter(spec.csv_delimiter)
        .has_headers(true)
        .flexible(false)
        .from_reader(input);
    let io_err = |e: ::csv::Error| ReadError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    };
    let headers = match reader.headers() {
        Ok(h) if !h.iter().all(str::is_empty) => h.clone(),
        Ok(_) => {
            return Err(ReadError::NoHeader {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io_err(e)),
    };
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let available = || headers.iter().collect::<Vec<_>>().join(", ");
    let text_col = column(&spec.text_field).ok_or_else(|| ReadError::MissingColumn {
        path: path.to_path_buf(),
        column: spec.text_field.clone(),
        key: "data.text_field",
        available: available(),
    })?;
    let id_col = column(&spec.id_field);
    let label_col = match &spec.label_field {
        None => None,
        Some(name) => Some(column(name).ok_or_else(|| ReadError::MissingColumn {
            path: path.to_path_buf(),
            column: name.clone(),
            key: "labels.field",
            available: available(),
        })?),
    };

    let mut record = ::csv::StringRecord::new();
    loop {
        let line_hint = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(line_hint, |p| p.line());
                let outcome = to_record(line, &record, spec, text_col, id_col, label_col)
                    .and_then(&mut *accept);
                summary.record(outcome);
            }
            Err(e) => {
                let line = e.position().map_or(line_hint, |p| p.line());
                let row = match e.kind() {
                    ::csv::ErrorKind::Utf8 { .. } => {
                        RowError::new(line, "not_utf8", "row is not valid UTF-8")
                    }
                    ::csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => RowError::new(
                        line,
                        "wrong_field_count",
                        format!("{len} fields, the header has {expected_len}"),
                    ),
                    _ => return Err(io_err(e)),
                };
                summary.record(Err(row));
            }
        }
    }
    Ok(reader.into_inner())
}

fn to_record(
    line: u64,
    row: &::csv::StringRecord,
    spec: &ReaderSpec,
    text_col: usize,
    id_col: Option<usize>,
    label_col: Option<usize>,
) -> Result<Record, RowError> {
    let text = row.get(text_col).unwrap_or_default().to_string();
    spec.check_text(line, &text)?;
    let id = id_col
        .and_then(|c| row.get(c))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map_or_else(|| format!("line-{line}"), str::to_string);
    let label = label_col
        .and_then(|c| row.get(c))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| LabelValue::Text(s.to_string()));
    Ok(Record {
        line,
        id,
        text,
        label,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{read_str, spec};
    use super::*;
    use crate::config::DataFormat;

    #[test]
    fn reads_configured_columns_in_any_order() {
        let spec = spec(DataFormat::Csv, "question", "id", Some("class_name"));
        let data = b"class_name,question,id\nORDER,where is my order,19650\nSHIPPING,\"change address, please\",23303\n";
        let (records, summary) = read_str(data, ".csv", &spec);
        assert_eq!(summary.accepted, 2);
        assert_eq!(records[1].text, "change address, please");
        assert_eq!(records[1].id, "23303");
        assert_eq!(records[1].line, 3);
        assert_eq!(records[0].label, Some(LabelValue::Text("ORDER".into())));
    }

    #[test]
    fn malformed_rows_are_counted_with_line_numbers() {
        let spec = spec(DataFormat::Csv, "question", "id", Some("class_name"));
        let mut data =
            b"class_name,question,id\nORDER,ok,1\nORDER,too,many,fields\nORDER,,3\n".to_vec();
        data.extend_from_slice(b"ORDER,\xff\xfe,4\nSHIPPING,fine,5\n");
        let (records, summary) = read_str(&data, ".csv", &spec);
        assert_eq!(
            records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["1", "5"]
        );
        let got: Vec<(u64, &str)> = summary.examples.iter().map(|e| (e.line, e.kind)).collect();
        assert_eq!(
            got,
            [(3, "wrong_field_count"), (4, "empty_text"), (5, "not_utf8")]
        );
    }

    #[test]
    fn missing_text_column_names_the_key_and_the_columns() {
        let spec = spec(DataFormat::Csv, "body", "id", None);
        let file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        std::fs::write(file.path(), "class_name,question,id\nA,b,1\n").unwrap();
        let err = super::super::read_file(file.path(), &spec, |_| Ok(())).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"body\""), "{text}");
        assert!(text.contains("data.text_field"), "{text}");
        assert!(text.contains("class_name, question, id"), "{text}");
    }

    #[test]
    fn empty_file_has_no_header() {
        let spec = spec(DataFormat::Csv, "text", "id", None);
        let file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        let err = super::super::read_file(file.path(), &spec, |_| Ok(())).unwrap_err();
        assert!(matches!(err, ReadError::NoHeader { .. }), "{err}");
    }

    #[test]
    fn semicolon_delimiter_from_settings() {
        let mut spec = spec(DataFormat::Csv, "text", "id", None);
        spec.csv_delimiter = b';';
        let (records, _) = read_str(b"id;text\n1;a, b\n", ".csv", &spec);
        assert_eq!(records[0].text, "a, b");
    }
}
