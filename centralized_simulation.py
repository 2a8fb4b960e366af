#!/usr/bin/env python3
"""The deployment guide's simulation: a coordinator and N workers on loopback under load.

    python3 centralized_simulation.py --workers 5 --duration 30

Runs on a bare python3 (standard library only); see --help for every flag.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from sllm.experiments.centralized import main

if __name__ == "__main__":
    sys.exit(main())
