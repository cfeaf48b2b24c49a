"""Loads a model folder written by Still with transformers and prints what the Rust test compares:
the logits for fixed token ids, and the greedy continuation. Used by engine/tests/hf_interop.rs
when STILL_PYTHON names a Python with torch and transformers."""
import json
import sys

import torch
from transformers import AutoTokenizer, Qwen2ForCausalLM

folder, ids_json = sys.argv[1], sys.argv[2]
ids = json.loads(ids_json)
model = Qwen2ForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
model.eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0]
    greedy = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                            eos_token_id=None, pad_token_id=tokenizer.pad_token_id)[0][len(ids):]
print(json.dumps({
    "logits": logits.tolist(),
    "greedy": greedy.tolist(),
    "encoded": tokenizer.encode("What is 12 + 34?<|im_end|>", add_special_tokens=False),
}))
