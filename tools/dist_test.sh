#!/usr/bin/env bash
# Distributed testing on torchrun. Usage: tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS_PER_NODE [test.py args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT in the environment of every node.
exec "$(dirname "$0")/torchrun.sh" test.py "$3" "$1" "$2" "${@:4}"
