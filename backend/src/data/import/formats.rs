//! Reading source files record by record: JSONL, JSON arrays, CSV and Parquet.
//!
//! Every reader streams: memory stays bounded by one record (at most [`Limits::max_row_bytes`])
//! whatever the file size. A record that cannot be read is handed to the sink as an error with
//! its record and line number, so the caller decides whether to skip it or reject the file; a
//! file that cannot be read at all (a broken JSON array, a file that is not Parquet) is an
//! [`FileError`].

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::path::Path;

use serde_json::{Map, Value};
use still_api::FileFormat;

/// Explicit limits of an import.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A record (one JSONL line, one CSV record, one JSON element) larger than this is rejected.
    pub max_row_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_row_bytes: 8 * 1024 * 1024,
        }
    }
}

/// One record read from a file: a JSON object, or why it is not one.
#[derive(Debug)]
pub struct Record {
    /// 1-based record number.
    pub record: u64,
    /// 1-based line where the record starts (text formats).
    pub line: Option<u64>,
    pub value: Result<Map<String, Value>, String>,
}

/// A file that cannot be read past some point.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FileError(pub String);

/// Picks the format from the file name, then from the first bytes.
pub fn detect_format(file_name: &str, head: &[u8]) -> FileFormat {
    let lower = file_name.to_ascii_lowercase();
    for (suffix, format) in [
        (".jsonl", FileFormat::Jsonl),
        (".ndjson", FileFormat::Jsonl),
        (".json", FileFormat::Json),
        (".csv", FileFormat::Csv),
        (".parquet", FileFormat::Parquet),
    ] {
        if lower.ends_with(suffix) {
            return format;
        }
    }
    if head.starts_with(b"PAR1") {
        return FileFormat::Parquet;
    }
    let text = String::from_utf8_lossy(head);
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    match trimmed.chars().next() {
        Some('[') => FileFormat::Json,
        Some('{') => FileFormat::Jsonl,
        _ => FileFormat::Csv,
    }
}

/// Reads `path` in `format` (which must not be `Auto`), handing each record to `sink` until the
/// sink breaks or the file ends.
/// `name` is the file name users know (an upload is spooled under a temporary name).
pub fn read_records(
    path: &Path,
    name: &str,
    format: FileFormat,
    limits: Limits,
    sink: &mut dyn FnMut(Record) -> ControlFlow<()>,
) -> Result<(), FileError> {
    let file = File::open(path).map_err(|e| FileError(format!("{name}: {e}")))?;
    match format {
        FileFormat::Jsonl => read_jsonl(BufReader::with_capacity(1 << 20, file), limits, sink),
        FileFormat::Json => read_json_array(name, file, limits, sink),
        FileFormat::Csv => read_csv(name, file, limits, sink),
        FileFormat::Parquet => read_parquet(name, file, limits, sink),
        FileFormat::Auto => Err(FileError("format must be resolved before reading".into())),
    }
}

fn object_or_error(value: Value) -> Result<Map<String, Value>, String> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(format!(
            "expected a JSON object, found {}",
            json_kind(&other)
        )),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// JSONL: one object per line; blank lines are skipped; a bad line is a bad record.
pub fn read_jsonl(
    mut reader: impl BufRead,
    limits: Limits,
    sink: &mut dyn FnMut(Record) -> ControlFlow<()>,
) -> Result<(), FileError> {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut line_no = 0u64;
    let mut record = 0u64;
    loop {
        buf.clear();
        line_no += 1;
        let (n_read, complete) = read_line_bounded(&mut reader, &mut buf, limits.max_row_bytes)
            .map_err(|e| FileError(format!("line {line_no}: {e}")))?;
        if n_read == 0 {
            return Ok(());
        }
        let value = if !complete {
            Err(format!(
                "row is longer than the {} byte limit",
                limits.max_row_bytes
            ))
        } else {
            let text = match std::str::from_utf8(&buf) {
                Ok(text) => text.trim_start_matches('\u{feff}').trim(),
                Err(e) => {
                    record += 1;
                    let flow = sink(Record {
                        record,
                        line: Some(line_no),
                        value: Err(format!("not valid UTF-8 ({e})")),
                    });
                    if flow.is_break() {
                        return Ok(());
                    }
                    continue;
                }
            };
            if text.is_empty() {
                continue;
            }
            serde_json::from_str::<Value>(text)
                .map_err(|e| format!("invalid JSON: {e}"))
                .and_then(object_or_error)
        };
        record += 1;
        if sink(Record {
            record,
            line: Some(line_no),
            value,
        })
        .is_break()
        {
            return Ok(());
        }
    }
}

