"""Benchmark: the batched open-QA probe against per-question `generate` loops, same questions, one run.

Three ways to draw k samples for each question, all followed by the same cutting, scoring
and embedding (`rait.probe.oeqa.score_samples`):

- batched: `rait.probe.probe_open`, `--batch-size` questions per call, each prompt
  prefilled once and its k samples drawn from copies of its cache;
- per-question loop: one `model.generate(num_return_sequences=k)` call per question
  (transformers prefills each of the k copies);
- per-sample loop: k `model.generate` calls of one sequence per question, the naive loop.

Reports samples/s of each and the ratios. The loops may be timed on the first
`--loop-questions` questions only (they are rates; the naive loop is slow on a CPU).
With `--rounds R` the three are timed R times, in alternating order (a shared machine
drifts: one loop's rate moved 0.9-1.5 samples/s between runs); the rates are over all
rounds and each round's ratios are kept.

    python benchmarks/probe.py            # CPU, SmolLM2, 32 NQ questions (loops on 4), k=10, 2 rounds
    python benchmarks/probe.py --device cuda --questions 128 --loop-questions 16 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rait.data import load_source, split_records
from rait.probe.backends import HFBackend
from rait.probe.measures import SentenceEmbedder
from rait.probe.oeqa import OpenProbe, OpenSettings, embed_unique, probe_open, score_samples
from rait.prompts import cut_at_splitter

RESULTS = Path(__file__).resolve().parent / "results"


def nq_pool(n: int, seed: int = 0):
    """The first n questions of the NQ training pool used in docs/probe.md (70 % of nq:dev, seed 0)."""
    train, _ = split_records(load_source("nq:dev"), test_size=0.3, seed=seed)
    return train[:n]


def score(records, outputs, embedder, settings):
    answers = [[cut_at_splitter(t).strip() for t in texts] for texts in outputs]
    vectors = embed_unique(embedder, [a for texts in answers for a in texts])
    return [score_samples(r, texts, np.stack([vectors[a] for a in texts]), settings) for r, texts in zip(records, answers)]


@torch.inference_mode()
def loop(backend, probe, records, settings, embedder, per_sample: bool) -> list[dict]:
    """One `model.generate` call per question (k sequences) or per sample (one sequence), then scoring."""
    model, tokenizer = backend.model, backend.tokenizer
    calls = settings.k if per_sample else 1
    config = settings.sampling.to_generation_config(tokenizer)
    config.num_return_sequences = 1 if per_sample else settings.k
    torch.manual_seed(settings.seed)
    outputs = []
    for record in records:
        enc = tokenizer(probe.prompt(record), return_tensors="pt", add_special_tokens=not settings.chat).to(backend.device)
        texts = []
        for _ in range(calls):
            out = model.generate(**enc, generation_config=config)
            texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        outputs.append(texts)
    return score(records, outputs, embedder, settings)


def ratios(rates: dict) -> dict:
    return {"speedup_vs_per_question_loop": rates["batched"] / rates["per_question_loop"],
            "speedup_vs_per_sample_loop": rates["batched"] / rates["per_sample_loop"]}


def model_label(spec: str) -> str:
    """How a result file names the model: the spec as given ("default") or the folder's name, never a path of the
    machine that ran it."""
    return spec if spec == "default" else Path(spec).name


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or platform.machine()


def save(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="model folder, or 'default' (SmolLM2-135M-Instruct)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--loop-questions", type=int, default=4, help="time the loops on the first N (0: all)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=16, help="questions per batched generate call")
    parser.add_argument("--rounds", type=int, default=2, help="time the three ways this many times, alternating order")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/probe_<device>.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from rait.models import load_model

    backend = HFBackend(*load_model(args.model, device=args.device))
    embedder = SentenceEmbedder(device=args.device)
    settings = OpenSettings(k=args.k, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    probe = OpenProbe(backend, embedder, settings)
    records = nq_pool(args.questions)
    loop_records = records[: args.loop_questions or args.questions]
    embedder(["warm-up"])

    def batched_probe():
        with tempfile.TemporaryDirectory() as tmp:
            return probe_open(backend, records, Path(tmp) / "k.jsonl", embedder=embedder, settings=settings,
                              progress=False).to_dict("records")

    ways = {"batched": (batched_probe, len(records)),
            "per_question_loop": (lambda: loop(backend, probe, loop_records, settings, embedder, False), len(loop_records)),
            "per_sample_loop": (lambda: loop(backend, probe, loop_records, settings, embedder, True), len(loop_records))}
    rows, rounds = {}, []
    for r in range(args.rounds):
        seconds = {}
        for name in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
            rows[name], seconds[name] = timed(ways[name][0])
        rounds.append({"seconds": seconds, **ratios({n: ways[n][1] * args.k / seconds[n] for n in ways})})
    seconds = {name: sum(r["seconds"][name] for r in rounds) for name in ways}
    rates = {name: args.rounds * ways[name][1] * args.k / seconds[name] for name in ways}
    matmul = torch.randn(1024, 1024)
    t0 = time.perf_counter()
    for _ in range(10):
        matmul @ matmul
    gflops = 10 * 2 * 1024**3 / (time.perf_counter() - t0) / 1e9
    result = {
        "benchmark": "open-QA knowledge probe, batched vs per-question generate loops",
        "model": model_label(args.model), "device": args.device,
        "device_name": device_name(args.device),
        "torch_threads": torch.get_num_threads(), "fp32_matmul_gflops_at_end": gflops,
        "questions": len(records), "loop_questions": len(loop_records), "k": args.k,
        "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
        "sampling": settings.sampling.as_dict(), "prompt": settings.prompt,
        "rounds": args.rounds, "seconds": seconds, "samples_per_second": rates, **ratios(rates),
        "per_round": rounds,
        "mean_mu": {name: float(np.mean([row["mu"] for row in rows[name]])) for name in ways},
    }
    save(result, args.out or RESULTS / f"probe_{args.device.split(':')[0]}.json")


if __name__ == "__main__":
    main()
