"""Stage 1: probe what the model knows (correctness and certainty per question)."""
