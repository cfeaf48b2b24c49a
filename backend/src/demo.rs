//! Demo data for a new data directory: the GSM8K sample shipped in the binary, the synthetic
//! addition task, and a tiny model made from it — so a first run starts in one click.

use sqlx::SqlitePool;
use still_api::{ImportMode, Preset};

use crate::Config;
use crate::db;
use crate::error::Error;
use crate::import::{self, ImportOptions};

/// 300 GSM8K training problems (MIT, © 2021 OpenAI; see `demo/LICENSE-gsm8k`).
pub const GSM8K_SAMPLE: &[u8] = include_bytes!("../../demo/gsm8k-sample.jsonl");
pub const GSM8K_SAMPLE_NAME: &str = "gsm8k-sample";
/// The synthetic reasoning task, generated (2-digit addition with column-by-column traces).
pub const ADDITION_NAME: &str = "addition-demo";
/// A tiny model whose tokenizer was trained on the addition dataset: "start a run" in one click.
pub const TINY_MODEL_NAME: &str = "tiny-addition";
const SEEDED_KEY: &str = "demo_seeded";

/// Imports the demo datasets once per data directory; deleting them later does not bring them back.
pub async fn seed(pool: &SqlitePool, config: &Config) -> anyhow::Result<()> {
    if db::setting(pool, SEEDED_KEY).await?.is_some() {
        return Ok(());
    }
    let tmp = tempfile::Builder::new()
        .suffix(".jsonl")
        .tempfile_in(config.tmp_dir())?;
    std::fs::write(tmp.path(), GSM8K_SAMPLE)?;
    let options = ImportOptions {
        dataset: GSM8K_SAMPLE_NAME.into(),
        preset: Preset::Gsm8k,
        mode: ImportMode::Create,
        limits: config.limits,
        ..Default::default()
    };
    match import::import_file(
        pool,
        crate::DEFAULT_TEAM,
        tmp.path(),
        "gsm8k-sample.jsonl",
        &options,
    )
    .await
    {
        Ok(report) => tracing::info!("demo data: {}", report.summary()),
        Err(Error::Conflict(_)) => {}
        Err(e) => return Err(anyhow::anyhow!("seeding the demo dataset: {e}")),
    }
    db::set_setting(pool, SEEDED_KEY, "1").await?;
    Ok(())
}
