//! The `still` command line. Subcommands share `--data-dir` (or `STILL_DATA_DIR`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
pub mod engine;
pub mod evals;
pub mod local_workers;

use clap::{Args, Parser, Subcommand};
use still_api::{BadRowPolicy, ExportShape, FieldMapping, FileFormat, ImportMode, Preset};
use tokio::io::AsyncWriteExt;

use crate::data::import::{self, ImportOptions, Limits};
use crate::data::{datasets, versions};
use crate::{Config, DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_TEAM, db};

#[derive(Parser)]
#[command(
    name = "still",
    version,
    about = "Still: a distillation studio (datasets, runs, workers)."
)]
struct Cli {
    /// Where Still keeps its database and files.
    #[arg(
        long,
        env = "STILL_DATA_DIR",
        default_value = "still-data",
        global = true
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the studio (UI + API) and print its URL.
    Serve(ServeArgs),
    /// Import a file into a dataset (the same path as the browser upload).
    Import(ImportArgs),
    /// Write a dataset (or one of its versions) as JSONL.
    Export(ExportArgs),
    /// List datasets: id, name, rows.
    Datasets,
    /// Write a synthetic reasoning dataset (canonical JSONL).
    Synth(engine::SynthArgs),
    /// Models: `still model new`.
    #[command(subcommand)]
    Model(engine::ModelCommand),
    /// Train a model (SFT on traces, or logit distillation).
    Train(engine::TrainArgs),
    /// Compute a teacher's top-k next-token table for a dataset once, for KD runs without the
    /// teacher in memory (`still train --method kd --teacher FILE`).
    TeacherTopk(engine::TeacherTopKArgs),
    /// Generate a completion; with a thinking budget, with s1's budget forcing.
    Generate(evals::GenerateArgs),
    /// Evaluate a model on a dataset at several thinking budgets; prints the per-budget table
    /// and writes per-record results.
    Eval(evals::EvalArgs),
    /// Grade model outputs produced anywhere against reference answers.
    Grade(evals::GradeArgs),
    /// Run jobs for a server (training on this machine's CPU or GPU).
    Worker(WorkerArgs),
    /// Manage worker tokens.
    #[command(subcommand)]
    WorkerToken(WorkerTokenCommand),
    /// Manage API tokens (for scripts and OpenAI-compatible clients of `/v1`).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token and print it (shown once; only its hash is stored).
    Create {
        #[arg(long, default_value = "api")]
        name: String,
    },
    /// Revoke an API token: requests with it are refused from then on.
    Revoke {
        #[arg(long)]
        id: i64,
    },
}

#[derive(Args)]
struct ServeArgs {
    #[arg(long, env = "STILL_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// The built UI (Trunk's output folder).
    #[arg(long, env = "STILL_UI_DIR", default_value = "dist")]
    ui_dir: PathBuf,
    /// Largest accepted upload, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_UPLOAD_BYTES)]
    max_upload_bytes: u64,
    /// Largest accepted row (one JSONL line, CSV record or JSON element), in bytes.
    #[arg(long, default_value_t = Limits::default().max_row_bytes)]
    max_row_bytes: usize,
    /// Do not import the demo dataset into a new data directory.
    #[arg(long)]
    no_demo: bool,
    /// CPU workers to run as child processes (0: none; remote workers still connect).
    #[arg(long, default_value_t = 1)]
    local_workers: usize,
}

#[derive(Args)]
struct WorkerArgs {
    /// The server's URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "STILL_SERVER")]
    server: String,
    /// The token `still worker-token create` printed.
    #[arg(long, env = "STILL_WORKER_TOKEN")]
    token: String,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Where downloaded models, datasets and run outputs go.
    #[arg(long, default_value = "still-worker")]
    work_dir: PathBuf,
    /// Model folders on this machine (DIR/<model name>): used instead of downloading, and the
    /// only source of models registered with `"location": "workers"`.
    #[arg(long)]
    models_dir: Option<PathBuf>,
    /// Exit when this process is gone (`still serve` sets it for its local workers).
    #[arg(long, hide = true)]
    parent_pid: Option<u32>,
}

#[derive(Subcommand)]
enum WorkerTokenCommand {
    /// Create a worker identity and print its token (shown once; only its hash is stored).
    Create {
        #[arg(long)]
        name: String,
    },
    /// Revoke a worker's token: its calls get 401 from then on.
    Revoke {
        #[arg(long)]
        id: i64,
    },
}

