"""`rait plan` and `rait run`'s fit check (issue 31): memory estimates from a model's config.json alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rait.cli import app, main
from rait.errors import DataError
from rait.models.footprint import GIB, LM_HEAD_TILE, read_shape
from rait.pipeline import PipelineConfig
from rait.pipeline import fit
from rait.pipeline.fit import Device, Lengths, plan

ROOT = Path(__file__).resolve().parents[1]
LLAMA3_8B = ROOT / "tests" / "fixtures" / "llama3_8b"  # Meta-Llama-3-8B's config.json (public shape numbers)

TINY_CONFIG = """\
model: {model}
methods: [cor_rait]
train:
  method: lora
  batch_size: 2
  gradient_checkpointing: {checkpointing}
  lora: {{r: 4, alpha: 8, target_modules: [q_proj, v_proj]}}
eval: {{batch_size: 3, max_new_tokens: {{oeqa: 5}}}}
tracks:
  - name: facts
    pool: {{data: "facts:train", sample: 6}}
    probe: {{k: 2, batch_size: 2, max_new_tokens: 4}}
    build: {{n_total: 6}}
    test_sets:
      - {{name: facts-id, data: "facts:test_id", sample: 3, domain: ID}}
"""


def tiny_config(tmp_path, model, checkpointing=False) -> PipelineConfig:
    path = tmp_path / f"tiny-{checkpointing}.yaml"
    path.write_text(TINY_CONFIG.format(model=model, checkpointing=str(checkpointing).lower()))
    return PipelineConfig.from_yaml(path)


def stage(estimates, name):
    return next(e for e in estimates if e.stage == name)


def test_the_tiny_models_shape_is_read_without_weights(tiny_model_dir):
    shape = read_shape(tiny_model_dir)
    vocab = shape.vocab
    # hidden 64, MLP 128, 2 layers, 4 heads of 16, 2 KV heads, tied embedding (tests/tiny_model.py)
    per_layer = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 128 + 2 * 64  # q k v o, gate up down, 2 norms
    assert shape.parameters == vocab * 64 + 2 * per_layer + 64  # the head is the embedding; the final norm
    assert (shape.layers, shape.hidden, shape.intermediate, shape.heads, shape.kv_heads, shape.head_dim) == \
        (2, 64, 128, 4, 2, 16)
    assert shape.linears["k_proj"] == (64, 32) and shape.linears["down_proj"] == (128, 64)


def test_a_tiny_configs_training_memory_is_the_hand_computed_one(tiny_model_dir, tmp_path):
    lengths = Lengths(oeqa_prompt=8, answer=2)  # a training row of 10 tokens; batch 2: 20 tokens
    vocab = read_shape(tiny_model_dir).vocab
    cpu = Device("cpu")  # fp32: 4 bytes per weight and activation
    weights = (vocab * 64 + 2 * 36_992 + 64) * 4
    # LoRA r 4 on q (64 -> 64) and v (64 -> 32) of both layers: 4 x (64 + 64) + 4 x (64 + 32) = 896 per layer;
    # AdamW holds 16 bytes per trainable parameter
    lora = 2 * 896 * 16
    # per token and layer: both norms' fp32 inputs 2 x 4 x 64, then 4 bytes x (h 64 + q,k 6 x 16 + v 2 x 16 +
    # attention output and o_proj input 2 x 4 x 16 + h 64 + MLP 4 x 128 + LoRA intermediates 4 x 2) = 4128
    per_layer = 20 * (2 * 4 * 64 + 4 * (64 + 96 + 32 + 128 + 64 + 512 + 8))
    # the fused LM head: on a CPU nine fp32 tiles of 20 tokens x the vocabulary (LM_HEAD_TILES), the final hidden
    head = 9 * 20 * min(vocab, LM_HEAD_TILE[1]) * 4 + 20 * 64 * 4
    train = stage(plan(tiny_config(tmp_path, tiny_model_dir), device=cpu, lengths=lengths), "train")
    assert train.parts == {"weights": weights, "LoRA 0.0 M + AdamW": lora, "activations": 2 * per_layer + head}
    assert (train.forwards, train.backwards) == (9, 9)  # 6 samples / batch 2, 3 epochs

    checkpointed = stage(plan(tiny_config(tmp_path, tiny_model_dir, True), device=cpu, lengths=lengths), "train")
    # checkpointing keeps each layer's input (20 tokens x 64 x 4 bytes) and recomputes one layer at a time
    assert checkpointed.parts["activations (checkpointed)"] == 2 * 20 * 64 * 4 + per_layer + head
    assert checkpointed.forwards == 18  # every micro-batch's forward runs twice


def test_a_tiny_configs_probe_and_eval_memory_is_the_hand_computed_one(tiny_model_dir, tmp_path):
    lengths = Lengths(oeqa_prompt=8, answer=2)
    vocab = read_shape(tiny_model_dir).vocab
    estimates = plan(tiny_config(tmp_path, tiny_model_dir), device=Device("cpu"), lengths=lengths)
    # the probe samples 2 questions x k 2 = 4 sequences of 8 + 4 tokens: K and V of 2 layers x 2 heads x 16 each,
    # plus the prefill's MLP intermediates (3 x 128 per prompt token) and both fp32 copies of the last logits
    kv = 2 * 2 * 2 * 16 * 4 * 12 * 4
    probe = stage(estimates, "probe")
    assert probe.parts["KV cache + prefill + logits"] == kv + 4 * (4 * 8) * 3 * 128 + 4 * vocab * 4 * 2
    assert probe.forwards == 3 * (1 + 4)  # 6 questions in calls of 2, a prefill and 4 steps each
    evaluation = stage(estimates, "eval")
    # greedy: the full-length cache (8 + 5 tokens) and, while it is filled, each row's prefill cache (8 tokens)
    assert evaluation.parts["KV cache + prefill + logits"] == (2 * 2 * 2 * 16 * 3 * (13 + 8) * 4
                                                               + 4 * (3 * 8) * 3 * 128 + 3 * vocab * 4 * 2)
    assert evaluation.forwards == 3 * 1 * (1 + 5)  # Init-Basic, Init-Refuse, Cor-RAIT on one batch of 3 items


def test_the_sigma_probes_of_the_items_are_planned_and_the_rules_add_no_evaluation(tiny_model_dir, tmp_path):
    """Self-consistency and the σ veto probe every validation and test item like the pool (same memory); they
    answer with Init-Basic's or a trained model's answers, so they add no evaluation run."""
    path = tmp_path / "veto.yaml"
    path.write_text(TINY_CONFIG.format(model=tiny_model_dir, checkpointing="false").replace(
        "methods: [cor_rait]", "methods: [cor_rait, sigma_veto]").replace("sample: 6}", "sample: 6, validation: 4}"))
    estimates = plan(PipelineConfig.from_yaml(path), device=Device("cpu"), lengths=Lengths(oeqa_prompt=8, answer=2))
    items, probe = stage(estimates, "probe items"), stage(estimates, "probe")
    assert items.parts == probe.parts
    assert items.forwards == 4 * (1 + 4)  # 3 test items and 4 validation ones in calls of 2, a prefill and 4 steps
    assert stage(estimates, "eval").forwards == 3 * 1 * (1 + 5)  # Init-Basic, Init-Refuse, Cor-RAIT


def test_llama3_8b_full_fine_tuning_is_refused_for_80_gb_naming_the_stage(tmp_path):
    """CRaFT's recipe as the paper config had it: all 8.03 B weights with AdamW, 16 bytes each = 120 GiB."""
    config = tmp_path / "full.yaml"
    config.write_text((ROOT / "configs" / "paper_triviaqa.yaml").read_text()
                      .replace("model: default", f"model: {LLAMA3_8B}").replace("method: lora", "method: full"))
    estimates = plan(PipelineConfig.from_yaml(config), device=Device("cuda"))
    train = stage(estimates, "train")
    assert train.parts["weights + AdamW (fp32 master, grads, 2 moments)"] == 8_030_261_248 * 16
    assert train.total > 80 * GIB and train.setting == "train.method"  # where the file sets it

    result = CliRunner().invoke(app, ["plan", str(config), "--gpu-memory", "80"])
    assert result.exit_code == 1
    assert "does not fit: the largest stage, rehearsal, needs about 119.8 GiB" in result.output
    assert "change train.method" in result.output


