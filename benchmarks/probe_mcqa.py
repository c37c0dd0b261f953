"""Benchmark: the MCQA letter probe's forwards with shared k-shot prefixes against plain padded forwards.

Both compute the option letters' next-token probabilities of the same 5-shot MMLU prompts
(`rait.probe.mcqa.MCQAProbe.prompt`), batch size 8, one process:

- shared prefix: `HFBackend.next_token_probs`: batches of questions that share their
  shots, whose shared tokens `rait.generate.prefill` runs once per batch;
- plain: batches of similar length, one left-padded forward each (every prompt whole).

Two pools: whole subjects (`--subjects`, `--per-subject` questions each: how the papers'
MMLU pools look, ~250 questions per subject) and a random sample across all subjects (about
two questions per subject: little to share). The two ways are timed in alternating order
over `--rounds` rounds; the result checks that their probabilities agree.

    python benchmarks/probe_mcqa.py        # CPU, SmolLM2, 4 subjects x 12 questions and 48 random
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch
from probe import RESULTS, device_name, model_label, save  # benchmarks/probe.py, next to this script

from rait.data import load_source
from rait.probe.backends import HFBackend
from rait.probe.mcqa import MCQAProbe, MCQASettings, letter_token_ids


@torch.inference_mode()
def plain_probs(backend, prompts, ids, batch_size, add_special_tokens) -> np.ndarray:
    """One left-padded forward per batch of similar length, LM head on the last position."""
    tokenizer, model = backend.tokenizer, backend.model
    encoded = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    out = np.empty((len(prompts), len(ids)))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in idx]}, padding=True, return_tensors="pt")
        mask = batch["attention_mask"].to(backend.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=batch["input_ids"].to(backend.device), attention_mask=mask, position_ids=positions,
                       logits_to_keep=1).logits[:, -1]
        out[idx] = torch.softmax(logits.float(), -1)[:, ids].double().cpu().numpy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--per-subject", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/probe_mcqa_<device>.json")
    args = parser.parse_args()

    from rait.models import load_model

    backend = HFBackend(*load_model(args.model, device=args.device))
    settings = MCQASettings(batch_size=args.batch_size)
    probe = MCQAProbe(backend, settings, exemplars=load_source("mmlu:val"))
    test = [r for r in load_source("mmlu:test") if not r.unscorable]
    subjects = sorted({r.subject for r in test})[: args.subjects]
    pools = {
        "whole_subjects": [r for s in subjects for r in [q for q in test if q.subject == s][: args.per_subject]],
        "random_sample": random.Random(0).sample(test, args.subjects * args.per_subject),
    }
    letter_ids = letter_token_ids(backend.tokenizer, "ABCD")
    flat = [i for letter in "ABCD" for i in letter_ids[letter]]
    results = {}
    for name, records in pools.items():
        prompts = [probe.prompt(r) for r in records]
        ways = {
            "shared_prefix": lambda: backend.next_token_probs(prompts, flat, batch_size=args.batch_size,
                                                              add_special_tokens=settings.add_special_tokens),
            "plain": lambda: plain_probs(backend, prompts, flat, args.batch_size, settings.add_special_tokens),
        }
        seconds = {way: 0.0 for way in ways}
        probs = {}
        for r in range(args.rounds):
            for way in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
                start = time.perf_counter()
                probs[way] = ways[way]()
                seconds[way] += time.perf_counter() - start
        lengths = [len(backend.tokenizer(p)["input_ids"]) for p in prompts]
        results[name] = {
            "questions": len(records), "subjects": len({r.subject for r in records}),
            "prompt_tokens_mean": float(np.mean(lengths)), "prompt_tokens_max": int(max(lengths)),
            "seconds": seconds, "questions_per_second": {w: args.rounds * len(records) / s for w, s in seconds.items()},
            "speedup": seconds["plain"] / seconds["shared_prefix"],
            "max_abs_prob_difference": float(np.abs(probs["shared_prefix"] - probs["plain"]).max()),
        }
    result = {
        "benchmark": "MCQA letter probe forwards: shared k-shot prefix vs plain padded batches",
        "model": model_label(args.model), "device": args.device,
        "device_name": device_name(args.device),
        "torch_threads": torch.get_num_threads(), "shots": settings.shots, "batch_size": args.batch_size,
        "rounds": args.rounds, "pools": results,
    }
    save(result, args.out or RESULTS / f"probe_mcqa_{args.device.split(':')[0]}.json")


if __name__ == "__main__":
    main()
