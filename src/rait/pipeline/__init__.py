"""`rait run`: probe, rehearse, gradients, build, train and evaluate every method from one config."""

from rait.pipeline.config import ALL_METHODS, PipelineConfig
from rait.pipeline.plan import PlannedStage, RunPlan
from rait.pipeline.run import resolve, run_pipeline

__all__ = ["ALL_METHODS", "PipelineConfig", "PlannedStage", "RunPlan", "resolve", "run_pipeline"]
