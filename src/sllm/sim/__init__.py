"""The deterministic cluster simulator: the production core on virtual time.

Why it exists: the guide's questions (does a global view beat stale views, who recovers
faster, who spreads load more evenly) need thousands of workers, hours of traffic and
repeatable faults, which no laptop runs live. The simulator runs the very hosts the live
runtime runs (`sllm.hosts`: the coordinator, worker and node hosts and the request
client, around the core's objects) on a discrete-event heap, and replaces only what is
physical: the clock (`kernel`), the UDP network (`network`) and the crashes (`faults`).

- `kernel`: a heap of ``(time, sequence, callback, argument)``, plus a FIFO lane for the
  periodic worker reports; ties run in the order they were scheduled, so one seed gives
  one history.
- `network`: named nodes exchanging message objects with seeded latency, loss,
  duplication, reordering and partitions; bytes are the real codec's encoded sizes.
- `hosts`: the kernel driver (the hosts' clock, timers and network) and the simulated
  processes (a host at a network name, up while it lives), and the client;
- `cluster`: what every architecture shares (kernel, network, a client that does what the
  live load generator does, faults, the report) and the centralized cluster (one
  coordinator, N workers).
- `decentralized`: the decentralized cluster: N core `Node`s (worker, gossip membership and
  scheduler each), the client asking a random live node.
- `faults`: kills, restarts, partitions and loss windows, on a schedule or drawn from a seed.
- `cli`: ``python3 -m sllm simulate``.

Not handled yet: decentralized clusters of thousands of nodes run slowly (the production
gossip code runs as it is: 1,000 nodes simulate about 3x slower than real time).
"""
