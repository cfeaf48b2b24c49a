//! Tiny teachers with seeded random weights, in any architecture and format, laid out as the
//! Hugging Face and llama.cpp converters lay real ones out (HF tensor names and `config.json`;
//! GGUF tensor names and metadata, Q8_0 matrices). Tests and benchmarks make them, since no
//! weights can be downloaded here.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use still_engine::rng::Rng;

use crate::{Arch, Format};

/// A tiny model's shape.
#[derive(Debug, Clone, Copy)]
pub struct Tiny {
    pub arch: Arch,
    pub format: Format,
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub context: usize,
    pub seed: u64,
}

impl Tiny {
    /// Hidden 64 (a multiple of Q8_0's block of 32), 2 layers, 4 heads over 2 KV heads.
    pub fn new(arch: Arch, format: Format, vocab_size: usize) -> Tiny {
        Tiny {
            arch,
            format,
            vocab_size,
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            intermediate: 128,
            context: 2048,
            seed: 7,
        }
    }

    fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Writes the model into `dir` (created), with `tokenizer_json` copied beside it.
    pub fn write(&self, dir: &Path, tokenizer_json: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::copy(tokenizer_json, dir.join("tokenizer.json"))
            .with_context(|| format!("copying {}", tokenizer_json.display()))?;
        let tensors = self.tensors()?;
        match self.format {
            Format::Safetensors => {
                let config = self.hf_config();
                std::fs::write(
                    dir.join("config.json"),
                    serde_json::to_string_pretty(&config)?,
                )?;
                let hf: HashMap<String, Tensor> = tensors
                    .into_iter()
                    .map(|(name, t)| (hf_name(&name), t))
                    .collect();
                candle_core::safetensors::save(&hf, dir.join("model.safetensors"))?;
            }
            Format::Gguf => self.write_gguf(&dir.join("model-q8_0.gguf"), tensors)?,
        }
        Ok(())
    }