def test_rait_run_refuses_a_config_that_cannot_fit_before_any_work(tmp_path, monkeypatch, capsys):
    config = tmp_path / "full.yaml"
    config.write_text((ROOT / "configs" / "paper_mmlu.yaml").read_text()
                      .replace("model: default", f"model: {LLAMA3_8B}").replace("epochs: 3", "method: full\n  epochs: 3"))
    monkeypatch.setattr(fit, "device_memory", lambda: (Device("cuda"), 80 * GIB, "the test's 80 GiB GPU"))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(config), "--out", str(out)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    # the rehearsal inherits the method from the global `train`, which is where the line points
    assert f"{config}:13: field 'train.method': stage rehearsal needs about 120.1 GiB" in error
    assert "the test's 80 GiB GPU has 80.0 GiB: change train.method" in error
    assert not out.exists()


@pytest.mark.parametrize("name", ["paper_triviaqa", "paper_mmlu"])
def test_the_paper_configs_fit_one_80_gb_gpu_at_llama3_8b_shape(name):
    config = PipelineConfig.from_yaml(ROOT / "configs" / f"{name}.yaml")
    config.model = str(LLAMA3_8B)
    estimates = plan(config, device=Device("cuda"))
    assert max(e.total for e in estimates) < 80 * GIB
    assert stage(estimates, "train").parts.keys() >= {"weights", "activations (checkpointed)"}


def test_a_config_that_fits_passes_the_check(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(fit, "device_memory", lambda: (Device("cpu"), 1 * GIB, "a 1 GiB test machine"))
    fit.check_fits(tiny_config(tmp_path, tiny_model_dir))
    monkeypatch.setattr(fit, "device_memory", lambda: (Device("cpu"), 1e5, "a 100 kB test machine"))
    with pytest.raises(DataError, match="100 kB test machine"):
        fit.check_fits(tiny_config(tmp_path, tiny_model_dir))


@pytest.mark.parametrize("args, words", [
    (["--gpu-memory", "0"], "--gpu-memory: must be a finite number > 0"),
    (["--tokens-per-second", "-1"], "--tokens-per-second"),
])
def test_bad_plan_options_are_one_error_line(tmp_path, args, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["plan", str(ROOT / "configs" / "paper_mmlu.yaml"), *args])
    assert exit_.value.code == 2
    assert words in capsys.readouterr().err
