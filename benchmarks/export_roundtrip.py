"""Export round trip: a short LoRA training, `rait export --gguf f16`, and the exported model loaded without rait.

    python benchmarks/export_roundtrip.py --out DIR                      # the default model (SmolLM2), 12 questions
    python benchmarks/export_roundtrip.py --model TINY_DIR --out DIR     # any local model folder (the dry run's)

`rait train` (4 steps on facts questions) and `rait export` run as commands. Then two fresh processes answer the
same rendered REFUSE prompts greedily in fp32, one token sequence per prompt with transformers' `generate`: one
loads the training output with rait (`load_trained`: base + adapter), the other imports no rait and loads the
exported folder, then its f16 GGUF file (transformers' GGUF reader). Written: DIR/export_roundtrip.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ANSWER = """
import json, sys, torch
prompts, folder, gguf, device = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
{load}
model = model.to(device).eval()
answers = []
for prompt in prompts:
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(device)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=24,
                             pad_token_id=tokenizer.eos_token_id)
    answers.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
print(json.dumps({{"answers": answers, "rait_imported": "rait" in sys.modules}}))
"""
WITH_RAIT = "from rait.train import load_trained\nmodel, tokenizer = load_trained(folder, dtype='float32')"
PLAIN = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n"
         "kwargs = {'gguf_file': gguf} if gguf else {}\n"
         "tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)\n"
         "model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)")


def rait(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "rait", "--quiet", *args], check=True)


def answers(load: str, prompts: list[str], folder: Path, gguf: str, device: str) -> dict:
    code = ANSWER.format(load=load)
    done = subprocess.run([sys.executable, "-c", code, json.dumps(prompts), str(folder), gguf, device], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=12, help="questions answered both ways")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from rait.data import TestSet, load_test_records
    from rait.models import load_tokenizer
    from rait.prompts import render, training_example

    args.out.mkdir(parents=True, exist_ok=True)
    records = load_test_records(TestSet("pool", "facts:train", sample=32 + args.n, stratify="subject"), seed=0)
    train_rows, asked = records[:32], records[32:]
    rows = args.out / "rows.jsonl"
    rows.write_text("".join(json.dumps(training_example(r, "refuse", r.answer)) + "\n" for r in train_rows))
    trained, exported = args.out / "train", args.out / "export"
    rait("train", "--data", str(rows), "--model", args.model, "--max-steps", "4", "--batch-size", "8",
         "--grad-accum", "1", "--lora-r", "16", "--lora-alpha", "32", "--out", str(trained))
    rait("export", str(trained), "--out", str(exported), "--gguf", "f16")
    tokenizer = load_tokenizer(args.model)
    prompts = [render(r, "refuse", tokenizer) for r in asked]
    with_rait = answers(WITH_RAIT, prompts, trained, "", args.device)
    merged = answers(PLAIN, prompts, exported, "", args.device)
    gguf = answers(PLAIN, prompts, exported / "gguf", "model.f16.gguf", args.device)
    result = {
        "benchmark": "export round trip: rait train (4 LoRA steps) -> rait export --gguf f16 -> plain transformers",
        "model": args.model, "device": args.device, "questions": len(prompts),
        "merged_equal": sum(a == b for a, b in zip(with_rait["answers"], merged["answers"])),
        "gguf_f16_equal": sum(a == b for a, b in zip(with_rait["answers"], gguf["answers"])),
        "plain_process_imported_rait": merged["rait_imported"] or gguf["rait_imported"],
        "answers": [{"question": r.question, "rait": a, "merged": b, "gguf_f16": c}
                    for r, a, b, c in zip(asked, with_rait["answers"], merged["answers"], gguf["answers"])],
    }
    (args.out / "export_roundtrip.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "answers"}))


if __name__ == "__main__":
    main()
