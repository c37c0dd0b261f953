"""Weighted supervised fine-tuning on TRL: `WeightedSFTTrainer` and its config.

GRAIT weights every training sample (IdK samples by their influence, the rest by 1). TRL's
`SFTTrainer` has no per-sample weights (trl issue #5761) and the GRAIT release only supports
them at micro-batch 1. This trainer keeps a ``weight`` column through TRL's preprocessing and
collation and minimises, for every optimiser step,

    L = (1 / N) * sum_i  w_i * l_i,     l_i = mean over the completion tokens of sample i of -log p(token)

where N is the number of samples in the *global* batch (all micro-batches of one gradient
accumulation cycle, on all processes). So:

- the objective, its gradient and every update are the same for any micro-batch size and
  accumulation setting that make the same global batch (micro-batch 4 x accumulation 2 equals
  micro-batch 1 x accumulation 8);
- with all weights 1 it is the plain per-sample-mean SFT loss (each sample counts once,
  however long its answer);
- a weight w multiplies a sample's contribution by w: weight 2 is that sample twice in the
  sum (the mean still divides by the number of rows, so it equals the duplicated batch up to
  the factor N_with_duplicate / N);
- weights are not renormalised: GRAIT's weights (mean 0.5 over IdK samples) really halve
  those samples' pull relative to weight-1 samples.

Plain TRL SFT differs: it averages over *tokens* of the global batch (sum of token losses /
number of completion tokens), so a sample with a long answer weighs more than one with a
short answer. The two agree when every completion has the same number of tokens.

Per-token log-probabilities come from TRL's fused LM head (`fused_lm_head=True`), the same
forward the plain trainer runs, so weighting adds no forward pass. Packing and padding-free
batches are refused: they merge samples into one row and the per-sample weights would be lost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from datasets import Dataset, Value
from trl import SFTConfig, SFTTrainer

from rait.errors import DataError, RaitError


@dataclass
class WeightedSFTConfig(SFTConfig):
    """`SFTConfig` plus the weight column, with defaults suited to short QA samples.

    Changed defaults: activation (gradient) checkpointing off, since QA samples are a few
    dozen tokens and it would cost ~20 % for no memory need (TRL turns it on; set
    ``activation_checkpointing=True`` for long samples); ``bf16`` only where the GPU supports
    it (a CPU without native bf16 runs it ~170x slower than fp32).
    """

    weight_column: str = field(
        default="weight",
        metadata={"help": "Dataset column with each sample's loss weight (finite, > 0). Missing column: all 1."},
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing (off by default)."}
    )
    completion_only_loss: bool | None = field(default=True, metadata={"help": "Must stay True: loss on the answer only."})

    def __post_init__(self):
        if self.bf16 is None:
            self.bf16 = not self.fp16 and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        super().__post_init__()
        if self.packing or self.padding_free:
            raise ValueError("weighted SFT needs one sample per row: set packing=False and padding_free=False")
        if self.completion_only_loss is not True:
            raise ValueError("weighted SFT computes the loss on completion tokens only (completion_only_loss=True)")
        if self.loss_type != "nll" or self.label_smoothing_factor > 0:
            raise ValueError("weighted SFT replaces the loss: use loss_type='nll' and no label smoothing")


def _has_content(messages: Any) -> bool:
    """A non-blank string, or a list of chat messages of which at least one has non-blank content."""
    if isinstance(messages, str):
        return bool(messages.strip())
    if isinstance(messages, list):
        return any(isinstance(m, dict) and isinstance(m.get("content"), str) and m["content"].strip() for m in messages)
    return False


def row_problem(row: dict[str, Any], weight_column: str | None = "weight") -> tuple[str, str] | None:
    """(field, message) for the first thing that makes a training row unusable, else None.

    The weight is checked when `weight_column` is given and the row has it.
    """
    if not _has_content(row.get("prompt")):
        return "prompt", "missing or empty (a list of chat messages, or a string)"
    if not _has_content(row.get("completion")):
        return "completion", "no completion: every training sample needs a non-empty assistant answer"
    if weight_column is not None and weight_column in row:
        weight = row[weight_column]
        valid = isinstance(weight, (int, float)) and not isinstance(weight, bool) and math.isfinite(weight) and weight > 0
        if not valid:
            return weight_column, f"must be a finite number > 0, got {weight!r}"
    return None


def prepare_rows(dataset: Dataset, weight_column: str = "weight", source: str = "<train dataset>") -> Dataset:
    """Check every row (see `row_problem`), make plain-text rows chat messages, add weight 1 if absent.

    A string prompt becomes one user turn and a string completion one assistant turn, so
    every sample is rendered by the model's chat template.
    """
    columns = [c for c in ("prompt", "completion", weight_column) if c in dataset.column_names]
    for i, row in enumerate(dataset.select_columns(columns), start=1):
        if problem := row_problem(row, weight_column):
            raise DataError(source, problem[1], line=i, field=problem[0])
    if isinstance(dataset[0]["prompt"], str):
        dataset = dataset.map(lambda row: {"prompt": [{"role": "user", "content": row["prompt"]}]})
    if isinstance(dataset[0]["completion"], str):
        dataset = dataset.map(lambda row: {"completion": [{"role": "assistant", "content": row["completion"]}]})
    if weight_column in dataset.column_names:
        return dataset.cast_column(weight_column, Value("float64"))
    return dataset.add_column(weight_column, [1.0] * len(dataset))


@dataclass
class WeightedCollator:
    """Wrap TRL's collator: collate the tokens as usual and add the weights as a float tensor."""

    collator: Callable[[list[dict[str, Any]]], dict[str, Any]]
    weight_column: str = "weight"

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        weights = torch.tensor([example[self.weight_column] for example in examples], dtype=torch.float32)
        batch = self.collator([{k: v for k, v in example.items() if k != self.weight_column} for example in examples])
        batch[self.weight_column] = weights
        return batch


