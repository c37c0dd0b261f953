"""`rait ask`: answers marked answered/refused by the evaluation's rule, samples and their σ, questions from
arguments, a file or stdin, a model's rait.json, model ids from a Hugging Face cache, and bad input."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants as hub_constants

import rait.evaluate.runner as runner
from hostile import assert_refused, jsonl
from rait.artifacts import sha256_file
from rait.cli import main
from rait.data import QARecord
from rait.data.scoring import is_refusal, score_record
from rait.evaluate.ask import AskSettings, format_row, question_record, read_questions, run
from rait.errors import ModelError
from rait.models import describe_model, load_model, model_fingerprint, portable_spec, resolve_model_path
from rait.probe.measures import mean_pairwise_cosine
from rait.prompts import refusal_text, training_example

# Capitals SmolLM2-135M-Instruct names under the plain prompt, and countries that do not exist: the slow test's
# refusal LoRA learns to answer the first and to say "I don't know" to the second.
KNOWN_CAPITALS = {"Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "Russia": "Moscow",
                  "Egypt": "Cairo", "Greece": "Athens", "Portugal": "Lisbon", "Austria": "Vienna",
                  "England": "London", "China": "Beijing", "Ireland": "Dublin", "Norway": "Oslo",
                  "Sweden": "Stockholm", "Poland": "Warsaw", "Belgium": "Brussels", "Denmark": "Copenhagen",
                  "Finland": "Helsinki", "Hungary": "Budapest", "Turkey": "Ankara"}
MADE_UP_COUNTRIES = ["Zorblandia", "Quenthar", "Vilmoria", "Drakmoor", "Ostravel", "Pelunia", "Kavrostan",
                     "Melquaria", "Tirrandel", "Gorvatia", "Brisquel", "Lunthia", "Xandoria", "Varnessa",
                     "Krollheim", "Ethmoria", "Zanquor", "Fellaria", "Moravesh", "Quillonia"]


def cli(argv: list[str]) -> int:
    """Run the CLI in-process; its exit status (0 when it returns normally)."""
    try:
        main(argv)
    except SystemExit as exit_:
        return exit_.code
    return 0


def capital_question(country: str, answer: str | None = None):
    return question_record(f"What is the capital of {country}?", answer)


TINY_ID = "rait-test/tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, tiny_model_dir, monkeypatch):
    """A Hugging Face cache under tmp_path, laid out as `hf download` leaves it (refs/main -> a snapshot whose files
    link into blobs/), holding the tiny model as TINY_ID; this process and its children read it, offline."""
    cache = tmp_path / "hub"
    repo, snapshot = cache / "models--rait-test--tiny", cache / "models--rait-test--tiny" / "snapshots" / COMMIT
    model, tokenizer = load_model(tiny_model_dir)
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (repo / "blobs").mkdir()
    for file in sorted(snapshot.iterdir()):
        blob = repo / "blobs" / sha256_file(file)
        file.rename(blob)
        file.symlink_to(Path("..", "..", "blobs", blob.name))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))  # read once, when huggingface_hub was imported
    return snapshot


def stub_answers(monkeypatch, texts: list[str]) -> None:
    """The evaluation's generation replaced by fixed outputs, one per prompt in order: the rule is under test."""
    def fixed(model, tokenizer, prompts, settings, **kwargs):
        assert len(prompts) == len(texts)
        return [[text] for text in texts]

    monkeypatch.setattr(runner, "generate", fixed)


def embed_by_characters(texts):
    """A stand-in embedder: deterministic, and different texts point in different directions."""
    return np.array([[len(t) + 1.0, sum(map(ord, t)) % 7 + 1.0, t.count(" ") + 1.0] for t in texts])


@pytest.mark.parametrize("refusal_mode", ["paper", "keywords"])
def test_each_answer_is_marked_by_the_evaluations_own_rule(monkeypatch, tiny_model, refusal_mode):
    outputs = ["I don't know", "Paris, of course.", "I don\u2019t know", "I'm not sure.", "Lyon"]
    stub_answers(monkeypatch, outputs)
    records = [capital_question("France", "Paris") for _ in outputs]
    rows = run(AskSettings(refusal_mode=refusal_mode), records, *tiny_model)
    assert [row["answer"] for row in rows] == outputs
    assert [row["verdict"] == "refused" for row in rows] == [is_refusal(text, refusal_mode) for text in outputs]
    assert [row["outcome"] for row in rows] == [str(score_record(r, t, refusal_mode)) for r, t in zip(records, outputs)]
    # the papers' rule misses the curly apostrophe and the hedge; the keywords rule does not: the rule matters
    assert [row["verdict"] for row in rows][2:4] == (["answered"] * 2 if refusal_mode == "paper" else ["refused"] * 2)


