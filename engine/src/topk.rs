//! Teacher top-k logits, computed once per dataset so a large teacher need not sit in memory
//! while the student trains.
//!
//! For every trained target position of every prepared sequence the file keeps the teacher's
//! `k` most likely next tokens with their log-probabilities at the distillation temperature, and
//! a `k+1`-th "tail" bucket holding the log of all the remaining probability mass. Distillation
//! against it compares teacher and student on those `k+1` outcomes (the student's tail is the
//! exact log-sum-exp of its other tokens, see [`crate::loss::distill_topk_sum`]). With
//! `k = vocab − 1` the buckets are the whole vocabulary and the loss equals full distillation;
//! for smaller `k` it is the divergence between the two distributions coarsened to the teacher's
//! top-k (never more than the full one, for the KL divergences).
//!
//! The file is safetensors: `indices` `[positions, k]` u32, `logprobs` `[positions, k+1]` f32,
//! `offsets` `[sequences + 1]` i64, `sequence_hashes` `[sequences]` i64, and `meta` (JSON as u8).
//! It is held in memory while training: `positions × (8k + 4)` bytes.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor};
use tokenizers::Tokenizer;

use crate::data::Sequence;
use crate::hf::ModelFolder;
use crate::{EngineError, Result};

/// The largest `k` accepted: beyond it the file would approach the size of full logits.
pub const MAX_K: usize = 1024;

/// What a file was computed from; checked before it is used.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TopKMeta {
    pub format: u32,
    pub k: usize,
    pub temperature: f64,
    /// FNV-1a of the tokenizer's `(token, id)` pairs, sorted by id.
    pub vocab_hash: String,
    /// The teacher it came from (its folder, as given).
    pub teacher: String,
    pub sequences: usize,
    pub positions: usize,
}

/// A loaded (or freshly computed) teacher top-k table.
#[derive(Debug, Clone)]
pub struct TeacherTopK {
    pub meta: TopKMeta,
    offsets: Vec<usize>,
    sequence_hashes: Vec<u64>,
    indices: Vec<u32>,
    logprobs: Vec<f32>,
}

fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    hash
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Identifies a tokenised sequence and its loss mask.
pub fn sequence_hash(s: &Sequence) -> u64 {
    let mut h = FNV_START;
    for (&id, &t) in s.ids.iter().zip(&s.train) {
        h = fnv(h, &id.to_le_bytes());
        h = fnv(h, &[u8::from(t)]);
    }
    h
}

/// Identifies a vocabulary: same hash, same tokens with the same ids.
pub fn vocab_hash(tokenizer: &Tokenizer) -> String {
    let mut pairs: Vec<(u32, String)> = tokenizer
        .get_vocab(true)
        .into_iter()
        .map(|(t, id)| (id, t))
        .collect();
    pairs.sort();
    let mut h = FNV_START;
    for (id, token) in &pairs {
        h = fnv(h, &id.to_le_bytes());
        h = fnv(h, token.as_bytes());
        h = fnv(h, &[0xff]);
    }
    format!("{h:016x}")
}

/// A name for the cached table of `(teacher, sequences, k, temperature)`.
/// The teacher's dtype counts too (a bf16 teacher gives slightly other log-probabilities); f32
/// keeps the names tables had before dtypes were part of them.
pub fn cache_file_name(
    teacher: &Path,
    dtype: candle_core::DType,
    seqs: &[Sequence],
    k: usize,
    temperature: f64,
) -> String {
    let mut h = fnv(FNV_START, teacher.to_string_lossy().as_bytes());
    if dtype != candle_core::DType::F32 {
        h = fnv(h, dtype.as_str().as_bytes());
    }
    for s in seqs {
        h = fnv(h, &sequence_hash(s).to_le_bytes());
    }
    h = fnv(h, &(k as u64).to_le_bytes());
    h = fnv(h, &temperature.to_le_bytes());
    format!("teacher-top{k}-{h:016x}.safetensors")
}

/// Target positions of a sequence: `t` such that token `t+1` is trained.
fn targets(s: &Sequence) -> impl Iterator<Item = usize> + '_ {
    (0..s.ids.len().saturating_sub(1)).filter(|&t| s.train[t + 1])
}

