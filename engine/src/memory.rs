//! What training needs in memory, by part, before a run starts (the run form's feasibility
//! estimate and the queue's memory requirement).
//!
//! The activation term follows what this engine's training forward keeps for backward, per
//! layer: the residual stream and norm outputs, the q/k/v projections and their heads, the
//! attention output before and after merging its heads, the MLP's gate, up and product. Which
//! attention and loss run depends on where: on the CPU in f32 attention is one node that keeps
//! no `L × L` scores (K/V heads not repeated), and the SFT and KD losses never hold more than
//! a chunk of the logits (the student's, and a model teacher's), but keep the output layer's
//! gradients from the forward to the backward; a teacher is frozen, so its forward keeps one
//! layer at a time. Elsewhere
//! (GPU, bf16) the composed attention keeps repeated K/V heads, scores and probabilities, and
//! the logits count four times at the start of backward (the logits, their gradient, its
//! zero-filled accumulator and the sum; KD adds the tempered distributions). Two more layers'
//! worth cover backward's transient gradients and the zero-filled buffers candle accumulates them
//! in. The engine benchmark prints the estimate next to the measured peak RSS (which also holds
//! the process itself).

use crate::config::Qwen2Config;
use crate::train::Precision;

/// Bytes by part: f32, or with mixed precision (`Precision::Bf16`) bf16 activations and a bf16
/// teacher beside the f32 weights, gradients and optimizer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Estimate {
    pub n_params: u64,
    /// The weights (f32), plus with mixed precision the bf16 copy the forward computes with.
    pub params_bytes: u64,
    pub grads_bytes: u64,
    /// AdamW's two f32 moments.
    pub optimizer_bytes: u64,
    pub activations_bytes: u64,
    /// A KD teacher's weights and its forward (no gradients); with a top-k table, the table
    /// (the teacher then runs alone before training: `total_bytes` is the larger phase).
    pub teacher_bytes: u64,
    pub total_bytes: u64,
}

const F32: u64 = 4;

/// Parameters of a Qwen2 model with this config (the same count as the loaded model's).
pub fn n_params(c: &Qwen2Config) -> u64 {
    let (h, i, v) = (
        c.hidden_size as u64,
        c.intermediate_size as u64,
        c.vocab_size as u64,
    );
    let (nh, nkv, d) = (
        c.num_attention_heads as u64,
        c.num_key_value_heads as u64,
        c.head_dim() as u64,
    );
    let attention = h * nh * d + nh * d // q with bias
        + 2 * (h * nkv * d + nkv * d)    // k, v with bias
        + nh * d * h; // o, no bias
    let mlp = 3 * h * i;
    let norms = 2 * h;
    let layers = c.num_hidden_layers as u64 * (attention + mlp + norms);
    let embed = v * h;
    let head = if c.tie_word_embeddings { 0 } else { v * h };
    embed + layers + h + head
}

/// Floats one layer keeps for backward over `tokens` = batch × seq positions, with the CPU's
/// fused attention (`fused`) or the composed one.
fn layer_floats(c: &Qwen2Config, batch: u64, seq: u64, fused: bool) -> u64 {
    let t = batch * seq;
    let (h, i) = (c.hidden_size as u64, c.intermediate_size as u64);
    let (nh, nkv, d) = (
        c.num_attention_heads as u64,
        c.num_key_value_heads as u64,
        c.head_dim() as u64,
    );
    if fused {
        t * (7 * h + 4 * nh * d + 4 * nkv * d + 3 * i)
    } else {
        t * (7 * h + 6 * nh * d + 2 * nkv * d + 3 * i) + 2 * batch * nh * seq * seq
    }
}