def test_a_question_without_an_answer_is_only_answered_or_refused(monkeypatch, tiny_model):
    stub_answers(monkeypatch, ["I don't know", "Paris"])
    rows = run(AskSettings(), [capital_question("Vilmoria"), capital_question("France")], *tiny_model)
    assert [row["verdict"] for row in rows] == ["refused", "answered"]
    assert all("outcome" not in row for row in rows)
    assert format_row(rows[1]) == "Q: What is the capital of France?\nA: Paris  [answered]"


def test_samples_are_the_probes_and_their_agreement_is_its_sigma(tiny_model):
    records = [capital_question("France", "Paris"), capital_question("Vilmoria")]
    settings = AskSettings(samples=3, max_new_tokens=4)
    rows = run(settings, records, *tiny_model, embedder=embed_by_characters)
    assert rows == run(settings, records, *tiny_model, embedder=embed_by_characters)  # seeded
    for row in rows:
        answers = [sample["answer"] for sample in row["samples"]]
        assert len(answers) == 3
        assert [s["verdict"] == "refused" for s in row["samples"]] == [is_refusal(a) for a in answers]
        # the same float64 computation on the same vectors: equal exactly
        assert row["sigma"] == mean_pairwise_cosine(embed_by_characters(answers))
        assert "3 samples, agreement σ" in format_row(row)
    assert 0 <= rows[0]["mu"] <= 1 and "mu" not in rows[1]  # correctness needs an answer to score against
    other_seed = run(AskSettings(samples=3, max_new_tokens=4, seed=1), records, *tiny_model,
                     embedder=embed_by_characters)
    assert [r["samples"] for r in other_seed] != [r["samples"] for r in rows]


def test_the_command_shows_samples_with_the_probes_embedder(tiny_model_dir, capfd):
    assert cli(["ask", str(tiny_model_dir), "--samples", "2", "--max-new-tokens", "4", "Who wrote the novel?"]) == 0
    out = capfd.readouterr().out
    assert out.startswith("Q: Who wrote the novel?\nA: ") and "2 samples, agreement σ " in out


def test_questions_come_from_arguments_a_file_and_stdin(tmp_path, tiny_model_dir, capfd, monkeypatch):
    lines = tmp_path / "questions.txt"
    lines.write_text("Who wrote the novel?\n\nWhere is the river?\n", encoding="utf-8")
    records = tmp_path / "questions.jsonl"
    records.write_text(jsonl({"question": "What is the capital of France?", "answer": "Paris", "aliases": ["paris"]},
                             {"question": "Who is the president?"}), encoding="utf-8")

    def asked(*argv: str) -> list[dict]:
        assert cli(["ask", str(tiny_model_dir), "--json", "--max-new-tokens", "3", *argv]) == 0
        return [json.loads(line) for line in capfd.readouterr().out.splitlines()]

    assert [r["question"] for r in asked("--file", str(lines))] == ["Who wrote the novel?", "Where is the river?"]
    scored = asked("--file", str(records))
    assert "outcome" in scored[0] and "outcome" not in scored[1]
    assert [r["question"] for r in asked("A", "--file", str(lines))] == ["A", "Who wrote the novel?",
                                                                        "Where is the river?"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("Who wrote the novel?\nA\n"))  # a pipe, not a terminal
    assert [r["question"] for r in asked()] == ["Who wrote the novel?", "A"]


