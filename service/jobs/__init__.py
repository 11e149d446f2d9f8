"""Offline commands: the evaluation harness and the benchmark."""