    /// Tensors under GGUF names (`blk.N.attn_q.weight`), in HF shapes.
    fn tensors(&self) -> anyhow::Result<Vec<(String, Tensor)>> {
        let mut rng = Rng::new(self.seed);
        let dev = Device::Cpu;
        let mut random = |shape: &[usize], std: f64| -> candle_core::Result<Tensor> {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|_| (rng.normal() * std) as f32).collect();
            Tensor::from_vec(values, shape, &dev)
        };
        let ones = |n: usize| Tensor::ones(n, candle_core::DType::F32, &dev);
        let zeros = |n: usize| Tensor::zeros(n, candle_core::DType::F32, &dev);
        let (h, hd, i) = (self.hidden, self.head_dim(), self.intermediate);
        let (q, kv) = (self.heads * hd, self.kv_heads * hd);
        let mut out = vec![
            (
                "token_embd.weight".to_string(),
                random(&[self.vocab_size, h], 0.5)?,
            ),
            ("output_norm.weight".to_string(), ones(h)?),
        ];
        let std = 1.0 / (h as f64).sqrt();
        for l in 0..self.layers {
            let p = |name: &str| format!("blk.{l}.{name}");
            out.push((p("attn_norm.weight"), ones(h)?));
            out.push((p("ffn_norm.weight"), ones(h)?));
            out.push((p("attn_q.weight"), random(&[q, h], std)?));
            out.push((p("attn_k.weight"), random(&[kv, h], std)?));
            out.push((p("attn_v.weight"), random(&[kv, h], std)?));
            out.push((p("attn_output.weight"), random(&[h, q], std)?));
            out.push((p("ffn_gate.weight"), random(&[i, h], std)?));
            out.push((p("ffn_up.weight"), random(&[i, h], std)?));
            out.push((p("ffn_down.weight"), random(&[h, i], std)?));
            match self.arch {
                Arch::Qwen2 => {
                    out.push((p("attn_q.bias"), zeros(q)?));
                    out.push((p("attn_k.bias"), zeros(kv)?));
                    out.push((p("attn_v.bias"), zeros(kv)?));
                }
                Arch::Qwen3 => {
                    out.push((p("attn_q_norm.weight"), ones(hd)?));
                    out.push((p("attn_k_norm.weight"), ones(hd)?));
                }
                Arch::Llama => {}
            }
        }
        Ok(out)
    }

    fn hf_config(&self) -> serde_json::Value {
        let mut config = serde_json::json!({
            "model_type": self.arch.as_str(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "max_position_embeddings": self.context,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "tie_word_embeddings": true,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        });
        let extra = match self.arch {
            Arch::Llama => serde_json::json!({"architectures": ["LlamaForCausalLM"]}),
            Arch::Qwen2 => serde_json::json!({
                "architectures": ["Qwen2ForCausalLM"],
                "sliding_window": self.context,
                "max_window_layers": self.layers,
                "use_sliding_window": false,
            }),
            Arch::Qwen3 => serde_json::json!({
                "architectures": ["Qwen3ForCausalLM"],
                "head_dim": self.head_dim(),
                "attention_bias": false,
                "sliding_window": null,
                "max_window_layers": self.layers,
                "use_sliding_window": false,
            }),
        };
        if let (Some(c), serde_json::Value::Object(e)) = (config.as_object_mut(), extra) {
            c.extend(e);
        }
        config
    }

    fn write_gguf(&self, path: &Path, tensors: Vec<(String, Tensor)>) -> anyhow::Result<()> {
        use gguf_file::Value;
        let arch = self.arch.as_str();
        let key = |k: &str| format!("{arch}.{k}");
        let mut metadata: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String(arch.into())),
            ("general.name".into(), Value::String(format!("tiny-{arch}"))),
            (key("block_count"), Value::U32(self.layers as u32)),
            (key("context_length"), Value::U32(self.context as u32)),
            (key("embedding_length"), Value::U32(self.hidden as u32)),
            (
                key("feed_forward_length"),
                Value::U32(self.intermediate as u32),
            ),
            (key("attention.head_count"), Value::U32(self.heads as u32)),
            (
                key("attention.head_count_kv"),
                Value::U32(self.kv_heads as u32),
            ),
            (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
            (key("rope.freq_base"), Value::F32(10000.0)),
            (
                key("rope.dimension_count"),
                Value::U32(self.head_dim() as u32),
            ),
            (
                key("attention.key_length"),
                Value::U32(self.head_dim() as u32),
            ),
            (
                key("attention.value_length"),
                Value::U32(self.head_dim() as u32),
            ),
        ];
        metadata.push(("general.file_type".into(), Value::U32(7))); // llama.cpp's MOSTLY_Q8_0
        let mut quantized: Vec<(String, QTensor)> = Vec::new();
        for (name, tensor) in tensors {
            // Matrices in Q8_0, vectors (norms, biases) in F32, as llama.cpp quantizes.
            let dtype = if tensor.rank() == 2 {
                GgmlDType::Q8_0
            } else {
                GgmlDType::F32
            };
            quantized.push((name, QTensor::quantize(&tensor, dtype)?));
        }
        let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let ts: Vec<(&str, &QTensor)> = quantized.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        gguf_file::write(&mut file, &md, &ts)?;
        use std::io::Write;
        file.flush()?;
        Ok(())
    }
}

/// A GGUF tensor name as Hugging Face spells it.
fn hf_name(gguf: &str) -> String {
    match gguf {
        "token_embd.weight" => return "model.embed_tokens.weight".into(),
        "output_norm.weight" => return "model.norm.weight".into(),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.").unwrap_or(gguf);
    let (layer, name) = rest.split_once('.').unwrap_or(("0", rest));
    let hf = match name {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_q.bias" => "self_attn.q_proj.bias",
        "attn_k.bias" => "self_attn.k_proj.bias",
        "attn_v.bias" => "self_attn.v_proj.bias",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "attn_q_norm.weight" => "self_attn.q_norm.weight",
        "attn_k_norm.weight" => "self_attn.k_norm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        other => other,
    };
    format!("model.layers.{layer}.{hf}")
}
