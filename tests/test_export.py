"""`rait export` on the tiny model: the merged folder outside rait, GGUF read back by transformers, the card, refusals.

The training output is a real one: a Cor-RAIT training set written by the build (`rait.select.build`), trained
with `rait.train.run`; the run folder around it is laid out as `rait run` lays one out (config.yaml,
<track>/[seed-<s>/]train/<method>/, results.csv, comparisons.csv).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from gguf import GGMLQuantizationType, GGUFReader
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer

from hostile import assert_refused
from rait.cli import main
from rait.data import QARecord
from rait.export import CARD_FILE, RAIT_FILE, ExportSettings, gguf_file_name, locate, run as export
from rait.generate import SamplingSettings, generate
from rait.pipeline.run import CONFIG_FILE
from rait.prompts import build_messages, render_messages
from rait.select.build import build_dataset, write_dataset
from rait.select.methods import METHODS
from rait.train import LoraSettings, TrainSettings, load_trained, run as train

QUESTIONS = ["What is the capital of France?", "Who wrote the novel?", "What is the largest planet?",
             "When was the first film released?"]
RESULT_COLUMNS = ["track", "test_set", "domain", "method", "n", "pc", "pc_low", "pc_high", "pw", "pw_low", "pw_high",
                  "pr", "pr_low", "pr_high", "ths", "ths_low", "ths_high"]


def records(n: int = 8) -> list[QARecord]:
    return [QARecord(id=f"q{i}", question=f"{QUESTIONS[i % 4]} {i}", source="facts", split="train", answer="Paris")
            for i in range(n)]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir) -> Path:
    """A Cor-RAIT training set (4 known, 4 unknown questions: IdK share 50 %) and a LoRA trained on it."""
    root = tmp_path_factory.mktemp("export")
    pool = records()
    table = pd.DataFrame({"id": [r.id for r in pool], "task": "oeqa", "mu": [0.9] * 4 + [0.1] * 4, "sigma": 0.5})
    selector = METHODS["cor_rait"].selector(n_total=8, idk_share=0.5, seed=0)
    rows = build_dataset(selector, table, pool, prompt="refuse")
    data = write_dataset(root / "build" / "cor_rait.jsonl", rows, selector, table_path=root / "build" / "table",
                         records_path=root / "build" / "pool", prompt="refuse")
    settings = TrainSettings(epochs=1, batch_size=4, grad_accum=1, learning_rate=1e-2,
                             lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    train(settings, data, root / "train", model=tiny_model_dir, progress=False)
    return root


@pytest.fixture(scope="module")
def exported(world) -> Path:
    """The merged export with every GGUF type."""
    return export(ExportSettings(gguf=["f32", "f16", "q8_0"]), locate(world / "train"), world / "out")


def prompts(tokenizer) -> list[str]:
    return [render_messages(build_messages(record, "refuse"), tokenizer) for record in records(4)]


def write_run(folder: Path, train_dir: Path, *, tracks=("facts",), seeds=None) -> Path:
    """A `rait run` folder around `train_dir` with its results and comparisons tables."""
    config = {"title": "export test run", "model": "default", "methods": ["cor_rait", "self_consistency"],
              "eval": {"refusal_mode": "paper"},
              "tracks": [{"name": name, "pool": {"data": "facts:train"},
                          "test_sets": [{"name": "facts-id", "data": "facts:test_id"}]} for name in tracks]}
    if seeds:
        config["seeds"] = list(seeds)
    folder.mkdir(parents=True)
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(config), encoding="utf-8")
    for name in tracks:
        for seed in seeds or [None]:
            runs = folder / name / (f"seed-{seed}" if seed is not None else "")
            shutil.copytree(train_dir, runs / "train" / "cor_rait")
    rows = [["facts", "facts-id", "ID", "Init-Basic", 100, 31.0, 25.0, 37.0, 69.0, 63.0, 75.0, 0, 0, 0, 0, "", ""],
            ["facts", "facts-id", "ID", "Cor-RAIT", 100, 26.0, 20.0, 32.0, 12.0, 7.5, 16.5, 62.0, 55.0, 68.5, 20.6,
             14.7, 26.4]]
    with (folder / "results.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([RESULT_COLUMNS, *rows])
    with (folder / "comparisons.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([
            ["track", "test_set", "domain", "a", "b", "kind", "pc_difference", "pc_low", "pc_high", "pw_difference",
             "pw_low", "pw_high", "ths_difference", "ths_low", "ths_high"],
            ["facts", "facts-id", "ID", "Cor-RAIT", "Init-Basic", "paired", -5.0, -11.0, 0.5, -57.0, -64.0, -49.5,
             20.6, 14.7, 26.4]])
    return folder


# ---------------------------------------------------------------- the merged folder

NO_RAIT = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads(1)
folder, messages = sys.argv[1], json.loads(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder).eval()
answers, texts = [], []
for turns in messages:
    text = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    texts.append(text)
    answers.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
assert not [name for name in sys.modules if name == "rait" or name.startswith("rait.")]
print(json.dumps({"texts": texts, "answers": answers, "dtype": str(model.dtype)}))
"""


