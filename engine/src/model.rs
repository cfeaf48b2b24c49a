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
    layers: Vec<LayerCache>,
}

/// One layer's cached keys and values.
enum LayerCache {
    /// On the CPU in f32: token-major `[T, H_kv, D]` buffers, appended in place and read by the
    /// engine's decode attention ([`crate::attention::attend_cached`]).
    Host {
        keys: Vec<f32>,
        values: Vec<f32>,
        /// `H_kv · D`, the values per position.
        width: usize,
    },
    /// Elsewhere (and in bf16): candle's cache of `[1, H_kv, T, D]` tensors.
    Tensors(candle_nn::kv_cache::KvCache),
}

impl KvCache {
    pub fn seq_len(&self) -> usize {
        self.layers.first().map_or(0, |c| c.seq_len())
    }

    fn is_host(&self) -> bool {
        matches!(self.layers.first(), Some(LayerCache::Host { .. }))
    }
}

impl LayerCache {
    fn seq_len(&self) -> usize {
        match self {
            LayerCache::Host { keys, width, .. } => keys.len() / width,
            LayerCache::Tensors(c) => c.current_seq_len(),
        }
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
        self.cache_of_kind(max_len, self.host_decode())
    }

    /// A cache for the engine's CPU decode attention (`host`) or for candle's ops.
    fn cache_of_kind(&self, max_len: usize, host: bool) -> KvCache {
        let width = self.config.num_key_value_heads * self.config.head_dim();
        KvCache {
            layers: (0..self.config.num_hidden_layers)
                .map(|_| {
                    if host {
                        LayerCache::Host {
                            keys: Vec::with_capacity(max_len * width),
                            values: Vec::with_capacity(max_len * width),
                            width,
                        }
                    } else {
                        LayerCache::Tensors(candle_nn::kv_cache::KvCache::new(2, max_len.max(1)))
                    }
                })
                .collect(),
        }
    }

