#!/usr/bin/env bash
# Distributed training on torchrun. Usage: tools/dist_train.sh CONFIG NUM_PROCS_PER_NODE [train.py args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT in the environment of every node.
exec "$(dirname "$0")/torchrun.sh" train.py "$2" "$1" "${@:3}"