/// The `k` largest entries of `row` (ties to the lower id), highest first, and the log of the
/// probability mass of all the others, from a row of log-probabilities.
pub(crate) fn top_k_row(row: &[f32], k: usize) -> (Vec<u32>, Vec<f32>, f32) {
    let mut order: Vec<u32> = (0..row.len() as u32).collect();
    let by_value = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    order.select_nth_unstable_by(k - 1, by_value);
    let (top, rest) = order.split_at_mut(k);
    top.sort_by(by_value);
    let max = rest
        .iter()
        .map(|&i| f64::from(row[i as usize]))
        .fold(f64::NEG_INFINITY, f64::max);
    let tail = if max == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else {
        max + rest
            .iter()
            .map(|&i| (f64::from(row[i as usize]) - max).exp())
            .sum::<f64>()
            .ln()
    };
    let values = top.iter().map(|&i| row[i as usize]).collect();
    (top.to_vec(), values, tail as f32)
}

impl TeacherTopK {
    /// Runs `teacher` over `seqs` (`batch_size` sequences per forward, longest first) and keeps
    /// the top `k` log-probabilities at `temperature` for every target position. `progress` gets
    /// (sequences done, sequences).
    pub fn compute(
        teacher: &ModelFolder,
        seqs: &[Sequence],
        k: usize,
        temperature: f64,
        batch_size: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let vocab = teacher.tokenizer.get_vocab_size(true);
        if k == 0 || k >= vocab || k > MAX_K {
            return Err(EngineError::Config(format!(
                "teacher top-k: k = {k}, it must be between 1 and min({MAX_K}, vocabulary − 1 = {})",
                vocab - 1
            )));
        }
        if temperature.is_nan() || temperature <= 0.0 {
            return Err(EngineError::Config(format!(
                "teacher top-k: temperature {temperature} must be positive"
            )));
        }
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].ids.len()));
        let mut rows: Vec<Option<(Vec<u32>, Vec<f32>)>> = vec![None; seqs.len()];
        let device = teacher.model.device.clone();
        let mut done = 0;
        for batch in order.chunks(batch_size.max(1)) {
            let l = batch.iter().map(|&i| seqs[i].ids.len()).max().unwrap_or(1);
            let mut ids = Vec::with_capacity(batch.len() * l);
            let mut lengths = Vec::with_capacity(batch.len());
            for &i in batch {
                ids.extend_from_slice(&seqs[i].ids);
                ids.extend(std::iter::repeat_n(0u32, l - seqs[i].ids.len()));
                lengths.push(seqs[i].ids.len());
            }
            let ids = Tensor::from_vec(ids, (batch.len(), l), &device)?;
            let logits = teacher.model.forward(&ids, &lengths)?.narrow(2, 0, vocab)?;
            let logp = candle_nn::ops::log_softmax(
                &(logits.to_dtype(DType::F32)? / temperature)?,
                D::Minus1,
            )?
            .to_device(&Device::Cpu)?
            .to_vec3::<f32>()?;
            for (b, &i) in batch.iter().enumerate() {
                let (mut idx, mut lp) = (Vec::new(), Vec::new());
                for t in targets(&seqs[i]) {
                    let (top, values, tail) = top_k_row(&logp[b][t], k);
                    idx.extend(top);
                    lp.extend(values);
                    lp.push(tail);
                }
                rows[i] = Some((idx, lp));
            }
            done += batch.len();
            progress(done, seqs.len());
        }
        let mut offsets = vec![0usize];
        let (mut indices, mut logprobs) = (Vec::new(), Vec::new());
        for row in rows {
            let (idx, lp) = row.expect("every sequence is in one batch");
            offsets.push(offsets.last().expect("starts with 0") + idx.len() / k);
            indices.extend(idx);
            logprobs.extend(lp);
        }
        let positions = *offsets.last().expect("starts with 0");
        Ok(Self {
            meta: TopKMeta {
                format: 1,
                k,
                temperature,
                vocab_hash: vocab_hash(&teacher.tokenizer),
                teacher: teacher.path.display().to_string(),
                sequences: seqs.len(),
                positions,
            },
            offsets,
            sequence_hashes: seqs.iter().map(sequence_hash).collect(),
            indices,
            logprobs,
        })
    }

    /// Bytes the table holds in memory.
    pub fn bytes(&self) -> u64 {
        (self.indices.len() * 4 + self.logprobs.len() * 4 + self.offsets.len() * 16) as u64
    }

    /// Bytes a table of `positions` target positions takes at `k`.
    pub fn bytes_for(positions: u64, k: usize) -> u64 {
        positions * (8 * k as u64 + 4)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let cpu = Device::Cpu;
        let (n, k) = (self.meta.positions, self.meta.k);
        let meta = serde_json::to_vec(&self.meta).expect("meta serialises");
        let to_i64 = |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
        let hashes: Vec<i64> = self
            .sequence_hashes
            .iter()
            .map(|&h| i64::from_le_bytes(h.to_le_bytes()))
            .collect();
        let tensors: HashMap<String, Tensor> = [
            ("indices", Tensor::from_slice(&self.indices, (n, k), &cpu)?),
            (
                "logprobs",
                Tensor::from_slice(&self.logprobs, (n, k + 1), &cpu)?,
            ),
            (
                "offsets",
                Tensor::from_vec(to_i64(&self.offsets), self.offsets.len(), &cpu)?,
            ),
            (
                "sequence_hashes",
                Tensor::from_vec(hashes, self.sequence_hashes.len(), &cpu)?,
            ),
            ("meta", Tensor::from_vec(meta.clone(), meta.len(), &cpu)?),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Written beside, then renamed: a crash never leaves a partial table under the name.
        let tmp = path.with_extension("partial");
        candle_core::safetensors::save(&tensors, &tmp)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bad = |what: String| EngineError::Data(format!("{}: {what}", path.display()));
        let mut t = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| bad(format!("not a teacher top-k file ({e})")))?;
        let mut take = |name: &str| {
            t.remove(name)
                .ok_or_else(|| bad(format!("no '{name}' tensor: not a teacher top-k file")))
        };
        let meta: TopKMeta = serde_json::from_slice(&take("meta")?.to_vec1::<u8>()?)
            .map_err(|e| bad(format!("meta: {e}")))?;
        let offsets: Vec<usize> = take("offsets")?
            .to_vec1::<i64>()?
            .into_iter()
            .map(|x| x as usize)
            .collect();
        let sequence_hashes: Vec<u64> = take("sequence_hashes")?
            .to_vec1::<i64>()?
            .into_iter()
            .map(|h| u64::from_le_bytes(h.to_le_bytes()))
            .collect();
        let indices = take("indices")?.flatten_all()?.to_vec1::<u32>()?;
        let logprobs = take("logprobs")?.flatten_all()?.to_vec1::<f32>()?;
        let k = meta.k;
        if meta.format != 1
            || offsets.len() != meta.sequences + 1
            || sequence_hashes.len() != meta.sequences
            || offsets.last() != Some(&meta.positions)
            || indices.len() != meta.positions * k
            || logprobs.len() != meta.positions * (k + 1)
        {
            return Err(bad(
                "tensor sizes disagree with its meta (damaged file?)".into()
            ));
        }
        Ok(Self {
            meta,
            offsets,
            sequence_hashes,
            indices,
            logprobs,
        })
    }

    /// Refuses a table computed for other sequences, another vocabulary or temperature.
    pub fn check(&self, seqs: &[Sequence], tokenizer: &Tokenizer, temperature: f64) -> Result<()> {
        let m = &self.meta;
        if m.vocab_hash != vocab_hash(tokenizer) {
            return Err(EngineError::Config(format!(
                "teacher top-k from {}: computed with another vocabulary than the student's \
                 (logit distillation needs the same tokenizer)",
                m.teacher
            )));
        }
        if (m.temperature - temperature).abs() > 1e-12 {
            return Err(EngineError::Config(format!(
                "teacher top-k from {}: computed at temperature {}, this run distils at {temperature}",
                m.teacher, m.temperature
            )));
        }
        if m.sequences != seqs.len() {
            return Err(EngineError::Config(format!(
                "teacher top-k from {}: computed for {} sequences, this run has {} \
                 (another dataset, template, max_seq_len or long-example policy)",
                m.teacher,
                m.sequences,
                seqs.len()
            )));
        }
        if let Some(i) =
            (0..seqs.len()).find(|&i| self.sequence_hashes[i] != sequence_hash(&seqs[i]))
        {
            return Err(EngineError::Config(format!(
                "teacher top-k from {}: sequence {i} differs from the one it was computed for \
                 (another dataset, template, max_seq_len or long-example policy)",
                m.teacher
            )));
        }
        if let Some(i) = (0..seqs.len())
            .find(|&i| self.offsets[i + 1] - self.offsets[i] != targets(&seqs[i]).count())
        {
            return Err(EngineError::Config(format!(
                "teacher top-k from {}: sequence {i} has another number of targets",
                m.teacher
            )));
        }
        Ok(())
    }

    /// The teacher side of a batch padded to `l` tokens: `indices` `[B, l−1, k]` u32 and
    /// `logprobs` `[B, l−1, k+1]` f32. Positions without a target get tokens `0..k` and a uniform
    /// distribution (finite; their loss weight is zero).
    pub fn batch(
        &self,
        seq_ids: &[usize],
        seqs: &[&Sequence],
        l: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let (k, p) = (self.meta.k, l.saturating_sub(1));
        let (idx, lp) = self.rows(seq_ids, seqs, p);
        Ok((
            Tensor::from_vec(idx, (seq_ids.len(), p, k), device)?,
            Tensor::from_vec(lp, (seq_ids.len(), p, k + 1), device)?,
        ))
    }

    /// [`Self::batch`] on the host with one row for every position (`[B·L]`, the last
    /// position of each sequence a filler row), as the fused distillation loss reads them.
    pub fn batch_rows(
        &self,
        seq_ids: &[usize],
        seqs: &[&Sequence],
        l: usize,
    ) -> (Vec<u32>, Vec<f32>) {
        self.rows(seq_ids, seqs, l)
    }

    /// Tokens per row.
    pub fn k(&self) -> usize {
        self.meta.k
    }

    /// `p` rows per sequence: the table's rows at trained positions, fillers elsewhere.
    fn rows(&self, seq_ids: &[usize], seqs: &[&Sequence], p: usize) -> (Vec<u32>, Vec<f32>) {
        let k = self.meta.k;
        let uniform = -((k + 1) as f32).ln();
        let filler: Vec<u32> = (0..k as u32).collect();
        let mut idx = Vec::with_capacity(seq_ids.len() * p * k);
        let mut lp = Vec::with_capacity(seq_ids.len() * p * (k + 1));
        for (&i, s) in seq_ids.iter().zip(seqs) {
            let mut row = self.offsets[i];
            for t in 0..p {
                if t + 1 < s.ids.len() && s.train[t + 1] {
                    idx.extend_from_slice(&self.indices[row * k..(row + 1) * k]);
                    lp.extend_from_slice(&self.logprobs[row * (k + 1)..(row + 1) * (k + 1)]);
                    row += 1;
                } else {
                    idx.extend_from_slice(&filler);
                    lp.extend(std::iter::repeat_n(uniform, k + 1));
                }
            }
        }
        (idx, lp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_row_keeps_the_largest_and_the_rest_as_a_tail() {
        let logp: Vec<f32> = [0.1f32, 0.4, 0.2, 0.3].iter().map(|p| p.ln()).collect();
        let (idx, values, tail) = top_k_row(&logp, 2);
        assert_eq!(idx, vec![1, 3]);
        assert!((values[0] - 0.4f32.ln()).abs() < 1e-6);
        assert!((tail - 0.3f32.ln()).abs() < 1e-6, "{tail}");
        // Ties go to the lower id, so the table is deterministic.
        let (idx, _, _) = top_k_row(&[0.0, -1.0, 0.0, 0.0], 2);
        assert_eq!(idx, vec![0, 2]);
    }
}