#[derive(Args)]
struct ImportArgs {
    file: PathBuf,
    /// The dataset to create (or, with --append, to add to).
    #[arg(long)]
    dataset: String,
    #[arg(long, default_value = "auto", value_parser = parse_format)]
    format: FileFormat,
    #[arg(long, default_value = "auto", value_parser = parse_preset)]
    preset: Preset,
    /// `skip` imports the good rows and reports the bad ones; `reject` refuses the whole file.
    #[arg(long, default_value = "skip", value_parser = parse_policy)]
    policy: BadRowPolicy,
    /// Add to an existing dataset instead of failing when the name is taken.
    #[arg(long)]
    append: bool,
    /// A hand field mapping as JSON, e.g. '{"question":"prompt","answer":"output"}'.
    #[arg(long)]
    mapping: Option<String>,
    /// Where a combined thinking+answer field splits (e.g. '</think>' or '**Final Answer**').
    #[arg(long)]
    split_marker: Option<String>,
    #[arg(long, default_value_t = Limits::default().max_row_bytes)]
    max_row_bytes: usize,
}

#[derive(Args)]
struct ExportArgs {
    /// Dataset id or name.
    #[arg(long)]
    dataset: String,
    /// A version number; the live rows when absent.
    #[arg(long)]
    version: Option<i64>,
    /// `canonical` or `s1k`.
    #[arg(long, default_value = "canonical", value_parser = parse_shape)]
    shape: ExportShape,
    /// Output file; standard output when absent.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_format(s: &str) -> Result<FileFormat, String> {
    FileFormat::parse(s)
        .ok_or_else(|| format!("'{s}' is not one of auto, jsonl, json, csv, parquet"))
}
fn parse_preset(s: &str) -> Result<Preset, String> {
    Preset::parse(s)
        .ok_or_else(|| format!("'{s}' is not one of auto, s1k, gsm8k, math, traces, generic"))
}
fn parse_policy(s: &str) -> Result<BadRowPolicy, String> {
    BadRowPolicy::parse(s).ok_or_else(|| format!("'{s}' is not one of skip, reject"))
}
fn parse_shape(s: &str) -> Result<ExportShape, String> {
    match s {
        "canonical" => Ok(ExportShape::Canonical),
        "s1k" => Ok(ExportShape::S1k),
        _ => Err(format!("'{s}' is not one of canonical, s1k")),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("still_backend=info,tower_http=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

/// Runs the command line; errors are printed and give a non-zero exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Engine commands are synchronous and CPU-bound: no async runtime for them.
    let engine_result = match cli.command {
        Command::Synth(args) => Some(engine::synth_cmd(args)),
        Command::Model(command) => Some(engine::model_cmd(command)),
        Command::Train(args) => Some(engine::train_cmd(args)),
        Command::TeacherTopk(args) => Some(engine::teacher_topk_cmd(args)),
        Command::Generate(args) => Some(evals::generate_cmd(args)),
        Command::Eval(args) => Some(evals::eval_cmd(args)),
        Command::Grade(args) => Some(evals::grade_cmd(args)),
        Command::Worker(args) => Some(still_worker::run(still_worker::WorkerOptions {
            server: args.server,
            token: args.token,
            device: args.device,
            work_dir: args.work_dir,
            models_dir: args.models_dir,
            max_jobs: None,
            parent_pid: args.parent_pid,
        })),
        command => {
            return run_async(Cli {
                data_dir: cli.data_dir,
                command,
            });
        }
    };
    match engine_result {
        Some(Ok(())) | None => ExitCode::SUCCESS,
        Some(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_async(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn open_db(data_dir: &std::path::Path) -> anyhow::Result<sqlx::SqlitePool> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    db::open(&data_dir.join("still.db")).await
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            init_tracing();
            let config = Config {
                data_dir: cli.data_dir,
                ui_dir: args.ui_dir,
                max_upload_bytes: args.max_upload_bytes,
                limits: Limits {
                    max_row_bytes: args.max_row_bytes,
                },
                seed_demo: !args.no_demo,
                lease_seconds: crate::jobs::LEASE_SECONDS,
            };
            if !config.ui_dir.join("index.html").is_file() {
                tracing::warn!(
                    "no UI in {} (build it with `trunk build --release`)",
                    config.ui_dir.display()
                );
            }
            if !args.addr.ip().is_loopback() {
                eprintln!(
                    "warning: serving on {}, which is not a loopback address. Still has no \
                     accounts yet: anyone who can reach this port can read, change and delete \
                     every dataset, model and run. Serve on 127.0.0.1 and reach it through an SSH \
                     tunnel, or keep the port behind a firewall.",
                    args.addr
                );
            }
            let server = crate::start(config, args.addr).await?;
            let _workers = local_workers::spawn(
                &server.state.db,
                &server.state.config.data_dir,
                server.url(),
                args.local_workers,
            )
            .await?;
            println!("Still is serving at {}/", server.url());
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            println!("shutting down");
            server.stop().await
        }
        Command::Import(args) => {
            let pool = open_db(&cli.data_dir).await?;
            let mapping = args
                .mapping
                .as_deref()
                .map(serde_json::from_str::<FieldMapping>)
                .transpose()
                .context("--mapping is not a field mapping")?;
            let options = ImportOptions {
                dataset: args.dataset,
                format: args.format,
                preset: args.preset,
                policy: args.policy,
                mode: if args.append {
                    ImportMode::Append
                } else {
                    ImportMode::Create
                },
                mapping,
                split_marker: args.split_marker,
                limits: Limits {
                    max_row_bytes: args.max_row_bytes,
                },
            };
            let file_name = args
                .file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !args.file.is_file() {
                anyhow::bail!("{}: no such file", args.file.display());
            }
            let report =
                import::import_file(&pool, DEFAULT_TEAM, &args.file, &file_name, &options).await?;
            println!("{}", report.summary());
            pool.close().await;
            Ok(())
        }
        Command::Export(args) => {
            let pool = open_db(&cli.data_dir).await?;
            let dataset = datasets::store::resolve(&pool, DEFAULT_TEAM, &args.dataset).await?;
            let version = match args.version {
                Some(v) => Some(versions::store::find(&pool, dataset.id, v).await?),
                None => None,
            };
            let (tx, mut rx) = tokio::sync::mpsc::channel(4);
            let producer = tokio::spawn(versions::store::export_rows(
                pool.clone(),
                dataset.id,
                version,
                args.shape,
                None,
                tx,
            ));
            let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &args.out {
                Some(path) => Box::new(
                    tokio::fs::File::create(path)
                        .await
                        .with_context(|| format!("creating {}", path.display()))?,
                ),
                None => Box::new(tokio::io::stdout()),
            };
            while let Some(chunk) = rx.recv().await {
                out.write_all(&chunk?).await?;
            }
            out.flush().await?;
            producer.await??;
            Ok(())
        }
        Command::Datasets => {
            let pool = open_db(&cli.data_dir).await?;
            for d in datasets::store::list(&pool, DEFAULT_TEAM).await? {
                println!("{}\t{}\t{} rows", d.id, d.name, d.n_rows);
            }
            Ok(())
        }
        Command::Token(command) => {
            let pool = open_db(&cli.data_dir).await?;
            match command {
                TokenCommand::Create { name } => {
                    let name = crate::names::validate_name("token", &name)?;
                    let (id, token) =
                        crate::http::tokens::create(&pool, crate::DEFAULT_TEAM, &name).await?;
                    println!("token {id} '{name}': {token}");
                }
                TokenCommand::Revoke { id } => {
                    crate::http::tokens::revoke(&pool, id).await?;
                    println!("token {id}: revoked");
                }
            }
            Ok(())
        }
        Command::WorkerToken(command) => {
            let pool = open_db(&cli.data_dir).await?;
            match command {
                WorkerTokenCommand::Create { name } => {
                    let (id, token) = crate::jobs::workers::create_worker(&pool, &name).await?;
                    println!("worker {id} '{name}': {token}");
                }
                WorkerTokenCommand::Revoke { id } => {
                    crate::jobs::workers::revoke_worker(&pool, id).await?;
                    println!("worker {id}: token revoked");
                }
            }
            Ok(())
        }
        Command::Synth(_)
        | Command::Model(_)
        | Command::Train(_)
        | Command::TeacherTopk(_)
        | Command::Generate(_)
        | Command::Eval(_)
        | Command::Grade(_)
        | Command::Worker(_) => {
            unreachable!("engine and worker commands run without the async runtime")
        }
    }
}
