"""Engines carry out a worker's actions: load a model, run a request.

The protocol is `sllm.engines.base.Engine`; the registry of engines, by name, is
`sllm.engines.registry`.
"""
