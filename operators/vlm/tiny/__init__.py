"""Deterministic tiny random-weight checkpoints, one builder per family.

No model hub is reachable on the development and CI machines, so tests and the demo run on
checkpoints built here from configs, a fixed seed and a tokenizer trained locally.
"""
