"""Evaluation: greedy answers of a model on a test set, scored (`rait.data.scoring`) and aggregated (`metrics`)."""
