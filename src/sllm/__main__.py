"""`python3 -m sllm ...` runs the `sllm` command."""

import sys

from sllm.cli import main

sys.exit(main())
