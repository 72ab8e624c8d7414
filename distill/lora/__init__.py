"""The parts of local LoRA training (the stage itself is distill.stages.train_local): the
config, the data and its batches, the training loop, checkpoints, and what is written at the
end (adapter folder, loss curve)."""
