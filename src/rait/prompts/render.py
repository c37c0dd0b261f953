"""Turn a QA record into chat messages under a named prompt, then into model input text.

Prompt names (`PROMPT_NAMES`) and what they build:

- ``basic``: MCQA BASIC hint + question block / open-QA bare question (BASIC1).
- ``refuse``: MCQA REFUSE hint + question block / open-QA REFUSE1.
- ``query_3shot``: open QA only; CRaFT's multi-turn 3-shot knowledge query.
- ``query_0shot``: open QA only; the bare question as a zero-shot knowledge query.
- ``query_kshot_mcqa``: MCQA only; the k-shot knowledge query scored by letter probability.

Every prompt is one or more chat messages ({"role", "content"}). `render_messages` turns
them into text through the tokenizer's chat template (with the generation prompt), or,
for base models and tokenizers without a template, through the `raw` format: the turn
contents joined by a newline, as OpenCompass does (a single user turn renders to exactly
its text). `system=None` adds no system message and lets the template apply its default;
SmolLM2's template then inserts its own ("You are a helpful AI assistant named SmolLM…").
Pass `system=""` for an explicit empty system turn.

The texts themselves live in prompts.yaml; nothing here depends on a model's token ids.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any, Sequence

import yaml

from rait.data.records import QARecord
from rait.errors import SettingsError

PROMPT_NAMES = ("basic", "refuse", "query_3shot", "query_0shot", "query_kshot_mcqa")
MCQA_ONLY = {"query_kshot_mcqa"}
OEQA_ONLY = {"query_3shot", "query_0shot"}

Message = dict[str, str]


@cache
def prompt_library() -> dict[str, Any]:
    """The parsed prompts.yaml (read once)."""
    return yaml.safe_load(files("rait.prompts").joinpath("prompts.yaml").read_text(encoding="utf-8"))


def refusal_text(task: str) -> str:
    """The IdK target and refusal phrase: "I don't know" (open QA) or "I don't know." (MCQA)."""
    return prompt_library()["refusal"][task]


def answer_target(record: QARecord) -> str:
    """The answer a training row teaches: the gold letter (MCQA) or the dataset's answer (open QA), as the releases do."""
    return record.gold if record.task == "mcqa" else record.answer


def question_suffix(source: str) -> str:
    """What the papers append to a source's open-QA questions ("?" for NQ, nothing elsewhere)."""
    return prompt_library()["question_suffix"]["by_source"].get(source, "")


def subject_name(record: QARecord) -> str:
    """The subject named in the MCQA hint: metadata["subject_name"], else the subject with spaces."""
    return record.metadata.get("subject_name") or record.subject.replace("_", " ")


def enumerate_letters(letters: str, hint: str) -> str:
    """"A, B, C or D" (basic hint) / "A, B, C, or D" (refuse hint), for any number of letters."""
    style = prompt_library()[f"mcqa_hint_{hint}"]["enumeration"]
    if len(letters) == 2:
        return f"{letters[0]} or {letters[1]}"
    return style["separator"].join(letters[:-1]) + style["last"] + letters[-1]


def mcqa_hint(record: QARecord, hint: str = "basic") -> str:
    entry = prompt_library()[f"mcqa_hint_{hint}"]
    return entry["text"].format(subject=subject_name(record), letters=enumerate_letters(record.letters, hint))


def mcqa_options(record: QARecord, option: str) -> str:
    return "\n".join(option.format(letter=letter, text=text) for letter, text in zip(record.letters, record.choices))


def mcqa_question_text(record: QARecord, hint: str = "basic") -> str:
    """The 0-shot MCQA user turn: hint, question, one line per option, "Answer: "."""
    entry = prompt_library()["mcqa_question"]
    return entry["text"].format(hint=mcqa_hint(record, hint), question=record.question,
                                options=mcqa_options(record, entry["option"]))


def mcqa_query_text(record: QARecord, shots: Sequence[QARecord], n_shots: int | None = None) -> str:
    """The k-shot knowledge-query text: BASIC hint, the first `n_shots` shots, the target ending "Answer:"."""
    entry = prompt_library()["mcqa_query"]
    n_shots = entry["shots"] if n_shots is None else n_shots
    if len(shots) < n_shots:
        raise ValueError(f"the {n_shots}-shot MCQA query needs {n_shots} exemplars, got {len(shots)}")
    shot_text = "".join(
        entry["shot"].format(question=s.question, options=mcqa_options(s, entry["option"]), gold=s.gold)
        for s in shots[:n_shots]
    )
    return entry["text"].format(hint=mcqa_hint(record, "basic"), shots=shot_text, question=record.question,
                                options=mcqa_options(record, entry["option"]))


