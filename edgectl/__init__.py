"""Operator and developer tooling: CLI, local stack, reference receiver. Never deployed."""
