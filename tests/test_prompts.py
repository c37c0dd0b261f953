from __future__ import annotations

import pytest

from rait.data.records import QARecord
from rait.errors import SettingsError
from rait.models import load_tokenizer
from rait.prompts import (
    PROMPT_NAMES,
    build_messages,
    cut_at_splitter,
    letter_continuations,
    oeqa_query_exemplars,
    prompt_library,
    refusal_text,
    render,
    render_messages,
    training_example,
)


def mcqa(choices=("a1", "b2", "c3", "d4"), gold="B", question="Which one?", **kw) -> QARecord:
    kw.setdefault("subject", "high_school_biology")
    return QARecord(id=kw.pop("id", "q"), question=question, source=kw.pop("source", "mmlu"), split="test",
                    choices=list(choices), gold=gold, **kw)


def oeqa(question="who wrote the novel", source="trivia") -> QARecord:
    return QARecord(id="o", question=question, source=source, split="dev", answer="Sinclair Lewis")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def test_every_yaml_entry_is_documented():
    for name, entry in prompt_library().items():
        assert entry.get("description"), name
        assert entry.get("source"), name


@pytest.mark.parametrize("prompt", PROMPT_NAMES)
def test_every_named_prompt_renders_in_chat_and_raw(prompt, tokenizer):
    record = mcqa() if prompt in ("basic", "refuse", "query_kshot_mcqa") else oeqa()
    shots = [mcqa(id=f"s{i}", question=f"Shot {i}?") for i in range(5)] if prompt == "query_kshot_mcqa" else None
    last_turn = build_messages(record, prompt, shots=shots)[-1]["content"]
    chat = render(record, prompt, tokenizer, shots=shots)
    raw = render(record, prompt, shots=shots)
    assert record.question in last_turn
    assert chat.startswith("<|im_start|>user\n")
    assert chat.endswith(last_turn + "<|im_end|>\n<|im_start|>assistant\n")
    assert raw.endswith(last_turn)
    if prompt in ("basic", "refuse"):
        other = oeqa() if record.task == "mcqa" else mcqa()
        assert other.question in render(other, prompt)


def test_mcqa_four_options_are_byte_identical_to_the_papers():
    record = mcqa()
    basic = ("There is a single choice question about high school biology. Answer the question by replying A, B, C or D."
             "\nQuestion: Which one?\nA. a1\nB. b2\nC. c3\nD. d4\nAnswer: ")
    refuse = ("There is a single choice question about high school biology. If you know the answer, please directly "
              "respond with the correct answer A, B, C, or D. If you do not know the answer, please respond with "
              "\"I don't know.\"."
              "\nQuestion: Which one?\nA. a1\nB. b2\nC. c3\nD. d4\nAnswer: ")
    assert render(record, "basic") == basic
    assert render(record, "refuse") == refuse


def test_mcqa_generalises_to_five_and_two_options():
    five = render(mcqa(choices=("a", "b", "c", "d", "e")), "refuse")
    assert "the correct answer A, B, C, D, or E. If" in five
    assert five.endswith("\nD. d\nE. e\nAnswer: ")
    assert "replying A, B, C, D or E." in render(mcqa(choices=("a", "b", "c", "d", "e")), "basic")
    assert "replying A or B." in render(mcqa(choices=("yes", "no"), gold="A"), "basic")
    assert "the correct answer A or B. If" in render(mcqa(choices=("yes", "no"), gold="A"), "refuse")


def test_subject_name_from_metadata_wins():
    arc = mcqa(subject="ARC-Challenge", metadata={"subject_name": "STEM"})
    assert render(arc, "basic").startswith("There is a single choice question about STEM. ")


def test_kshot_mcqa_layout():
    shots = [mcqa(id="s1", question="S1?", choices=("p", "q", "r", "s"), gold="C"),
             mcqa(id="s2", question="S2?", choices=("t", "u", "v", "w"), gold="A"),
             mcqa(id="s3", question="never shown", gold="D")]
    text = render(mcqa(), "query_kshot_mcqa", shots=shots, n_shots=2)
    expected = ("There is a single choice question about high school biology. Answer the question by replying A, B, C or D."
                "Question: S1?\nA. p\nB. q\nC. r\nD. s\nAnswer: C\n"
                "Question: S2?\nA. t\nB. u\nC. v\nD. w\nAnswer: A\n"
                "Question: Which one?\nA. a1\nB. b2\nC. c3\nD. d4\nAnswer:")
    assert text == expected
    assert letter_continuations("ABCD") == [" A", " B", " C", " D"]
    assert prompt_library()["mcqa_query"]["shots"] == 5
    with pytest.raises(ValueError, match="needs 5 exemplars"):
        render(mcqa(), "query_kshot_mcqa", shots=shots)


