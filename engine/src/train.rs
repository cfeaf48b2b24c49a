//! The training loop: SFT on teacher traces and logit distillation, with gradient accumulation,
//! the schedule, checkpoints every N steps, and exact resume.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use still_api::ExampleFields;

use crate::data::{self, ChatTemplate, LongExamples, Sequence};
use crate::hf::{self, ModelFolder};
use crate::loss::{self, Divergence};
use crate::optim::{AdamW, AdamWConfig, lr_at};
use crate::topk::TeacherTopK;
use crate::{EngineError, Result};

/// SFT, or logit distillation from a teacher.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "method")]
pub enum Method {
    Sft,
    Kd {
        teacher: PathBuf,
        /// Weight of the distillation term: loss = (1−α)·CE + α·T²·D.
        alpha: f64,
        temperature: f64,
        divergence: Divergence,
        /// Distil against the teacher's top-k next tokens, computed once before training (then
        /// the teacher leaves memory; see [`crate::topk`]). `teacher` may also name such a table
        /// file directly.
        #[serde(default)]
        top_k: Option<usize>,
    },
}

/// Everything a run needs besides the data. Defaults are s1's recipe.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub method: Method,
    pub lr: f64,
    pub epochs: usize,
    /// Stop after this many optimizer steps (the schedule still spans them).
    pub max_steps: Option<usize>,
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// Forward passes per optimizer step (global batch = batch_size × grad_accum).
    pub grad_accum: usize,
    pub max_seq_len: usize,
    pub long_examples: LongExamples,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub max_grad_norm: Option<f64>,
    pub seed: u64,
    /// Save a checkpoint every N optimizer steps (and always at the end).
    pub checkpoint_every: Option<usize>,
    pub template: ChatTemplate,
    /// Where tables computed once per dataset (teacher top-k) are kept and found again; the run's
    /// output folder when unset.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// The dtype the forward and backward compute in (see [`Precision`]).
    #[serde(default)]
    pub precision: Precision,
}

/// `f32` throughout, or `bf16`: mixed precision, with the forward and backward in bf16 over f32
/// master weights, f32 gradients and f32 optimizer state (a teacher, which has no gradients, is
/// held in bf16). It pays on GPUs; on the CPU candle widens bf16 matrix products to f32, so it
/// is slower there than f32 (the engine bench measures both).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            other => Err(EngineError::Config(format!(
                "precision '{other}': expected f32 or bf16"
            ))),
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            method: Method::Sft,
            lr: 1e-5,
            epochs: 5,
            max_steps: None,
            batch_size: 1,
            grad_accum: 16,
            max_seq_len: 4096,
            long_examples: LongExamples::Truncate,
            warmup_ratio: 0.05,
            weight_decay: 1e-4,
            beta1: 0.9,
            beta2: 0.95,
            max_grad_norm: Some(1.0),
            seed: 42,
            checkpoint_every: None,
            template: ChatTemplate::default(),
            cache_dir: None,
            precision: Precision::F32,
        }
    }
}

/// One optimizer step's metrics.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    pub total_steps: usize,
    pub epoch: f64,
    pub loss: f64,
    pub ce: f64,
    pub kd: Option<f64>,
    pub lr: f64,
    pub grad_norm: f64,
    /// Real (non-padding) tokens in this step.
    pub tokens: usize,
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
}

/// What training reports as it goes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    Started {
        total_steps: usize,
        start_step: usize,
        n_examples: usize,
        n_truncated: usize,
        n_skipped: usize,
        n_params: usize,
    },
    Step(StepMetrics),
    /// The teacher's top-k table is ready (computed now, or found from an earlier run).
    TeacherTopK {
        k: usize,
        positions: usize,
        bytes: u64,
        path: PathBuf,
        reused: bool,
        seconds: f64,
    },
    Checkpoint {
        step: usize,
        path: PathBuf,
    },
    Finished {
        steps: usize,
        final_dir: PathBuf,
    },
}

