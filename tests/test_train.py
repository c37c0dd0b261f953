"""Weighted SFT on the tiny model: the objective, its gradients, saving and loading, and errors.

The reference for every loss here is computed independently of the trainer: a plain forward
pass per sample, cross-entropy from the full logits over the completion tokens, times the
weight, summed and divided by the number of samples.
"""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from rait.errors import DataError, RaitError
from rait.models import load_model
from rait.train import (
    LoraSettings,
    TrainSettings,
    WeightedSFTConfig,
    WeightedSFTTrainer,
    load_trained,
    read_training_rows,
    run as train,
)

pytestmark = pytest.mark.numerics  # floats computed two ways: run again on a second kernel path (Makefile)

ANSWERS = ["Paris", "New Delhi", "Jupiter", "Sinclair Lewis is the answer", "1930", "the capital of India", "C", "I don't know"]


def make_rows(n: int = 8, weights: list[float] | None = None, answers: list[str] | None = None) -> list[dict]:
    """Prompt/completion rows whose answers differ in length (so token and sample means differ)."""
    answers = answers or ANSWERS
    rows = []
    for i in range(n):
        row = {
            "prompt": [{"role": "user", "content": f"Question: what is the capital {i}?"}],
            "completion": [{"role": "assistant", "content": answers[i % len(answers)]}],
        }
        if weights is not None:
            row["weight"] = weights[i]
        rows.append(row)
    return rows


def config(tmp_path, batch_size: int = 4, grad_accum: int = 1, **kwargs) -> WeightedSFTConfig:
    return WeightedSFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=batch_size,
                             gradient_accumulation_steps=grad_accum, report_to="none", save_strategy="no",
                             disable_tqdm=True, seed=0, **kwargs)


def accumulated_gradients(trainer, grad_accum: int) -> tuple[float, dict[str, torch.Tensor]]:
    """One accumulation cycle through the Trainer's own path: batch sampling, loss scaling, backward."""
    model = trainer.model
    model.zero_grad()
    batches, n_items = trainer.get_batch_samples(iter(trainer.get_train_dataloader()), grad_accum, trainer.args.device)
    total = sum(float(trainer.training_step(model, batch, n_items)) for batch in batches)
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return total, grads


def reference_gradients(model, tokenizer, trainer_dataset, weights: list[float]) -> tuple[float, dict[str, torch.Tensor]]:
    """Micro-batch 1 by hand: for each sample, w_i * (token-mean CE of its completion) / N, from full logits."""
    model.zero_grad()
    model.train()
    total = 0.0
    for row, weight in zip(trainer_dataset, weights):
        input_ids = torch.tensor([row["input_ids"]])
        labels = torch.tensor([row["labels"]])
        logits = model(input_ids=input_ids).logits
        loss = F.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100) * weight / len(weights)
        loss.backward()
        total += float(loss.detach())
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return total, grads


def assert_same_gradients(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        scale = float(b[name].abs().max()) or 1.0
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5 * scale,
                                   msg=lambda m, name=name: f"{name}: {m}")


def full_trainer(tiny_model_dir, tmp_path, rows, **kwargs) -> WeightedSFTTrainer:
    model, tokenizer = load_model(tiny_model_dir)
    return WeightedSFTTrainer(model, args=config(tmp_path, **kwargs), train_dataset=Dataset.from_list(rows),
                              processing_class=tokenizer)


# ---------------------------------------------------------------- the objective


def test_micro_batch_4_by_accumulation_2_equals_micro_batch_1_loop(tiny_model_dir, tmp_path):
    weights = [0.5, 2.0, 1.0, 0.25, 3.0, 1.0, 0.75, 1.5]
    rows = make_rows(8, weights)
    trainer = full_trainer(tiny_model_dir, tmp_path / "a", rows, batch_size=4, grad_accum=2)
    loss, grads = accumulated_gradients(trainer, grad_accum=2)

    one_by_one = full_trainer(tiny_model_dir, tmp_path / "b", rows, batch_size=1, grad_accum=8)
    loss_1, grads_1 = accumulated_gradients(one_by_one, grad_accum=8)

    model, tokenizer = load_model(tiny_model_dir)
    ref_loss, ref_grads = reference_gradients(model, tokenizer, trainer.train_dataset, weights)

    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert loss_1 == pytest.approx(ref_loss, rel=1e-5)
    assert_same_gradients(grads, ref_grads)
    assert_same_gradients(grads_1, ref_grads)


