//! Dataset benchmark: import, search and browse at s1's pool size (59,029 questions with long
//! traces), through the real `still serve` process and its HTTP API.
//!
//! `cargo bench -p still-backend --bench datasets` (add `-- --rows N` for another size). Prints a
//! markdown table with the targets from the foundation issue next to the measurements.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::percentile;

/// A small deterministic generator (xorshift64*), so every run imports the same text.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn vocabulary(rng: &mut Rng) -> Vec<String> {
    const SYLLABLES: &[&str] = &[
        "ka", "lo", "mi", "ter", "an", "qu", "ri", "sol", "ve", "num", "ber", "tri", "an", "gle",
        "sum", "pro", "duct", "di", "vi", "sor", "prime", "fac", "tor", "root", "squ", "are", "cu",
        "be", "li", "ne",
    ];
    (0..3000)
        .map(|_| {
            (0..2 + rng.below(3))
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                .collect()
        })
        .collect()
}

fn sentence(rng: &mut Rng, vocab: &[String], words: usize) -> String {
    let mut out = String::with_capacity(words * 7);
    for i in 0..words {
        if i > 0 {
            out.push(' ');
        }
        match rng.below(10) {
            0 => out.push_str(&format!("{}", rng.below(10_000))),
            1 => out.push_str("therefore"),
            _ => out.push_str(&vocab[rng.below(vocab.len())]),
        }
    }
    out
}

/// Writes `rows` canonical-ish rows with ~4 KB traces; 1% of rows mention "zebrafish".
fn generate(path: &Path, rows: usize) -> std::io::Result<u64> {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let vocab = vocabulary(&mut rng);
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    for i in 0..rows {
        let mut thinking = sentence(&mut rng, &vocab, 480);
        if i % 100 == 7 {
            thinking.push_str(" so the zebrafish count doubles");
        }
        let source = ["olympiad", "amc", "aime", "putnam"][i % 4];
        let row = serde_json::json!({
            "question": sentence(&mut rng, &vocab, 40),
            "thinking": thinking,
            "answer": format!("The answer is {}", rng.below(1000)),
            "source": source,
            "domain": "math",
        });
        serde_json::to_writer(&mut out, &row)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

async fn timed_gets(client: &reqwest::Client, url: &str, n: usize) -> (f64, f64) {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let response = client.get(url).send().await.expect("request");
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        response.bytes().await.expect("body");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    (percentile(&ms, 0.5), percentile(&ms, 0.95))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows = args
        .iter()
        .position(|a| a == "--rows")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(60_000usize);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pool.jsonl");
    let t = Instant::now();
    let size = generate(&file, rows).expect("generate");
    eprintln!(
        "generated {rows} rows ({:.0} MB) in {:.1} s",
        size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let (server, base) =
        common::serve(&dir.path().join("data"), &["--local-workers", "0"], &client).await;
    let rss_idle = peak_rss_mib(server.0.id());

    // Import through the browser's route: a streamed multipart upload.
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::open(&file).await.unwrap(),
    ));
    let part = reqwest::multipart::Part::stream_with_length(body, size).file_name("pool.jsonl");
    let form = reqwest::multipart::Form::new()
        .text("name", "pool")
        .part("file", part);
    let t = Instant::now();
    let response = client
        .post(format!("{base}/api/datasets/import"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let import_s = t.elapsed().as_secs_f64();
    let report: serde_json::Value = response.json().await.unwrap();
    assert_eq!(report["n_imported"], rows as u64);
    let rss_import = peak_rss_mib(server.0.id());

    let searches = [
        ("rare word (1% of rows)", "zebrafish"),
        ("common word (every row)", "therefore"),
        ("two words", "therefore zebrafish"),
        ("number", "1234"),
    ];
    let mut lines = vec![
        "| measurement | result | target |".to_string(),
        "|---|---|---|".to_string(),
        format!(
            "| import {rows} rows ({:.0} MB JSONL, ~4 KB traces), HTTP upload | {import_s:.1} s = {:.0} rows/s | < 30 s |",
            size as f64 / 1e6,
            rows as f64 / import_s
        ),
        format!(
            "| server peak RSS during import | {rss_import:.0} MiB (idle {rss_idle:.0} MiB) | < 500 MB |"
        ),
    ];
    let mut worst_p95: f64 = 0.0;
    for (label, q) in searches {
        let url = format!(
            "{base}/api/datasets/pool/examples?q={}&limit=50",
            q.replace(' ', "%20")
        );
        timed_gets(&client, &url, 3).await;
        let (p50, p95) = timed_gets(&client, &url, 40).await;
        worst_p95 = worst_p95.max(p95);
        lines.push(format!("| search \"{q}\" — {label}, first page of 50 + count | p50 {p50:.1} ms, p95 {p95:.1} ms | p95 < 50 ms |"));
    }
    let (p50, p95) = timed_gets(
        &client,
        &format!("{base}/api/datasets/pool/examples?limit=50"),
        40,
    )
    .await;
    lines.push(format!(
        "| examples table, first page of 50 | p50 {p50:.1} ms, p95 {p95:.1} ms | — |"
    ));
    let deep = rows as i64 - 100;
    let (p50, p95) = timed_gets(
        &client,
        &format!("{base}/api/datasets/pool/examples?limit=50&after={deep}"),
        40,
    )
    .await;
    lines.push(format!(
        "| examples table, a page near the end (keyset) | p50 {p50:.1} ms, p95 {p95:.1} ms | — |"
    ));
    let (p50, p95) = timed_gets(&client, &format!("{base}/api/datasets/pool/stats"), 10).await;
    lines.push(format!(
        "| length statistics over all rows | p50 {p50:.1} ms, p95 {p95:.1} ms | — |"
    ));

    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist");
    if let Some(wasm) = std::fs::read_dir(&dist).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "wasm"))
    }) {
        let bytes = std::fs::read(&wasm).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes).unwrap();
        let gzipped = gz.finish().unwrap().len();
        lines.push(format!(
            "| UI WASM ({}) | {:.0} KiB raw, {:.0} KiB gzip | — |",
            wasm.file_name().unwrap().to_string_lossy(),
            bytes.len() as f64 / 1024.0,
            gzipped as f64 / 1024.0
        ));
    } else {
        lines.push("| UI WASM | not built (run `trunk build --release` first) | — |".into());
    }
    println!("{}", lines.join("\n"));
    if worst_p95 > 50.0 {
        eprintln!("note: a search p95 is above the 50 ms target");
    }
}
