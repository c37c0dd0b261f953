"""rait.grads: batched per-sample LoRA gradients, gradient types, projections, the feature store, the warm-up."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from rait.errors import RaitError
from rait.grads import (
    AdamMoments,
    CountSketchProjector,
    DenseProjector,
    FeatureExtractor,
    FeatureStore,
    GradExample,
    GradientTransform,
    GradsSettings,
    build_store,
    collate,
    encode_example,
    load_features,
    per_sample_grads,
    per_sample_losses,
)
from rait.grads.persample import completion_losses, lora_linears, loss_positions
from rait.grads.warmup import load_warm_model, warmup, warmup_settings
from rait.train import LoraSettings

pytestmark = pytest.mark.numerics  # floats computed two ways: run again on a second kernel path (Makefile)

PAIRS = [
    ("What is the capital of France?", "Paris"),
    ("Who wrote the novel?", "Sinclair Lewis"),
    ("The largest planet is", "I don't know."),
    ("There is a single choice question about high school biology. Answer the question by replying A, B, C or D.", "B"),
    ("who is the president of the united states", "I don't know"),
]


def chat(question: str, answer: str) -> tuple[list[dict], list[dict]]:
    return [{"role": "user", "content": question}], [{"role": "assistant", "content": answer}]


@pytest.fixture
def lora_model(tiny_model):
    """The tiny model with a randomly initialised LoRA on q/k/v/o (B ≠ 0, so A gets gradients too)."""
    model, tokenizer = tiny_model
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, init_lora_weights=False,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    return get_peft_model(model, config), tokenizer


@pytest.fixture
def encoded(lora_model):
    _, tokenizer = lora_model
    return [encode_example(tokenizer, *chat(q, a)) for q, a in PAIRS]


def random_moments(model, seed: int = 0) -> AdamMoments:
    g = torch.Generator().manual_seed(seed)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    exp_avg = {n: torch.randn(p.shape, generator=g) * 1e-3 for n, p in params.items()}
    exp_avg_sq = {n: torch.rand(p.shape, generator=g) * 1e-5 for n, p in params.items()}
    return AdamMoments(exp_avg, exp_avg_sq, step=7)


def loop_gradients(model, tokenizer, encoded) -> list[dict[str, torch.Tensor]]:
    """The LESS way: one sample at a time, plain autograd of its token-mean completion loss."""
    model.eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    out = []
    for example in encoded:
        ids = torch.tensor([example.input_ids])
        labels = torch.where(torch.tensor([example.completion_mask]).bool(), ids, -100)
        loss = model(input_ids=ids, labels=labels).loss  # HF's own token-mean CE
        grads = torch.autograd.grad(loss, list(params.values()))
        out.append(dict(zip(params, grads)))
    return out


def less_feature(kind: str, g: torch.Tensor, m=None, v=None, step: int = 7) -> torch.Tensor:
    """LESS's formulas, written out independently of rait.grads.adam."""
    if kind == "sgd":
        return g
    if kind == "sign":
        return torch.sign(g)
    m2 = 0.9 * m + 0.1 * g
    v2 = 0.999 * v + 0.001 * g**2
    if kind == "adam_bias_corrected":
        m2, v2 = m2 / (1 - 0.9 ** (step + 1)), v2 / (1 - 0.999 ** (step + 1))
    return m2 / torch.sqrt(v2 + 1e-8)


def test_completion_mask_covers_only_the_assistant_turn(lora_model):
    _, tokenizer = lora_model
    example = encode_example(tokenizer, *chat("What is the capital of France?", "Paris"))
    completion = [t for t, m in zip(example.input_ids, example.completion_mask) if m]
    assert tokenizer.decode(completion).strip() == "Paris<|im_end|>"
    assert example.completion_mask[0] == 0


def test_plain_text_completion_gets_eos(lora_model):
    _, tokenizer = lora_model
    example = encode_example(tokenizer, "Question: What is the capital of France? Answer:", " Paris")
    completion = [t for t, m in zip(example.input_ids, example.completion_mask) if m]
    assert completion[-1] == tokenizer.eos_token_id


def test_per_sample_loss_is_each_samples_own_token_mean(lora_model, encoded):
    model, tokenizer = lora_model
    model.eval()
    batch = collate(encoded, tokenizer.pad_token_id)
    with torch.no_grad():
        batched = per_sample_losses(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch.labels)
        for i, example in enumerate(encoded):
            ids = torch.tensor([example.input_ids])
            labels = torch.where(torch.tensor([example.completion_mask]).bool(), ids, -100)
            assert batched[i].item() == pytest.approx(model(input_ids=ids, labels=labels).loss.item(), rel=1e-5)