def test_weight_two_equals_the_sample_twice(tiny_model_dir, tmp_path):
    """Same summed objective; the mean divides by the rows of each batch (8 vs 9)."""
    weighted = full_trainer(tiny_model_dir, tmp_path / "w", make_rows(8, [2.0] + [1.0] * 7), batch_size=4, grad_accum=2)
    loss_w, grads_w = accumulated_gradients(weighted, grad_accum=2)

    rows = make_rows(8)
    duplicated = full_trainer(tiny_model_dir, tmp_path / "d", [rows[0]] + rows, batch_size=3, grad_accum=3)
    loss_d, grads_d = accumulated_gradients(duplicated, grad_accum=3)

    assert loss_w * 8 == pytest.approx(loss_d * 9, rel=1e-5)
    assert_same_gradients({k: v * 8 for k, v in grads_w.items()}, {k: v * 9 for k, v in grads_d.items()})


def test_weights_one_is_the_per_sample_mean_not_trl_token_mean(tiny_model_dir, tmp_path):
    rows = make_rows(8)  # no weight column: all weights 1
    trainer = full_trainer(tiny_model_dir, tmp_path / "w", rows, batch_size=8)
    loss, grads = accumulated_gradients(trainer, grad_accum=1)
    model, tokenizer = load_model(tiny_model_dir)
    ref_loss, ref_grads = reference_gradients(model, tokenizer, trainer.train_dataset, [1.0] * 8)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert_same_gradients(grads, ref_grads)

    # TRL's own loss averages tokens, so it differs when the answers differ in length ...
    plain_model, plain_tokenizer = load_model(tiny_model_dir)
    plain = SFTTrainer(plain_model, args=SFTConfig(output_dir=str(tmp_path / "p"), per_device_train_batch_size=8,
                                                   report_to="none", disable_tqdm=True, bf16=False),
                       train_dataset=Dataset.from_list(rows), processing_class=plain_tokenizer)
    plain_loss, _ = accumulated_gradients(plain, grad_accum=1)
    assert abs(plain_loss - loss) > 1e-3