def test_the_merged_folder_answers_as_load_trained_in_a_process_that_never_imports_rait(exported, world):
    model, tokenizer = load_trained(world / "train", dtype=torch.float32, device="cpu")
    expected = generate(model, tokenizer, prompts(tokenizer), SamplingSettings(max_new_tokens=12), batch_size=4)
    messages = [build_messages(record, "refuse") for record in records(4)]
    done = subprocess.run([sys.executable, "-I", "-c", NO_RAIT, str(exported), json.dumps(messages)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["texts"] == prompts(tokenizer)  # the saved chat template renders rait's prompts
    assert seen["answers"] == [answer[0] for answer in expected] and seen["dtype"] == "torch.float32"
    assert any(answer.strip() for answer in seen["answers"])  # the random model says something, so this compares


def test_the_merged_folder_holds_load_traineds_weights_tokenizer_and_generation_config(exported, world):
    model, _ = load_trained(world / "train", dtype=torch.float32, device="cpu")
    merged = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32)
    saved, expected = merged.state_dict(), model.state_dict()
    # safetensors stores fp32 bit for bit, so the merge is read back exactly
    assert saved.keys() == expected.keys() and all(torch.equal(saved[k], expected[k]) for k in expected)
    assert not any("lora" in name for name in saved)
    for name in ("chat_template.jinja", "generation_config.json", "tokenizer.json", "config.json"):
        assert (exported / name).is_file(), name


# ---------------------------------------------------------------- GGUF


def gguf_model(exported: Path, kind: str):
    folder, name = (exported / gguf_file_name(kind)).parent, Path(gguf_file_name(kind)).name
    return (AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32),
            AutoTokenizer.from_pretrained(folder, gguf_file=name))


def assert_within_half_precision(read: dict, expected: dict) -> None:
    """Matrices rounded to the nearest half: relative error at most its unit roundoff 2^-11 in the normal range,
    at most half the subnormal spacing (2^-24 / 2) below it; norms stay f32, as llama.cpp's converter keeps them."""
    assert read.keys() == expected.keys()
    for name, want in expected.items():
        if want.dim() == 1:
            assert torch.equal(read[name], want), name
        else:
            bound = torch.maximum(want.abs() * 2**-11, torch.full_like(want, 2**-25))
            assert bool(((read[name] - want).abs() <= bound).all()), name


def test_the_f32_gguf_reads_back_to_the_same_weights_tokenizer_and_answers(exported):
    merged = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(exported)
    model, gguf_tokenizer = gguf_model(exported, "f32")
    read, expected = model.state_dict(), merged.state_dict()
    # f32 is stored as is; the q/k rows are permuted for llama.cpp and transformers' reader permutes them back
    assert read.keys() == expected.keys() and all(torch.equal(read[k], expected[k]) for k in expected)
    assert model.config.tie_word_embeddings and model.config.num_key_value_heads == merged.config.num_key_value_heads
    texts = prompts(tokenizer)
    assert [gguf_tokenizer(t)["input_ids"] for t in texts] == [tokenizer(t)["input_ids"] for t in texts]
    assert gguf_tokenizer.chat_template == tokenizer.chat_template
    assert (gguf_tokenizer.eos_token, gguf_tokenizer.bos_token) == (tokenizer.eos_token, tokenizer.bos_token)
    tokenizer.padding_side = gguf_tokenizer.padding_side = "left"  # rait's batched generation pads on the left
    settings = SamplingSettings(max_new_tokens=12)
    assert generate(model, gguf_tokenizer, texts, settings) == generate(merged, tokenizer, texts, settings)


