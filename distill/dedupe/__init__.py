"""The parts of `distill dedupe` (the stage itself is distill.stages.dedupe): what one run
knows (job), the three streaming passes over the input (index, clusters, output) and the
LSH index kept in Redis."""