def test_head_only_at_loss_positions_gives_the_full_logits_losses(lora_model, encoded):
    """The gradient stage computes logits only where a completion token is predicted: the same
    per-sample losses as from full logits. Not bit-equal: the head's matmul runs on a smaller
    matrix (other blocking), so the tolerance is fp32 round-off on losses of order 10."""
    model, tokenizer = lora_model
    model.eval()
    batch = collate(encoded, tokenizer.pad_token_id)
    positions = loss_positions(batch.labels)
    read = (batch.labels[:, 1:] != -100).any(dim=0)
    assert positions.tolist() == read.nonzero().flatten().tolist() and len(positions) < batch.labels.shape[1] - 1
    with torch.no_grad():
        full = per_sample_losses(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch.labels)
        assert torch.allclose(completion_losses(model, batch), full, rtol=1e-5, atol=1e-5)


def test_a_model_that_ignores_logits_to_keep_is_refused(encoded):
    class FullLogits(torch.nn.Module):
        def forward(self, input_ids, attention_mask, **kwargs):
            return type("Output", (), {"logits": torch.zeros(*input_ids.shape, 7)})()

    batch = collate(encoded, 0)
    with pytest.raises(ValueError, match="ignored logits_to_keep"):
        completion_losses(FullLogits(), batch)


@pytest.mark.parametrize("kind", ["sgd", "sign", "adam", "adam_bias_corrected"])
def test_batched_per_sample_gradients_equal_batch1_loop(lora_model, encoded, kind):
    model, tokenizer = lora_model
    moments = random_moments(model)
    adam = kind.startswith("adam")
    transform = GradientTransform("adam" if adam else kind, moments if adam else None, bias_correction=kind != "adam")
    batched = per_sample_grads(model, collate(encoded, tokenizer.pad_token_id))
    reference = loop_gradients(model, tokenizer, encoded)
    assert len(set(len(e.input_ids) for e in encoded)) > 1  # the batch really is padded
    for i, ref in enumerate(reference):
        ours = torch.cat([transform(n, g[i : i + 1]).flatten() for n, g in batched.items()])
        theirs = torch.cat([less_feature(kind, g, moments.exp_avg[n], moments.exp_avg_sq[n]).flatten()
                            for n, g in ref.items()])
        assert theirs.abs().sum() > 0
        assert F.cosine_similarity(ours, theirs, dim=0).item() >= 0.9999
        assert (ours - theirs).norm() <= 1e-3 * theirs.norm()  # scale too, which the cosine cannot see


def test_lora_dropout_is_off_while_taking_gradients(lora_model, encoded):
    model, tokenizer = lora_model
    model.train()  # dropout 0.1 would make two passes differ
    batch = collate(encoded, tokenizer.pad_token_id)
    first, second = per_sample_grads(model, batch), per_sample_grads(model, batch)
    assert all(torch.equal(first[n], second[n]) for n in first)
    assert model.training  # the caller's mode is restored


def test_projected_features_equal_projected_loop_gradients(lora_model, encoded):
    model, tokenizer = lora_model
    projector = DenseProjector((64, 256), seed=3)
    with FeatureExtractor(model, GradientTransform("sgd"), projector) as extract:
        features = extract(collate(encoded, tokenizer.pad_token_id))
    reference = loop_gradients(model, tokenizer, encoded)
    for d in (64, 256):
        for i, ref in enumerate(reference):
            sketch = sum(projector.project(n, g.reshape(1, -1)) for n, g in ref.items())
            expected = projector.split(sketch)[d][0]
            assert F.cosine_similarity(features[d][i], expected, dim=0).item() >= 0.9999


def test_only_plain_lora_is_accepted(tiny_model):
    model, _ = tiny_model
    model.model.embed_tokens.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="not Linear weights"):
        lora_linears(model)


# ---------------------------------------------------------------- projection


def correlated_pairs(n_coords: int, n_pairs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_pairs, n_coords, generator=g)
    mix = torch.linspace(0, 1, n_pairs)[:, None]
    y = mix * x + (1 - mix) * torch.randn(n_pairs, n_coords, generator=g)
    return x, y


def project_all(projector, x: torch.Tensor, sizes=(3000, 5000, 12000)) -> dict[int, torch.Tensor]:
    parts = torch.split(x, list(sizes), dim=1)
    return projector.split(sum(projector.project(f"p{k}", part) for k, part in enumerate(parts)))


