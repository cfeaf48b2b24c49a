//! Files shaped exactly as pandas, pyarrow and Windows-style tools write them import with every
//! row intact (fixtures in tests/data/tool-shapes/, written by its make.py).

use serde_json::Value;
use still_api::{ImportReport, Preset};
use still_tests::{Api, TestServer, test_data};

/// The first `n` rows of a JSONL source file.
fn source_rows(file: &str, n: usize) -> Vec<Value> {
    std::fs::read_to_string(test_data(file))
        .unwrap()
        .lines()
        .take(n)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The dataset's rows as its canonical export.
async fn exported(api: &Api, dataset: &str) -> Vec<Value> {
    let text = api.export(dataset, "").await.text();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn pandas_csv_records_json_and_bom_crlf_jsonl_import_every_row_intact() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let gsm8k = source_rows("gsm8k/test.jsonl", 50);
    for (file, name) in [
        ("tool-shapes/gsm8k_pandas.csv", "pandas-csv"),
        ("tool-shapes/gsm8k_pandas_records.json", "pandas-json"),
        ("tool-shapes/gsm8k_bom_crlf.jsonl", "bom-crlf"),
    ] {
        let report: ImportReport = api.import(&test_data(file), &[("name", name)]).await.ok();
        assert_eq!(report.preset, Preset::Gsm8k, "{file}");
        assert_eq!(
            (report.n_imported, report.n_rejected),
            (50, 0),
            "{file}: {:?}",
            report.rejected
        );
        let rows = exported(&api, name).await;
        for (got, want) in rows.iter().zip(&gsm8k) {
            assert_eq!(got["question"], want["question"], "{file}");
            let (worked, label) = want["answer"]
                .as_str()
                .unwrap()
                .rsplit_once("####")
                .unwrap();
            assert_eq!(got["answer"].as_str().unwrap(), label.trim(), "{file}");
            // Newlines inside quoted CSV fields, `\/` escapes and CRLF ends all come back as
            // the source's text.
            assert_eq!(got["thinking"].as_str().unwrap(), worked.trim(), "{file}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn pyarrow_s1k_parquet_with_a_list_column_imports_with_its_thinking() {
    let server = TestServer::start().await;
    let api = Api::new(&server);
    let report: ImportReport = api
        .import(
            &test_data("tool-shapes/s1k_pyarrow.parquet"),
            &[("name", "s1k-pyarrow")],
        )
        .await
        .ok();
    assert_eq!(report.preset, Preset::S1k);
    assert_eq!((report.n_imported, report.n_rejected), (30, 0));
    let limo = source_rows("traces/limo_deepseek-r1-distill-qwen-32b.jsonl", 30);
    let rows = exported(&api, "s1k-pyarrow").await;
    assert_eq!(rows.len(), 30);
    for (got, want) in rows.iter().zip(&limo) {
        assert_eq!(got["question"], want["question"]);
        let (thinking, _) = want["solution"]
            .as_str()
            .unwrap()
            .rsplit_once("**Final Answer**")
            .unwrap();
        assert_eq!(got["thinking"].as_str().unwrap().trim(), thinking.trim());
        assert_eq!(got["domain"], "math");
        assert_eq!(got["source"], "LIMO");
    }
    server.stop().await;
}
