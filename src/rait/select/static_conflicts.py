"""CRSS, the static-conflict rate of a built set (CRaFT paper, AAAI'25; docs/build.md).

CRSS = the share of IdK samples whose most similar vanilla sample (cosine of question
features) is more similar than τ_sim: an IdK question that looks like a question the model is
trained to answer pulls the two labels against each other.

Features are the initial model's last hidden layer. The paper does not say which token or
pooling; ``question_features`` renders each question with the training prompt (chat template
and generation prompt, as the model sees it before answering) and takes, by default, the
hidden state of the last prompt token ("last_token"): that is the vector the model's first
answer token is predicted from. ``pooling="mean"`` averages over the prompt's tokens instead
(the prompt's instruction text is shared by every question, which pulls mean features together).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from sklearn.preprocessing import normalize

from rait.data.records import QARecord
from rait.prompts import render

CRSS_THRESHOLDS = (0.95, 0.96, 0.97, 0.98, 0.99)
POOLINGS = ("last_token", "mean")


def crss(features_vanilla: np.ndarray, features_idk: np.ndarray, thresholds: Sequence[float] = CRSS_THRESHOLDS,
         chunk: int = 1024) -> dict[float, float]:
    """{τ_sim: share of IdK rows whose max cosine to any vanilla row is > τ_sim}.

    One row per sample (a question drawn twice counts twice). No IdK samples: NaN (undefined);
    no vanilla samples: 0. IdK rows are processed `chunk` at a time, so memory is chunk × n_vanilla.
    """
    features_vanilla = np.asarray(features_vanilla, dtype=np.float64)
    features_idk = np.asarray(features_idk, dtype=np.float64)
    if len(features_idk) == 0:
        return {float(t): float("nan") for t in thresholds}
    if len(features_vanilla) == 0:
        return {float(t): 0.0 for t in thresholds}
    vanilla = normalize(features_vanilla)
    idk = normalize(features_idk)
    best = np.concatenate([(idk[i : i + chunk] @ vanilla.T).max(axis=1) for i in range(0, len(idk), chunk)])
    return {float(t): float((best > t).mean()) for t in thresholds}


@torch.inference_mode()
def question_features(
    model,
    tokenizer,
    records: Sequence[QARecord],
    pooling: str = "last_token",
    prompt: str = "refuse",
    system: str | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """(n_records, hidden) float32 last-hidden-layer features of each record's rendered prompt.

    Batches are formed from prompts sorted by length and padded; the padding side does not
    matter (the last real token and the mean come from the attention mask).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    texts = [render(r, prompt, tokenizer, system=system) for r in records]
    raw = tokenizer.chat_template is None  # raw prompts need the tokenizer's own BOS
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=raw).to(device)
        hidden = model(**enc, output_hidden_states=True, logits_to_keep=1).hidden_states[-1].float()
        mask = enc["attention_mask"].to(hidden.dtype)
        if pooling == "last_token":
            last = mask.shape[1] - 1 - mask.flip(1).argmax(dim=1)
            pooled = hidden[torch.arange(len(idx), device=device), last]
        else:
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        out[idx] = pooled.cpu().numpy()
    return out
