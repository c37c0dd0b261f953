"""GRAIT's gradient stage: per-sample LoRA gradient features, their projection and their store.

`run(GradsSettings(...), records, out, model=..., table_path=...)` is the stage (`rait.grads.stage`: the
warm-up of `rait.grads.warmup`, then the store).
"""

from rait.grads.adam import GRADIENT_TYPES, AdamMoments, GradientTransform
from rait.grads.features import LABEL_FORMS, FeatureExtractor, GradExample, GradsSettings, build_store, gradient_examples
from rait.grads.persample import Batch, EncodedExample, PerSampleGradients, collate, encode_example, per_sample_grads, per_sample_losses
from rait.grads.projection import PROJECTORS, CountSketchProjector, DenseProjector, make_projector
from rait.grads.stage import run
from rait.grads.store import FeatureStore, GradientFeatures, load_features

__all__ = [
    "GRADIENT_TYPES",
    "LABEL_FORMS",
    "PROJECTORS",
    "AdamMoments",
    "Batch",
    "CountSketchProjector",
    "DenseProjector",
    "EncodedExample",
    "FeatureExtractor",
    "FeatureStore",
    "GradExample",
    "GradientFeatures",
    "GradientTransform",
    "GradsSettings",
    "PerSampleGradients",
    "build_store",
    "collate",
    "encode_example",
    "gradient_examples",
    "load_features",
    "make_projector",
    "per_sample_grads",
    "per_sample_losses",
    "run",
]
