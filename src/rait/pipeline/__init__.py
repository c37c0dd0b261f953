"""`rait run`: probe, rehearse, gradients, build, train and evaluate every method from one config."""

from rait.pipeline.config import ALL_METHODS, PipelineConfig
from rait.pipeline.run import run_pipeline

__all__ = ["ALL_METHODS", "PipelineConfig", "run_pipeline"]