def test_the_f16_and_q8_0_ggufs_read_back_within_their_formats_rounding(exported):
    expected = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).state_dict()
    assert_within_half_precision(gguf_model(exported, "f16")[0].state_dict(), expected)
    quantised, _ = gguf_model(exported, "q8_0")
    for name, value in quantised.state_dict().items():
        want = expected[name]
        if want.dim() == 1:
            assert torch.equal(value, want), name
            continue
        # Q8_0: blocks of 32 along a row share d = max|x| / 127, stored in half precision; x is kept as
        # round(x / d) * d_half: error <= d / 2 + 127 |d - d_half| <= max|x| (1/254 + 2^-11)
        blocks = want.reshape(-1, 32)
        bound = blocks.abs().amax(dim=1, keepdim=True) * (1 / 254 + 2**-11) * (1 + 1e-6)
        assert bool(((value.reshape(-1, 32) - blocks).abs() <= bound).all()), name


def test_the_gguf_files_carry_llama_cpps_types_and_tokenizer_keys(exported):
    types = {"f32": {GGMLQuantizationType.F32}, "f16": {GGMLQuantizationType.F16},
             "q8_0": {GGMLQuantizationType.Q8_0}}
    for kind, matrices in types.items():
        reader = GGUFReader(exported / gguf_file_name(kind))
        fields = {name: reader.fields[name].contents() for name in
                  ("general.architecture", "general.file_type", "tokenizer.ggml.model", "tokenizer.ggml.pre",
                   "tokenizer.ggml.eos_token_id")}
        assert fields == {"general.architecture": "llama", "general.file_type": {"f32": 0, "f16": 1, "q8_0": 7}[kind],
                          "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2",
                          "tokenizer.ggml.eos_token_id": 2}
        assert {t.tensor_type for t in reader.tensors if len(t.shape) == 2} == matrices
        assert {t.tensor_type for t in reader.tensors if len(t.shape) == 1} == {GGMLQuantizationType.F32}
        assert "output.weight" not in {t.name for t in reader.tensors}  # tied: llama.cpp reuses token_embd
        token_types = reader.fields["tokenizer.ggml.token_type"].contents()
        assert token_types[:3] == [3, 3, 3] and set(token_types[3:]) == {1}  # the special tokens are control


# ---------------------------------------------------------------- the card and rait.json


def test_a_bare_train_output_gets_a_card_that_states_the_recipe_and_no_results(exported):
    card = ModelCard.load(exported / CARD_FILE)
    data = card.data.to_dict()
    assert {"base_model", "library_name", "tags", "datasets"} <= data.keys()
    assert data["library_name"] == "transformers" and "rait" in data["tags"] and "gguf" in data["tags"]
    assert data["datasets"] == ["cor_rait.jsonl"] and "model-index" not in data
    assert "8 samples, of which 4 teach \"I don't know\" (IdK share 50.0 %)" in card.text
    assert "r 4, alpha 8" in card.text and "learning rate 0.01" in card.text
    assert "<|im_start|>assistant" in card.text  # the rendered prompt
    assert "None: this was exported from a bare `rait train` output" in card.text
    info = json.loads((exported / RAIT_FILE).read_text(encoding="utf-8"))
    assert {key: info[key] for key in ("prompt", "refusal", "method")} == {
        "prompt": "refuse", "refusal": "I don't know", "method": "cor_rait"}
    assert {"base_model", "source"} <= info.keys()
    assert info["gguf"] == [gguf_file_name(kind) for kind in ("f32", "f16", "q8_0")]


def test_an_export_from_a_run_folder_states_the_runs_numbers(world, tmp_path):
    run_dir = write_run(tmp_path / "run", world / "train")
    source = locate(run_dir, method="cor_rait")
    assert (source.track, source.seed, source.train_dir) == ("facts", None, run_dir / "facts" / "train" / "cor_rait")
    out = export(ExportSettings(adapter_only=True), source, tmp_path / "adapter")
    card = ModelCard.load(out / CARD_FILE)
    assert "| facts-id (ID) | Cor-RAIT | 100 | 26.0 [20.0, 32.0] | 12.0 [7.5, 16.5] | 62.0 [55.0, 68.5] | " \
           "20.6 [14.7, 26.4] |" in card.text
    assert "| facts-id | -5.0 [-11.0, 0.5] | -57.0 [-64.0, -49.5] | 20.6 [14.7, 26.4] |" in card.text
    data = card.data.to_dict()
    assert data["library_name"] == "peft" and data["datasets"] == ["facts:train"]
    ths = {m["type"]: m["value"] for m in data["model-index"][0]["results"][0]["metrics"]}
    assert ths == {"pc": 26.0, "pw": 12.0, "pr": 62.0, "ths": 20.6}
    assert {p.name for p in out.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors", CARD_FILE, RAIT_FILE}
    assert not (out / "model.safetensors").exists() and not (out / "training_args.bin").exists()
    assert json.loads((out / RAIT_FILE).read_text(encoding="utf-8"))["run"]["track"] == "facts"


def test_the_adapter_alone_merges_into_its_base_as_load_trained_does(world, tiny_model_dir, tmp_path):
    from peft import PeftModel

    out = export(ExportSettings(adapter_only=True), locate(world / "train"), tmp_path / "adapter")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, out).merge_and_unload().state_dict()
    expected = load_trained(world / "train", dtype=torch.float32, device="cpu")[0].state_dict()
    assert all(torch.equal(merged[k], expected[k]) for k in expected)  # same peft merge, same process



