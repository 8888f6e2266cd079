#!/bin/bash
# Multi-node training with torchrun under Slurm: one torchrun per node, c10d rendezvous on the
# first node. Usage:
#   mkdir -p logs && sbatch --nodes=8 config/slurm_multinode.sh config/tiny_a2d_bd3lm.py [--key=value ...]
# Adjust partition/account to your cluster. Checkpoints go to output_dir; after a preemption or
# time-out, re-submit with --resume=True to continue from the newest complete checkpoint.
#SBATCH --job-name=nanoa2d
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --output=logs/%x-%j.out
set -euo pipefail
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export OMP_NUM_THREADS=8
# NCCL_DEBUG=INFO helps when nodes cannot reach each other
srun --kill-on-bad-exit=1 torchrun \
    --nnodes="$SLURM_NNODES" --nproc_per_node="$GPUS_PER_NODE" \
    --rdzv_id="$SLURM_JOB_ID" --rdzv_backend=c10d --rdzv_endpoint="$HEAD:29500" \
    train.py "$@"
