"""The parts of `distill eval`: inputs, embeddings, scoring and the verdict (the stage itself
is distill/stages/evaluate.py)."""