def test_rait_ask_and_eval_load_an_adapter_alone_onto_its_base(world, tiny_model_dir, tmp_path, capsys):
    """An adapter-only export is a model rait can ask: its base (what the adapter's config names; rait's default
    model where rait.json names SmolLM2's id) with the adapter merged, the weights `load_trained` gives, and an
    identity that names both."""
    from rait.evaluate.suite import exported_adapter_base, fingerprint_of, load_for_eval
    from rait.models import model_fingerprint
    from rait.models.default import DEFAULT_BASE_ID

    out = export(ExportSettings(adapter_only=True), locate(world / "train"), tmp_path / "adapter")
    assert exported_adapter_base(out) == (str(tiny_model_dir.resolve()), None)
    model, _, identity = load_for_eval(str(out))
    expected = load_trained(world / "train")[0].state_dict()
    assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected)  # same peft merge, same process
    assert identity == fingerprint_of(out) and identity["base"] == model_fingerprint(tiny_model_dir)
    assert identity["adapter"] == str(out) and len(identity["adapter_sha256"]) == 64
    from rait.evaluate.runner import EvalSettings
    from rait.evaluate.suite import run as evaluate

    settings = EvalSettings(max_new_tokens=2, n_boot=10)
    evaluated = evaluate(settings, records(4), tmp_path / "eval", model=str(out))  # as `rait eval --model` does
    assert [r["output"] for r in evaluated.rows] == [
        r["output"] for r in evaluate(settings, records(4), tmp_path / "eval-trained", model=str(world / "train")).rows]
    try:
        main(["ask", str(out), "What is the capital of France?", "--json", "--max-new-tokens", "3"])
    except SystemExit as exit_:
        assert exit_.code == 0, capsys.readouterr().err
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert row["prompt"] == "refuse" and row["verdict"] in ("answered", "refused")  # rait.json's prompt
    notes = json.loads((out / RAIT_FILE).read_text(encoding="utf-8"))
    (out / RAIT_FILE).write_text(json.dumps(notes | {"base_model": DEFAULT_BASE_ID}), encoding="utf-8")
    assert exported_adapter_base(out) == ("default", None)  # found on any machine, not by this one's path
    assert exported_adapter_base(world / "train") is None and exported_adapter_base(tiny_model_dir) is None


def test_the_cli_exports_a_seed_of_a_run_with_several_tracks(world, tmp_path, capsys):
    run_dir = write_run(tmp_path / "run", world / "train", tracks=("facts", "nq"), seeds=(0, 1))
    main(["export", str(run_dir), "--method", "cor_rait", "--track", "facts", "--seed", "1", "--adapter-only",
          "--out", str(tmp_path / "out")])
    info = json.loads((tmp_path / "out" / RAIT_FILE).read_text(encoding="utf-8"))
    assert info["run"]["seed"] == 1 and info["source"].endswith("facts/seed-1/train/cor_rait")


# ---------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def hostile(world, tiny_model_dir, tmp_path_factory) -> Path:
    """Inputs that cannot be exported, each refused before any work."""
    root = tmp_path_factory.mktemp("hostile")
    write_run(root / "run", world / "train", tracks=("facts", "nq"), seeds=(0, 1))
    write_run(root / "one", world / "train")
    shutil.copytree(world / "train", root / "noadapter", ignore=shutil.ignore_patterns("adapter"))
    for name, changes in (("qlora", {"method": "qlora"}), ("full", {"method": "full"}),
                          ("mistral", {"base_model": str(root / "mistral-base")})):
        shutil.copytree(world / "train", root / name)
        summary = json.loads((root / name / "train.json").read_text(encoding="utf-8"))
        (root / name / "train.json").write_text(json.dumps(summary | changes), encoding="utf-8")
    shutil.copytree(tiny_model_dir, root / "mistral-base")
    config = json.loads((root / "mistral-base" / "config.json").read_text(encoding="utf-8"))
    (root / "mistral-base" / "config.json").write_text(json.dumps(config | {"model_type": "mistral"}), encoding="utf-8")
    (root / "taken").mkdir()
    (root / "taken" / "file").write_text("x", encoding="utf-8")
    return root


