#!/usr/bin/env python3
"""The decentralized counterpart of centralized_simulation.py: N gossiping nodes on loopback.

    python3 decentralized_simulation.py --nodes 5 --duration 30 [--kill 1]

Runs on a bare python3 (standard library only); see --help for every flag.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from sllm.experiments.decentralized import main

if __name__ == "__main__":
    sys.exit(main())
