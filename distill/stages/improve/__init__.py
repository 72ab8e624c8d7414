"""`distill improve`: generate more where the student fails, retrain, and show whether it
worked. cells.py ranks the plan cells from the last eval, planning.py picks the new points,
fresh.py keeps what is new to the run, round.py runs a round step by step (resumable),
compare.py writes the before/after table and the attribution against a uniform control."""

from distill.stages.improve.round import ADDED, ImproveOptions, improve_round, rounds_done

__all__ = ["ADDED", "ImproveOptions", "improve_round", "rounds_done"]