impl Event {
    /// One line for a person, for events that are not metrics (the CLI and the run log use it).
    pub fn message(&self) -> Option<String> {
        match self {
            Event::TeacherTopK {
                k,
                positions,
                bytes,
                path,
                reused,
                seconds,
            } => Some(format!(
                "teacher top-{k}: {positions} positions, {:.1} MiB, {} {}",
                *bytes as f64 / (1u64 << 20) as f64,
                if *reused {
                    "found in".to_string()
                } else {
                    format!("computed in {seconds:.1} s (the teacher then left memory), saved to")
                },
                path.display()
            )),
            _ => None,
        }
    }
}

/// Receives events; the worker forwards them to the server, the CLI prints them.
pub trait Observer {
    fn event(&mut self, event: &Event);
}

impl<F: FnMut(&Event)> Observer for F {
    fn event(&mut self, event: &Event) {
        self(event)
    }
}

/// `trainer_state.json` in a checkpoint folder.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainerState {
    pub step: usize,
    pub total_steps: usize,
    pub config: TrainConfig,
}

/// Where a run writes: `out/checkpoints/step-N`, `out/final`.
pub fn checkpoint_dir(out: &Path, step: usize) -> PathBuf {
    out.join("checkpoints").join(format!("step-{step}"))
}

/// The distillation settings of a KD run.
#[derive(Clone, Copy)]
struct KdTerm {
    alpha: f64,
    temperature: f64,
    divergence: Divergence,
    /// The tokenizer's vocabulary: the divergence covers the first `vocab` logits.
    vocab: usize,
}

