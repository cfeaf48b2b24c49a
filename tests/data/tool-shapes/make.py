"""Writes the tool-shaped import fixtures with the tools people use (not run by the tests).

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install pandas pyarrow
    /tmp/venv/bin/python tests/data/tool-shapes/make.py

The rows come from ../gsm8k/test.jsonl and ../traces/limo_deepseek-r1-distill-qwen-32b.jsonl;
tests/it/tool_shapes.rs imports each file and compares it with those source rows.
"""
import json
import pathlib

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

here = pathlib.Path(__file__).parent
data = here.parent
gsm8k = [json.loads(l) for l in (data / "gsm8k/test.jsonl").read_text().splitlines()[:50]]
limo = [json.loads(l) for l in (data / "traces/limo_deepseek-r1-distill-qwen-32b.jsonl").read_text().splitlines()[:30]]

# s1K's shape as pyarrow writes it: thinking_trajectories is a list<string> column.
rows = []
for r in limo:
    thinking, attempt = r["solution"].rsplit("**Final Answer**", 1)
    rows.append({
        "solution": r["gold_answer"],
        "question": r["question"],
        "cot_type": "math",
        "source_type": "LIMO",
        "metadata": json.dumps({"id": r["id"]}),
        "cot": None,
        "thinking_trajectories": [thinking],
        "attempt": "**Final Answer**" + attempt,
    })
table = pa.Table.from_pylist(rows, schema=pa.schema([
    ("solution", pa.string()), ("question", pa.string()), ("cot_type", pa.string()),
    ("source_type", pa.string()), ("metadata", pa.string()), ("cot", pa.string()),
    ("thinking_trajectories", pa.list_(pa.string())), ("attempt", pa.string()),
]))
pq.write_table(table, here / "s1k_pyarrow.parquet")

frame = pd.DataFrame(gsm8k)
# pandas CSV: worked answers carry newlines, commas and quotes inside fields.
frame.to_csv(here / "gsm8k_pandas.csv", index=False)
# pandas JSON records: one line, "/" escaped as "\/".
frame.to_json(here / "gsm8k_pandas_records.json", orient="records")
# JSONL with a UTF-8 byte order mark and CRLF line ends (Windows tools, Python's utf-8-sig).
with open(here / "gsm8k_bom_crlf.jsonl", "w", encoding="utf-8-sig", newline="\r\n") as out:
    for r in gsm8k:
        out.write(json.dumps(r, ensure_ascii=False) + "\n")