def test_equal_length_answers_match_plain_trl_sft(tiny_model_dir, tmp_path):
    """When every answer has the same tokens, token mean = sample mean: our weights-1 loss is TRL's."""
    rows = make_rows(8, answers=["Paris"])
    ours, _ = accumulated_gradients(full_trainer(tiny_model_dir, tmp_path / "w", rows, batch_size=4, grad_accum=2), 2)
    model, tokenizer = load_model(tiny_model_dir)
    plain = SFTTrainer(model, args=SFTConfig(output_dir=str(tmp_path / "p"), per_device_train_batch_size=4,
                                             gradient_accumulation_steps=2, report_to="none", disable_tqdm=True, bf16=False),
                       train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    theirs, _ = accumulated_gradients(plain, 2)
    assert ours == pytest.approx(theirs, rel=1e-5)


def test_loss_ignores_prompt_tokens(tiny_model_dir, tmp_path):
    """Only completion tokens carry labels, including the closing <|im_end|> although pad == eos."""
    trainer = full_trainer(tiny_model_dir, tmp_path, make_rows(2), batch_size=2)
    tokenizer = trainer.processing_class
    for row in trainer.train_dataset:
        labelled = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
        text = tokenizer.decode(labelled)
        assert text.startswith(row["completion"][0]["content"])
        assert tokenizer.eos_token in text
        assert "Question" not in text


def test_plain_text_rows_are_rendered_with_the_chat_template(tiny_model_dir, tmp_path):
    rows = make_rows(2)
    text_rows = [{"prompt": r["prompt"][0]["content"], "completion": r["completion"][0]["content"]} for r in rows]
    chat = full_trainer(tiny_model_dir, tmp_path / "c", rows, batch_size=2).train_dataset
    text = full_trainer(tiny_model_dir, tmp_path / "t", text_rows, batch_size=2).train_dataset
    assert chat["input_ids"] == text["input_ids"] and chat["labels"] == text["labels"]
    assert "<|im_start|>" in load_model(tiny_model_dir)[1].decode(text["input_ids"][0])


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda row: row.pop("completion"), "completion"),
        (lambda row: row.update(completion=[{"role": "assistant", "content": "  "}]), "completion"),
        (lambda row: row.update(weight=0.0), "weight"),
        (lambda row: row.update(weight=-1.0), "weight"),
        (lambda row: row.update(weight=float("nan")), "weight"),
        (lambda row: row.update(prompt=[]), "prompt"),
    ],
)
def test_bad_rows_name_the_row_and_field(tmp_path, tiny_model_dir, edit, field):
    rows = make_rows(4, [1.0] * 4)
    edit(rows[2])
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_training_rows(path)
    assert (err.value.line, err.value.field) == (3, field)

    model, tokenizer = load_model(tiny_model_dir)
    if "completion" not in rows[2]:
        rows[2]["completion"] = None
    with pytest.raises(DataError) as err:
        WeightedSFTTrainer(model, args=config(tmp_path), train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    assert (err.value.line, err.value.field) == (3, field)


def test_missing_weight_is_one_when_reading(tmp_path):
    rows = make_rows(2, [2.5, 1.0])
    del rows[1]["weight"]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert [r["weight"] for r in read_training_rows(path)] == [2.5, 1.0]


def test_tokenizer_without_chat_template_is_refused(tiny_model_dir, tmp_path):
    model, tokenizer = load_model(tiny_model_dir)
    tokenizer.chat_template = None
    with pytest.raises(RaitError, match="chat template"):
        WeightedSFTTrainer(model, args=config(tmp_path), train_dataset=Dataset.from_list(make_rows(2)), processing_class=tokenizer)


def test_truncation_that_drops_a_sample_is_an_error(tiny_model_dir, tmp_path):
    model, tokenizer = load_model(tiny_model_dir)
    with pytest.raises(RaitError, match="max_length"):
        WeightedSFTTrainer(model, args=config(tmp_path, max_length=4), train_dataset=Dataset.from_list(make_rows(2)),
                           processing_class=tokenizer)


@pytest.mark.parametrize("kwargs", [{"packing": True}, {"padding_free": True}, {"completion_only_loss": False}, {"loss_type": "dft"}])
def test_config_refuses_settings_that_lose_the_weights(tmp_path, kwargs):
    with pytest.raises(ValueError):
        config(tmp_path, **kwargs)


def test_qlora_without_bitsandbytes_or_gpu_is_a_clear_error(tiny_model_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine could run QLoRA")
    with pytest.raises(RaitError, match="QLoRA needs a CUDA GPU"):
        train(TrainSettings(method="qlora"), make_rows(2), tmp_path, model=tiny_model_dir, progress=False)


def test_unknown_method_and_merge_without_lora_are_refused():
    with pytest.raises(RaitError, match="unknown training method"):
        TrainSettings(method="prefix")
    with pytest.raises(RaitError, match="LoRA adapters only"):
        TrainSettings(method="full", merge=True)


# ---------------------------------------------------------------- train, save, load


def logits_of(model, tokenizer, text: str = "Question: what is the capital of France?") -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


@pytest.mark.parametrize("progress", [False, True])
def test_training_prints_no_log_dicts(tiny_model_dir, tmp_path, capsys, progress):
    result = train(TrainSettings(epochs=1, batch_size=2, grad_accum=1), make_rows(4), tmp_path, model=tiny_model_dir,
                   progress=progress)
    assert len(result.losses) == 2  # still logged, only not printed
    captured = capsys.readouterr()
    assert "'loss'" not in captured.out + captured.err


def test_lora_train_saves_an_adapter_that_loads_back(tiny_model_dir, tmp_path):
    settings = TrainSettings(lora=LoraSettings(r=4, alpha=8, dropout=0.0), epochs=2, batch_size=2, grad_accum=2,
                             learning_rate=5e-2, merge=True)
    result = train(settings, make_rows(8), tmp_path, model=tiny_model_dir, progress=False)

    assert result.optimizer_steps == 4  # 8 samples / (2 x 2) per step, 2 epochs
    assert result.updates == 3  # the first step is the warm-up's, at learning rate 0
    assert [step for step, _ in result.losses] == [1, 2, 3, 4]
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary["optimizer_steps"] == 4 and summary["method"] == "lora"
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "train.json.manifest.json").is_file()

    base, tokenizer = load_model(tiny_model_dir)
    tuned, _ = load_trained(tmp_path)  # merged folder
    (tmp_path / "train.json").write_text(json.dumps({**summary, "merged": None}))
    from_adapter, _ = load_trained(tmp_path)  # base + adapter, merged on load
    before, after, after_adapter = (logits_of(m, tokenizer) for m in (base, tuned, from_adapter))
    assert not torch.allclose(before, after, atol=1e-3)
    torch.testing.assert_close(after, after_adapter, rtol=1e-4, atol=1e-5)


def test_full_fine_tuning_saves_a_whole_model(tiny_model_dir, tmp_path):
    settings = TrainSettings(method="full", epochs=1, batch_size=4, grad_accum=1, learning_rate=1e-2)
    result = train(settings, make_rows(8), tmp_path, model=tiny_model_dir, progress=False)
    assert result.optimizer_steps == 2
    tuned, tokenizer = load_trained(tmp_path)
    base, _ = load_model(tiny_model_dir)
    assert (tmp_path / "model" / "config.json").is_file()
    assert not torch.allclose(logits_of(base, tokenizer), logits_of(tuned, tokenizer), atol=1e-3)
    assert math.isfinite(result.train_loss)


def test_load_trained_rejects_a_folder_that_is_neither(tmp_path):
    from rait.errors import ModelError

    with pytest.raises(ModelError, match="neither"):
        load_trained(tmp_path)


def test_adapter_merged_into_a_loaded_base_is_load_trained_and_leaves_the_base_exact(tiny_model_dir, tmp_path):
    """One base serves several trained models: inside the context its logits are exactly those of
    `load_trained` (same merge), and afterwards every base weight is bit-identical to before and no
    LoRA module is left."""
    from peft.tuners.lora import LoraLayer

    from rait.train import adapter_merged, lora_base

    folders = []
    for seed in (0, 1):
        settings = TrainSettings(lora=LoraSettings(r=4, alpha=8, dropout=0.0), epochs=1, batch_size=2, grad_accum=1,
                                 learning_rate=5e-2, seed=seed)
        train(settings, make_rows(4, answers=ANSWERS[seed * 4:]), tmp_path / str(seed), model=tiny_model_dir, progress=False)
        folders.append(tmp_path / str(seed))
    base, tokenizer = load_model(tiny_model_dir)
    assert lora_base(folders[0]) == tiny_model_dir.resolve()
    original = {name: weight.clone() for name, weight in base.state_dict().items()}
    for folder in folders + folders[:1]:
        with adapter_merged(base, folder) as merged:
            inside = logits_of(merged, tokenizer)
        alone, _ = load_trained(folder)
        assert torch.equal(inside, logits_of(alone, tokenizer))
        assert not torch.allclose(inside, logits_of(base, tokenizer), atol=1e-3)
        state = base.state_dict()
        assert state.keys() == original.keys()
        assert all(torch.equal(state[name], weight) for name, weight in original.items())
        assert not any(isinstance(module, LoraLayer) for module in base.modules())


_KILL_DURING_SAVE = r"""
import json, os, signal, sys
from pathlib import Path
import peft.peft_model
from rait.train import LoraSettings, TrainSettings
from rait.train import run as train

rows, out, model, seed, kill_at = json.loads(sys.argv[1])
calls = []
if kill_at == "weights":  # half of the adapter's weights on disk, then gone
    def save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)
        os.kill(os.getpid(), signal.SIGKILL)
    peft.peft_model.safe_save_file = save_file
elif kill_at is not None:  # the kill_at-th rename into the output folder (0: count them)
    replace = os.replace
    def counted_replace(src, dst):
        calls.extend([dst] if str(dst).startswith(out) else [])
        if calls and len(calls) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return replace(src, dst)
    os.replace = counted_replace
settings = TrainSettings(lora=LoraSettings(r=4, alpha=8, dropout=0.0), epochs=1, batch_size=2, learning_rate=5e-3,
                         seed=seed, merge=seed == 1)
train(settings, rows, out, model=model, progress=False)
print(len(calls))
"""


def _train_in_subprocess(rows, out, model, seed, kill_at):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", _KILL_DURING_SAVE, json.dumps([rows, str(out), str(model), seed, kill_at])],
                          capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": ""}, timeout=300)


def test_a_save_killed_at_any_moment_over_an_earlier_output_leaves_it_whole_or_no_output(tmp_path, tiny_model_dir):
    """kill -9 of `rait train` while it saves over an earlier output (issue 17) once left a 0-byte
    adapter_config.json beside the old train.json. Now: the earlier output (seed 0, adapter only), the new
    one (seed 1, adapter + merged), or no train.json, at every rename into the output folder and inside the weights."""
    import shutil

    from rait.artifacts import read_manifest, sha256_file
    from rait.errors import ModelError

    def weights(folder):  # the tensors only: adapter_config.json lists a set, in per-process order
        return {f"{p.parent.name}/{p.name}": sha256_file(p) for p in sorted(folder.glob("*/*.safetensors"))}

    rows = make_rows(4)
    outputs = {}
    for seed in (0, 1):
        reference = tmp_path / f"reference-{seed}"
        done = _train_in_subprocess(rows, reference, tiny_model_dir, seed, kill_at=0 if seed else None)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs[seed] = weights(reference)
    renames = int(done.stdout.split()[-1])
    assert renames >= 2 and len(outputs[0]) == 1 and len(outputs[1]) == 2

    outcomes = set()
    for kill_at in ["weights", *range(1, renames + 1)]:
        out = tmp_path / f"out-{kill_at}"
        shutil.copytree(tmp_path / "reference-0", out)
        killed = _train_in_subprocess(rows, out, tiny_model_dir, 1, kill_at)
        assert killed.returncode == -9, (kill_at, killed.stderr[-2000:])
        if (out / "train.json").exists():
            seed = read_manifest(out / "train.json")["seed"]
            assert weights(out) == outputs[seed], f"killed at {kill_at}: train.json of seed {seed} beside other weights"
            load_trained(out)
            outcomes.add(seed)
        else:
            with pytest.raises(ModelError, match="run it again"):
                load_trained(out)
            outcomes.add(None)
    assert outcomes == {0, None}  # the last rename is the new train.json: a kill after it is a finished run
    assert _train_in_subprocess(rows, out, tiny_model_dir, 1, None).returncode == 0  # the rerun cleans up
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "merged", "train.json", "train.json.manifest.json"]