/// A KD micro-batch's loss `(1−α)·CE + α·T²·D`, summed over its targets, with the CE and D
/// sums. On the CPU in f32 the output layer, both losses and the teacher's output layer run
/// as one node a chunk of rows at a time ([`crate::head_loss::head_distill_sum`]), so neither
/// model's `[tokens, vocab]` logits exist; elsewhere (bf16, GPU) the composed losses.
fn kd_loss(
    student: &ModelFolder,
    hidden: &Tensor,
    host: &Batch,
    teacher: &Teacher,
    (seq_ids, seqs): (&[usize], &[&Sequence]),
    kd: KdTerm,
) -> Result<(Tensor, f64, f64)> {
    let (ids, weights, lens) = (&host.ids_t, &host.weights_t, &host.lengths);
    let l = ids.dim(1)?;
    /// The teacher with what it gives this batch: a model's final hidden states.
    enum Side<'a> {
        Model(&'a ModelFolder, Tensor),
        TopK(&'a TeacherTopK),
    }
    let side = match teacher {
        Teacher::Model(t) => Side::Model(t, t.model.forward_hidden(ids, lens)?.detach()),
        Teacher::TopK(table) => Side::TopK(table),
    };
    let teacher_hidden = match &side {
        Side::Model(_, th) => Some(th),
        Side::TopK(_) => None,
    };
    if crate::head_loss::distill_fused(hidden, teacher_hidden) {
        let rows = match side {
            Side::Model(t, th) => crate::head_loss::TeacherRows::Model {
                hidden: th.flatten_to(1)?,
                weight: t.model.lm_head().clone(),
            },
            Side::TopK(table) => {
                let (indices, logprobs) = table.batch_rows(seq_ids, seqs, l);
                crate::head_loss::TeacherRows::TopK {
                    k: table.k(),
                    indices,
                    logprobs,
                }
            }
        };
        let distill = crate::head_loss::Distill {
            alpha: kd.alpha,
            temperature: kd.temperature,
            divergence: kd.divergence,
            vocab: kd.vocab,
            teacher: rows,
        };
        return loss::next_token_distill_sum(
            hidden,
            student.model.lm_head(),
            &host.ids,
            &host.weights,
            distill,
        );
    }
    let logits = student.model.logits(hidden)?;
    let ce = loss::cross_entropy_sum(&logits, ids, weights)?;
    let s_logits = logits.narrow(2, 0, kd.vocab)?;
    let d = match side {
        Side::Model(t, th) => {
            let t_logits = t.model.logits(&th)?.detach();
            loss::distill_sum(
                &s_logits,
                &t_logits.narrow(2, 0, kd.vocab)?,
                weights,
                kd.temperature,
                kd.divergence,
            )?
        }
        Side::TopK(table) => {
            let (idx, lp) = table.batch(seq_ids, seqs, l, ids.device())?;
            loss::distill_topk_sum(&s_logits, &idx, &lp, weights, kd.temperature, kd.divergence)?
        }
    };
    let scalar = |t: &Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
    let (ce_value, d_value) = (scalar(&ce)?, scalar(&d)?);
    let tt = kd.temperature * kd.temperature;
    let total = ((ce * (1.0 - kd.alpha))? + (d * (kd.alpha * tt))?)?;
    Ok((total, ce_value, d_value))
}

/// A micro-batch, right-padded to its longest sequence: ids and loss weights row-major
/// `[B·L]` on the host, and as `[B, L]` tensors on the device.
struct Batch {
    ids: Vec<u32>,
    weights: Vec<f32>,
    lengths: Vec<usize>,
    ids_t: Tensor,
    weights_t: Tensor,
}

fn batch_tensors(seqs: &[&Sequence], device: &Device) -> Result<Batch> {
    let l = seqs.iter().map(|s| s.ids.len()).max().unwrap_or(1);
    let mut ids = Vec::with_capacity(seqs.len() * l);
    let mut weights = Vec::with_capacity(seqs.len() * l);
    let mut lengths = Vec::with_capacity(seqs.len());
    for s in seqs {
        ids.extend_from_slice(&s.ids);
        ids.extend(std::iter::repeat_n(0u32, l - s.ids.len()));
        weights.extend(s.train.iter().map(|&t| if t { 1f32 } else { 0.0 }));
        weights.extend(std::iter::repeat_n(0f32, l - s.ids.len()));
        lengths.push(s.ids.len());
    }
    Ok(Batch {
        ids_t: Tensor::from_slice(&ids, (seqs.len(), l), device)?,
        weights_t: Tensor::from_slice(&weights, (seqs.len(), l), device)?,
        ids,
        weights,
        lengths,
    })
}

/// Targets of a sequence: trained tokens after the first position.
fn n_targets(s: &Sequence) -> usize {
    s.train.iter().skip(1).filter(|&&t| t).count()
}

fn add_grads(
    acc: &mut Option<GradStore>,
    grads: GradStore,
    vars: &[(String, candle_core::Var)],
) -> Result<()> {
    match acc {
        None => *acc = Some(grads),
        Some(total) => {
            for (_, var) in vars {
                if let Some(g) = grads.get(var) {
                    let sum = match total.get(var) {
                        Some(prev) => (prev + g)?,
                        None => g.clone(),
                    };
                    total.insert(var, sum);
                }
            }
        }
    }
    Ok(())
}

/// Trains `student` on `rows`, writing checkpoints and the final HF folder under `out`.
/// With `resume`, continues from a checkpoint folder written by an earlier call with the same
/// config and data: the loss curve then continues exactly as if never interrupted.
pub fn train(
    student: ModelFolder,
    rows: &[ExampleFields],
    config: &TrainConfig,
    out: &Path,
    resume: Option<&Path>,
    observer: &mut dyn Observer,
    stop: Option<Arc<AtomicBool>>,
) -> Result<PathBuf> {
    if config.batch_size == 0 || config.grad_accum == 0 || config.epochs == 0 {
        return Err(EngineError::Config(
            "batch_size, grad_accum and epochs must be at least 1".into(),
        ));
    }
    let mut student = student;
    if config.precision == Precision::Bf16 {
        if student.model.dtype != DType::F32 {
            return Err(EngineError::Config(format!(
                "precision bf16 keeps an f32 master copy of the weights; the model was loaded in {:?}",
                student.model.dtype
            )));
        }
        student.model.set_compute_dtype(DType::BF16);
    }
    let device = student.model.device.clone();
    let prepared = data::prepare(
        rows,
        &student.tokenizer,
        &config.template,
        config.max_seq_len,
        config.long_examples,
    )?;
    if prepared.sequences.is_empty() {
        return Err(EngineError::Data(format!(
            "no trainable example ({} skipped as longer than max_seq_len {})",
            prepared.n_skipped, config.max_seq_len
        )));
    }
    let teacher = match &config.method {
        Method::Sft => None,
        Method::Kd {
            teacher,
            top_k,
            temperature,
            ..
        } => Some(load_teacher(
            &student,
            teacher,
            *top_k,
            *temperature,
            &prepared.sequences,
            config,
            out,
            observer,
        )?),
    };
    let seqs = &prepared.sequences;
    let lengths: Vec<usize> = seqs.iter().map(|s| s.ids.len()).collect();
    let batches_per_epoch = seqs.len().div_ceil(config.batch_size);
    let steps_per_epoch = batches_per_epoch.div_ceil(config.grad_accum);
    let schedule_steps = steps_per_epoch * config.epochs;
    let total_steps = config
        .max_steps
        .map_or(schedule_steps, |m| m.min(schedule_steps));
    let warmup = (config.warmup_ratio * total_steps as f64).ceil() as usize;

    let vars = student.model.named_vars();
    let mut optimizer = AdamW::new(
        vars.clone(),
        AdamWConfig {
            lr: config.lr,
            beta1: config.beta1,
            beta2: config.beta2,
            eps: 1e-8,
            weight_decay: config.weight_decay,
            max_grad_norm: config.max_grad_norm,
        },
    )?;
    let mut start_step = 0;
    if let Some(dir) = resume {
        let state: TrainerState =
            serde_json::from_str(&std::fs::read_to_string(dir.join("trainer_state.json"))?)
                .map_err(|e| EngineError::Checkpoint(format!("{}: {e}", dir.display())))?;
        if state.config.precision != config.precision {
            return Err(EngineError::Checkpoint(format!(
                "{}: it was written by a {:?} run, this run is {:?}",
                dir.display(),
                state.config.precision,
                config.precision
            )));
        }
        if state.total_steps != total_steps {
            return Err(EngineError::Checkpoint(format!(
                "{}: it was written for {} total steps, this run has {total_steps} (different data or config)",
                dir.display(),
                state.total_steps
            )));
        }
        student.model.load_weights(&hf::weight_files(dir)?)?;
        optimizer.load(&dir.join("optimizer.safetensors"))?;
        start_step = state.step;
    }
    observer.event(&Event::Started {
        total_steps,
        start_step,
        n_examples: seqs.len(),
        n_truncated: prepared.n_truncated,
        n_skipped: prepared.n_skipped,
        n_params: student.model.n_params(),
    });

    let started = Instant::now();
    let mut epoch_cache: Option<(usize, Vec<Vec<usize>>)> = None;
    for step in start_step..total_steps {
        if stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
            return Err(EngineError::Cancelled);
        }
        let step_started = Instant::now();
        let epoch = step / steps_per_epoch;
        if epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
            epoch_cache = Some((
                epoch,
                data::epoch_batches(&lengths, config.batch_size, config.seed, epoch),
            ));
        }
        let batches = &epoch_cache.as_ref().expect("set above").1;
        let first = (step % steps_per_epoch) * config.grad_accum;
        let group: Vec<&Vec<usize>> = batches.iter().skip(first).take(config.grad_accum).collect();
        let group_targets: usize = group
            .iter()
            .flat_map(|b| b.iter())
            .map(|&i| n_targets(&seqs[i]))
            .sum();
        let denom = group_targets.max(1) as f64;
        let (mut ce_total, mut kd_total, mut tokens) = (0f64, 0f64, 0usize);
        let mut grads: Option<GradStore> = None;
        for batch in group {
            let batch_seqs: Vec<&Sequence> = batch.iter().map(|&i| &seqs[i]).collect();
            tokens += batch_seqs.iter().map(|s| s.ids.len()).sum::<usize>();
            let host = batch_tensors(&batch_seqs, &device)?;
            let (ids, lens) = (&host.ids_t, &host.lengths);
            let hidden = student.model.forward_hidden(ids, lens)?;
            // The loss summed over the micro-batch's targets, with its CE and KD parts.
            let (total, ce, kd) = match (&config.method, &teacher) {
                (
                    Method::Kd {
                        alpha,
                        temperature,
                        divergence,
                        ..
                    },
                    Some(t),
                ) => {
                    let kd = KdTerm {
                        alpha: *alpha,
                        temperature: *temperature,
                        divergence: *divergence,
                        vocab: student.tokenizer.get_vocab_size(true),
                    };
                    kd_loss(&student, &hidden, &host, t, (batch, &batch_seqs), kd)?
                }
                // SFT never needs the logits as a whole: the output layer and its loss are one
                // node that goes through them a chunk of rows at a time.
                _ => {
                    let ce = loss::next_token_cross_entropy_sum(
                        &hidden,
                        student.model.lm_head(),
                        &host.ids,
                        &host.weights,
                    )?;
                    let value = ce.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    (ce, value, 0.0)
                }
            };
            ce_total += ce / denom;
            kd_total += kd / denom;
            add_grads(&mut grads, (total / denom)?.backward()?, &vars)?;
        }
        let lr = lr_at(config.lr, step, warmup, total_steps);
        let grad_norm = optimizer.step(grads.as_ref().expect("a step has batches"), lr)?;
        let loss = match &config.method {
            Method::Kd {
                alpha, temperature, ..
            } => (1.0 - alpha) * ce_total + alpha * temperature * temperature * kd_total,
            Method::Sft => ce_total,
        };
        let done = step + 1;
        let elapsed = step_started.elapsed().as_secs_f64();
        observer.event(&Event::Step(StepMetrics {
            step: done,
            total_steps,
            epoch: done as f64 / steps_per_epoch as f64,
            loss,
            ce: ce_total,
            kd: teacher.as_ref().map(|_| kd_total),
            lr,
            grad_norm,
            tokens,
            tokens_per_s: tokens as f64 / elapsed.max(1e-9),
            elapsed_s: started.elapsed().as_secs_f64(),
        }));
        let at_interval = config
            .checkpoint_every
            .is_some_and(|n| n > 0 && done % n == 0);
        if at_interval && done < total_steps {
            let dir = checkpoint_dir(out, done);
            save_checkpoint(&dir, &student, &optimizer, done, total_steps, config)?;
            observer.event(&Event::Checkpoint {
                step: done,
                path: dir,
            });
        }
    }
    let last = checkpoint_dir(out, total_steps);
    save_checkpoint(
        &last,
        &student,
        &optimizer,
        total_steps,
        total_steps,
        config,
    )?;
    observer.event(&Event::Checkpoint {
        step: total_steps,
        path: last,
    });
    let final_dir = out.join("final");
    hf::save(
        &final_dir,
        &student.model,
        &student.tokenizer,
        &student.special,
    )?;
    observer.event(&Event::Finished {
        steps: total_steps,
        final_dir: final_dir.clone(),
    });
    Ok(final_dir)
}