/// Reads one line into `buf` keeping at most `max` bytes; the rest of an over-long line is
/// consumed and dropped. Returns the bytes consumed and whether the line fit.
fn read_line_bounded(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let mut consumed = 0usize;
    let mut fits = true;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok((consumed, fits));
        }
        let (chunk, done) = match memchr_newline(available) {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let take = chunk.len();
        if fits {
            if buf.len() + take > max + 1 {
                fits = false;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        reader.consume(take);
        consumed += take;
        if done {
            return Ok((consumed, fits));
        }
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// A byte reader that counts lines and columns (for positions in error messages).
struct Bytes<R> {
    inner: R,
    line: u64,
    column: u64,
}

impl<R: BufRead> Bytes<R> {
    fn peek(&mut self) -> std::io::Result<Option<u8>> {
        Ok(self.inner.fill_buf()?.first().copied())
    }

    fn bump(&mut self) -> std::io::Result<Option<u8>> {
        let byte = self.peek()?;
        if let Some(b) = byte {
            self.inner.consume(1);
            if b == b'\n' {
                self.line += 1;
                self.column = 0;
            } else {
                self.column += 1;
            }
        }
        Ok(byte)
    }

    /// Skips whitespace (and a UTF-8 byte order mark at the very start).
    fn skip_ws(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            match self.peek()? {
                Some(b' ' | b'\t' | b'\r' | b'\n') => {
                    self.bump()?;
                }
                Some(0xEF) if self.line == 1 && self.column == 0 => {
                    for _ in 0..3 {
                        self.bump()?;
                    }
                }
                other => return Ok(other),
            }
        }
    }
}

/// A JSON array of objects, streamed element by element. Each element's bytes are found by a
/// small scanner (strings, escapes, nesting) before it is parsed, so an element over
/// [`Limits::max_row_bytes`] is rejected after reading at most that many bytes of it — it is
/// never held whole. A syntax error ends the file (nothing after it can be trusted); an element
/// that is not an object is a bad record.
pub fn read_json_array(
    name: &str,
    file: File,
    limits: Limits,
    sink: &mut dyn FnMut(Record) -> ControlFlow<()>,
) -> Result<(), FileError> {
    let mut r = Bytes {
        inner: BufReader::with_capacity(1 << 20, file),
        line: 1,
        column: 0,
    };
    let io = |e: std::io::Error| FileError(format!("{name}: {e}"));
    let syntax = |r: &Bytes<_>, what: &str| {
        FileError(format!(
            "{name}: not a JSON array of objects (line {}, column {}): {what}",
            r.line,
            r.column + 1
        ))
    };
    match r.skip_ws().map_err(io)? {
        Some(b'[') => {
            r.bump().map_err(io)?;
        }
        _ => return Err(syntax(&r, "expected '['")),
    }
    let mut record = 0u64;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    if r.skip_ws().map_err(io)? == Some(b']') {
        r.bump().map_err(io)?;
    } else {
        loop {
            if r.skip_ws().map_err(io)?.is_none() {
                return Err(syntax(&r, "the file ends inside the array"));
            }
            let start_line = r.line;
            buf.clear();
            let mut too_long = false;
            let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
            // Scan one element: up to the `,` or `]` that follows it at depth 0.
            let end = loop {
                let Some(b) = r.peek().map_err(io)? else {
                    return Err(syntax(&r, "the file ends inside an element"));
                };
                if !in_string && depth == 0 && (b == b',' || b == b']') {
                    break b;
                }
                r.bump().map_err(io)?;
                if in_string {
                    match (escaped, b) {
                        (true, _) => escaped = false,
                        (false, b'\\') => escaped = true,
                        (false, b'"') => in_string = false,
                        _ => {}
                    }
                } else {
                    match b {
                        b'"' => in_string = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth
                                .checked_sub(1)
                                .ok_or_else(|| syntax(&r, "unbalanced bracket"))?
                        }
                        _ => {}
                    }
                }
                if !too_long {
                    if buf.len() >= limits.max_row_bytes {
                        too_long = true;
                        buf = Vec::new(); // give the memory back while the rest is skipped
                    } else {
                        buf.push(b);
                    }
                }
            };
            r.bump().map_err(io)?; // the `,` or `]`
            record += 1;
            let value = if too_long {
                Err(format!(
                    "row is longer than the {} byte limit",
                    limits.max_row_bytes
                ))
            } else {
                match serde_json::from_slice::<Value>(&buf) {
                    Ok(value) => object_or_error(value),
                    Err(e) if buf.iter().all(u8::is_ascii_whitespace) => {
                        return Err(syntax(&r, &format!("an empty element ({e})")));
                    }
                    Err(e) => {
                        return Err(FileError(format!(
                            "{name}: not a JSON array of objects (line {}, column {}): {e}",
                            start_line + e.line() as u64 - 1,
                            e.column()
                        )));
                    }
                }
            };
            if sink(Record {
                record,
                line: Some(start_line),
                value,
            })
            .is_break()
            {
                return Ok(()); // the caller has what it wanted (a preview, a rejection)
            }
            if end == b']' {
                break;
            }
        }
    }
    if r.skip_ws().map_err(io)?.is_some() {
        return Err(syntax(&r, "trailing characters after the array"));
    }
    Ok(())
}

/// Most fields a CSV record may have.
pub const MAX_CSV_FIELDS: usize = 4096;

/// One CSV record as read by [`read_csv`]: its fields, or why they were dropped.
enum CsvRecord {
    Fields(Vec<String>),
    Bad(String),
}

/// CSV with a header row; every value is a string (empty cells are empty strings). Parsed with
/// `csv-core` into a buffer that grows only up to [`Limits::max_row_bytes`]: the rest of a longer
/// record is read and dropped, so no record is ever held past the limit.
pub fn read_csv(
    name: &str,
    file: File,
    limits: Limits,
    sink: &mut dyn FnMut(Record) -> ControlFlow<()>,
) -> Result<(), FileError> {
    let mut reader = CsvReader {
        input: BufReader::with_capacity(1 << 20, file),
        core: csv_core::Reader::new(),
        out: vec![0; (64 << 10).min(limits.max_row_bytes.max(1))],
        ends: vec![0; 64],
        max: limits.max_row_bytes,
    };
    let io = |e: std::io::Error| FileError(format!("{name}: {e}"));
    let headers = match reader.next().map_err(io)? {
        None => return Err(FileError(format!("{name}: the CSV header row is empty"))),
        Some((_, CsvRecord::Bad(why))) => {
            return Err(FileError(format!(
                "{name}: cannot read the CSV header: {why}"
            )));
        }
        Some((_, CsvRecord::Fields(fields))) => fields,
    };
    let headers: Vec<String> = headers
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_string())
        .collect();
    if headers.iter().all(String::is_empty) {
        return Err(FileError(format!("{name}: the CSV header row is empty")));
    }
    let mut record_no = 0u64;
    while let Some((line, record)) = reader.next().map_err(io)? {
        record_no += 1;
        let value = match record {
            CsvRecord::Bad(why) => Err(why),
            CsvRecord::Fields(fields) if fields.len() != headers.len() => Err(format!(
                "expected {} fields as in the header, found {}",
                headers.len(),
                fields.len()
            )),
            CsvRecord::Fields(fields) => Ok(headers
                .iter()
                .cloned()
                .zip(fields.into_iter().map(Value::String))
                .collect()),
        };
        if sink(Record {
            record: record_no,
            line: Some(line),
            value,
        })
        .is_break()
        {
            return Ok(());
        }
    }
    Ok(())
}

