"""Benchmark: issue 31's export round trip on the real default model, from the demo's Cor-RAIT.

    rait run configs/demo.yaml --out runs/demo                 # first, once (docs/demo.md)
    python benchmarks/export_demo_roundtrip.py                 # -> benchmarks/results/export_roundtrip_cpu.json
    python benchmarks/export_demo_roundtrip.py --run runs/demo --method cor_rait --n 50

`rait export RUN --method cor_rait --gguf f32 --gguf f16` runs as a command. The questions are a seeded sample of
`facts:test_id` (50, stratified by subject, seed 0; their ids are in the results file). `rait eval --model <the
run's train output>` answers them under the REFUSE prompt in fp32 (the demo's 24 new tokens, batch 64); then three
fresh processes that never import rait load the merged folder, the f32 GGUF and the f16 GGUF with plain
transformers (the GGUF's own tokenizer too), render the same chat messages with the saved chat template and
answer each question greedily with `generate`. Reported: how many of the answers equal `rait eval`'s, string for
string, the GGUF weights against the merged folder's, and whether the card renders and states the run's numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MAX_NEW_TOKENS, BATCH = 24, 64  # configs/demo.yaml's evaluation

PLAIN = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, gguf, messages = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
kwargs = {"gguf_file": gguf} if gguf else {}
tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs).eval()
texts, answers = [], []
for turns in messages:
    text = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    texts.append(text)
    answers.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
weights = None
if gguf:  # the GGUF's weights against the merged folder's (one level up)
    merged = AutoModelForCausalLM.from_pretrained(sys.argv[4], dtype=torch.float32).state_dict()
    read = model.state_dict()
    weights = {"tensors": len(read), "same_names": read.keys() == merged.keys(),
               "max_abs_difference": max(float((read[k] - merged[k]).abs().max()) for k in merged),
               "max_relative_difference": max(float(((read[k] - merged[k]).abs()
                                                     / merged[k].abs().clamp_min(2**-14)).max()) for k in merged)}
imported = [name for name in sys.modules if name == "rait" or name.startswith("rait.")]
print(json.dumps({"texts": texts, "answers": answers, "weights": weights, "rait_imported": imported}))
""".replace("MAX_NEW_TOKENS", str(MAX_NEW_TOKENS))


def rait(*args: str) -> float:
    """Run `rait ARGS` as a command; its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rait", "--quiet", *args], check=True, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - start, 2)


def plain(folder: Path, gguf: str, messages: list, merged: Path) -> dict:
    """Answers from a process that imports transformers and never rait (-I: no path tricks)."""
    done = subprocess.run([sys.executable, "-I", "-c", PLAIN, str(folder), gguf, json.dumps(messages), str(merged)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the plain-transformers process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def card_check(export: Path, run_dir: Path, label: str) -> dict:
    """The card loads as a Hub card, has the front matter keys, and shows the run's rows for the method."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(export / "README.md")
    with (run_dir / "results.csv").open(encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["method"] == label]
    shown = [f"| {r['test_set']} ({r['domain']}) | {label} | {r['n']} | {float(r['pc']):.1f} [" for r in rows]
    data = card.data.to_dict()
    return {"front_matter": sorted(data), "base_model": data.get("base_model"), "tags": data.get("tags"),
            "datasets": data.get("datasets"), "run_rows": len(rows),
            "states_the_runs_rows": bool(rows) and all(s in card.text for s in shown),
            "characters": len(card.content)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--method", default="cor_rait")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS / "export_roundtrip_cpu.json")
    args = parser.parse_args()

    import torch

    from rait.data import TestSet, load_test_records, write_records
    from rait.data.scoring import is_refusal
    from rait.export import gguf_file_name, locate
    from rait.models import load_tokenizer
    from rait.prompts import build_messages, render
    from rait.select.methods import METHODS

    source = locate(args.run, method=args.method)  # the run's train output, as `rait export` finds it
    questions = load_test_records(TestSet("facts-id", "facts:test_id", sample=args.n, stratify="subject"), 0)
    with tempfile.TemporaryDirectory(prefix="export-roundtrip-") as tmp:
        work = Path(tmp)
        write_records(work / "questions.jsonl", questions)
        export = work / "export"
        export_seconds = rait("export", str(args.run), "--method", args.method, "--out", str(export),
                              "--gguf", "f32", "--gguf", "f16")
        eval_seconds = rait("eval", "--data", str(work / "questions.jsonl"), "--prompt", "refuse", "--model",
                            str(source.train_dir), "--max-new-tokens", str(MAX_NEW_TOKENS), "--batch-size",
                            str(BATCH), "--n-boot", "100", "--out", str(work / "eval"))
        by_id = {row["id"]: row["output"] for row in map(json.loads, (work / "eval" / "outcomes.jsonl").open())}
        reference = [by_id[q.id] for q in questions]
        messages = [build_messages(q, "refuse") for q in questions]
        rendered = [render(q, "refuse", load_tokenizer(source.summary["base_model"])) for q in questions]
        variants = {"merged": plain(export, "", messages, export)}
        for kind in ("f32", "f16"):
            file = export / gguf_file_name(kind)
            variants[f"gguf_{kind}"] = plain(file.parent, file.name, messages, export)
        sizes = {str(p.relative_to(export)): p.stat().st_size for p in sorted(export.rglob("*")) if p.is_file()}
        card = card_check(export, args.run, METHODS[args.method].label)
        info = json.loads((export / "rait.json").read_text(encoding="utf-8"))

    result = {
        "benchmark": "export round trip: rait export (merged folder, f32 and f16 GGUF) vs rait eval, on the demo's "
                     f"{METHODS[args.method].label}",
        "command": f"python benchmarks/export_demo_roundtrip.py --run {args.run} --method {args.method} --n {args.n}",
        "device": "cpu", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "run": str(args.run), "train_output": str(source.train_dir.relative_to(args.run)),
        "questions": {"data": "facts:test_id", "sample": args.n, "stratify": "subject", "seed": 0,
                      "ids": [q.id for q in questions]},
        "decoding": {"prompt": "refuse", "max_new_tokens": MAX_NEW_TOKENS, "rait_eval_batch_size": BATCH,
                     "plain": "transformers generate, one question at a time, greedy, fp32"},
        "seconds": {"export": export_seconds, "rait_eval": eval_seconds},
        "export_files": sizes,
        "rait_json": {k: info[k] for k in ("prompt", "refusal", "method", "base_model")},
        "rendered_prompts_equal": {name: v["texts"] == rendered for name, v in variants.items()},
        "agree_with_rait_eval": {name: sum(a == b for a, b in zip(v["answers"], reference))
                                 for name, v in variants.items()},
        "refusals": {"rait_eval": sum(map(is_refusal, reference)),
                     **{name: sum(map(is_refusal, v["answers"])) for name, v in variants.items()}},
        "gguf_weights_vs_merged": {name: v["weights"] for name, v in variants.items() if v["weights"]},
        "plain_processes_imported_rait": any(v["rait_imported"] for v in variants.values()),
        "card": card,
        "answers": [{"id": q.id, "question": q.question, "rait_eval": ref,
                     **{name: v["answers"][i] for name, v in variants.items()}}
                    for i, (q, ref) in enumerate(zip(questions, reference))],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("seconds", "agree_with_rait_eval", "refusals", "gguf_weights_vs_merged",
                                              "plain_processes_imported_rait", "rendered_prompts_equal")}, indent=2))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
