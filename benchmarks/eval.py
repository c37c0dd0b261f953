"""Benchmark: greedy evaluation through rait's decoding loop against batched `model.generate`, same items, one run.

Both decode the same rendered evaluation prompts (`rait.prompts.render`, the eval
runner's prompts) greedily with the same batch size on the same model:

- rait: `rait.generate.generate`: batches grouped by shared prefix, the tokens a batch
  shares (chat header, system turn, hint) prefilled once, a static cache, finished rows
  leaving the batch;
- generate: what the eval runner did before: prompts sorted by length, left-padded,
  one `model.generate` call per batch.

Each setting (prompt x `max_new_tokens`) is timed over `--rounds` rounds in alternating
order (a shared machine drifts). Reported per way: items/s, answer tokens/s, and the time
inside model forwards split into prefill (forwards of more than one token per row) and
decode (one token per row), the rest being Python, tokenization and sampling. The run also
measures the CPU's fp32 matmul rate for a large square product and for a decode-shaped one
(batch x hidden times hidden x MLP width), so each phase can be put against the machine's
limit, and it checks that both ways give the same output strings.

With `--equality` it only checks outputs, on more items: 200 facts-ID and 100 NQ questions,
BASIC and REFUSE, the papers' 50 new tokens; every output string of the two ways must agree.

    python benchmarks/eval.py                       # CPU, SmolLM2, 96 facts-ID items, 16 and 50 tokens
    python benchmarks/eval.py --equality            # -> benchmarks/results/eval_equality_cpu.json
    python benchmarks/eval.py --device cuda --items 296 --batch-size 64
    python benchmarks/eval.py --device cuda --equality --dtype float32
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from probe import RESULTS, device_name, model_label, save  # benchmarks/probe.py, next to this script

from rait.data import TestSet, load_test_records
from rait.generate import SamplingSettings, generate
from rait.prompts.render import render


@torch.inference_mode()
def batched_generate(model, tokenizer, prompts, settings: SamplingSettings, batch_size: int) -> list[str]:
    """The previous greedy path: batches of similar text length, one padded `model.generate` call each."""
    config = settings.to_generation_config(tokenizer)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(model.device)
        new = model.generate(**enc, generation_config=config)[:, enc["input_ids"].shape[1] :]
        for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True)):
            out[i] = text
    return out


class ForwardClock:
    """Seconds spent inside the model's forwards, split by whether a forward runs one token per row (decode)."""

    def __init__(self, model):
        self.seconds = {"prefill": 0.0, "decode": 0.0}
        self.calls = {"prefill": 0, "decode": 0}
        self._start, self._phase = 0.0, "prefill"
        model.register_forward_pre_hook(self._before, with_kwargs=True)
        model.register_forward_hook(self._after, with_kwargs=True)

    def _before(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._phase = "decode" if ids.shape[1] == 1 else "prefill"
        if ids.is_cuda:
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def _after(self, module, args, kwargs, output):
        if output.logits.is_cuda:
            torch.cuda.synchronize()
        self.seconds[self._phase] += time.perf_counter() - self._start
        self.calls[self._phase] += 1

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)
        self.calls = dict.fromkeys(self.calls, 0)


def matmul_gflops(device: str, m: int, k: int, n: int, repeats: int) -> float:
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return repeats * 2 * m * k * n / (time.perf_counter() - start) / 1e9


@torch.inference_mode()
def decode_step_ms(model, rows: int, context: int = 64, steps: int = 8) -> float:
    """Median time of one decoding forward (one token per row, static cache of `context` + `steps`)."""
    from transformers import StaticCache

    ids = torch.randint(100, 1000, (rows, context), device=model.device)
    cache = StaticCache(config=model.config, max_cache_len=context + steps + 1)
    model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    token, mask = ids[:, -1:], torch.ones(rows, context, dtype=torch.long, device=model.device)
    times = []
    for step in range(steps):
        mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=-1)
        position = torch.full((rows, 1), context + step, device=model.device)
        start = time.perf_counter()
        model(input_ids=token, attention_mask=mask, position_ids=position, past_key_values=cache, use_cache=True)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def answer_tokens(tokenizer, outputs) -> int:
    """Tokens of the answers as re-tokenized text (the end-of-sequence token not counted)."""
    return sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in outputs)