def test_oeqa_3shot_query_is_a_multi_turn_chat():
    messages = build_messages(oeqa(), "query_3shot")
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3 + ["user"]
    assert messages[0]["content"] == ("Answer the following question as simple as possible.\n"
                                      "Question: Who was President when the first Peanuts cartoon was published?\nAnswer:")
    assert [m["content"] for m in messages[1::2]] == ["Harry Truman\n", "Sinclair Lewis\n", "York\n"]
    assert messages[-1]["content"].endswith("Question: who wrote the novel\nAnswer:")
    custom = build_messages(oeqa(), "query_3shot", shots=[("Q one?", "Ans")])
    assert [m["content"] for m in custom[:2]] == [
        "Answer the following question as simple as possible.\nQuestion: Q one?\nAnswer:", "Ans\n"]


def test_default_oeqa_exemplars_are_not_years():
    assert all(not answer.strip().isdigit() for _, answer in oeqa_query_exemplars())


def test_splitter_is_the_instructions_first_40_characters():
    entry = prompt_library()["oeqa_query_3shot"]
    assert entry["splitter"] == entry["user"][:40]
    assert cut_at_splitter(" York\nanswer the following question as simple as possible.\nQuestion: x") == " York\n"
    assert cut_at_splitter("York") == "York"


def test_question_suffix_is_per_source():
    nq = oeqa(question="who wrote the great gatsby", source="nq")
    assert render(nq, "basic") == "who wrote the great gatsby?"
    assert render(nq, "refuse").endswith("'I don't know': who wrote the great gatsby?")
    assert render(oeqa(), "basic") == "who wrote the novel"


def test_chat_rendering_with_and_without_system_prompt(tokenizer):
    assert render(oeqa(), "basic", tokenizer) == (
        "<|im_start|>user\nwho wrote the novel<|im_end|>\n<|im_start|>assistant\n")
    assert render(oeqa(), "basic", tokenizer, system="Be brief.") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nwho wrote the novel<|im_end|>\n"
        "<|im_start|>assistant\n")


def test_raw_rendering_joins_turns_with_newlines(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    tokenizer.chat_template = None
    messages = build_messages(oeqa(), "query_3shot", shots=[("Q one?", "Ans")])
    assert render_messages(messages, tokenizer) == (
        "Answer the following question as simple as possible.\nQuestion: Q one?\nAnswer:\nAns\n\n"
        "Answer the following question as simple as possible.\nQuestion: who wrote the novel\nAnswer:")
    assert render_messages(build_messages(mcqa(), "basic"), tokenizer) == render(mcqa(), "basic")
    with pytest.raises(SettingsError, match="chat template"):  # a user's model: one error line, not a traceback
        render_messages(messages, tokenizer, chat=True)


def test_training_example_is_trl_prompt_completion(tokenizer):
    example = training_example(mcqa(), "refuse", refusal_text("mcqa"), system="")
    assert example["prompt"] == build_messages(mcqa(), "refuse", system="")
    assert example["completion"] == [{"role": "assistant", "content": "I don't know."}]
    prompt_text = tokenizer.apply_chat_template(example["prompt"], add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(example["prompt"] + example["completion"], tokenize=False)
    assert full_text.startswith(prompt_text)
    assert refusal_text("oeqa") == "I don't know"


def test_prompts_refuse_the_wrong_task():
    with pytest.raises(ValueError, match="does not apply"):
        build_messages(mcqa(), "query_3shot")
    with pytest.raises(ValueError, match="does not apply"):
        build_messages(oeqa(), "query_kshot_mcqa")
    with pytest.raises(ValueError, match="unknown prompt"):
        build_messages(oeqa(), "fancy")