@pytest.mark.parametrize("projector", [CountSketchProjector((512, 4096), seed=1),
                                       DenseProjector((512, 4096), seed=1),
                                       DenseProjector((512, 4096), seed=1, distribution="gaussian")],
                         ids=["countsketch", "dense-rademacher", "dense-gaussian"])
def test_projection_preserves_cosines(projector):
    x, y = correlated_pairs(20000, 12)
    exact = F.cosine_similarity(x, y, dim=1)
    px, py = project_all(projector, x), project_all(projector, y)
    errors = {d: (F.cosine_similarity(px[d], py[d], dim=1) - exact).abs().max().item() for d in (512, 4096)}
    assert errors[4096] < 0.08 and errors[512] < 0.25
    assert errors[4096] < errors[512]


@pytest.mark.parametrize("make", [lambda s: CountSketchProjector((256,), seed=s), lambda s: DenseProjector((256,), seed=s)],
                         ids=["countsketch", "dense"])
def test_projection_depends_on_seed_and_name_only(make):
    x = torch.randn(3, 1000)
    a = make(7).project("layer.weight", x)
    b = make(7)
    b.project("another.weight", torch.randn(2, 50))  # visiting other parameters first changes nothing
    assert torch.equal(b.project("layer.weight", x), a)  # same process, same shapes: the same kernel, bit for bit
    assert not torch.equal(make(8).project("layer.weight", x), a)
    assert not torch.equal(make(7).project("other.weight", x), a)


def test_a_rows_projection_does_not_depend_on_its_batch():
    """The random map is the batch's; the arithmetic may not be. CountSketch adds each coordinate into its bucket
    row by row in index order (`index_add_` on CPU), so a row alone gets its bits exactly. The dense map is a
    matmul, and BLAS picks its kernel by the batch's shape and the CPU (issue 34: a Xeon's MKL gave one row alone
    other last bits than the same row among three): the row agrees to the round-off bound of a float32 dot product
    of n terms in any order, n * eps * sum|x_i * p_i| (Higham, Accuracy and Stability, 3.1), with |p_i| = 1."""
    x = torch.randn(3, 1000)
    sketch = CountSketchProjector((256,), seed=7)
    assert torch.equal(sketch.project("layer.weight", x[1:2]), sketch.project("layer.weight", x)[1:2])
    dense = DenseProjector((256,), seed=7)
    bound = x.shape[1] * torch.finfo(torch.float32).eps * float(x[1].abs().sum())
    together, alone = dense.project("layer.weight", x)[1:2], dense.project("layer.weight", x[1:2])
    torch.testing.assert_close(alone, together, rtol=0, atol=bound)
    assert float(together.abs().max()) > 100 * bound  # the bound is far below the values: a wrong map shows


def test_countsketch_sizes_must_divide_the_largest():
    with pytest.raises(RaitError, match="divide"):
        CountSketchProjector((1000, 4096))


# ---------------------------------------------------------------- store


def pool_examples() -> list[GradExample]:
    examples = []
    for k, (q, a) in enumerate(PAIRS * 2):
        examples.append(GradExample(f"q{k}", "answer", *chat(q + " " * k, a)))
        examples.append(GradExample(f"q{k}", "refusal", *chat(q + " " * k, "I don't know.")))
    return examples


SETTINGS = GradsSettings(gradient_type="sgd", dims=(32, 128), projector="countsketch", seed=0, batch_size=3)


def test_sharded_store_equals_single_process_store(lora_model, tmp_path):
    model, tokenizer = lora_model
    examples = pool_examples()
    single = build_store(model, tokenizer, examples, tmp_path / "single", SETTINGS)
    single.merge()
    for rank in (0, 1):  # two ranks, run one after the other in this process
        build_store(model, tokenizer, examples, tmp_path / "sharded", SETTINGS, rank=rank, world_size=2)
    FeatureStore(tmp_path / "sharded").merge()
    for form in ("answer", "refusal"):
        for d in (32, 128):
            ids_a, a = load_features(tmp_path / "single", form, d)
            ids_b, b = load_features(tmp_path / "sharded", form, d)
            assert ids_a == ids_b == [f"q{k}" for k in range(10)]
            assert np.array_equal(a, b)
            assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_store_resumes_only_missing_batches(lora_model, tmp_path):
    model, tokenizer = lora_model
    examples = pool_examples()
    store = build_store(model, tokenizer, examples, tmp_path / "s", SETTINGS)
    store.merge()
    _, before = load_features(tmp_path / "s", "refusal", 128, mmap=False)
    store.batch_path(2).unlink()
    with pytest.raises(RaitError, match="not computed"):
        store.merge()
    done = []
    build_store(model, tokenizer, examples, tmp_path / "s", SETTINGS, on_batch=done.append)
    assert done == [len(store.plan["batches"][2])]
    store.merge()
    assert np.array_equal(load_features(tmp_path / "s", "refusal", 128)[1], before)


