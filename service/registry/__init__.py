"""The write path: everything that changes models, dimensions, evaluations, aptitude tests and checkpoints."""