/// The teacher during training: a model beside the student, or its precomputed top-k table.
enum Teacher {
    Model(Box<ModelFolder>),
    TopK(TeacherTopK),
}

/// Loads the teacher a KD run distils from. With `top_k`, the table is found in the cache (or
/// computed with the teacher, which then leaves memory) before the student trains.
#[allow(clippy::too_many_arguments)]
fn load_teacher(
    student: &ModelFolder,
    teacher: &Path,
    top_k: Option<usize>,
    temperature: f64,
    seqs: &[Sequence],
    config: &TrainConfig,
    out: &Path,
    observer: &mut dyn Observer,
) -> Result<Teacher> {
    let ready = |table: &TeacherTopK, path: &Path, reused: bool, seconds: f64| Event::TeacherTopK {
        k: table.meta.k,
        positions: table.meta.positions,
        bytes: table.bytes(),
        path: path.to_path_buf(),
        reused,
        seconds,
    };
    if teacher.is_file() {
        let table = TeacherTopK::load(teacher)?;
        if top_k.is_some_and(|k| k != table.meta.k) {
            return Err(EngineError::Config(format!(
                "{}: a top-{} table, the run asks for top-{}",
                teacher.display(),
                table.meta.k,
                top_k.unwrap_or_default()
            )));
        }
        table.check(seqs, &student.tokenizer, temperature)?;
        observer.event(&ready(&table, teacher, true, 0.0));
        return Ok(Teacher::TopK(table));
    }
    let Some(k) = top_k else {
        let mut t = hf::load(
            teacher,
            student.model.compute_dtype(),
            &student.model.device,
        )?;
        // A teacher only runs forward: no graph, no activations kept.
        t.model.freeze();
        check_same_vocabulary(student, &t)?;
        return Ok(Teacher::Model(Box::new(t)));
    };
    let path = config
        .cache_dir
        .as_deref()
        .unwrap_or(out)
        .join(crate::topk::cache_file_name(
            teacher,
            student.model.compute_dtype(),
            seqs,
            k,
            temperature,
        ));
    if path.is_file() {
        // A damaged or mismatched table is computed again rather than trusted.
        if let Ok(table) = TeacherTopK::load(&path)
            && table.check(seqs, &student.tokenizer, temperature).is_ok()
        {
            observer.event(&ready(&table, &path, true, 0.0));
            return Ok(Teacher::TopK(table));
        }
    }
    let started = Instant::now();
    let mut t = hf::load(
        teacher,
        student.model.compute_dtype(),
        &student.model.device,
    )?;
    // A teacher only runs forward: no graph, no activations kept.
    t.model.freeze();
    check_same_vocabulary(student, &t)?;
    let table = TeacherTopK::compute(&t, seqs, k, temperature, config.batch_size, &mut |_, _| {})?;
    drop(t);
    table.save(&path)?;
    observer.event(&ready(
        &table,
        &path,
        false,
        started.elapsed().as_secs_f64(),
    ));
    Ok(Teacher::TopK(table))
}

