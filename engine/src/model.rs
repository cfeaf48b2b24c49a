//! A Qwen2-architecture decoder with Hugging Face tensor names, built for training.
//!
//! candle-transformers' `qwen2` is inference code: it returns only the last position's logits and
//! its fused RMSNorm/RoPE/softmax ops have no backward, so gradients are cut silently
//! (measured when the engine was started). This model's training forward uses only differentiable ops over all
//! positions with a causal + padding mask (and fused ops of our own that have a backward, see
//! [`crate::ops`] and [`crate::fused`]); `forward_cached` is the generation path (KV cache; on
//! the CPU the same norm, SwiGLU and RoPE kernels, elsewhere candle's fused inference ops) and must
//! agree with it (a test checks).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Init, VarBuilder, VarMap};

use crate::config::Qwen2Config;
use crate::rng::Rng;
use crate::{EngineError, Result};

/// `y = x Wᵀ + b` over the last dimension, as one matrix product.
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// In the input's dtype: with bf16 compute the (f32) weights are cast on the way in, and
    /// their gradients cast back to f32 on the way out.
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let bias = match &self.bias {
            Some(b) => Some(b.to_dtype(xs.dtype())?),
            None => None,
        };
        crate::fused::linear(xs, &self.weight.to_dtype(xs.dtype())?, bias.as_ref())
    }
}

#[derive(Debug, Clone)]
struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
    input_norm: Tensor,
    post_norm: Tensor,
}

/// Per-layer key/value caches for generation.
pub struct KvCache {
    layers: Vec<candle_nn::kv_cache::KvCache>,
}

impl KvCache {
    pub fn seq_len(&self) -> usize {
        self.layers.first().map_or(0, |c| c.current_seq_len())
    }
}

/// The model: parameters live in a [`VarMap`] under their Hugging Face names.
pub struct Qwen2 {
    pub config: Qwen2Config,
    pub varmap: VarMap,
    /// The parameters' dtype (the master copy with mixed precision).
    pub dtype: DType,
    /// The dtype the forward computes in: `dtype`, or bf16 over f32 parameters (see
    /// [`Qwen2::set_compute_dtype`]).
    compute: DType,
    pub device: Device,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    cos: Tensor,
    sin: Tensor,
}

fn rope_tables(
    config: &Qwen2Config,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let dim = config.head_dim();
    let max = config.max_position_embeddings.min(32_768);
    let inv_freq: Vec<f32> = (0..dim / 2)
        .map(|i| 1.0 / config.rope_theta.powf(2.0 * i as f64 / dim as f64) as f32)
        .collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, dim / 2), device)?;
    let t = Tensor::arange(0u32, max as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((max, 1))?;
    let freqs = t.broadcast_mul(&inv_freq)?;
    Ok((freqs.cos()?.to_dtype(dtype)?, freqs.sin()?.to_dtype(dtype)?))
}

/// `[B, KV, L, D]` → `[B, KV·n_rep, L, D]` by repetition (differentiable).
pub(crate) fn repeat_kv(xs: &Tensor, n_rep: usize) -> candle_core::Result<Tensor> {
    if n_rep == 1 {
        return Ok(xs.clone());
    }
    let (b, kv, l, d) = xs.dims4()?;
    xs.unsqueeze(2)?
        .broadcast_as((b, kv, n_rep, l, d))?
        .reshape((b, kv * n_rep, l, d))
}

