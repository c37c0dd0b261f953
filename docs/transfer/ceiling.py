"""The ceiling of refusal transfer, without fine-tuning (docs/transfer.md, "The ceiling").

How much of SmolLM2's "I know this" signal carries over to relations it was not fitted on? For every relation
of the wide pool's training side and of validation-OOD (never a test set), a sample of questions spread over the
relation's fame ranking is measured once with the untouched model:

- the label: is Init-Basic's greedy answer (BASIC prompt) correct — what over-refusal is counted against;
- μ and σ from the probe (k = 10 samples at T = 1, the study's probe settings), and the agreement of the samples
  with the greedy answer (share of samples that give the greedy answer, word rule both ways);
- the last hidden state of the question under BASIC: P(IK)'s features (Kadavath et al. 2022; `rait.evaluate.abstain`).

Then, leaving each relation out in turn, P(IK) (`fit_p_ik`, known = μ ≥ 0.5 as in `rait run`) is fitted on the
questions of m other relations (m = 1, 2, 4, 8, all; `DRAWS` random choices of the m relations) and scored on the
held-out relation: AUROC against the greedy label. σ, agreement and μ need no fitting; they are the
training-free references. "Pooled" ranks all held-out questions together (one threshold for every relation, as a
deployed rule has); "per relation" averages the AUROC within each relation.

    python docs/transfer/ceiling.py measure --work runs/transfer-ceiling   # model work (resumable, ~25 min)
    python docs/transfer/ceiling.py analyse --work runs/transfer-ceiling   # writes docs/transfer/ceiling.*
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PER_RELATION = 32
SIZES = (1, 2, 4, 8)  # and "all": every other relation
DRAWS = 10
TAU = 0.5
N_BOOT = 1000


def items():
    """The measured questions, `ceiling_items.txt`: up to PER_RELATION per relation, drawn once (seed 0, spread over
    each relation's fame ranking) from train_wide and validation_ood as they were before the amendment of
    docs/transfer.md moved two relations between those splits; kept as a list so that what was measured stays
    what the analysis reads."""
    from rait.data.facts import RELATIONS, build_facts

    ids = (HERE / "ceiling_items.txt").read_text(encoding="utf-8").split()
    by_id = {record.id: record for record in build_facts(RELATIONS)}
    return [by_id[qid] for qid in ids]


def measure(work: Path) -> None:
    import torch

    from rait.data.scoring import match_answer
    from rait.evaluate.runner import EvalSettings, evaluate_records
    from rait.models import load_model
    from rait.probe.stage import ProbeSettings, run as probe
    from rait.select.static_conflicts import question_features

    torch.manual_seed(0)
    records = items()
    work.mkdir(parents=True, exist_ok=True)
    table_path = work / "table.jsonl"
    if not table_path.exists():
        settings = ProbeSettings(prompt="query_0shot", k=10, max_new_tokens=24, seed=0)
        probe(settings, records, table_path, model="default", work_dir=work / "probe-shards")
    model, tokenizer = load_model("default")
    model.eval()
    greedy_path = work / "greedy.jsonl"
    if not greedy_path.exists():
        with torch.no_grad():
            rows = evaluate_records(model, tokenizer, records, EvalSettings(prompt="basic", max_new_tokens=24,
                                                                             batch_size=64))
        greedy_path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    features_path = work / "features.npy"
    if not features_path.exists():
        with torch.no_grad():
            np.save(features_path, question_features(model, tokenizer, records, prompt="basic"))
    from rait.probe.table import read_table

    table = read_table(table_path).set_index("id")
    greedy = {row["id"]: row for row in map(json.loads, greedy_path.read_text(encoding="utf-8").splitlines())}
    out = []
    for record in records:
        row, answer = table.loc[record.id], greedy[record.id]["output"]
        agree = [bool(answer.strip()) and (match_answer(s, [answer], mode="word") or match_answer(answer, [s], mode="word"))
                 for s in row["samples"] if s.strip()]
        out.append({"id": record.id, "relation": record.subject, "greedy_correct": greedy[record.id]["outcome"] == "correct",
                    "mu": float(row["mu"]), "sigma": float(row["sigma"]),
                    "agreement": float(np.mean(agree)) if agree else 0.0})
    (work / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out), encoding="utf-8")


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else None


def _interval(labels: np.ndarray, scores: np.ndarray, seed: int = 0) -> list[float]:
    """95 % bootstrap interval of the AUROC over items (resampled with replacement)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(N_BOOT):
        pick = rng.integers(0, len(labels), len(labels))
        if (value := _auroc(labels[pick], scores[pick])) is not None:
            values.append(value)
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def analyse(work: Path) -> dict:
    from rait.evaluate.abstain import fit_p_ik

    rows = [json.loads(line) for line in (work / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    features = np.load(work / "features.npy")
    relation = np.array([r["relation"] for r in rows])
    label = np.array([r["greedy_correct"] for r in rows])
    known = np.array([r["mu"] >= TAU for r in rows])
    relations = list(dict.fromkeys(relation))
    reference = {name: np.array([r[name] for r in rows]) for name in ("mu", "sigma", "agreement")}

    def held_out_scores(size: int | None, draw: int) -> dict[str, np.ndarray]:
        """P(IK) of every question, fitted each time on `size` relations other than its own (None: all others)."""
        scores = np.full(len(rows), np.nan)
        for name in relations:
            others = [o for o in relations if o != name]
            rng = random.Random(f"ceiling/{name}/{size}/{draw}")
            fitted = others if size is None else rng.sample(others, size)
            mask = np.isin(relation, fitted)
            if known[mask].all() or not known[mask].any():
                continue  # one side only: P(IK) cannot be fitted on these relations
            probe = fit_p_ik(features[mask], known[mask], seed=draw)
            scores[relation == name] = probe.predict_proba(features[relation == name])[:, 1]
        return scores

    def summary(scores: np.ndarray) -> dict:
        defined = ~np.isnan(scores)
        per = [a for name in relations if (a := _auroc(label[(relation == name) & defined],
                                                         scores[(relation == name) & defined])) is not None]
        return {"pooled": _auroc(label[defined], scores[defined]),
                "pooled_interval": _interval(label[defined], scores[defined]), "per_relation": float(np.mean(per)),
                "n_relations": len(per)}

    result = {"items": len(rows), "relations": relations, "tau": TAU, "draws": DRAWS,
              "greedy_correct": {name: float(label[relation == name].mean()) for name in relations},
              "known_mu": {name: float(known[relation == name].mean()) for name in relations},
              "references": {name: summary(values) for name, values in reference.items()},
              "p_ik": {}}
    for size in (*SIZES, None):
        draws = [summary(held_out_scores(size, d)) for d in range(1 if size is None else DRAWS)]
        interval = draws[0]["pooled_interval"] if size is None else None
        key = "all" if size is None else str(size)
        pooled = [d["pooled"] for d in draws if d["pooled"] is not None]
        per = [d["per_relation"] for d in draws]
        result["p_ik"][key] = {"pooled": float(np.mean(pooled)), "per_relation": float(np.mean(per)),
                               "pooled_draws": pooled, "per_relation_draws": per,
                               **({"pooled_interval": interval} if interval else {})}
    # In-domain reference: P(IK) fitted on all relations, scored on held-out questions of the same relations.
    from sklearn.model_selection import StratifiedKFold

    in_domain = np.full(len(rows), np.nan)
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(features, relation):
        in_domain[test] = fit_p_ik(features[train], known[train]).predict_proba(features[test])[:, 1]
    result["p_ik_in_domain"] = summary(in_domain)
    return result


def write(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (HERE / "ceiling.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    sizes = [*SIZES, len(result["relations"]) - 1]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key in zip(axes, ("pooled", "per_relation")):
        p_ik = [result["p_ik"][str(s) if s in SIZES else "all"][key] for s in sizes]
        ax.plot(sizes, p_ik, "o-", label="P(IK), fitted on m other relations")
        ax.axhline(result["p_ik_in_domain"][key], color="k", ls=":", label="P(IK) in domain (5-fold)")
        for name, style in (("mu", "--"), ("sigma", "-."), ("agreement", "-")):
            ax.axhline(result["references"][name][key], ls=style, color={"mu": "C2", "sigma": "C3", "agreement": "C4"}[name],
                       label={"mu": "μ (needs gold)", "sigma": "σ", "agreement": "agreement with greedy"}[name])
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("relations P(IK) is fitted on (m)")
        ax.set_title(f"held-out relation, AUROC {key.replace('_', ' ')}")
    axes[0].set_ylabel("AUROC of Init-Basic's greedy correctness")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(HERE.parent / "img" / "transfer_ceiling.png", dpi=120)
    def interval(entry: dict) -> str:
        low, high = entry.get("pooled_interval") or (None, None)
        return f" [{low:.3f}, {high:.3f}]" if low is not None else f" (mean of {DRAWS} draws)"

    lines = ["| signal | pooled AUROC [95 % over items] | per-relation AUROC |", "| --- | ---: | ---: |"]
    for size in (*SIZES, "all"):
        entry = result["p_ik"][str(size)]
        lines.append(f"| P(IK), fitted on {size} other relation(s) | {entry['pooled']:.3f}{interval(entry)} | "
                     f"{entry['per_relation']:.3f} |")
    entry = result["p_ik_in_domain"]
    lines.append(f"| P(IK) in domain (5-fold over items) | {entry['pooled']:.3f}{interval(entry)} | "
                 f"{entry['per_relation']:.3f} |")
    for name in ("sigma", "agreement", "mu"):
        entry = result["references"][name]
        lines.append(f"| {name} (no fitting) | {entry['pooled']:.3f}{interval(entry)} | {entry['per_relation']:.3f} |")
    (HERE / "ceiling.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["measure", "analyse"])
    parser.add_argument("--work", type=Path, default=Path("runs/transfer-ceiling"))
    args = parser.parse_args(argv)
    if args.step == "measure":
        measure(args.work)
    else:
        write(analyse(args.work))


if __name__ == "__main__":
    main(sys.argv[1:])