def test_an_export_folders_rait_json_sets_the_prompt_and_the_refusal_rule(tmp_path, tiny_model_dir, capfd):
    exported = Path(shutil.copytree(tiny_model_dir, tmp_path / "exported"))
    (exported / "rait.json").write_text(json.dumps({"prompt": "basic", "refusal": "I am unsure.",
                                                    "method": "rtuning_unknown", "base_model": "default"}))
    assert cli(["ask", str(exported), "--max-new-tokens", "3", "Who wrote the novel?"]) == 0
    err = capfd.readouterr().err
    # "I am unsure." escapes the papers' rule, so the rule that recognises it is taken
    assert f"prompt basic, refusal rule keywords (from {exported / 'rait.json'})" in err
    (exported / "rait.json").write_text(json.dumps({"prompt": "basic", "refusal": "I don't know",
                                                    "refusal_mode": "keywords"}))
    assert cli(["ask", str(exported), "--json", "--prompt", "refuse", "--max-new-tokens", "3", "A"]) == 0
    row = json.loads(capfd.readouterr().out)
    assert (row["prompt"], row["refusal_mode"]) == ("refuse", "keywords")  # the option wins, then the run's rule


def test_read_questions_takes_lines_or_json_lines():
    assert [r.question for r in read_questions(" a \n\nb\n", "x")] == ["a", "b"]
    [record] = read_questions('{"question": "q", "answer": "A", "aliases": ["B"]}\n', "x")
    assert (record.question, record.all_answers) == ("q", ["A", "B"])


def test_a_hub_id_resolves_to_its_cached_snapshot(hub_cache):
    assert resolve_model_path(TINY_ID) == resolve_model_path(TINY_ID, revision=COMMIT) == hub_cache.resolve()
    fingerprint = model_fingerprint(TINY_ID)
    assert (fingerprint["hub_id"], fingerprint["revision"]) == (TINY_ID, COMMIT) and "path" not in fingerprint
    assert fingerprint["weights_sha256"] == model_fingerprint(hub_cache)["weights_sha256"]  # read through the links
    assert portable_spec(TINY_ID) == portable_spec(hub_cache) == (TINY_ID, COMMIT)  # `rait run` hands on the folder
    assert describe_model(resolve_model_path(TINY_ID)) == f"{TINY_ID} (commit {COMMIT})"
    with pytest.raises(ModelError, match=f"hf download {TINY_ID} --revision {'f' * 40}"):
        resolve_model_path(TINY_ID, revision="f" * 40)


def test_a_local_folder_wins_over_an_id_of_the_same_name(tmp_path, tiny_model_dir, hub_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, tmp_path / TINY_ID)
    assert resolve_model_path(TINY_ID) == (tmp_path / TINY_ID).resolve()
    assert portable_spec(TINY_ID) == (str((tmp_path / TINY_ID).resolve()), None)


@pytest.mark.parametrize("spec", ["./rait-test/tiny", "rait-test/tiny/x", "/rait-test/tiny", "rait-test/ti ny"])
def test_what_is_no_hub_id_stays_a_missing_folder(spec, hub_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="model folder not found"):
        resolve_model_path(spec)


def test_a_hub_id_works_end_to_end_and_outputs_record_it_with_its_commit(tmp_path, hub_cache, capfd):
    """`--model org/name` from the cache: the evaluation's manifest and a training's train.json name the id and
    the snapshot's commit, not this machine's cache path, and the trained adapter loads back onto that snapshot."""
    question = tmp_path / "test.jsonl"
    question.write_text(jsonl(QARecord(id="o1", question="What is the capital of France?", source="facts",
                                       split="test", answer="Paris").to_dict()), encoding="utf-8")
    assert cli(["eval", "--model", TINY_ID, "--data", str(question), "--max-new-tokens", "3", "--n-boot", "10",
                "--out", str(tmp_path / "eval")]) == 0
    manifest = (tmp_path / "eval" / "outcomes.jsonl.manifest.json").read_text()
    assert json.loads(manifest)["model"]["hub_id"] == TINY_ID and json.loads(manifest)["model"]["revision"] == COMMIT
    assert str(hub_cache.parents[2]) not in manifest

    rows = [training_example(capital_question("France", "Paris"), "refuse", "Paris")] * 4
    (tmp_path / "train.jsonl").write_text(jsonl(*rows), encoding="utf-8")
    assert cli(["train", "--model", TINY_ID, "--data", str(tmp_path / "train.jsonl"), "--out",
                str(tmp_path / "trained"), "--epochs", "1", "--batch-size", "4", "--grad-accum", "1", "--lora-r",
                "4", "--lora-alpha", "8"]) == 0
    summary = json.loads((tmp_path / "trained" / "train.json").read_text())
    assert (summary["base_model"], summary["base_revision"]) == (TINY_ID, COMMIT)
    assert str(hub_cache.parents[2]) not in (tmp_path / "trained" / "train.json.manifest.json").read_text()
    capfd.readouterr()
    assert cli(["ask", str(tmp_path / "trained"), "--json", "--max-new-tokens", "3", "What is the capital?"]) == 0
    assert json.loads(capfd.readouterr().out)["verdict"] in ("answered", "refused")


