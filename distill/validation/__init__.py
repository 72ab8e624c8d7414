"""The parts of `distill validate` (the streaming scanner is distill.stages.validate): the
problem codes and report, the per-example rules, the statistics, exact duplicate lines."""
