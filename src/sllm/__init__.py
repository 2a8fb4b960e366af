"""sllm: serverless LLM inference on a shared GPU pool.

Packages, from the inside out: `core` (pure scheduling state machines), `wire` (the UDP
codec), `engines` (what runs a request), `runtime` (asyncio services on real sockets),
`workload` (arrivals, traces, model popularity), `experiments` (the guide's simulations)
and `bench` (benchmarks). `cli` is the `sllm` command. Each package imports only those
below it in the layer order that `tests/test_layering.py` holds and checks (the README's
"Layout" says it in words).
"""

# The one place the version is written: pyproject.toml reads it for the package metadata.
__version__ = "0.1.0"