struct CsvReader<R> {
    input: R,
    core: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
    max: usize,
}

impl<R: BufRead> CsvReader<R> {
    /// The next record and the line it starts on; `None` at the end of the file.
    fn next(&mut self) -> std::io::Result<Option<(u64, CsvRecord)>> {
        use csv_core::ReadRecordResult;
        let (mut outlen, mut endlen) = (0usize, 0usize);
        let (mut too_long, mut too_many) = (false, false);
        let mut start_line = None;
        loop {
            let buf = self.input.fill_buf()?;
            if start_line.is_none() {
                // Blank lines before a record are skipped by the parser: count them in.
                let blank = buf
                    .iter()
                    .take_while(|b| matches!(b, b'\r' | b'\n'))
                    .filter(|&&b| b == b'\n')
                    .count();
                if buf.iter().any(|b| !matches!(b, b'\r' | b'\n')) || buf.is_empty() {
                    start_line = Some(self.core.line() + blank as u64);
                }
            }
            let (res, nin, nout, nend) =
                self.core
                    .read_record(buf, &mut self.out[outlen..], &mut self.ends[endlen..]);
            self.input.consume(nin);
            outlen += nout;
            endlen += nend;
            match res {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    if too_long || self.out.len() >= self.max {
                        too_long = true;
                        outlen = 0; // keep parsing into the same buffer, dropping the bytes
                    } else {
                        let grown = (self.out.len() * 2).min(self.max);
                        self.out.resize(grown, 0);
                    }
                }
                ReadRecordResult::OutputEndsFull => {
                    if too_many || self.ends.len() >= MAX_CSV_FIELDS {
                        too_many = true;
                        endlen = 0;
                    } else {
                        let grown = (self.ends.len() * 2).min(MAX_CSV_FIELDS);
                        self.ends.resize(grown, 0);
                    }
                }
                ReadRecordResult::Record => break,
                ReadRecordResult::End => return Ok(None),
            }
        }
        let line = start_line.unwrap_or_else(|| self.core.line());
        if too_long || self.ends[..endlen].last().is_some_and(|&e| e > self.max) {
            return Ok(Some((
                line,
                CsvRecord::Bad(format!("row is longer than the {} byte limit", self.max)),
            )));
        }
        if too_many {
            return Ok(Some((
                line,
                CsvRecord::Bad(format!("more than {MAX_CSV_FIELDS} fields")),
            )));
        }
        let mut fields = Vec::with_capacity(endlen);
        let mut start = 0;
        for (i, &end) in self.ends[..endlen].iter().enumerate() {
            match std::str::from_utf8(&self.out[start..end]) {
                Ok(text) => fields.push(text.to_string()),
                Err(e) => {
                    return Ok(Some((
                        line,
                        CsvRecord::Bad(format!("field {} is not valid UTF-8 ({e})", i + 1)),
                    )));
                }
            }
            start = end;
        }
        Ok(Some((line, CsvRecord::Fields(fields))))
    }
}

