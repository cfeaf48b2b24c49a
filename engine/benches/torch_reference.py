"""PyTorch + transformers reference for engine/benches/train.rs: the same Qwen2 config, batch and
optimizer, timed the same way. Prints one markdown row, or fails (the bench then says skipped)."""
import sys
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
# The preset's shapes, as in engine/src/config.rs: hidden, layers, heads, KV heads, MLP.
PRESETS = {"tiny": (128, 4, 4, 2, 384), "mini": (256, 4, 4, 2, 768)}
preset = sys.argv[2] if len(sys.argv) > 2 else "mini"
batch, seq, vocab = (int(x) for x in sys.argv[3:6]) if len(sys.argv) > 5 else (8, 256, 8192)
hidden, layers, heads, kv_heads, mlp = PRESETS[preset]
config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                     num_attention_heads=heads, num_key_value_heads=kv_heads, tie_word_embeddings=True,
                     max_position_embeddings=4096)
model = Qwen2ForCausalLM(config)
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=1e-4)
ids = torch.randint(0, vocab, (batch, seq))
fwd = bwd = optim = 0.0
for step in range(steps + 2):
    t0 = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    t1 = time.perf_counter()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    t2 = time.perf_counter()
    opt.step()
    opt.zero_grad()
    t3 = time.perf_counter()
    if step >= 2:
        fwd += t1 - t0
        bwd += t2 - t1
        optim += t3 - t2
step_s = (fwd + bwd + optim) / steps
# VmHWM, not ru_maxrss: on Linux ru_maxrss carries over the parent's peak across exec.
rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
print(f"| PyTorch {torch.__version__} + transformers, f32, {torch.get_num_threads()} threads | {step_s:.3f} s | "
      f"fwd {fwd / steps:.3f} / bwd {bwd / steps:.3f} / optimizer {optim / steps:.3f} | {batch * seq / step_s:.0f} | {rss:.0f} MiB |")