    /// Whether decoding uses the engine's CPU attention over host caches (on the CPU in f32).
    fn host_decode(&self) -> bool {
        self.device.is_cpu() && self.compute == DType::F32
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
        // The caches say which attention runs: host caches (made on the CPU in f32) the
        // engine's decode attention, tensor caches candle's ops.
        let host = caches.iter().all(|c| c.is_host());
        if !host && caches.iter().any(|c| c.is_host()) || host && !self.host_decode() {
            return Err(EngineError::Model(
                "forward_rows needs caches made by this model's new_cache".into(),
            ));
        }
        let mut starts = Vec::with_capacity(ids.len());
        let mut masks = Vec::with_capacity(ids.len());
        let mut positions: Vec<u32> = Vec::new();
        let mut n = 0;
        for (row, &offset) in ids.iter().zip(&offsets) {
            let t = row.len();
            starts.push(n);
            n += t;
            positions.extend((offset..offset + t).map(|p| p as u32));
            masks.push(if t > 1 && !host {
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
            let (q, k, v) = (
                layer.q.forward(&h)?,
                layer.k.forward(&h)?,
                layer.v.forward(&h)?,
            );
            let attn = if host {
                // Token-major projections; rotated inside, as they are cached and read.
                let rows = HostRows { ids, li, hd, scale };
                attend_host(&rows, (&q, &k, &v), (&cos, &sin), caches)?
            } else {
                // Heads of the whole pack, `[1, heads, N, hd]`, rotated at each token's position.
                let heads = |x: &Tensor, count: usize| -> candle_core::Result<Tensor> {
                    x.reshape((1, n, count, hd))?.transpose(1, 2)?.contiguous()
                };
                let q = crate::ops::rope(&heads(&q, nh)?, &cos, &sin)?;
                let k = crate::ops::rope(&heads(&k, nkv)?, &cos, &sin)?;
                let v = heads(&v, nkv)?;
                let mut attended = Vec::with_capacity(ids.len());
                for (r, cache) in caches.iter_mut().enumerate() {
                    let (start, t) = (starts[r], ids[r].len());
                    let row = |x: &Tensor| x.narrow(2, start, t)?.contiguous();
                    let q = row(&q)?;
                    let LayerCache::Tensors(layer_cache) = &mut cache.layers[li] else {
                        return Err(EngineError::Model(
                            "a host cache given to a forward off the CPU".into(),
                        ));
                    };
                    let (k, v) = layer_cache.append(&row(&k)?, &row(&v)?)?;
                    let k = repeat_kv(&k, nh / nkv)?;
                    let v = repeat_kv(&v, nh / nkv)?;
                    let mut scores = (heads_product(&q, &k, true)? * scale)?;
                    if let Some(mask) = &masks[r] {
                        scores = scores.broadcast_add(mask)?;
                    }
                    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
                    attended.push(heads_product(&probs, &v, false)?);
                }
                if attended.len() == 1 {
                    attended.pop().expect("one row")
                } else {
                    Tensor::cat(&attended, 2)?
                }
                .transpose(1, 2)?
                .reshape((1, n, nh * hd))?
            };
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

/// What [`attend_host`] needs of a [`Qwen2::forward_rows`] call besides the tensors.
struct HostRows<'a> {
    ids: &'a [&'a [u32]],
    /// The layer.
    li: usize,
    hd: usize,
    scale: f64,
}

/// A layer's attention on the CPU in f32 for [`Qwen2::forward_rows`]. `q`, `k`, `v` are the
/// pack's projections, token-major (`[1, N, heads·D]`), and `cos`, `sin` `[N, D/2]` the rotary
/// tables at each token's position: keys are rotated as they are appended to each row's host
/// cache and queries as they are read, then every new token is attended in one pass. Returns
/// `[1, N, heads·D]`.
fn attend_host(
    rows: &HostRows<'_>,
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    (cos, sin): (&Tensor, &Tensor),
    caches: &mut [&mut KvCache],
) -> Result<Tensor> {
    let (_, n, width) = q.dims3()?;
    let (d, li) = (rows.hd, rows.li);
    let (heads, kv_heads) = (width / d, k.dim(2)? / d);
    let half = d / 2;
    let tensors = [q, k, v, cos, sin].map(|t| t.contiguous());
    let mut guards = Vec::with_capacity(5);
    for t in tensors {
        guards.push(t?);
    }
    let guards: Vec<_> = guards.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices: Vec<&[f32]> = Vec::with_capacity(5);
    for (storage, layout) in &guards {
        match &**storage {
            candle_core::Storage::Cpu(s) => {
                slices.push(crate::ops::contiguous_slice(s, layout, "decode attention")?)
            }
            _ => {
                return Err(EngineError::Model(
                    "decode attention: CPU tensors only".into(),
                ));
            }
        }
    }
    let [qs, ks, vs, cs, ss] = slices[..] else {
        unreachable!("five tensors")
    };
    let rotated = |src: &[f32], t: usize, out: &mut Vec<f32>| {
        let at = out.len();
        out.resize(at + d, 0.0);
        let (c, s) = (&cs[t * half..][..half], &ss[t * half..][..half]);
        crate::ops::rotate_half_row(&mut out[at..], src, c, s, false);
    };
    let kw = kv_heads * d;
    let mut t = 0;
    for (cache, row) in caches.iter_mut().zip(rows.ids) {
        let LayerCache::Host { keys, values, .. } = &mut cache.layers[li] else {
            return Err(EngineError::Model(
                "a tensor cache given to the CPU decode attention".into(),
            ));
        };
        for _ in 0..row.len() {
            for h in 0..kv_heads {
                rotated(&ks[t * kw + h * d..][..d], t, keys);
            }
            values.extend_from_slice(&vs[t * kw..(t + 1) * kw]);
            t += 1;
        }
    }
    let mut queries = Vec::with_capacity(n * width);
    for t in 0..n {
        for h in 0..heads {
            rotated(&qs[t * width + h * d..][..d], t, &mut queries);
        }
    }
    let cached: Vec<crate::attention::CachedRow<'_>> = caches
        .iter()
        .zip(rows.ids)
        .map(|(cache, row)| match &cache.layers[li] {
            LayerCache::Host { keys, values, .. } => crate::attention::CachedRow {
                keys,
                values,
                new: row.len(),
            },
            LayerCache::Tensors(_) => unreachable!("checked above"),
        })
        .collect();
    let scale = rows.scale as f32;
    let out = crate::attention::attend_cached(&queries, &cached, heads, kv_heads, d, scale);
    drop(guards);
    Ok(Tensor::from_vec(out, (1, n, width), q.device())?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_decode_attention_matches_candles_ops() {
        // Three rows of different lengths: a prefill, then decode steps of one token per row,
        // through host caches and through tensor caches; the logits agree at every step.
        let config = Qwen2Config::preset("tiny", 300).unwrap();
        let model = Qwen2::new(config, DType::F32, &Device::Cpu).unwrap();
        model.init_weights(7).unwrap();
        let prompts: [&[u32]; 3] = [&[5, 9, 200, 17, 3], &[42], &[7, 7, 8]];
        let mut host: Vec<KvCache> = (0..3).map(|_| model.cache_of_kind(16, true)).collect();
        let mut tensors: Vec<KvCache> = (0..3).map(|_| model.cache_of_kind(16, false)).collect();
        let mut steps: Vec<Vec<u32>> = prompts.iter().map(|p| p.to_vec()).collect();
        for step in 0..6 {
            let ids: Vec<&[u32]> = steps.iter().map(Vec::as_slice).collect();
            let a = model
                .forward_rows(&ids, &mut host.iter_mut().collect::<Vec<_>>())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let b = model
                .forward_rows(&ids, &mut tensors.iter_mut().collect::<Vec<_>>())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
                assert!((x - y).abs() < 1e-4, "step {step}: {x} vs {y}");
            }
            steps = (0..3)
                .map(|r| vec![(step as u32 * 31 + r * 11) % 300])
                .collect();
        }
        assert_eq!(host[0].seq_len(), 5 + 5);
        assert_eq!(host[1].seq_len(), tensors[1].seq_len());
        let mut mixed = [&mut host[0], &mut tensors[0]];
        assert!(model.forward_rows(&[&[1], &[2]], &mut mixed).is_err());
    }
}
