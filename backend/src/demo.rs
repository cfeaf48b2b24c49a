//! Demo data for a new data directory: the GSM8K sample shipped in the binary, the synthetic
//! addition task, and a tiny model made from it — so a first run starts in one click; and the
//! s1 demo: a counting task whose answer needs its thinking, a held-out set, a tiny student,
//! and the recipe (`s1_demo_run`) that trains it and evaluates it at several thinking budgets
//! as it trains, so cutting thinking short visibly costs accuracy on a CPU in minutes.

use sqlx::SqlitePool;
use still_api::{ExportShape, ImportMode, NewModel, Preset};

use crate::data::import::{self, ImportOptions};
use crate::db;
use crate::error::Error;
use crate::error::Result as ApiResult;
use crate::http::Team;
use crate::{AppState, Config};

/// 300 GSM8K training problems (MIT, © 2021 OpenAI; see `demo/LICENSE-gsm8k`).
pub const GSM8K_SAMPLE: &[u8] = include_bytes!("../../demo/gsm8k-sample.jsonl");
pub const GSM8K_SAMPLE_NAME: &str = "gsm8k-sample";
/// The synthetic reasoning task, generated (2-digit addition with column-by-column traces).
pub const ADDITION_NAME: &str = "addition-demo";
/// A tiny model whose tokenizer was trained on the addition dataset: "start a run" in one click.
pub const TINY_MODEL_NAME: &str = "tiny-addition";
const SEEDED_KEY: &str = "demo_seeded";

/// The s1 demo's training traces (counting the `a`s of 6–12 letters), its held-out questions,
/// and its student (seeded once, apart from the first demo, so older data directories get it).
pub const COUNTING_NAME: &str = "counting-demo";
pub const COUNTING_HELD_OUT_NAME: &str = "counting-held-out";
pub const COUNTING_MODEL_NAME: &str = "tiny-counting";
pub const COUNTING_ROWS: usize = 4000;
pub const COUNTING_HELD_OUT_ROWS: usize = 200;
pub const COUNTING_MAX_ITEMS: usize = 12;
const S1_SEEDED_KEY: &str = "demo_s1_seeded";

/// The s1 demo's thinking budgets: from too short to count the list to enough.
pub const S1_DEMO_BUDGETS: [u32; 5] = [4, 8, 16, 32, 64];
/// Its training steps, and how often a checkpoint is saved and evaluated.
pub const S1_DEMO_STEPS: u32 = 300;
pub const S1_DEMO_EVAL_EVERY: u32 = 100;
/// Held-out questions each eval grades.
pub const S1_DEMO_EVAL_ROWS: u32 = 100;

/// The s1 demo as a run request named `name`: SFT of the tiny student on the counting traces
/// (the settings the engine's counting test measures), its checkpoints and final model
/// evaluated on held-out questions at every budget of [`S1_DEMO_BUDGETS`].
pub fn s1_demo_run(name: &str) -> still_api::NewRun {
    still_api::NewRun {
        name: name.into(),
        method: "sft".into(),
        model: COUNTING_MODEL_NAME.into(),
        teacher: None,
        dataset: COUNTING_NAME.into(),
        params: still_api::RunParams {
            max_steps: Some(S1_DEMO_STEPS as usize),
            epochs: Some(100),
            lr: Some(3e-3),
            batch_size: Some(32),
            grad_accum: Some(1),
            max_seq_len: Some(128),
            seed: Some(1),
            checkpoint_every: Some(S1_DEMO_EVAL_EVERY as usize),
            ..Default::default()
        },
        max_attempts: None,
        evals: vec![still_api::RunEval {
            dataset: COUNTING_HELD_OUT_NAME.into(),
            budgets: S1_DEMO_BUDGETS
                .iter()
                .map(|&max| still_api::BudgetSpec {
                    max_thinking_tokens: Some(max),
                    ..Default::default()
                })
                .collect(),
            decoding: Some(still_api::Decoding {
                max_answer_tokens: 4,
                ..Default::default()
            }),
            preset: None,
            limit: Some(S1_DEMO_EVAL_ROWS),
            every_steps: Some(S1_DEMO_EVAL_EVERY),
        }],
    }
}

/// Rows of the addition demo and the operands' digits.
pub const ADDITION_ROWS: usize = 2000;
pub const ADDITION_DIGITS: usize = 2;
/// The tiny model's vocabulary: digits, operators and a few hundred merges of the task's words.
pub const TINY_MODEL_VOCAB: usize = 400;

