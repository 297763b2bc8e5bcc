"""`python -m erasekit.cli` (e.g. under `accelerate launch`)."""

from . import main

main()
