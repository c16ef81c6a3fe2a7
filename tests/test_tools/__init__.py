"""Tests of the command-line tools in ``tools/`` (run as processes; the logic behind them is tested with the
library modules they call)."""