/// The estimate for training `student` on batches of `batch` × `seq` tokens, with a KD teacher
/// when given, distilled from its top-k table of `positions` target positions when `top_k` is
/// `(k, positions)`; `on_cpu` when the run is known to train on a CPU (otherwise the larger,
/// composed attention and loss are assumed).
pub fn estimate(
    student: &Qwen2Config,
    teacher: Option<&Qwen2Config>,
    top_k: Option<(usize, u64)>,
    batch: usize,
    seq: usize,
    precision: Precision,
    on_cpu: bool,
) -> Estimate {
    let (b, l) = (batch as u64, seq as u64);
    let n = n_params(student);
    let (v, h) = (student.vocab_size as u64, student.hidden_size as u64);
    let logits = b * l * v;
    let layers = student.num_hidden_layers as u64 + 2;
    let fused = on_cpu && precision == Precision::F32;
    // Bytes per activation, and per logit of the compute dtype before the losses widen to f32.
    let (act, compute_logits) = match precision {
        Precision::F32 => (F32, 0),
        Precision::Bf16 => (2, 2 * logits),
    };
    let logit_floats = match (teacher, fused) {
        // The fused SFT loss: one chunk of logits, the output layer's gradients `dX`, `dW`
        // held from forward to backward, and `dW` once more in candle's accumulator.
        (None, true) => {
            crate::head_loss::chunk_rows(v as usize, 4) as u64 * v + b * l * h + 3 * v * h
        }
        // Logits, their gradient, its zero-filled accumulator and the sum (in f32).
        (None, false) => 4 * logits,
        // The fused KD loss: the SFT loss's terms plus a chunk of the teacher's logits (none
        // with a top-k table) and the teacher's hidden states; its output layer is counted
        // with its weights.
        (Some(t), true) => {
            let chunk = crate::head_loss::chunk_rows(v as usize, 4) as u64;
            let teacher_side = match top_k {
                Some(_) => 0,
                None => chunk * t.vocab_size as u64 + b * l * t.hidden_size as u64,
            };
            chunk * v + b * l * h + 3 * v * h + teacher_side
        }
        // KD adds the tempered student and teacher distributions.
        (Some(_), false) => 6 * logits,
    };
    let activations =
        layers * layer_floats(student, b, l, fused) * act + logit_floats * F32 + compute_logits;
    // Weights, plus one layer's forward at a time and its logits (which the fused KD loss
    // makes a chunk at a time, counted above).
    let teacher_forward = teacher.map_or(0, |t| {
        let logits = if fused {
            0
        } else {
            b * l * t.vocab_size as u64 * F32
        };
        (n_params(t) + layer_floats(t, b, l, fused)) * act + logits
    });
    let table = top_k.map(|(k, positions)| crate::topk::TeacherTopK::bytes_for(positions, k));
    let teacher_bytes = table.unwrap_or(teacher_forward);
    let mut e = Estimate {
        n_params: n,
        params_bytes: n * F32 + if act == F32 { 0 } else { n * act },
        grads_bytes: n * F32,
        optimizer_bytes: 2 * n * F32,
        activations_bytes: activations,
        teacher_bytes,
        total_bytes: 0,
    };
    e.total_bytes =
        e.params_bytes + e.grads_bytes + e.optimizer_bytes + e.activations_bytes + e.teacher_bytes;
    if let Some(table) = table {
        // The table is built first, with the teacher and the growing table in memory.
        e.total_bytes = e.total_bytes.max(teacher_forward + table);
    }
    e
}

