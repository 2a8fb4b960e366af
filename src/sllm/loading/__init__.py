"""Fast checkpoint loading: parallel chunked reads into one allocation, tensors as views.

`index` (the safetensors header, standard library), `pool` (the reusable host pool and
the parallel reads, standard library), `loader` (tensors as views, device copies; torch).
Above `store` (it reads the files the store brought to disk), below `engines`.
See docs/loading.md.
"""
