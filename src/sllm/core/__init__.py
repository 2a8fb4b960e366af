"""The sans-I/O core: cluster view, placement, cost model, worker state, coordinator.

Nothing in this package touches a socket, a thread, asyncio, the wall clock or the
global random generator. Every entry point takes `now` (seconds, any epoch) and, where
it needs chance, a seeded `random.Random`. The live runtime (`sllm.runtime`) and the
simulator host these very objects, which is why the simulator can be trusted.
`tests/core/test_core_purity.py` keeps it that way.
"""