def letter_continuations(letters: str) -> list[str]:
    """What follows "Answer:" in the k-shot query for each option: " A", " B", ...

    After a chat template's assistant header the bare letter ("A") is the natural next
    token instead; letter scorers should sum both forms (docs/probe.md, Letters).
    """
    continuation = prompt_library()["mcqa_query"]["continuation"]
    return [continuation.format(letter=letter) for letter in letters]


def oeqa_question(record: QARecord) -> str:
    return record.question + question_suffix(record.source)


def oeqa_query_exemplars() -> list[tuple[str, str]]:
    """The default (question, answer) exemplars of the 3-shot open-QA query."""
    return [(e["question"], e["answer"]) for e in prompt_library()["oeqa_query_3shot"]["exemplars"]]


def cut_at_splitter(text: str) -> str:
    """Cut an output of the 3-shot query where the model starts inventing the next question."""
    splitter = prompt_library()["oeqa_query_3shot"]["splitter"]
    at = text.lower().find(splitter.lower())
    return text if at < 0 else text[:at]


def build_messages(
    record: QARecord,
    prompt: str,
    *,
    system: str | None = None,
    shots: Sequence[Any] | None = None,
    n_shots: int | None = None,
) -> list[Message]:
    """Chat messages for `record` under `prompt`, ending with the user turn to answer.

    `shots`: for ``query_kshot_mcqa`` the exemplar records (the first `n_shots` are used; the
    caller passes MMLU val rows of the same subject); for ``query_3shot`` a list of
    (question, answer) pairs, by default the exemplars of prompts.yaml.
    """
    if prompt not in PROMPT_NAMES:
        raise ValueError(f"unknown prompt {prompt!r}; choose from {', '.join(PROMPT_NAMES)}")
    if (prompt in MCQA_ONLY and record.task != "mcqa") or (prompt in OEQA_ONLY and record.task != "oeqa"):
        raise ValueError(f"prompt {prompt!r} does not apply to {record.task} record {record.id!r}")
    lib = prompt_library()
    messages: list[Message] = [] if system is None else [{"role": "system", "content": system}]
    if record.task == "mcqa":
        if prompt == "query_kshot_mcqa":
            if shots is None:
                raise ValueError("the k-shot MCQA query needs exemplar records (shots=...)")
            content = mcqa_query_text(record, shots, n_shots)
        else:
            content = mcqa_question_text(record, hint=prompt)
        return messages + [{"role": "user", "content": content}]
    question = oeqa_question(record)
    if prompt == "query_3shot":
        entry = lib["oeqa_query_3shot"]
        for shot_question, shot_answer in oeqa_query_exemplars() if shots is None else shots:
            messages.append({"role": "user", "content": entry["user"].format(question=shot_question)})
            messages.append({"role": "assistant", "content": entry["assistant"].format(answer=shot_answer)})
        return messages + [{"role": "user", "content": entry["user"].format(question=question)}]
    key = {"basic": "oeqa_basic", "refuse": "oeqa_refuse", "query_0shot": "oeqa_query_0shot"}[prompt]
    return messages + [{"role": "user", "content": lib[key]["text"].format(question=question)}]


def render_raw(messages: Sequence[Message]) -> str:
    """Turn contents joined by the raw-format separator (a newline), for models without a chat template."""
    return prompt_library()["raw_format"]["separator"].join(m["content"] for m in messages if m["content"])


def render_messages(messages: Sequence[Message], tokenizer=None, *, chat: bool | None = None) -> str:
    """Model input text: the chat template with the generation prompt, or the raw format.

    `chat=None` uses the tokenizer's chat template when it has one, else raw.
    """
    use_chat = (tokenizer is not None and tokenizer.chat_template is not None) if chat is None else chat
    if not use_chat:
        return render_raw(messages)
    if tokenizer is None or tokenizer.chat_template is None:
        raise SettingsError("chat", "this model's tokenizer has no chat template: render raw (`chat: false` in the "
                            "probe or eval settings, `rait probe --no-chat`), or give a model with one")
    return tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)


def render(
    record: QARecord,
    prompt: str,
    tokenizer=None,
    *,
    system: str | None = None,
    shots: Sequence[Any] | None = None,
    n_shots: int | None = None,
    chat: bool | None = None,
) -> str:
    """`build_messages` then `render_messages`: the text to feed the model for `record`."""
    messages = build_messages(record, prompt, system=system, shots=shots, n_shots=n_shots)
    return render_messages(messages, tokenizer, chat=chat)


def training_example(record: QARecord, prompt: str, target: str, *, system: str | None = None) -> dict:
    """A TRL conversational prompt-completion row: the prompt's messages and the assistant target."""
    return {
        "prompt": build_messages(record, prompt, system=system),
        "completion": [{"role": "assistant", "content": target}],
    }