impl Qwen2 {
    /// Allocates the parameters (all zero); call [`Qwen2::init_weights`] or load weights next.
    pub fn new(config: Qwen2Config, dtype: DType, device: &Device) -> Result<Self> {
        config.validate()?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, device);
        let (h, i, hd) = (
            config.hidden_size,
            config.intermediate_size,
            config.head_dim(),
        );
        let (nh, nkv) = (config.num_attention_heads, config.num_key_value_heads);
        let zero = Init::Const(0.0);
        let linear =
            |vb: VarBuilder, out: usize, inp: usize, bias: bool| -> candle_core::Result<Linear> {
                Ok(Linear {
                    weight: vb.get_with_hints((out, inp), "weight", zero)?,
                    bias: if bias {
                        Some(vb.get_with_hints(out, "bias", zero)?)
                    } else {
                        None
                    },
                })
            };
        let model_vb = vb.pp("model");
        let embed =
            model_vb
                .pp("embed_tokens")
                .get_with_hints((config.vocab_size, h), "weight", zero)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for n in 0..config.num_hidden_layers {
            let lvb = model_vb.pp("layers").pp(n);
            let attn = lvb.pp("self_attn");
            let mlp = lvb.pp("mlp");
            layers.push(Layer {
                q: linear(attn.pp("q_proj"), nh * hd, h, true)?,
                k: linear(attn.pp("k_proj"), nkv * hd, h, true)?,
                v: linear(attn.pp("v_proj"), nkv * hd, h, true)?,
                o: linear(attn.pp("o_proj"), h, nh * hd, false)?,
                gate: linear(mlp.pp("gate_proj"), i, h, false)?,
                up: linear(mlp.pp("up_proj"), i, h, false)?,
                down: linear(mlp.pp("down_proj"), h, i, false)?,
                input_norm: lvb.pp("input_layernorm").get_with_hints(
                    h,
                    "weight",
                    Init::Const(1.0),
                )?,
                post_norm: lvb.pp("post_attention_layernorm").get_with_hints(
                    h,
                    "weight",
                    Init::Const(1.0),
                )?,
            });
        }
        let norm = model_vb
            .pp("norm")
            .get_with_hints(h, "weight", Init::Const(1.0))?;
        let lm_head = if config.tie_word_embeddings {
            embed.clone()
        } else {
            vb.pp("lm_head")
                .get_with_hints((config.vocab_size, h), "weight", zero)?
        };
        let (cos, sin) = rope_tables(&config, dtype, device)?;
        Ok(Self {
            config,
            varmap,
            dtype,
            compute: dtype,
            device: device.clone(),
            embed,
            layers,
            norm,
            lm_head,
            cos,
            sin,
        })
    }

    /// Detaches the forward's weights from their variables, for a model that only runs forward
    /// (a KD teacher): its forward then builds no graph, so the activations of a layer are freed
    /// once the next layer has them instead of living until the forward returns. The variables
    /// (`named_vars`, `save_weights`) share the same storage.
    pub fn freeze(&mut self) {
        let linear = |l: &mut Linear| {
            l.weight = l.weight.detach();
            l.bias = l.bias.as_ref().map(Tensor::detach);
        };
        self.embed = self.embed.detach();
        self.norm = self.norm.detach();
        self.lm_head = self.lm_head.detach();
        for layer in &mut self.layers {
            for l in [
                &mut layer.q,
                &mut layer.k,
                &mut layer.v,
                &mut layer.o,
                &mut layer.gate,
                &mut layer.up,
                &mut layer.down,
            ] {
                linear(l);
            }
            layer.input_norm = layer.input_norm.detach();
            layer.post_norm = layer.post_norm.detach();
        }
    }

    /// Every parameter with its name, sorted by name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("varmap lock");
        let mut vars: Vec<(String, Var)> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Mixed precision: the forward runs in `dtype` (bf16 on a GPU) with the parameters kept in
    /// their own dtype (f32) as the master copy that gradients and the optimizer see: each weight
    /// is cast where it is used, and the cast's backward brings its gradient back to f32.
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        self.compute = dtype;
    }

    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    pub fn n_params(&self) -> usize {
        self.named_vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The initialisation HF uses for Qwen2 (normal(0, 0.02) weights, zero biases, unit norms),
    /// drawn from a seeded generator so a seed fixes the model.
    pub fn init_weights(&self, seed: u64) -> Result<()> {
        let mut rng = Rng::new(seed);
        for (name, var) in self.named_vars() {
            let n = var.elem_count();
            let values: Vec<f32> = if name.ends_with("norm.weight") {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                (0..n).map(|_| (rng.normal() * 0.02) as f32).collect()
            };
            let t = Tensor::from_vec(values, var.shape(), &self.device)?.to_dtype(self.dtype)?;
            var.set(&t)?;
        }
        Ok(())
    }

    /// Loads weights from safetensors files (one file or the shards of an index). Every parameter
    /// must be present with its exact shape.
    pub fn load_weights(&self, files: &[PathBuf]) -> Result<()> {
        let mut found: HashMap<String, Tensor> = HashMap::new();
        for file in files {
            let tensors = candle_core::safetensors::load(file, &self.device)
                .map_err(|e| EngineError::Model(format!("{}: {e}", file.display())))?;
            found.extend(tensors);
        }
        for (name, var) in self.named_vars() {
            let tensor = found.remove(&name).ok_or_else(|| {
                EngineError::Model(format!("weights lack tensor '{name}' (files: {files:?})"))
            })?;
            if tensor.dims() != var.dims() {
                return Err(EngineError::Model(format!(
                    "tensor '{name}' has shape {:?}, the config needs {:?}",
                    tensor.dims(),
                    var.dims()
                )));
            }
            var.set(&tensor.to_dtype(self.dtype)?)?;
        }
        // A tied model's checkpoint may still carry lm_head.weight (some exporters write it).
        found.remove("lm_head.weight");
        if let Some(extra) = found.keys().next() {
            return Err(EngineError::Model(format!(
                "weights have a tensor the model does not: '{extra}'"
            )));
        }
        Ok(())
    }

    /// Writes every parameter, by HF name, in f32 (or the model dtype).
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        let tensors: HashMap<String, Tensor> = self
            .named_vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&tensors, path)?;
        Ok(())
    }

    /// RMSNorm in the weight's dtype: with mixed precision the bf16 activations are widened to
    /// f32 for it (as transformers does), so the mean of squares and the weight's gradient, a
    /// sum over every row, are not accumulated in bf16.
    fn rms_norm_train(xs: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
        if xs.dtype() != weight.dtype() {
            return crate::fused::rms_norm(&xs.to_dtype(weight.dtype())?, weight, eps)?
                .to_dtype(xs.dtype());
        }
        crate::fused::rms_norm(xs, weight, eps)
    }

    /// The generation path's RMSNorm: the training kernel on the CPU (so both paths agree
    /// exactly), candle's fused inference op elsewhere; in the weight's dtype as above.
    fn rms_norm_cached(xs: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
        let wide = xs.to_dtype(weight.dtype())?;
        let out = if crate::ops::fused_kernels(&wide) {
            crate::fused::rms_norm(&wide, weight, eps)?
        } else {
            candle_nn::ops::rms_norm(&wide, weight, eps as f32)?
        };
        out.to_dtype(xs.dtype())
    }

    /// Training forward over all positions. `ids`: `[B, L]` u32, right-padded; `lengths[b]` is
    /// the number of real tokens in row `b`. Returns logits `[B, L, V]`.
    pub fn forward(&self, ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        self.logits(&self.forward_hidden(ids, lengths)?)
    }

    /// The output layer's weight `[V, hidden]` (the embedding when tied), in f32.
    pub fn lm_head(&self) -> &Tensor {
        &self.lm_head
    }

    /// Logits `[…, V]` of final hidden states `[…, hidden]` (from [`Self::forward_hidden`]).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(Linear {
            weight: self.lm_head.clone(),
            bias: None,
        }
        .forward(hidden)?)
    }

    /// [`Self::forward`] up to the final norm: hidden states `[B, L, hidden]` in the compute
    /// dtype, for a loss that applies the output layer itself
    /// ([`crate::head_loss::head_cross_entropy_sum`]).
    pub fn forward_hidden(&self, ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let cfg = &self.config;
        let c = self.compute;
        // The additive mask only for the composed attention (bf16, other devices); the CPU's
        // fused attention reads the lengths.
        let mask = match crate::ops::fused_kernels_for(&self.device, c) {
            true => None,
            false => Some(attention_mask(lengths, l, &self.device)?.to_dtype(c)?),
        };
        let cos = self.cos.narrow(0, 0, l)?.to_dtype(c)?;
        let sin = self.sin.narrow(0, 0, l)?.to_dtype(c)?;
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim(),
        );
        let scale = 1.0 / (hd as f64).sqrt();
        let mut xs = self
            .embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, l, cfg.hidden_size))?
            .to_dtype(c)?;
        for layer in &self.layers {
            let residual = xs.clone();
            let h = Self::rms_norm_train(&xs, &layer.input_norm, cfg.rms_norm_eps)?;
            // Heads `[B, H, L, D]` straight from the projections, queries and keys rotated; the
            // attention reads each KV head for its group of query heads (GQA).
            let rope = Some((&cos, &sin));
            let q = crate::fused::split_heads(&layer.q.forward(&h)?, nh, 1, rope)?;
            let k = crate::fused::split_heads(&layer.k.forward(&h)?, nkv, 1, rope)?;
            let v = crate::fused::split_heads(&layer.v.forward(&h)?, nkv, 1, None)?;
            let attn =
                crate::attention::causal_attention(&q, &k, &v, lengths, scale, mask.as_ref())?;
            let attn = crate::fused::merge_heads(&attn)?;
            xs = (residual + layer.o.forward(&attn)?)?;
            let residual = xs.clone();
            let h = Self::rms_norm_train(&xs, &layer.post_norm, cfg.rms_norm_eps)?;
            let mlp = crate::fused::swiglu(&layer.gate.forward(&h)?, &layer.up.forward(&h)?)?;
            xs = (residual + layer.down.forward(&mlp)?)?;
        }
        Ok(Self::rms_norm_train(&xs, &self.norm, cfg.rms_norm_eps)?)
    }

    /// An empty cache for up to `max_len` positions.
    pub fn new_cache(&self, max_len: usize) -> KvCache {
        KvCache {
            layers: (0..self.config.num_hidden_layers)
                .map(|_| candle_nn::kv_cache::KvCache::new(2, max_len.max(1)))
                .collect(),
        }
    }

    /// Generation forward: appends `ids` (`[1, T]`) to the cache and returns the logits of the
    /// last position (`[V]`). No gradients are needed here: off the CPU, candle's fused inference
    /// norm is used.
    pub fn forward_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (b, _) = ids.dims2()?;
        if b != 1 {
            return Err(EngineError::Model(format!(
                "forward_cached takes one sequence, not {b}: use forward_rows"
            )));
        }
        let ids = ids.flatten_all()?.to_vec1::<u32>()?;
        Ok(self.forward_rows(&[&ids], &mut [cache])?.squeeze(0)?)
    }

    /// Generation forward for several sequences, each with its own cache: row `r` appends
    /// `ids[r]` (any number of tokens, at its own position) and gets the logits of its last
    /// position. Returns `[R, V]`.
    ///
    /// The rows are packed into one `[1, N, H]` sequence for everything that works position by
    /// position (embedding, norms, projections, MLP, output layer), so a decode step of R rows
    /// is one product per weight; only rotary positions and attention, which need each row's
    /// own cache, go row by row. No padding is computed and no row sees another's keys.
    pub fn forward_rows(&self, ids: &[&[u32]], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let cfg = &self.config;
        if ids.len() != caches.len() || ids.is_empty() || ids.iter().any(|r| r.is_empty()) {
            return Err(EngineError::Model(format!(
                "forward_rows needs one non-empty row per cache ({} rows, {} caches)",
                ids.len(),
                caches.len()
            )));
        }
        let positions = self.cos.dim(0)?;
        let mut offsets = Vec::with_capacity(ids.len());
        for (row, cache) in ids.iter().zip(caches.iter()) {
            let offset = cache.seq_len();
            if offset + row.len() > positions {
                return Err(EngineError::Model(format!(
                    "sequence of {} tokens exceeds the model's {positions} positions",
                    offset + row.len()
                )));
            }
            offsets.push(offset);
        }
        let c = self.compute;
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim(),
        );
        let scale = 1.0 / (hd as f64).sqrt();
        let eps = cfg.rms_norm_eps;
        // Per row: its start in the packed sequence and its causal mask; per token: its position
        // (so the rotary tables of the whole pack are read in one gather).
        let mut starts = Vec::with_capacity(ids.len());
        let mut masks = Vec::with_capacity(ids.len());
        let mut positions: Vec<u32> = Vec::new();
        let mut n = 0;
        for (row, &offset) in ids.iter().zip(&offsets) {
            let t = row.len();
            starts.push(n);
            n += t;
            positions.extend((offset..offset + t).map(|p| p as u32));
            masks.push(if t > 1 {
                // New tokens see the whole cache and the new tokens before them.
                let total = offset + t;
                let values: Vec<f32> = (0..t)
                    .flat_map(|i| {
                        (0..total).map(move |j| {
                            if j > offset + i {
                                f32::NEG_INFINITY
                            } else {
                                0.0
                            }
                        })
                    })
                    .collect();
                Some(Tensor::from_vec(values, (1, 1, t, total), &self.device)?.to_dtype(c)?)
            } else {
                None
            });
        }
        let positions = Tensor::new(positions.as_slice(), &self.device)?;
        let cos = self
            .cos
            .index_select(&positions, 0)?
            .to_dtype(c)?
            .contiguous()?;
        let sin = self
            .sin
            .index_select(&positions, 0)?
            .to_dtype(c)?
            .contiguous()?;
        let flat: Vec<u32> = ids.iter().flat_map(|r| r.iter().copied()).collect();
        let flat = Tensor::new(flat.as_slice(), &self.device)?;
        let mut xs = self
            .embed
            .index_select(&flat, 0)?
            .reshape((1, n, cfg.hidden_size))?
            .to_dtype(c)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let residual = xs.clone();
            let h = Self::rms_norm_cached(&xs, &layer.input_norm, eps)?;
            // Heads of the whole pack, `[1, heads, N, hd]`, rotated at each token's position.
            let heads = |x: &Tensor, count: usize| -> candle_core::Result<Tensor> {
                x.reshape((1, n, count, hd))?.transpose(1, 2)?.contiguous()
            };
            let q = crate::ops::rope(&heads(&layer.q.forward(&h)?, nh)?, &cos, &sin)?;
            let k = crate::ops::rope(&heads(&layer.k.forward(&h)?, nkv)?, &cos, &sin)?;
            let v = heads(&layer.v.forward(&h)?, nkv)?;
            let mut attended = Vec::with_capacity(ids.len());
            for (r, cache) in caches.iter_mut().enumerate() {
                let (start, t) = (starts[r], ids[r].len());
                let row = |x: &Tensor| x.narrow(2, start, t)?.contiguous();
                let q = row(&q)?;
                let (k, v) = cache.layers[li].append(&row(&k)?, &row(&v)?)?;
                let k = repeat_kv(&k, nh / nkv)?;
                let v = repeat_kv(&v, nh / nkv)?;
                let mut scores = (heads_product(&q, &k, true)? * scale)?;
                if let Some(mask) = &masks[r] {
                    scores = scores.broadcast_add(mask)?;
                }
                let probs = candle_nn::ops::softmax_last_dim(&scores)?;
                attended.push(heads_product(&probs, &v, false)?);
            }
            let attn = if attended.len() == 1 {
                attended.pop().expect("one row")
            } else {
                Tensor::cat(&attended, 2)?
            }
            .transpose(1, 2)?
            .reshape((1, n, nh * hd))?;
            xs = (residual + layer.o.forward(&attn)?)?;
            let residual = xs.clone();
            let h = Self::rms_norm_cached(&xs, &layer.post_norm, eps)?;
            let mlp = crate::fused::swiglu(&layer.gate.forward(&h)?, &layer.up.forward(&h)?)?;
            xs = (residual + layer.down.forward(&mlp)?)?;
        }
        // Each row's last position.
        let last_index: Vec<u32> = starts
            .iter()
            .zip(ids)
            .map(|(&s, r)| (s + r.len() - 1) as u32)
            .collect();
        let last_index = Tensor::new(last_index.as_slice(), &self.device)?;
        let last = xs.squeeze(0)?.index_select(&last_index, 0)?.unsqueeze(0)?;
        let last = Self::rms_norm_cached(&last, &self.norm, eps)?;
        let logits = Linear {
            weight: self.lm_head.clone(),
            bias: None,
        }
        .forward(&last)?;
        Ok(logits.squeeze(0)?)
    }
}

