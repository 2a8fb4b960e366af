"""Engines carry out a worker's actions: load a model, run a request."""