@pytest.mark.parametrize("args, fragments", [
    (["{root}/nowhere"], ["nowhere", "no such folder"]),
    (["{root}/mistral-base"], ["neither a `rait train` output"]),
    (["{root}/noadapter"], ["no adapter/ folder"]),
    (["{root}/qlora"], ["QLoRA", "--adapter-only"]),
    (["{root}/full", "--adapter-only"], ["fully fine-tuned", "no adapter"]),
    (["{root}/mistral", "--gguf", "f16"], ["--gguf", "Llama-family", "'mistral'"]),
    (["{root}/one", "--method", "cor_rait", "--gguf", "f8"], ["--gguf", "'f8'", "f32, f16, q8_0"]),
    (["{root}/one", "--method", "cor_rait", "--gguf", "f16", "--adapter-only"], ["--adapter-only", "choose one"]),
    (["{root}/one"], ["needs --method", "cor_rait"]),
    (["{root}/one", "--method", "grait"], ["--method grait", "trained methods are cor_rait"]),
    (["{root}/one", "--method", "self_consistency"], ["trains no model"]),
    (["{root}/one", "--method", "cor_rait", "--seed", "0"], ["--seed 0", "one seed"]),
    (["{root}/one", "--method", "cor_rait", "--track", "nq"], ["--track 'nq'", "it has facts"]),
    (["{root}/run", "--method", "cor_rait"], ["tracks facts, nq", "--track"]),
    (["{root}/run", "--method", "cor_rait", "--track", "facts"], ["seeds 0, 1", "--seed"]),
    (["{root}/run", "--method", "cor_rait", "--track", "facts", "--seed", "2"], ["--seed 2", "seeds 0, 1"]),
    (["{root}/one/facts/train/cor_rait", "--method", "cor_rait"], ["--method", "`rait train` output"]),
])
def test_what_cannot_be_exported_is_refused_before_any_work(hostile, capfd, args, fragments):
    argv = ["export", *[a.replace("{root}", str(hostile)) for a in args], "--out", str(hostile / "new")]
    assert_refused(argv, hostile, capfd, fragments)


@pytest.mark.parametrize("out, fragments", [
    ("taken", ["--out", "exists and is not empty"]),
    ("one/facts/train/cor_rait/export", ["would write into this input"]),
    ("one/export", ["would write into this input"]),
    ("taken/file", ["is a file, not a folder"]),
])
def test_an_out_that_is_taken_or_inside_the_input_is_refused(hostile, capfd, out, fragments):
    source = ["one/facts/train/cor_rait"] if out.startswith("one/facts") or out.startswith("taken") else [
        "one", "--method", "cor_rait"]
    argv = ["export", *[str(hostile / source[0]), *source[1:]], "--out", str(hostile / out)]
    assert_refused(argv, hostile, capfd, fragments)


# ---------------------------------------------------------------- the real default model


@pytest.mark.slow
def test_the_default_models_export_reads_back_from_its_f16_gguf_within_half_precision(tmp_path):
    """Two LoRA steps on the default model's last layer (the mechanics, not the method), exported with --gguf f16:
    the merged folder holds `load_trained`'s weights, the GGUF the same within f16 rounding, its tokenizer the
    same tokens for rait's prompts, and the card names SmolLM2 (benchmarks/export_demo_roundtrip.py runs the whole
    round trip on the demo's Cor-RAIT)."""
    rows = [{"prompt": build_messages(record, "refuse"), "completion": [{"role": "assistant", "content": answer}]}
            for record, answer in zip(records(4), ["Paris", "I don't know"] * 2)]
    settings = TrainSettings(max_steps=2, batch_size=2, grad_accum=1, learning_rate=1e-3,
                             lora=LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "k_proj"],
                                               layers=[29]))
    train(settings, rows, tmp_path / "train", progress=False)
    out = export(ExportSettings(gguf=["f16"]), locate(tmp_path / "train"), tmp_path / "out")
    expected = load_trained(tmp_path / "train", dtype=torch.float32, device="cpu")[0].state_dict()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).state_dict()
    assert all(torch.equal(merged[k], expected[k]) for k in expected)
    model, gguf_tokenizer = gguf_model(out, "f16")
    assert_within_half_precision(model.state_dict(), expected)
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = prompts(tokenizer)
    assert [gguf_tokenizer(t)["input_ids"] for t in texts] == [tokenizer(t)["input_ids"] for t in texts]
    assert ModelCard.load(out / CARD_FILE).data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