@pytest.mark.parametrize("bad, words", [
    (dict(epochs=0), "'epochs': must be a finite number > 0"), (dict(epochs=float("inf")), "'epochs'"),
    (dict(max_steps=0), "'max_steps'"), (dict(max_steps=-5), "'max_steps'"),
    (dict(learning_rate=-1.0), "learning rate must be a finite number > 0"),
    (dict(learning_rate=float("nan")), "learning rate"), (dict(learning_rate=float("inf")), "learning rate"),
    (dict(batch_size=0), "batch_size must be a whole number >= 1"), (dict(grad_accum=1.5), "grad_accum"),
    (dict(lora=dict(r=0)), "LoRA r must be"), (dict(lora=dict(dropout=1.0)), "LoRA dropout"),
    (dict(lora=dict(alpha=0)), "LoRA alpha"),
])
def test_training_settings_that_would_train_nothing_or_crash_are_refused_when_made(bad, words):
    """Issue 17: `rait train --epochs 0` trained nothing silently; `--lora-r 0` and `--lr -1` crashed late."""
    with pytest.raises(RaitError, match=words):
        TrainSettings(**bad)


# ---------------------------------------------------------------- checkpointing, mid-run saves, logging (issue 31)


NO_DROPOUT = LoraSettings(r=4, alpha=8, dropout=0.0)