fn save_checkpoint(
    dir: &Path,
    student: &ModelFolder,
    optimizer: &AdamW,
    step: usize,
    total_steps: usize,
    config: &TrainConfig,
) -> Result<()> {
    // Written beside, then renamed: a crash never leaves a half checkpoint under the real name.
    let tmp = dir.with_extension("partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    hf::save(&tmp, &student.model, &student.tokenizer, &student.special)?;
    optimizer.save(&tmp.join("optimizer.safetensors"))?;
    let state = TrainerState {
        step,
        total_steps,
        config: config.clone(),
    };
    std::fs::write(
        tmp.join("trainer_state.json"),
        serde_json::to_string_pretty(&state).expect("serialises"),
    )?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    // Every file flushed before the rename and the new name after it: a power cut never leaves
    // a checkpoint folder whose files are still in the page cache.
    crate::fsio::rename_durably(&tmp, dir)?;
    Ok(())
}

/// Logit distillation compares distributions token by token: both models must share the
/// tokenizer's vocabulary exactly.
pub fn check_same_vocabulary(student: &ModelFolder, teacher: &ModelFolder) -> Result<()> {
    let (s, t) = (
        student.tokenizer.get_vocab(true),
        teacher.tokenizer.get_vocab(true),
    );
    if s.len() != t.len() {
        return Err(EngineError::Config(format!(
            "teacher {} has a vocabulary of {} tokens, the student {}: logit distillation needs the same tokenizer",
            teacher.path.display(),
            t.len(),
            s.len()
        )));
    }
    if let Some((token, id)) = s.iter().find(|(token, id)| t.get(*token) != Some(id)) {
        return Err(EngineError::Config(format!(
            "teacher {} and the student tokenise differently (token {token:?} is id {id} in the student, {:?} in the teacher): \
             logit distillation needs the same tokenizer",
            teacher.path.display(),
            t.get(token)
        )));
    }
    Ok(())
}
