"""The read path: routing state in memory, the engine that decides, stage 2, micro-batching, the decision log."""