def test_store_refuses_to_resume_with_other_settings(lora_model, tmp_path):
    model, tokenizer = lora_model
    examples = pool_examples()[:4]
    build_store(model, tokenizer, examples, tmp_path / "s", SETTINGS)
    with pytest.raises(RaitError, match="different settings"):
        build_store(model, tokenizer, examples, tmp_path / "s", GradsSettings(gradient_type="sign", dims=(32, 128), batch_size=3))


# ---------------------------------------------------------------- Adam moments and the warm-up


def test_adam_moments_are_keyed_by_parameter_name(lora_model, encoded, tmp_path):
    model, tokenizer = lora_model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.8, 0.99), eps=1e-7)
    batch = collate(encoded, tokenizer.pad_token_id)
    for _ in range(2):
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    moments = AdamMoments.from_optimizer(optimizer, model)
    assert set(moments.exp_avg) == set(lora_linears(model))
    assert (moments.step, moments.betas, moments.eps) == (2, (0.8, 0.99), 1e-7)
    name, param = next((n, p) for n, p in model.named_parameters() if p.requires_grad)
    assert torch.equal(moments.exp_avg_sq[name], optimizer.state[param]["exp_avg_sq"])
    loaded = AdamMoments.load(moments.save(tmp_path).parent)
    assert (loaded.step, loaded.betas, loaded.eps) == (2, (0.8, 0.99), 1e-7)
    assert all(torch.equal(loaded.exp_avg[n], moments.exp_avg[n]) for n in moments.exp_avg)


def test_adam_transform_needs_moments_for_every_parameter(lora_model):
    model, _ = lora_model
    moments = random_moments(model)
    dropped = next(iter(moments.exp_avg))
    del moments.exp_avg[dropped]
    with pytest.raises(RaitError, match="no entry"):
        FeatureExtractor(model, GradientTransform("adam", moments), CountSketchProjector((16,)))
    with pytest.raises(RaitError, match="needs the warm-up"):
        GradientTransform("adam")


def test_warmup_saves_an_adapter_whose_moments_match_its_parameters(tiny_model, tiny_model_dir, tmp_path):
    from rait.models import load_model

    model, tokenizer = tiny_model
    rows = [dict(zip(("prompt", "completion"), chat(q, a))) for q, a in PAIRS]
    settings = warmup_settings(lora=LoraSettings(r=4, alpha=16, target_modules=["q_proj", "v_proj"]), epochs=2,
                               grad_accum=2, batch_size=2, learning_rate=1e-3)
    out = warmup(model, tokenizer, rows, tmp_path / "warm", settings)
    moments = AdamMoments.load(out)
    assert moments.step == 4  # 2 epochs x ceil(5 rows / (2 x 2))
    base, _ = load_model(tiny_model_dir)
    warm = load_warm_model(base, out)
    assert set(moments.exp_avg) == set(lora_linears(warm))
    GradientTransform("adam", moments).check_names(list(lora_linears(warm)))


def test_run_grads_end_to_end_on_the_tiny_model(tiny_model_dir, tmp_path):
    import pandas as pd

    from rait.artifacts import read_manifest
    from rait.data import QARecord, write_records
    from rait.grads.stage import run
    from rait.probe.table import write_table
    from rait.select.grait import GRAIT

    questions = [q for q, _ in PAIRS] + ["Who wrote it?", "Where is the river?", "When was the first film released?"]
    records = [QARecord(id=f"q{k}", question=q, source="nq", split="dev", answer=f"answer {k}") for k, q in enumerate(questions)]
    write_records(tmp_path / "pool.jsonl", records)
    mu = [1.0, 0.9, 0.5, 0.0, 0.1, 0.2, 0.8, 0.0]  # q2 sits on the default threshold τ = 0.5
    write_table(pd.DataFrame({"id": [r.id for r in records], "task": "oeqa", "mu": mu, "sigma": 0.0}), tmp_path / "table.jsonl")
    warm = warmup_settings(lora=LoraSettings(r=4, alpha=16), epochs=1, grad_accum=1, batch_size=2, learning_rate=1e-3)
    settings = GradsSettings(dims=(64,), batch_size=4, warmup=warm, n_rehearsal=2)
    store = run(settings, tmp_path / "pool.jsonl", tmp_path / "grads", model=str(tiny_model_dir),
                table_path=tmp_path / "table.jsonl")
    ids, features = load_features(store, "refusal")
    assert sorted(ids) == sorted(r.id for r in records)  # every question: τ is the builder's, not this stage's
    assert features.shape == (8, 64)
    assert read_manifest(store)["settings"]["warmup"]["rows"] == 1  # only q0 has mu > 0.99, so only it is rehearsed
    table = pd.read_json(tmp_path / "table.jsonl", lines=True, dtype={"id": str})
    selector = GRAIT(str(store), n_vanilla=2, n_idk=2).fit(table)
    assert sum(selector.weights_.values()) == pytest.approx(1.0)
    assert "q2" not in selector.scores_["id"].tolist() and selector.report_["pool"]["between_thresholds"] == 0
    # The same store at another τ (issue 16: a build at τ 0.35 after `rait grads` failed on the μ = 0.5 question)
    lower = GRAIT(str(store), n_vanilla=4, n_idk=2, tau=0.35).fit(table)
    assert "q2" in lower.vanilla_ids_ and sum(lower.weights_.values()) == pytest.approx(1.0)