def test_a_rait_run_config_names_its_model_by_id(tmp_path, hub_cache):
    """`model: org/name` through every stage of a tiny run; its records name the id and commit, never the cache."""
    config = tmp_path / "by_id.yaml"
    config.write_text(f"""
model: {TINY_ID}
methods: [cor_rait]
train: {{epochs: 1, batch_size: 4, grad_accum: 1,
        lora: {{r: 4, alpha: 8, dropout: 0.0, layers: [1], target_modules: [q_proj, v_proj]}}}}
eval: {{batch_size: 8, n_boot: 20, max_new_tokens: {{oeqa: 4}}}}
tracks:
  - name: facts
    pool: {{data: "facts:train", sample: 6}}
    probe: {{k: 2, max_new_tokens: 3, prompt: query_0shot}}
    build: {{n_total: 4, tau: 0.5}}
    test_sets:
      - {{name: facts-id, data: "facts:test_id", sample: 3, domain: ID}}
""")
    out = tmp_path / "out"
    assert cli(["run", str(config), "--out", str(out)]) == 0
    assert json.loads((out / "pipeline.json").read_text())["model"] == f"{TINY_ID} (commit {COMMIT})"
    summary = json.loads(next(out.rglob("train.json")).read_text())
    assert (summary["base_model"], summary["base_revision"]) == (TINY_ID, COMMIT)
    # rait's records and peft's adapter_config.json; peft's own adapter README names the base by the loaded path
    records = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".md", ".csv", ".html")
               and not (p.parent.name == "adapter" and p.name == "README.md")]
    assert records and not [p for p in records if str(hub_cache.parents[2]) in p.read_text(encoding="utf-8")]
    adapter = json.loads(next(out.rglob("adapter_config.json")).read_text())
    assert (adapter["base_model_name_or_path"], adapter["revision"]) == (TINY_ID, COMMIT)  # peft alone finds it