def test_activation_checkpointing_gives_the_same_losses_and_adapter(tiny_model_dir, tmp_path):
    """Recomputing a layer's forward in the backward pass runs the same CPU kernels on the same shapes in the same
    process, so every loss and weight is bit-for-bit the one kept activations give (and with LoRA dropout on, the
    checkpoint restores the RNG state, so the masks are the same too)."""
    runs = {}
    for on in (False, True):
        settings = TrainSettings(lora=LoraSettings(r=4, alpha=8, dropout=0.1), epochs=1, batch_size=2, grad_accum=1,
                                 learning_rate=5e-2, gradient_checkpointing=on)
        result = train(settings, make_rows(8), tmp_path / str(on), model=tiny_model_dir, progress=False)
        runs[on] = (result.losses, weights_of(tmp_path / str(on) / "adapter"))
    assert len(runs[True][0]) == 4
    assert runs[True][0] == runs[False][0]
    for name, value in runs[False][1].items():
        assert torch.equal(runs[True][1][name], value), name


def weights_of(adapter) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(adapter / "adapter_model.safetensors")


def interrupt_at(monkeypatch, step: int) -> None:
    """The next training stops with Ctrl-C when it reaches `step` (after that step's update, before its save)."""
    from rait.train.finetune import UpdateCounter

    def stop(self, args, state, control, **kwargs):
        if state.global_step == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(UpdateCounter, "on_step_end", stop, raising=False)


