"""The evaluation stage: greedy answers of a model on a test set, scored (`rait.data.scoring`) and aggregated (`metrics`).

`run(EvalSettings(...), records, out, model=...)` is the stage (`rait.evaluate.suite`).
"""

from rait.evaluate.runner import EvalSettings
from rait.evaluate.suite import run

__all__ = ["EvalSettings", "run"]