/// Parquet, row by row through the record API (nested lists and structs become JSON).
pub fn read_parquet(
    name: &str,
    file: File,
    limits: Limits,
    sink: &mut dyn FnMut(Record) -> ControlFlow<()>,
) -> Result<(), FileError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(file)
        .map_err(|e| FileError(format!("{name}: not a readable Parquet file: {e}")))?;
    let rows = reader
        .get_row_iter(None)
        .map_err(|e| FileError(format!("{name}: cannot read Parquet rows: {e}")))?;
    for (i, row) in rows.enumerate() {
        let record = i as u64 + 1;
        let row = row.map_err(|e| FileError(format!("{name} row {record}: {e}")))?;
        // Each value is checked as the reader hands it out (a row's size is the sum of its
        // strings and bytes), before the row is turned into JSON.
        let size: usize = row
            .get_column_iter()
            .map(|(k, v)| k.len() + parquet_field_bytes(v))
            .sum();
        let value = if size > limits.max_row_bytes {
            Err(format!(
                "row is longer than the {} byte limit",
                limits.max_row_bytes
            ))
        } else {
            object_or_error(row.to_json_value())
        };
        if sink(Record {
            record,
            line: None,
            value,
        })
        .is_break()
        {
            return Ok(());
        }
    }
    Ok(())
}