/// Tokens of one example in the chat template, read with the model folder's `tokenizer.json`
/// (the estimate's sequence length: the dataset's longest row, capped by `max_seq_len`).
pub fn sequence_tokens(
    model_dir: &std::path::Path,
    row: &still_api::ExampleFields,
    template: &crate::data::ChatTemplate,
) -> crate::Result<usize> {
    let path = model_dir.join("tokenizer.json");
    let tokenizer = tokenizers::Tokenizer::from_file(&path)
        .map_err(|e| crate::EngineError::Model(format!("{}: {e}", path.display())))?;
    let prompt = crate::tokenizer::encode(&tokenizer, &template.prompt(&row.question))?;
    let response = crate::tokenizer::encode(&tokenizer, &template.response(row))?;
    Ok(prompt.len() + response.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_count_matches_the_model() {
        for tied in [true, false] {
            let mut config = Qwen2Config::preset("tiny", 300).unwrap();
            config.tie_word_embeddings = tied;
            let model = crate::model::Qwen2::new(
                config.clone(),
                candle_core::DType::F32,
                &candle_core::Device::Cpu,
            )
            .unwrap();
            assert_eq!(n_params(&config), model.n_params() as u64, "tied {tied}");
        }
    }

    fn cpu_total(c: &Qwen2Config) -> u64 {
        estimate(c, None, None, 8, 256, Precision::F32, true).total_bytes
    }

    #[test]
    fn estimate_grows_with_batch_sequence_and_teacher() {
        let c = Qwen2Config::preset("mini", 8192).unwrap();
        let base = estimate(&c, None, None, 8, 256, Precision::F32, false);
        assert_eq!(base.optimizer_bytes, 2 * base.params_bytes);
        assert!(
            estimate(&c, None, None, 16, 256, Precision::F32, false).total_bytes > base.total_bytes
        );
        // Attention is quadratic in the sequence length.
        let long = estimate(&c, None, None, 8, 1024, Precision::F32, false).activations_bytes;
        assert!(
            long > 4 * base.activations_bytes,
            "{long} vs {}",
            base.activations_bytes
        );
        // On the CPU in f32 attention keeps no `L × L` scores and SFT no whole logits: less,
        // and linear in the sequence length.
        let cpu = estimate(&c, None, None, 8, 256, Precision::F32, true).activations_bytes;
        assert!(cpu < base.activations_bytes / 2, "{cpu}");
        let cpu_long = estimate(&c, None, None, 8, 1024, Precision::F32, true).activations_bytes;
        assert!(
            cpu_long > 3 * cpu && cpu_long <= 4 * cpu,
            "{cpu_long} vs {cpu}"
        );
        let kd = estimate(&c, Some(&c), None, 8, 256, Precision::F32, false);
        assert!(kd.teacher_bytes > base.params_bytes && kd.total_bytes > base.total_bytes);
        // On the CPU in f32 KD holds no whole logits either, the student's or the teacher's.
        let kd_cpu = estimate(&c, Some(&c), None, 8, 256, Precision::F32, true);
        let logits = 8 * 256 * 8192 * 4;
        assert!(kd_cpu.total_bytes + 4 * logits < kd.total_bytes);
        assert!(kd_cpu.total_bytes > cpu_total(&c));
        assert_eq!(
            kd.total_bytes,
            kd.params_bytes
                + kd.grads_bytes
                + kd.optimizer_bytes
                + kd.activations_bytes
                + kd.teacher_bytes
        );
    }

    #[test]
    fn mixed_precision_halves_activations_and_adds_a_bf16_weight_copy() {
        let c = Qwen2Config::preset("mini", 8192).unwrap();
        let full = estimate(&c, Some(&c), None, 8, 256, Precision::F32, false);
        let mixed = estimate(&c, Some(&c), None, 8, 256, Precision::Bf16, false);
        assert_eq!(mixed.params_bytes, full.params_bytes * 3 / 2);
        assert_eq!(
            (mixed.grads_bytes, mixed.optimizer_bytes),
            (full.grads_bytes, full.optimizer_bytes)
        );
        assert!(mixed.activations_bytes < full.activations_bytes);
        assert!(mixed.activations_bytes > full.activations_bytes / 2);
        assert!(mixed.teacher_bytes < full.teacher_bytes);
    }

    #[test]
    fn a_top_k_table_keeps_a_large_teacher_out_of_training_memory() {
        let student = Qwen2Config::preset("tiny", 8192).unwrap();
        let teacher = Qwen2Config::preset("small", 8192).unwrap();
        let full = estimate(
            &student,
            Some(&teacher),
            None,
            8,
            256,
            Precision::F32,
            false,
        );
        let table = crate::topk::TeacherTopK::bytes_for(100_000, 32);
        let sparse = estimate(
            &student,
            Some(&teacher),
            Some((32, 100_000)),
            8,
            256,
            Precision::F32,
            false,
        );
        assert_eq!(sparse.teacher_bytes, table);
        assert!(sparse.total_bytes < full.total_bytes);
        // Never below either phase: training with the table, or the teacher building it.
        let training = sparse.params_bytes
            + sparse.grads_bytes
            + sparse.optimizer_bytes
            + sparse.activations_bytes
            + table;
        assert!(sparse.total_bytes >= training);
        assert!(sparse.total_bytes >= n_params(&teacher) * 4 + table);
    }
}
