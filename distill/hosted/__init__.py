"""The parts of hosted fine-tuning (the stage itself is distill.stages.train_hosted): the API
client, the job's state on disk, the cost plan shown before the yes, and following a job."""
