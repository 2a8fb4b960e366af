#!/usr/bin/env python3
"""The deployment guide's `udp_central_coordinator.py`: the same as `python3 -m sllm coordinator`.

Runs on a bare python3 from the repository root; see --help.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from sllm.cli import main

if __name__ == "__main__":
    sys.exit(main(["coordinator", *sys.argv[1:]]))
