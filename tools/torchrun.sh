#!/usr/bin/env bash
# torchrun for tools/dist_train.sh and tools/dist_test.sh. Usage: tools/torchrun.sh SCRIPT NUM_PROCS_PER_NODE [args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT in the environment of every node (defaults: one node).
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python)}
PYTHONPATH="$ROOT:$PYTHONPATH" exec "$PYTHON" -m torch.distributed.run --nproc_per_node="$2" \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    "$ROOT/tools/$1" "${@:3}" --launcher pytorch
