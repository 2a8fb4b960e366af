"""Hosts: the core's state machines turned into timers and messages, written once.

Why it exists: the live runtime and the simulator host the very same core objects, and the
logic around them (stale timers after a crash, one timer kept at the next deadline,
requesters answered, reports sent, a request followed from arrival to end) used to be
written once per driver. Here it is written once, against a small driver interface
(`driver.Driver`: ``now``, ``call_at``/``call_later``, ``send``, ``notify``):

- `worker`: a `WorkerState` (datagram requests, the sim engine's timers, keep-alive,
  periodic reports);
- `coordinator`: the core `Coordinator` (replies, periodic expiry);
- `node`: a decentralized core `Node` and its worker;
- `client`: one request from arrival to end (the load generator's and the simulator's);
- `deadline`: the one timer kept at a state machine's next deadline (the node's, the
  worker's keep-alive, and any participant's in `sllm.sim.participants`).

The live runtime's asyncio driver is `sllm.runtime.driver`; the simulator's kernel
driver is `sllm.sim.hosts`. Layering: this package imports the core, the wire codec,
records, the sim engine and the report's records; never the runtime, the simulator,
the experiments or the API.
"""