def sample_losses(log_probs: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
    """Each row's mean negative log-likelihood over its labelled (completion) tokens."""
    return -log_probs.sum(dim=1) / label_mask.sum(dim=1).clamp(min=1)


class WeightedSFTTrainer(SFTTrainer):
    """`SFTTrainer` whose loss is the weighted per-sample mean described in the module docstring.

    Give it conversational prompt/completion data (TRL's format: ``prompt`` and ``completion``
    lists of chat messages) with an optional weight column, and the model's tokenizer as
    ``processing_class``; its own chat template renders the samples.
    """

    # compute_loss already divides by the samples of the whole accumulation cycle
    loss_is_scaled_for_ga = True

    def __init__(self, model, args: WeightedSFTConfig, train_dataset: Dataset, processing_class, eval_dataset: Dataset | None = None, **kwargs):
        if not isinstance(args, WeightedSFTConfig):
            raise TypeError("WeightedSFTTrainer needs a WeightedSFTConfig")
        if getattr(processing_class, "chat_template", None) is None:
            raise RaitError("the tokenizer has no chat template; rait trains with the model's own template, so use a chat model")
        column = args.weight_column
        train_dataset = prepare_rows(train_dataset, column, "<train dataset>")
        if eval_dataset is not None:
            eval_dataset = prepare_rows(eval_dataset, column, "<eval dataset>")
        n_rows = len(train_dataset)
        super().__init__(model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, processing_class=processing_class, **kwargs)
        if (dropped := n_rows - len(self.train_dataset)) > 0:
            raise RaitError(f"{dropped} training sample(s) have no answer token left within max_length={args.max_length}; raise max_length")
        self.data_collator = WeightedCollator(self.data_collator, column)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self.args.weight_column not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, self.args.weight_column]

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor:
        """The number of samples (not tokens) in the global batch: the denominator of the objective."""
        count = torch.tensor(sum(len(batch[self.args.weight_column]) for batch in batch_samples), device=device)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop(self.args.weight_column)
        outputs = model(**inputs, use_cache=False, fused_lm_head=True)
        losses = sample_losses(outputs.log_probs, outputs.label_mask)
        n_samples = len(weights) if num_items_in_batch is None else num_items_in_batch
        loss = (weights.to(losses.dtype) * losses).sum() / n_samples
        if num_items_in_batch is not None:
            # the count spans every process, and DDP averages gradients over processes
            loss = loss * self.accelerator.num_processes
        self._record_metrics(inputs, outputs)
        if return_outputs:
            with torch.no_grad():
                outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
            return loss, outputs
        return loss

    def _record_metrics(self, inputs: dict[str, torch.Tensor], outputs) -> None:
        """The token accuracy and token count the plain SFTTrainer logs."""
        mode = "train" if self.model.training else "eval"
        n_valid = self.accelerator.gather_for_metrics(outputs.label_mask.sum()).sum()
        n_correct = self.accelerator.gather_for_metrics(outputs.is_top1.sum()).sum()
        self._metrics[mode]["mean_token_accuracy"].append((n_correct / n_valid).item() if n_valid > 0 else 0.0)
        if mode == "train":
            self._total_train_tokens += self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
