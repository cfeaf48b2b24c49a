//! Reading source files record by record: JSONL, JSON arrays, CSV and Parquet.
//!
//! Every reader streams: memory stays bounded by one record (at most [`Limits::max_row_bytes`])
//! whatever the file size. A record that cannot be read is handed to the sink as an error with
//! its record and line number, so the caller decides whether to skip it or reject the file; a
//! file that cannot be read at all (a broken JSON array, a file that is not Parquet) is an
//! [`FileError`].

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;
use std::path::Path;

use serde::de::{DeserializeSeed, SeqAccess, Visitor};
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
        FileFormat::Parquet => read_parquet(name, file, sink),
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

/// Counts bytes and newlines read, so JSON array elements get a line number and a size.
/// After [`CountingReader::mark`], it notes the line of the next byte that is neither
/// whitespace nor a comma: the first byte of the next array element.
struct CountingReader<R> {
    inner: R,
    bytes: u64,
    newlines: u64,
    marked: bool,
    element_line: u64,
}

impl<R> CountingReader<R> {
    fn mark(&mut self) {
        self.marked = true;
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.bytes += n as u64;
        for &b in &out[..n] {
            if self.marked && !b.is_ascii_whitespace() && b != b',' {
                self.marked = false;
                self.element_line = self.newlines + 1;
            }
            if b == b'\n' {
                self.newlines += 1;
            }
        }
        Ok(n)
    }
}

/// A JSON array of objects, streamed element by element. A syntax error ends the file (nothing
/// after it can be trusted), an element that is not an object is a bad record.
pub fn read_json_array(
    name: &str,
    file: File,
    limits: Limits,
    sink: &mut dyn FnMut(Record) -> ControlFlow<()>,
) -> Result<(), FileError> {
    // serde_json pulls single bytes from its reader, so the counter sees exactly what was parsed.
    let counting = std::cell::RefCell::new(CountingReader {
        inner: BufReader::with_capacity(1 << 20, file),
        bytes: 0,
        newlines: 0,
        marked: false,
        element_line: 1,
    });
    let reader = RefReader(&counting);
    let mut de = serde_json::Deserializer::from_reader(reader);
    let seed = ArraySeed {
        counting: &counting,
        limits,
        sink,
        stopped: false,
    };
    match seed.deserialize(&mut de).and_then(|()| de.end()) {
        Ok(()) => {}
        Err(e) if e.is_eof() || e.is_syntax() || e.is_data() => {
            return Err(FileError(format!(
                "{name}: not a JSON array of objects (line {}, column {}): {e}",
                e.line(),
                e.column()
            )));
        }
        Err(e) => return Err(FileError(format!("{name}: {e}"))),
    }
    Ok(())
}

struct RefReader<'a, R>(&'a std::cell::RefCell<CountingReader<R>>);

impl<R: Read> Read for RefReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().read(out)
    }
}

struct ArraySeed<'a, 's, R> {
    counting: &'a std::cell::RefCell<CountingReader<R>>,
    limits: Limits,
    sink: &'s mut dyn FnMut(Record) -> ControlFlow<()>,
    stopped: bool,
}

impl<'de, R: Read> DeserializeSeed<'de> for ArraySeed<'_, '_, R> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, R: Read> Visitor<'de> for ArraySeed<'_, '_, R> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut record = 0u64;
        loop {
            let start_bytes = {
                let mut c = self.counting.borrow_mut();
                c.mark();
                c.bytes
            };
            let Some(value) = seq.next_element::<Value>()? else {
                return Ok(());
            };
            let start_line = self.counting.borrow().element_line;
            record += 1;
            if self.stopped {
                continue;
            }
            let size = self.counting.borrow().bytes - start_bytes;
            let value = if size as usize > self.limits.max_row_bytes {
                Err(format!(
                    "row is longer than the {} byte limit",
                    self.limits.max_row_bytes
                ))
            } else {
                object_or_error(value)
            };
            let flow = (self.sink)(Record {
                record,
                line: Some(start_line),
                value,
            });
            if flow.is_break() {
                // Stop handing records out; the rest of the array is still parsed to stay valid.
                self.stopped = true;
                return Ok(());
            }
        }
    }
}

/// CSV with a header row; every value is a string (empty cells are empty strings).
pub fn read_csv(
    name: &str,
    file: File,
    limits: Limits,
    sink: &mut dyn FnMut(Record) -> ControlFlow<()>,
) -> Result<(), FileError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(BufReader::with_capacity(1 << 20, file));
    let headers = reader
        .headers()
        .map_err(|e| FileError(format!("{name}: cannot read the CSV header: {e}")))?
        .clone();
    if headers.is_empty() {
        return Err(FileError(format!("{name}: the CSV header row is empty")));
    }
    let headers: Vec<String> = headers
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_string())
        .collect();
    let mut record_no = 0u64;
    let mut row = csv::StringRecord::new();
    loop {
        let line = reader.position().line() + 1;
        match reader.read_record(&mut row) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                record_no += 1;
                let start_line = row.position().map(|p| p.line()).unwrap_or(line);
                let value = if row.as_slice().len() > limits.max_row_bytes {
                    Err(format!(
                        "row is longer than the {} byte limit",
                        limits.max_row_bytes
                    ))
                } else if row.len() != headers.len() {
                    Err(format!(
                        "expected {} fields as in the header, found {}",
                        headers.len(),
                        row.len()
                    ))
                } else {
                    Ok(headers
                        .iter()
                        .zip(row.iter())
                        .map(|(h, v)| (h.clone(), Value::String(v.to_string())))
                        .collect())
                };
                if sink(Record {
                    record: record_no,
                    line: Some(start_line),
                    value,
                })
                .is_break()
                {
                    return Ok(());
                }
            }
            Err(e) => {
                record_no += 1;
                let at = e.position().map(|p| p.line()).unwrap_or(line);
                match e.kind() {
                    csv::ErrorKind::Utf8 { .. } | csv::ErrorKind::UnequalLengths { .. } => {
                        let flow = sink(Record {
                            record: record_no,
                            line: Some(at),
                            value: Err(format!("unreadable CSV record: {e}")),
                        });
                        if flow.is_break() {
                            return Ok(());
                        }
                    }
                    _ => return Err(FileError(format!("{name} line {at}: {e}"))),
                }
            }
        }
    }
}

/// Parquet, row by row through the record API (nested lists and structs become JSON).
pub fn read_parquet(
    name: &str,
    file: File,
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
        let value = object_or_error(row.to_json_value());
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
    fn not_parquet_is_a_file_error() {
        let f = file_with(b"hello");
        let err = collect(f.path(), FileFormat::Parquet, Limits::default()).unwrap_err();
        assert!(err.0.contains("not a readable Parquet file"), "{}", err.0);
    }
}