/// The bytes a Parquet value holds (strings, binaries, and the same inside lists, maps and
/// groups; 8 for any scalar).
fn parquet_field_bytes(field: &parquet::record::Field) -> usize {
    use parquet::record::Field;
    match field {
        Field::Str(s) => s.len(),
        Field::Bytes(b) => b.data().len(),
        Field::Group(row) => row
            .get_column_iter()
            .map(|(k, v)| k.len() + parquet_field_bytes(v))
            .sum(),
        Field::ListInternal(list) => list.elements().iter().map(parquet_field_bytes).sum(),
        Field::MapInternal(map) => map
            .entries()
            .iter()
            .map(|(k, v)| parquet_field_bytes(k) + parquet_field_bytes(v))
            .sum(),
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn collect(path: &Path, format: FileFormat, limits: Limits) -> Result<Vec<Record>, FileError> {
        let mut out = Vec::new();
        read_records(path, "test-file", format, limits, &mut |r| {
            out.push(r);
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    fn file_with(contents: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(contents).unwrap();
        f
    }

    #[test]
    fn detects_by_name_then_content() {
        assert_eq!(detect_format("a.JSONL", b""), FileFormat::Jsonl);
        assert_eq!(detect_format("a.parquet", b""), FileFormat::Parquet);
        assert_eq!(detect_format("upload", b"PAR1...."), FileFormat::Parquet);
        assert_eq!(detect_format("upload", b"  [{\"a\":1}]"), FileFormat::Json);
        assert_eq!(detect_format("upload", b"{\"a\":1}\n"), FileFormat::Jsonl);
        assert_eq!(
            detect_format("upload", b"question,answer\n"),
            FileFormat::Csv
        );
    }

    #[test]
    fn jsonl_reports_bad_lines_with_numbers_and_skips_blank_ones() {
        let f = file_with(b"{\"q\":1}\n\n{broken\n[1]\n{\"q\":2}");
        let records = collect(f.path(), FileFormat::Jsonl, Limits::default()).unwrap();
        assert_eq!(records.len(), 4);
        assert_eq!((records[1].record, records[1].line), (2, Some(3)));
        assert!(
            records[1]
                .value
                .as_ref()
                .unwrap_err()
                .starts_with("invalid JSON")
        );
        assert_eq!(
            records[2].value.as_ref().unwrap_err(),
            "expected a JSON object, found an array"
        );
        assert_eq!(records[3].value.as_ref().unwrap()["q"], 2);
        assert_eq!(records[3].line, Some(5));
    }

    #[test]
    fn jsonl_row_over_the_limit_is_rejected_and_the_next_row_still_read() {
        let long = format!("{{\"q\":\"{}\"}}\n{{\"q\":\"short\"}}\n", "x".repeat(100));
        let f = file_with(long.as_bytes());
        let records = collect(f.path(), FileFormat::Jsonl, Limits { max_row_bytes: 50 }).unwrap();
        assert_eq!(records.len(), 2);
        assert!(
            records[0]
                .value
                .as_ref()
                .unwrap_err()
                .contains("50 byte limit")
        );
        assert_eq!(records[1].value.as_ref().unwrap()["q"], "short");
    }

    #[test]
    fn json_array_streams_elements_with_lines() {
        let f = file_with(b"[\n{\"q\": 1},\n 7,\n{\"q\": 3}\n]");
        let records = collect(f.path(), FileFormat::Json, Limits::default()).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(
            records[1].value.as_ref().unwrap_err(),
            "expected a JSON object, found a number"
        );
        assert_eq!(records[2].record, 3);
        assert_eq!(records[2].line, Some(4));
    }

    #[test]
    fn broken_json_array_is_a_file_error_with_position() {
        let f = file_with(b"[{\"q\": 1},\n{\"q\": ]");
        let err = collect(f.path(), FileFormat::Json, Limits::default()).unwrap_err();
        assert!(err.0.contains("line 2"), "{}", err.0);
    }

    #[test]
    fn csv_reads_headers_and_flags_short_rows() {
        let f = file_with(b"question,answer\n\"What, exactly?\",42\nlonely\n");
        let records = collect(f.path(), FileFormat::Csv, Limits::default()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0].value.as_ref().unwrap()["question"],
            "What, exactly?"
        );
        assert_eq!(records[1].line, Some(3));
        assert!(
            records[1]
                .value
                .as_ref()
                .unwrap_err()
                .contains("expected 2 fields")
        );
    }

    #[test]
    fn a_json_array_element_over_the_limit_is_rejected_unread_and_the_next_one_read() {
        // 2 MB of one string inside an element, with escapes, brackets and commas in it.
        let big = "a\\\"],{[".repeat(300_000);
        let text = format!("[{{\"q\": 1}},\n{{\"q\": \"{big}\"}},\n{{\"q\": 3}}]\r\n");
        let f = file_with(text.as_bytes());
        let records = collect(
            f.path(),
            FileFormat::Json,
            Limits {
                max_row_bytes: 1000,
            },
        )
        .unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(
            records[1].value.as_ref().unwrap_err(),
            "row is longer than the 1000 byte limit"
        );
        assert_eq!((records[1].record, records[1].line), (2, Some(2)));
        assert_eq!(records[2].value.as_ref().unwrap()["q"], 3);
        assert_eq!(records[2].line, Some(3));
        // A byte order mark, an empty array, and text after the array.
        let f = file_with("\u{feff} [ ]".as_bytes());
        assert!(
            collect(f.path(), FileFormat::Json, Limits::default())
                .unwrap()
                .is_empty()
        );
        let f = file_with(b"[{\"q\": 1}] trailing");
        let err = collect(f.path(), FileFormat::Json, Limits::default()).unwrap_err();
        assert!(err.0.contains("trailing characters"), "{}", err.0);
        let f = file_with(b"[{\"q\": 1},]");
        assert!(collect(f.path(), FileFormat::Json, Limits::default()).is_err());
    }

    #[test]
    fn a_csv_record_over_the_limit_is_rejected_unread_and_the_next_one_read() {
        let big = "x,\"\"\n".repeat(200_000);
        let text = format!(
            "question,answer\r\n\"short\",1\r\n\"{big}\",2\r\n\"multi\nline, \"\"quoted\"\"\",3\r\n"
        );
        let f = file_with(text.as_bytes());
        let records = collect(
            f.path(),
            FileFormat::Csv,
            Limits {
                max_row_bytes: 4096,
            },
        )
        .unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].value.as_ref().unwrap()["answer"], "1");
        assert_eq!(
            records[1].value.as_ref().unwrap_err(),
            "row is longer than the 4096 byte limit"
        );
        assert_eq!(records[1].line, Some(3));
        let last = records[2].value.as_ref().unwrap();
        assert_eq!(last["question"], "multi\nline, \"quoted\"");
        assert_eq!(last["answer"], "3");
        assert_eq!(records[2].line, Some(200_004));
        // Invalid UTF-8 in a field is a bad record, not the end of the file.
        let f = file_with(b"q,a\n\xff\xfe,1\nok,2\n");
        let records = collect(f.path(), FileFormat::Csv, Limits::default()).unwrap();
        assert!(
            records[0]
                .value
                .as_ref()
                .unwrap_err()
                .contains("not valid UTF-8")
        );
        assert_eq!(records[1].value.as_ref().unwrap()["q"], "ok");
    }

    #[test]
    fn not_parquet_is_a_file_error() {
        let f = file_with(b"hello");
        let err = collect(f.path(), FileFormat::Parquet, Limits::default()).unwrap_err();
        assert!(err.0.contains("not a readable Parquet file"), "{}", err.0);
    }
}
