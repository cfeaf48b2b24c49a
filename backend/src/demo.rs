//! Demo data for a new data directory: the GSM8K sample shipped in the binary, the synthetic
//! addition task, and a tiny model made from it — so a first run starts in one click.

use sqlx::SqlitePool;
use still_api::{ExportShape, ImportMode, NewModel, Preset};

use crate::Config;
use crate::data::import::{self, ImportOptions};
use crate::db;
use crate::error::Error;

/// 300 GSM8K training problems (MIT, © 2021 OpenAI; see `demo/LICENSE-gsm8k`).
pub const GSM8K_SAMPLE: &[u8] = include_bytes!("../../demo/gsm8k-sample.jsonl");
pub const GSM8K_SAMPLE_NAME: &str = "gsm8k-sample";
/// The synthetic reasoning task, generated (2-digit addition with column-by-column traces).
pub const ADDITION_NAME: &str = "addition-demo";
/// A tiny model whose tokenizer was trained on the addition dataset: "start a run" in one click.
pub const TINY_MODEL_NAME: &str = "tiny-addition";
const SEEDED_KEY: &str = "demo_seeded";

/// Rows of the addition demo and the operands' digits.
pub const ADDITION_ROWS: usize = 2000;
pub const ADDITION_DIGITS: usize = 2;
/// The tiny model's vocabulary: digits, operators and a few hundred merges of the task's words.
pub const TINY_MODEL_VOCAB: usize = 400;

/// Seeds a new data directory once: the GSM8K sample, the addition task and a tiny model made
/// from it. Deleting them later does not bring them back.
pub async fn seed(pool: &SqlitePool, config: &Config) -> anyhow::Result<()> {
    if db::setting(pool, SEEDED_KEY).await?.is_some() {
        return Ok(());
    }
    import_demo(pool, config, GSM8K_SAMPLE_NAME, Preset::Gsm8k, GSM8K_SAMPLE).await?;
    let mut addition = Vec::new();
    for row in still_engine::synth::addition(ADDITION_DIGITS, ADDITION_ROWS, 1) {
        addition.extend_from_slice(
            crate::data::versions::store::export_line(&row, ExportShape::Canonical).as_bytes(),
        );
    }
    import_demo(pool, config, ADDITION_NAME, Preset::Canonical, &addition).await?;
    let model = NewModel {
        name: TINY_MODEL_NAME.into(),
        preset: Some("tiny".into()),
        tokenizer_dataset: Some(ADDITION_NAME.into()),
        vocab_size: Some(TINY_MODEL_VOCAB),
        ..Default::default()
    };
    match crate::models::create(pool, &config.data_dir, crate::DEFAULT_TEAM, &model).await {
        Ok(m) => tracing::info!("demo model '{}': {} parameters", m.name, m.n_params),
        Err(Error::Conflict(_)) => {}
        Err(e) => return Err(anyhow::anyhow!("seeding the demo model: {e}")),
    }
    db::set_setting(pool, SEEDED_KEY, "1").await?;
    Ok(())
}

async fn import_demo(
    pool: &SqlitePool,
    config: &Config,
    name: &str,
    preset: Preset,
    contents: &[u8],
) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .suffix(".jsonl")
        .tempfile_in(config.tmp_dir())?;
    std::fs::write(tmp.path(), contents)?;
    let options = ImportOptions {
        dataset: name.into(),
        preset,
        mode: ImportMode::Create,
        limits: config.limits,
        ..Default::default()
    };
    let file_name = format!("{name}.jsonl");
    match import::import_file(pool, crate::DEFAULT_TEAM, tmp.path(), &file_name, &options).await {
        Ok(report) => tracing::info!("demo data: {}", report.summary()),
        Err(Error::Conflict(_)) => {}
        Err(e) => return Err(anyhow::anyhow!("seeding the demo dataset '{name}': {e}")),
    }
    Ok(())
}