def test_an_interrupted_training_resumes_from_its_last_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    settings = TrainSettings(lora=NO_DROPOUT, epochs=1, batch_size=2, grad_accum=1, learning_rate=5e-2,
                             save_steps=2)
    whole = train(settings, make_rows(8), tmp_path / "whole", model=tiny_model_dir, progress=False)
    out = tmp_path / "out"
    interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train(settings, make_rows(8), out, model=tiny_model_dir, progress=False)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"] and not (out / "train.json").exists()
    monkeypatch.undo()

    resumed = train(settings, make_rows(8), out, model=tiny_model_dir, progress=False)
    summary = json.loads((out / "train.json").read_text())
    assert summary["resumed_from"] == "checkpoint-2" and resumed.optimizer_steps == 4
    assert (whole.updates, resumed.updates) == (3, 2)  # this run took steps 3 and 4 only (step 1 is at lr 0)
    # steps 1-2 come back with the checkpoint's log; 3 and 4 ran after the resume, from the saved adapter, optimiser
    # and schedule, on the same batches: the same arithmetic in the same process as the uninterrupted run's, so the
    # same floats
    assert [step for step, _ in resumed.losses] == [1, 2, 3, 4]
    assert resumed.losses == whole.losses
    for name, value in weights_of(tmp_path / "whole" / "adapter").items():
        assert torch.equal(weights_of(out / "adapter")[name], value), name
    assert not list(out.glob("checkpoint-*")) and not (out / "checkpoint_identity.json").exists()  # spent


def test_checkpoints_of_other_settings_are_not_resumed(tiny_model_dir, tmp_path, monkeypatch):
    settings = TrainSettings(lora=NO_DROPOUT, epochs=1, batch_size=2, grad_accum=1, save_steps=2)
    interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train(settings, make_rows(8), tmp_path, model=tiny_model_dir, progress=False)
    monkeypatch.undo()
    other = TrainSettings(lora=NO_DROPOUT, epochs=1, batch_size=2, grad_accum=1, save_steps=2, learning_rate=1e-3)
    result = train(other, make_rows(8), tmp_path, model=tiny_model_dir, progress=False)
    assert json.loads((tmp_path / "train.json").read_text())["resumed_from"] is None
    assert [step for step, _ in result.losses] == [1, 2, 3, 4]


def test_dpo_resumes_from_its_last_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    from rait.train.preference import DPOSettings
    from rait.train.preference import run as dpo

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"What is item {i}?"}],
                                        "chosen": [{"role": "assistant", "content": "I don't know"}],
                                        "rejected": [{"role": "assistant", "content": f"thing {i + 1}"}]}) + "\n"
                            for i in range(8)))
    settings = DPOSettings(pairs_from="cor_rait", train=TrainSettings(lora=NO_DROPOUT, epochs=1, batch_size=2,
                                                                      grad_accum=1, save_steps=2))
    interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        dpo(settings, data, tmp_path / "out", model=tiny_model_dir, progress=False)
    monkeypatch.undo()
    result = dpo(settings, data, tmp_path / "out", model=tiny_model_dir, progress=False)
    assert json.loads((tmp_path / "out" / "train.json").read_text())["resumed_from"] == "checkpoint-2"
    assert result.optimizer_steps == 4 and [step for step, _ in result.losses] == [1, 2, 3, 4]