def equality(model, tokenizer, batch_size: int) -> dict:
    """Both ways on 200 facts-ID (stratified by relation) and 100 NQ items, BASIC and REFUSE, 50 new tokens."""
    sets = {"facts:test_id": TestSet("facts-id", "facts:test_id", sample=200, stratify="subject"),
            "nq:dev": TestSet("nq", "nq:dev", sample=100)}
    decoding = SamplingSettings(max_new_tokens=50)
    checks = []
    for data, test_set in sets.items():
        records = load_test_records(test_set, seed=0)
        for prompt in ("basic", "refuse"):
            prompts = [render(r, prompt, tokenizer) for r in records]
            ours = [t[0] for t in generate(model, tokenizer, prompts, decoding, batch_size=batch_size)]
            theirs = batched_generate(model, tokenizer, prompts, decoding, batch_size)
            differing = [{"id": r.id, "rait": a, "generate": b} for r, a, b in zip(records, ours, theirs) if a != b]
            checks.append({"data": data, "prompt": prompt, "items": len(records), "differing": differing,
                           "identical": not differing})
            print(f"{data} {prompt}: {len(records) - len(differing)}/{len(records)} identical", flush=True)
    return {"benchmark": "greedy outputs, rait.generate vs batched model.generate", "max_new_tokens": 50,
            "batch_size": batch_size, "all_identical": all(c["identical"] for c in checks), "checks": checks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="model folder, or 'default' (SmolLM2-135M-Instruct)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="default: the device's (fp32 on CPU, bf16 on CUDA)")
    parser.add_argument("--data", default="facts:test_id")
    parser.add_argument("--items", type=int, default=96, help="a seeded sample of the data, stratified by subject")
    parser.add_argument("--prompts", nargs="+", default=["refuse", "basic"])
    parser.add_argument("--max-new-tokens", type=int, nargs="+", default=[16, 50],
                        help="the demo's open-QA setting and the papers'")
    parser.add_argument("--batch-size", type=int, default=16, help="the demo's eval batch size")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--equality", action="store_true", help="only compare outputs on 200 facts + 100 NQ items")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/eval_<device>.json (eval_equality_<device>.json)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from rait.models import load_model

    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    if args.equality:
        result = equality(model, tokenizer, args.batch_size) | {
            "model": model_label(args.model), "device": args.device, "dtype": str(model.dtype)}
        save(result, args.out or RESULTS / f"eval_equality_{args.device.split(':')[0]}.json")
        return
    records = load_test_records(TestSet("bench", args.data, sample=args.items, stratify="subject"), seed=0)
    clock = ForwardClock(model)
    hidden, width = model.config.hidden_size, model.config.intermediate_size
    machine = {"fp32_matmul_gflops_2048": matmul_gflops(args.device, 2048, 2048, 2048, 5),
               f"fp32_matmul_gflops_decode_{args.batch_size}x{hidden}x{width}":
                   matmul_gflops(args.device, args.batch_size, hidden, width, 200),
               "decode_forward_ms_by_rows": {rows: decode_step_ms(model, rows) for rows in (1, 4, 16, 64)},
               "weights_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20}
    ways = {
        "rait": lambda prompts, s: [t[0] for t in generate(model, tokenizer, prompts, s, batch_size=args.batch_size)],
        "generate": lambda prompts, s: batched_generate(model, tokenizer, prompts, s, args.batch_size),
    }
    settings_rows = []
    for prompt in args.prompts:
        prompts = [render(r, prompt, tokenizer) for r in records]
        prompt_tokens = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        for max_new in args.max_new_tokens:
            decoding = SamplingSettings(max_new_tokens=max_new)
            outputs, seconds = {}, {w: 0.0 for w in ways}
            phases = {w: {"prefill": 0.0, "decode": 0.0} for w in ways}
            calls = {w: {"prefill": 0, "decode": 0} for w in ways}
            per_round = []
            for r in range(args.rounds):
                this_round = {}
                for way in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
                    clock.reset()
                    start = time.perf_counter()
                    outputs[way] = ways[way](prompts, decoding)
                    this_round[way] = time.perf_counter() - start
                    seconds[way] += this_round[way]
                    for phase in phases[way]:
                        phases[way][phase] += clock.seconds[phase]
                        calls[way][phase] += clock.calls[phase]
                per_round.append({"seconds": this_round, "speedup": this_round["generate"] / this_round["rait"]})
            tokens = answer_tokens(tokenizer, outputs["rait"])
            row = {
                "prompt": prompt, "max_new_tokens": max_new, "items": len(records),
                "prompt_tokens_mean": sum(prompt_tokens) / len(prompts), "answer_tokens": tokens,
                "identical_outputs": outputs["rait"] == outputs["generate"],
                "differing_items": sum(a != b for a, b in zip(outputs["rait"], outputs["generate"])),
                "speedup": seconds["generate"] / seconds["rait"], "per_round": per_round,
            }
            for way in ways:
                total = seconds[way]
                row[way] = {
                    "seconds": total / args.rounds,
                    "items_per_second": args.rounds * len(records) / total,
                    "answer_tokens_per_second": args.rounds * tokens / total,
                    "prefill_seconds": phases[way]["prefill"] / args.rounds,
                    "decode_seconds": phases[way]["decode"] / args.rounds,
                    "other_seconds": (total - phases[way]["prefill"] - phases[way]["decode"]) / args.rounds,
                    "prefill_forwards": calls[way]["prefill"] // args.rounds,
                    "decode_forwards": calls[way]["decode"] // args.rounds,
                    "ms_per_decode_forward": 1000 * phases[way]["decode"] / max(calls[way]["decode"], 1),
                }
            print(f"{prompt} {max_new} tokens: {row['speedup']:.2f}x, identical={row['identical_outputs']}", flush=True)
            settings_rows.append(row)
    machine["fp32_matmul_gflops_2048_at_end"] = matmul_gflops(args.device, 2048, 2048, 2048, 5)
    result = {
        "benchmark": "greedy evaluation, rait.generate vs batched model.generate (same batch size, same items)",
        "model": model_label(args.model), "device": args.device, "device_name": device_name(args.device),
        "dtype": str(model.dtype).removeprefix("torch."), "torch_threads": torch.get_num_threads(),
        "data": args.data, "batch_size": args.batch_size, "rounds": args.rounds, "machine": machine,
        "settings": settings_rows,
    }
    save(result, args.out or RESULTS / f"eval_{args.device.split(':')[0]}.json")


if __name__ == "__main__":
    main()
