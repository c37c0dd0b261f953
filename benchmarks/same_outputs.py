"""Check that a refactor changes no output: the test suite's tiny-model pipelines run with an earlier rait and with
this one, every file of the two run folders compared byte for byte.

    git worktree add WORKTREE <earlier commit>
    python benchmarks/same_outputs.py --before-src WORKTREE/src [--out runs/same-outputs]

The configs are those of tests/test_pipeline.py: two tracks with every default method (MMLU -> ARC-Challenge,
facts -> NQ), self-consistency beside DPO-RAIT, and GRPO-RAIT from Cor-RAIT, each on the tiny random
Llama of the tests. Only what records time or the machine is set aside: wall seconds (in pipeline.json,
stage.json, train.json, metrics and results), the log file, and the manifests' creation times and rait versions.
`beyond_stage_keys` lists the differing files that still differ with every stage key (and a stage's key parts)
set aside: empty where a change re-keyed stages and changed no output. Results: benchmarks/results/same_outputs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TIMING_KEYS = re.compile(r"seconds|runtime|created|^wall|_s$|_time$|per_second|rait_version")
# rait's and the trainers' logs; TrainingArguments pickled with a logging folder named by the clock
SET_ASIDE = ("rait.log", "workers.log", "training_args.bin")
UNORDERED = ("target_modules",)  # peft saves a set: its order changes with Python's string hashing


def configs(model: Path) -> dict[str, str]:
    sys.path.insert(0, str(ROOT / "tests"))
    import test_pipeline as suite

    # P(IK) needs known and unknown questions, which the random tiny model has only where its test monkeypatches them
    abstain = suite.ABSTAIN_RUN.format(model=model).replace("self_consistency, p_ik, dpo_rait",
                                                            "self_consistency, dpo_rait")
    return {"two_tracks": suite.config_text(model), "abstain_dpo": abstain,
            "grpo": suite.GRPO_RUN.format(model=model, start="cor_rait")}


def normalised(path: Path) -> bytes:
    """The file's bytes, with timing fields of JSON (and JSONL) files blanked, and a safetensors header's metadata in
    sorted order (the safetensors writer keeps it in a Rust hash map, whose order changes with each process)."""
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        size = int.from_bytes(data[:8], "little")
        return json.dumps(json.loads(data[8:8 + size]), sort_keys=True).encode() + data[8 + size:]
    if path.suffix not in (".json", ".jsonl"):
        return data

    def blank(value):
        if isinstance(value, dict):
            return {k: (None if TIMING_KEYS.search(str(k)) or _folder_hash(value, k) else
                        sorted(v) if k in UNORDERED and isinstance(v, list) else blank(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [blank(v) for v in value]
        return value

    try:
        if path.suffix == ".json":
            return json.dumps(blank(json.loads(data)), sort_keys=True).encode()
        return b"\n".join(json.dumps(blank(json.loads(line)), sort_keys=True).encode() for line in data.splitlines())
    except ValueError:
        return data


def _folder_hash(entry: dict, key: str) -> bool:
    """A manifest's hash of a folder (`path`/`sha256`, `trained`/`trained_sha256`): it covers the trainers' own
    files (training_args.bin, peft's unordered target_modules), which differ between any two runs."""
    named = entry.get("path") if key == "sha256" else entry.get(key.removesuffix("_sha256")) if key.endswith("_sha256") else None
    return isinstance(named, str) and Path(named).is_dir()


def csv_without_seconds(path: Path) -> bytes:
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or "seconds" not in lines[0].split(","):
        return path.read_bytes()
    column = lines[0].split(",").index("seconds")
    return "\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != column) for line in lines).encode()


def compare(a: Path, b: Path) -> dict:
    """Every file of run folders `a` and `b`, their own paths written as <run> (manifests and stage records name
    their inputs by path)."""
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name not in SET_ASIDE}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name not in SET_ASIDE}
    differing = []
    for rel in sorted(files_a & files_b):
        read = csv_without_seconds if rel.suffix == ".csv" else normalised
        if rel.suffix in (".md", ".html"):  # wall times appear in the tables' text
            sides = [_in_run(_front_matter_sorted(_without_times((run / rel).read_text(encoding="utf-8"))).encode(),
                             run) for run in (a, b)]
        else:
            sides = [_in_run(read(run / rel), run) for run in (a, b)]
        if sides[0] != sides[1]:
            differing.append(str(rel))
    return {"files": len(files_a | files_b), "only_before": sorted(map(str, files_a - files_b)),
            "only_after": sorted(map(str, files_b - files_a)), "differing": differing,
            "beyond_stage_keys": [rel for rel in differing if not _same_but_keys(Path(rel), a, b)],
            "stage_log": _stage_log_change(a, b) if "pipeline.json" in differing else None}