def test_report_to_tensorboard_writes_event_files(tiny_model_dir, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra: pip install 'rait[tensorboard]'")
    settings = TrainSettings(lora=NO_DROPOUT, max_steps=2, batch_size=2, grad_accum=1, report_to="tensorboard")
    train(settings, make_rows(4), tmp_path, model=tiny_model_dir, progress=False)
    events = list((tmp_path / "runs").rglob("events.out.tfevents.*"))
    assert events and all(event.stat().st_size > 0 for event in events)


def test_a_reporter_without_its_package_is_one_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(RaitError, match="'wandb' needs the wandb package, which is not installed"):
        TrainSettings(report_to="wandb")
    with pytest.raises(RaitError, match="'bogus' is not one of none, tensorboard, wandb"):
        TrainSettings(report_to="bogus")
    with pytest.raises(RaitError, match="save_steps"):
        TrainSettings(save_steps=0)


def test_wandb_runs_offline_unless_the_user_says_otherwise(monkeypatch, tmp_path):
    import importlib.util

    from trl import SFTConfig

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "wandb" else real(name, *a))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    settings = TrainSettings(report_to="wandb")
    assert settings.trainer_config(SFTConfig, tmp_path).report_to in ("wandb", ["wandb"])
    assert os.environ["WANDB_MODE"] == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    settings.trainer_config(SFTConfig, tmp_path)
    assert os.environ["WANDB_MODE"] == "online"


def test_rait_train_passes_the_new_settings_and_refuses_bad_ones(tmp_path, monkeypatch, capsys):
    import rait.train
    from rait.cli import main

    seen = {}

    def fake_run(settings, data, out, model):
        seen["settings"] = settings
        raise SystemExit(0)

    monkeypatch.setattr(rait.train, "run", fake_run)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in make_rows(2)))
    with pytest.raises(SystemExit):
        main(["train", "--data", str(data), "--out", str(tmp_path / "out"), "--gradient-checkpointing",
              "--report-to", "tensorboard", "--save-steps", "5"])
    settings = seen["settings"]
    assert (settings.gradient_checkpointing, settings.report_to, settings.save_steps) == (True, "tensorboard", 5)
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", str(data), "--out", str(tmp_path / "out"), "--report-to", "mlflow"])
    assert exit_.value.code == 2
    assert "--report-to: 'mlflow' is not one of none, tensorboard, wandb" in capsys.readouterr().err


def test_how_a_training_runs_and_logs_is_not_part_of_its_stage_key():
    # checkpointing, logging and mid-run saves never change what is learnt (the tests above), so a stage key
    # ignores them wherever a TrainSettings sits: alone, a config's partial `train:` mapping, DPO's and GRPO's
    from dataclasses import asdict, replace

    from rait.train import TrainSettings, learning_identity
    from rait.train.grpo import GRPOSettings
    from rait.train.preference import DPOSettings

    plain, tuned = TrainSettings(), TrainSettings(gradient_checkpointing=True, save_steps=5)
    assert learning_identity(asdict(plain)) == learning_identity(asdict(tuned))
    assert learning_identity(asdict(TrainSettings(learning_rate=1e-3))) != learning_identity(asdict(plain))
    assert learning_identity({"seed": 0, "save_steps": 5, "epochs": 2}) == {"seed": 0, "epochs": 2}
    run_only = {"gradient_checkpointing": True, "save_steps": 5, "report_to": "none"}
    dpo = learning_identity(asdict(DPOSettings(train=replace(DPOSettings().train, **run_only))))
    assert dpo == learning_identity(asdict(DPOSettings())) and "save_steps" not in dpo["train"]
    grpo = learning_identity(asdict(GRPOSettings(train=replace(GRPOSettings().train, **run_only))))
    assert grpo == learning_identity(asdict(GRPOSettings()))
    assert "save_steps" in grpo  # GRPO's own checkpoint interval is its recipe's, kept as before