/// `a · b` (`a · bᵀ` with `tb`) head by head for `[B, H, M, K]` heads: on the CPU in f32/f64
/// through the engine's own product (candle's probes the thread count on every call, which
/// is a file read per product), elsewhere candle's.
fn heads_product(a: &Tensor, b: &Tensor, tb: bool) -> candle_core::Result<Tensor> {
    if !crate::ops::fused_kernels(a) {
        return if tb { a.matmul(&b.t()?) } else { a.matmul(b) };
    }
    let (batch, heads, m, k) = a.dims4()?;
    let (rows, cols) = (b.dim(2)?, b.dim(3)?);
    let n = if tb { rows } else { cols };
    let a = a.reshape((batch * heads, m, k))?;
    let b = b.contiguous()?.reshape((batch * heads, rows, cols))?;
    crate::fused::product(&a, &b, false, tb)?.reshape((batch, heads, m, n))
}

/// Additive mask `[B, 1, L, L]`: `-inf` above the diagonal (causal) and on padded keys.
pub fn attention_mask(lengths: &[usize], l: usize, device: &Device) -> candle_core::Result<Tensor> {
    let mut values = vec![0f32; lengths.len() * l * l];
    for (b, &len) in lengths.iter().enumerate() {
        for i in 0..l {
            for j in 0..l {
                if j > i || j >= len {
                    values[(b * l + i) * l + j] = f32::NEG_INFINITY;
                }
            }
        }
    }
    Tensor::from_vec(values, (lengths.len(), 1, l, l), device)
}
