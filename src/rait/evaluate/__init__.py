"""Evaluation: score each output (`scoring`), then aggregate per-item outcomes (`metrics`).

Kept import-free so that `import rait.evaluate.scoring` does not pull in scikit-learn.
"""
