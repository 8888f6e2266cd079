#!/bin/bash
# Multi-node training with torchrun under Slurm: one torchrun per node, c10d rendezvous on the
# first node. Usage:
#   mkdir -p logs && sbatch --nodes=8 config/slurm_multinode.sh config/tiny_a2d_bd3lm.py [--key=value ...]
# Adjust partition/account to your cluster. Preemption and the time limit: Slurm sends SIGTERM to
# this script 300 s early (--signal), the trap hands it to srun, srun to each torchrun, torchrun to
# train.py, which finishes its step, saves a resumable checkpoint, prints the resume command and
# exits; torchrun waits TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds for that. Re-submit with --resume=True.
#SBATCH --job-name=nanoa2d
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --signal=B:TERM@300
#SBATCH --output=logs/%x-%j.out
set -euo pipefail
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export OMP_NUM_THREADS=8
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=280  # a step and a save: raise it for models whose save takes longer
# NCCL_DEBUG=INFO helps when nodes cannot reach each other
srun --kill-on-bad-exit=1 torchrun \
    --nnodes="$SLURM_NNODES" --nproc_per_node="$GPUS_PER_NODE" \
    --rdzv_id="$SLURM_JOB_ID" --rdzv_backend=c10d --rdzv_endpoint="$HEAD:29500" \
    train.py "$@" &
pid=$!
trap 'kill -TERM $pid' TERM  # bash runs a trap only between commands, so srun runs in the background
rc=0; wait $pid || rc=$?
if kill -0 $pid 2>/dev/null; then rc=0; wait $pid || rc=$?; fi  # the trap ended the first wait: wait for the save
exit $rc