def _in_run(data: bytes, run: Path) -> bytes:
    """`data` with the run folder's own path written as <run> (manifests and stage records name their inputs by
    path)."""
    return data.replace(str(run.resolve()).encode(), b"<run>").replace(str(run).encode(), b"<run>")


def _same_but_keys(rel: Path, a: Path, b: Path) -> bool:
    """Whether two stage records (`stage.key`, `stage.json`, `pipeline.json`) are the same once every stage key and
    a stage's key parts are set aside: a change of what a key hashes (issue 32: an SFT training's key hashes its
    whole recipe) re-keys the stage and those that read it, and nothing else."""
    if rel.name == "stage.key":
        return True
    if rel.name not in ("stage.json", "pipeline.json"):
        return False

    def without_keys(value):
        if isinstance(value, dict):
            return {k: None if k in ("key", "parts") else without_keys(v) for k, v in value.items()}
        if isinstance(value, list):
            return [without_keys(v) for v in value]
        return value

    sides = [json.loads(_in_run(normalised(run / rel), run)) for run in (a, b)]
    if rel.name == "pipeline.json":  # the same stages in any order: the order is the stage log's own check
        sides = [sorted(map(json.dumps, without_keys(side)["stages"])) for side in sides]
        return sides[0] == sides[1]
    return without_keys(sides[0]) == without_keys(sides[1])


def _stage_log_change(a: Path, b: Path) -> str:
    """How two runs' pipeline.json differ: in their stages (name, key, cached, skipped), or only in their order."""
    logs = [[(s["stage"], s["key"], s["cached"], s.get("skipped")) for s in json.loads((run / "pipeline.json")
             .read_text(encoding="utf-8"))["stages"]] for run in (a, b)]
    if logs[0] == logs[1]:
        return "same stages in the same order; other fields differ"
    return "same stages, another order" if sorted(logs[0], key=str) == sorted(logs[1], key=str) else "other stages"


def _front_matter_sorted(text: str) -> str:
    """A model card's YAML header with its lines sorted: peft writes its tags from a set, in an order that changes
    with Python's string hashing."""
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        return text
    header, rest = text[4:].split("\n---\n", 1)
    return "---\n" + "\n".join(sorted(header.splitlines())) + "\n---\n" + rest


def _without_times(text: str) -> str:
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "<date>", text)
    return re.sub(r"\d+(\.\d+)? ?(s|min|seconds)\b", "<time>", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-src", required=True)
    parser.add_argument("--out", default="runs/same-outputs")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_model import build_tiny_model

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    model = build_tiny_model(out / "tiny-model")
    from grads import source_name

    paths = {"before": str(Path(args.before_src).resolve()), "after": str(ROOT / "src")}
    result = {"sources": {side: source_name(Path(path)) for side, path in paths.items()}, "configs": {}}
    for name, text in configs(model).items():
        (out / f"{name}.yaml").write_text(text, encoding="utf-8")
        for side, src in paths.items():
            subprocess.run([sys.executable, "-m", "rait", "run", str(out / f"{name}.yaml"), "--out", str(out / side / name)],
                           env={**os.environ, "PYTHONPATH": src}, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        result["configs"][name] = compare(out / "before" / name, out / "after" / name)
        print(name, json.dumps(result["configs"][name]), flush=True)
    result["identical"] = all(not (c["differing"] or c["only_before"] or c["only_after"])
                              for c in result["configs"].values())
    result["identical_but_stage_keys"] = all(not (c["beyond_stage_keys"] or c["only_before"] or c["only_after"])
                                             for c in result["configs"].values())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "same_outputs.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("identical" if result["identical"] else "DIFFERENT")


if __name__ == "__main__":
    main()