/// `GET /api/recipes/s1-demo`: the s1 demo as a run request to post to `/api/runs`, under a
/// name no run has yet (the embedded default's one-click recipe).
pub fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/api/recipes/s1-demo", axum::routing::get(s1_demo_recipe))
}

async fn s1_demo_recipe(
    axum::extract::State(state): axum::extract::State<AppState>,
    team: Team,
) -> ApiResult<axum::Json<still_api::NewRun>> {
    let mut name = "s1-demo".to_string();
    let mut n = 1;
    while crate::runs::store::name_taken(&state.db, team.id(), &name).await? {
        n += 1;
        name = format!("s1-demo-{n}");
    }
    Ok(axum::Json(s1_demo_run(&name)))
}

/// Seeds a new data directory once: the GSM8K sample, the addition task and a tiny model made
/// from it. Deleting them later does not bring them back.
pub async fn seed(pool: &SqlitePool, config: &Config) -> anyhow::Result<()> {
    if db::setting(pool, SEEDED_KEY).await?.is_none() {
        seed_first(pool, config).await?;
    }
    if db::setting(pool, S1_SEEDED_KEY).await?.is_none() {
        seed_s1(pool, config).await?;
    }
    Ok(())
}

/// The s1 demo's data and student.
async fn seed_s1(pool: &SqlitePool, config: &Config) -> anyhow::Result<()> {
    let jsonl = |rows: Vec<still_api::ExampleFields>| -> Vec<u8> {
        rows.iter()
            .flat_map(|row| {
                crate::data::versions::store::export_line(row, ExportShape::Canonical).into_bytes()
            })
            .collect()
    };
    let train = still_engine::synth::counting(COUNTING_MAX_ITEMS, COUNTING_ROWS, 1);
    import_demo(
        pool,
        config,
        COUNTING_NAME,
        Preset::Canonical,
        &jsonl(train),
    )
    .await?;
    // Another seed: held-out lists (a few may repeat a short training list, as in any split of
    // a small space).
    let held_out = still_engine::synth::counting(COUNTING_MAX_ITEMS, COUNTING_HELD_OUT_ROWS, 99);
    import_demo(
        pool,
        config,
        COUNTING_HELD_OUT_NAME,
        Preset::Canonical,
        &jsonl(held_out),
    )
    .await?;
    seed_model(pool, config, COUNTING_MODEL_NAME, COUNTING_NAME, 300).await?;
    db::set_setting(pool, S1_SEEDED_KEY, "1").await?;
    Ok(())
}

/// A tiny model whose tokenizer is trained on `dataset` (already there: left as it is).
async fn seed_model(
    pool: &SqlitePool,
    config: &Config,
    name: &str,
    dataset: &str,
    vocab: usize,
) -> anyhow::Result<()> {
    let model = NewModel {
        name: name.into(),
        preset: Some("tiny".into()),
        tokenizer_dataset: Some(dataset.into()),
        vocab_size: Some(vocab),
        ..Default::default()
    };
    match crate::models::create(pool, &config.data_dir, crate::DEFAULT_TEAM, &model).await {
        Ok(m) => tracing::info!("demo model '{}': {} parameters", m.name, m.n_params),
        Err(Error::Conflict(_)) => {}
        Err(e) => return Err(anyhow::anyhow!("seeding the demo model '{name}': {e}")),
    }
    Ok(())
}

/// The first demo: the GSM8K sample, the addition task and its tiny model.
async fn seed_first(pool: &SqlitePool, config: &Config) -> anyhow::Result<()> {
    import_demo(pool, config, GSM8K_SAMPLE_NAME, Preset::Gsm8k, GSM8K_SAMPLE).await?;
    let mut addition = Vec::new();
    for row in still_engine::synth::addition(ADDITION_DIGITS, ADDITION_ROWS, 1) {
        addition.extend_from_slice(
            crate::data::versions::store::export_line(&row, ExportShape::Canonical).as_bytes(),
        );
    }
    import_demo(pool, config, ADDITION_NAME, Preset::Canonical, &addition).await?;
    seed_model(
        pool,
        config,
        TINY_MODEL_NAME,
        ADDITION_NAME,
        TINY_MODEL_VOCAB,
    )
    .await?;
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
