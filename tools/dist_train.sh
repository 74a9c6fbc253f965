#!/usr/bin/env bash
# Distributed training on one node with torchrun:
#   bash tools/dist_train.sh CONFIG GPUS [tools/train.py options]
# NNODES, NODE_RANK, MASTER_ADDR and PORT select a multi-node run; PYTHON
# the interpreter (default: the repository's .venv/bin/python if it
# exists, else python on PATH).
source "$(dirname "$0")/find_python.sh"
check_usage 2 'bash tools/dist_train.sh CONFIG GPUS [tools/train.py options]' "$@"
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
