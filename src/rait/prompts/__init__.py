"""Prompts as data (prompts.yaml) and their rendering into chat messages and model input text."""

from __future__ import annotations

from rait.prompts.render import (
    PROMPT_NAMES,
    answer_target,
    build_messages,
    cut_at_splitter,
    enumerate_letters,
    letter_continuations,
    mcqa_question_text,
    mcqa_query_text,
    oeqa_query_exemplars,
    prompt_library,
    question_suffix,
    refusal_text,
    render,
    render_messages,
    render_raw,
    subject_name,
    training_example,
)

__all__ = [
    "PROMPT_NAMES",
    "answer_target",
    "build_messages",
    "cut_at_splitter",
    "enumerate_letters",
    "letter_continuations",
    "mcqa_question_text",
    "mcqa_query_text",
    "oeqa_query_exemplars",
    "prompt_library",
    "question_suffix",
    "refusal_text",
    "render",
    "render_messages",
    "render_raw",
    "subject_name",
    "training_example",
]
