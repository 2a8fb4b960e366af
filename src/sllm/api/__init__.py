"""The OpenAI-compatible HTTP API: schemas, errors, SSE, the front door, the worker side."""