def test_a_hub_id_is_read_from_the_cache_the_environment_names(tmp_path, hub_cache):
    """In a fresh process (huggingface_hub reads $HF_HUB_CACHE when imported), with the network ruled out."""
    done = subprocess.run([sys.executable, "-m", "rait", "ask", TINY_ID, "--json", "--max-new-tokens", "2", "A"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["question"] == "A"


class Terminal(io.StringIO):
    """Standard input that is a terminal: nothing is piped in, so nothing is read from it."""

    def isatty(self) -> bool:
        return True


BAD_INPUT = {
    "empty question file": (["--file", "{tmp}/empty.txt"], ["empty.txt", "no question"]),
    "blank question file": (["--file", "{tmp}/blank.txt"], ["blank.txt", "no question"]),
    "missing question file": (["--file", "{tmp}/none.txt"], ["none.txt", "no such file"]),
    "negative samples": (["--samples", "-1", "q"], ["--samples", "-1"]),
    "huge samples": (["--samples", "100000", "q"], ["--samples", "100000"]),
    "one sample": (["--samples", "1", "q"], ["--samples", "at least 2"]),
    "unknown prompt": (["--prompt", "bogus", "q"], ["--prompt", "'bogus'", "basic, refuse"]),
    "zero answer length": (["--max-new-tokens", "0", "q"], ["--max-new-tokens"]),
    "a line without a question": (["--file", "{tmp}/q.jsonl"], ["q.jsonl:2", "field 'question'"]),
    "a multiple-choice line": (["--file", "{tmp}/mc.jsonl"], ["mc.jsonl:1", "field 'choices'"]),
    "an empty question": (["  "], ["QUESTION", "empty"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_before_the_model_loads(case, tmp_path, tiny_model_dir, capfd):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("\n  \n")
    (tmp_path / "q.jsonl").write_text(jsonl({"question": "a"}, {"answer": "b"}))
    (tmp_path / "mc.jsonl").write_text(jsonl({"question": "a", "choices": ["x", "y"], "gold": "A"}))
    argv, fragments = BAD_INPUT[case]
    assert_refused(["ask", str(tiny_model_dir), *[a.replace("{tmp}", str(tmp_path)) for a in argv]], tmp_path, capfd,
                   fragments)


@pytest.mark.parametrize("notes, fragments", [
    ({"prompt": "query_3shot"}, ["rait.json", "field 'prompt'", "'query_3shot'"]),
    ({"refusal": "Nope."}, ["rait.json", "field 'refusal'", "no refusal rule"]),
    ({"refusal_mode": "strict"}, ["rait.json", "field 'refusal_mode'"]),
    ([1, 2], ["rait.json", "must be a JSON object"]),
])
def test_a_bad_rait_json_is_one_line(notes, fragments, tmp_path, tiny_model_dir, capfd):
    exported = Path(shutil.copytree(tiny_model_dir, tmp_path / "exported"))
    (exported / "rait.json").write_text(json.dumps(notes))
    assert_refused(["ask", str(exported), "q"], tmp_path, capfd, fragments)


@pytest.mark.parametrize("config, fragments", [
    ("{", ["adapter_config.json", "not JSON"]),
    ("[1]", ["adapter_config.json", "must be a JSON object"]),
    ('{"r": 4}', ["adapter_config.json", "field 'base_model_name_or_path'", "names no base model"]),
    ('{"base_model_name_or_path": "/nowhere/base"}', ["/nowhere/base", "not found"]),
])
def test_a_bad_adapter_export_is_one_line(config, fragments, tmp_path, capfd):
    """An adapter-only `rait export` folder (peft's adapter_config.json beside rait.json) whose base cannot be
    found is refused with the file and field, before any model loads."""
    exported = tmp_path / "adapter"
    exported.mkdir()
    (exported / "rait.json").write_text(json.dumps({"prompt": "refuse", "refusal": "I don't know",
                                                    "base_model": "base"}))
    (exported / "adapter_config.json").write_text(config)
    assert_refused(["ask", str(exported), "q"], tmp_path, capfd, fragments)


def test_a_missing_model_is_one_line_naming_how_to_get_it(tmp_path, hub_cache, capfd, monkeypatch):
    assert_refused(["ask", str(tmp_path / "nothing"), "q"], tmp_path, capfd, ["model folder not found"])
    assert_refused(["ask", "rait-test/absent", "q"], tmp_path, capfd,
                   ["'rait-test/absent'", str(hub_cache.parents[2]), "hf download rait-test/absent"])
    monkeypatch.setattr(sys, "stdin", Terminal())
    assert_refused(["ask", TINY_ID], tmp_path, capfd, ["no question", "stdin"])


@pytest.mark.slow
def test_a_refusal_lora_on_the_default_model_answers_what_it_knows_and_refuses_a_made_up_country(tmp_path, capfd):
    """The issue's check on the real model: `rait train` on 40 rows (20 known capitals answered, 20 made-up
    countries refused), `rait export`, then `rait ask` on the export: France (not among the rows) is answered
    with Paris, a made-up country it never saw is refused."""
    rows = [training_example(capital_question(country, capital), "refuse", capital)
            for country, capital in KNOWN_CAPITALS.items()]
    rows += [training_example(capital_question(country), "refuse", refusal_text("oeqa"))
             for country in MADE_UP_COUNTRIES]
    data = tmp_path / "train.jsonl"
    data.write_text(jsonl(*rows), encoding="utf-8")
    assert cli(["train", "--data", str(data), "--out", str(tmp_path / "trained"), "--epochs", "3", "--lr", "1e-3",
                "--batch-size", "8", "--grad-accum", "1", "--lora-r", "8", "--lora-alpha", "16", "--lora-dropout",
                "0", "--target-modules", "q_proj,k_proj,v_proj,o_proj"]) == 0
    assert cli(["export", str(tmp_path / "trained"), "--out", str(tmp_path / "exported")]) == 0
    capfd.readouterr()
    assert cli(["ask", str(tmp_path / "exported"), "--json", "--max-new-tokens", "16",
                "What is the capital of France?", "What is the capital of Plorvania?"]) == 0
    france, made_up = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    assert france["prompt"] == "refuse" and france["refusal_mode"] == "paper"  # the export's rait.json
    assert france["verdict"] == "answered" and "Paris" in france["answer"], france
    assert made_up["verdict"] == "refused", made_up
