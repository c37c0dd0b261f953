"""A tiny random Llama with an in-process BPE tokenizer: the model every unit test uses.

It mirrors the default model where that matters for the code under test: a Llama
architecture with tied embeddings, a ChatML chat template, and pad == eos == <|im_end|>
(so loss masks built from `input_ids == pad_token_id` would fail here as they would on
SmolLM2). Its weights are random, so tests must not assert on the text it generates.
Building and saving takes well under a second after the imports.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rait.prompts import prompt_library

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CORPUS = [
    "A B C D E a b c d e 0 1 2 3 4 5 6 7 8 9 10 100 1930 2017",
    "Question: What is the capital of France? Answer: Paris",
    "Question: Who wrote the novel? Answer: Sinclair Lewis",
    "The capital of India is New Delhi. The largest planet is Jupiter.",
    "There is a single choice question about high school biology.",
    "Answer the question by replying A, B, C or D.",
    "If you know the answer, please directly respond with the correct answer A, B, C, or D.",
    "If you do not know the answer, please respond with \"I don't know.\". I don't know",
    "Answer the following question as simple as possible.",
    "Answer the following question, and if you don't know the answer, only reply with 'I don't know':",
    "who is the president of the united states when was the first film released where is the river",
    "system user assistant you are a helpful assistant the of and to in is was for on with as by at",
]
SEED = 0
# Larger than Llama's 0.02 so that greedy output depends on the whole prompt (at 0.02 the
# random model answers "\n" to every chat prompt), which makes padding bugs visible.
INIT_STD = 0.2


def corpus() -> list[str]:
    """The built-in sentences plus every prompt text, so prompts tokenize into few tokens."""
    lib = prompt_library()
    texts = [entry["text"] for entry in lib.values() if isinstance(entry.get("text"), str)]
    return CORPUS + texts


def build_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `corpus()`, with ChatML special tokens and chat template."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )


def build_tiny_model(folder: str | Path) -> Path:
    """Save a seeded random tiny Llama and its tokenizer to `folder`; return the folder."""
    folder = Path(folder)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        initializer_range=INIT_STD,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
