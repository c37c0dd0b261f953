"""Benchmark: does batched `model.generate` agree with itself when only the batches' make-up changes?

The baseline for `eval_equality_cuda_bf16.json`: in bf16 a row's greedy answer depends on which rows
share its batch (padding length, kernel shapes), so before blaming `rait.generate` for a bf16 mismatch,
this counts how often `generate` alone changes its answer when the same prompts are batched by 15
instead of 16 (200 facts-ID + 100 NQ items, BASIC and REFUSE, 50 new tokens, as in `eval.py --equality`).

    python benchmarks/generate_regroup.py bfloat16   # -> benchmarks/results/generate_regroup_cuda_bf16.json (on a GPU)
"""
import json
import sys

from eval import batched_generate  # benchmarks/eval.py, next to this script
from probe import RESULTS

from rait.data import TestSet, load_test_records
from rait.generate import SamplingSettings
from rait.models import load_model
from rait.prompts.render import render

model, tok = load_model("default", device="cuda", dtype=sys.argv[1])
decoding = SamplingSettings(max_new_tokens=50)
out = []
for data, ts in {"facts:test_id": TestSet("facts-id", "facts:test_id", sample=200, stratify="subject"),
                 "nq:dev": TestSet("nq", "nq:dev", sample=100)}.items():
    records = load_test_records(ts, seed=0)
    for prompt in ("basic", "refuse"):
        prompts = [render(r, prompt, tok) for r in records]
        by16 = batched_generate(model, tok, prompts, decoding, 16)
        # batches of 15 regroup every batch
        by15 = batched_generate(model, tok, prompts, decoding, 15)
        row = {"data": data, "prompt": prompt, "items": len(prompts),
               "generate_b16_equal_after_regrouping_b15": sum(x == y for x, y in zip(by16, by15))}
        print(json.dumps(row), flush=True)
        out.append(row)
short = {"bfloat16": "bf16", "float32": "fp32"}.get(sys.argv[1], sys.argv[1])
json.dump({"dtype": sys.argv[1], "rows": out}, open(RESULTS / f"generate_regroup_cuda_{short}.json", "w"), indent=1)