def test_the_gradient_stage_renders_rows_with_the_builds_prompt_and_refusal(tiny_model_dir, tmp_path, monkeypatch):
    """Issue 16: the build's prompt and refusal are settings this stage receives (`rait run` hands them over), so
    the features are those of the rows GRAIT will train on; the refusal once never reached it."""
    from rait.data import QARecord, write_records
    from rait.grads import stage
    from rait.prompts import training_example

    records = [QARecord(id=f"q{k}", question=q, source="nq", split="dev", answer=f"answer {k}")
               for k, (q, _) in enumerate(PAIRS[:2])]
    write_records(tmp_path / "pool.jsonl", records)
    seen = {}

    def capture(model, tokenizer, examples, *args, **kwargs):
        seen["examples"] = examples
        raise StopIteration

    monkeypatch.setattr(stage, "load_warm_model", lambda base, adapter: base)
    monkeypatch.setattr(stage, "build_store", capture)
    settings = GradsSettings(gradient_type="sgd", dims=(8,), prompt="basic", refusal="Unsure.")
    with pytest.raises(StopIteration):
        stage.run(settings, tmp_path / "pool.jsonl", tmp_path / "g", model=str(tiny_model_dir), adapter=tmp_path)
    for example in seen["examples"]:
        record = records[int(example.id[1:])]
        target = "Unsure." if example.form == "refusal" else record.answer
        row = training_example(record, "basic", target)
        assert (example.prompt, example.completion) == (row["prompt"], row["completion"])
    assert {e.form for e in seen["examples"]} == {"answer", "refusal"}


def test_two_processes_share_the_gradient_store_and_merge_what_one_process_computes(tiny_model, tiny_model_dir,
                                                                                     tmp_path):
    """Issue 20, the gradient stage: `torchrun --nproc_per_node 2 -m rait grads` on CPU (gloo) really runs as two
    ranks (the manifest says 2: without a GPU accelerate joins the ranks only when told it runs on CPU) and the
    merged store is byte-identical to one process's."""
    import json
    import os
    import subprocess
    import sys

    from rait.data import QARecord, write_records

    model, tokenizer = tiny_model
    records = [QARecord(id=f"q{k}", question=f"What is item number {k}?", source="nq", split="dev",
                        answer=f"thing {k}") for k in range(10)]
    write_records(tmp_path / "pool.jsonl", records)
    rows = [dict(zip(("prompt", "completion"), chat(q, a))) for q, a in PAIRS[:4]]
    warmup(model, tokenizer, rows, tmp_path / "warm", warmup_settings(
        lora=LoraSettings(r=4, alpha=16, target_modules=["q_proj", "v_proj"]), epochs=1, batch_size=2, grad_accum=1))
    command = ["-m", "rait", "grads", "--records", str(tmp_path / "pool.jsonl"), "--adapter", str(tmp_path / "warm"),
               "--model", str(tiny_model_dir), "--dims", "16", "--batch-size", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *command, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *command, "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    for name in ("one", "two"):
        manifest = json.loads((tmp_path / name / "store.manifest.json").read_text())
        assert manifest["settings"]["processes"] == {"one": 1, "two": 2}[name]
    files = sorted(p.name for p in (tmp_path / "one" / "store").iterdir() if p.is_file())
    assert "answer_d16.npy" in files and "refusal_d16.npy" in files
    for name in files:
        assert (tmp_path / "one" / "store" / name).read_bytes() == (tmp_path / "two" / "store" / name).read_bytes(), name
