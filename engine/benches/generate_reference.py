"""transformers' `generate` for engine/benches/generate.rs: the same Qwen2 config and weights,
greedy, exactly N new tokens per row, prompts left-padded to one length. Prints the decode rate
(new tokens per second over the whole call, prefill included), or fails (the bench then says
skipped)."""
import sys
import time

import torch
from safetensors.torch import load_file
from transformers import Qwen2Config, Qwen2ForCausalLM

preset, weights, batch, new_tokens, vocab = sys.argv[1], sys.argv[2], *(int(x) for x in sys.argv[3:6])
lengths = [int(x) for x in sys.argv[6].split(",")]
PRESETS = {"tiny": (128, 4, 4, 2, 384), "mini": (256, 4, 4, 2, 768)}
hidden, layers, heads, kv_heads, mlp = PRESETS[preset]
config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                     num_attention_heads=heads, num_key_value_heads=kv_heads, tie_word_embeddings=True,
                     max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=10000.0)
model = Qwen2ForCausalLM(config)
missing, unexpected = model.load_state_dict(load_file(weights), strict=False)
assert not unexpected and all(m == "lm_head.weight" for m in missing), (missing, unexpected)
model.eval()
g = torch.Generator().manual_seed(1)
rows = [torch.randint(3, vocab, (n,), generator=g) for n in lengths[:batch]]
width = max(len(r) for r in rows)
ids = torch.zeros((batch, width), dtype=torch.long)
mask = torch.zeros((batch, width), dtype=torch.long)
for i, r in enumerate(rows):
    ids[i, width - len(r):] = r
    mask[i, width - len(r):] = 1
best = float("inf")
with torch.inference_mode():
    for _ in range(3):
        t0 = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, eos_token_id=None)
        best = min(best, time.perf_counter() - t0)
assert out.shape[1] - width == new_tokens, out.shape
print(f"{batch * new_tokens / best:.1f} {torch.__version__} {torch.get_num_threads()}")
