# Tiny-A2D: Qwen3-0.6B-diffusion-bd3lm-v0.1, trained purely with SFT on the reference's mixture
# (about 10 hours on 64 A100s there). Global batch 16 x 2 x 64 = 2048 rows of <= 512 tokens.
#   sbatch --nodes=8 config/slurm_multinode.sh config/tiny_a2d_bd3lm.py
# or on each node:
#   torchrun --nnodes=8 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=$HOST:29500 \
#       train.py config/tiny_a2d_bd3lm.py
model_name_or_path = ".models/a2d/Qwen3-0.6B"
objective = "bd3lm"
block_size = 32
task = "sft"
# a+b+c[k:v]: [name:all] picks smoltalk's config; [lang:python] keeps python rows (rows without a
# lang field: those whose text mentions python, as the reference filters)
dataset_args = ("allenai/tulu-3-sft-mixture+HuggingFaceTB/smoltalk[name:all]"
                "+OpenCoder-LLM/opc-sft-stage1[lang:python]+OpenCoder-LLM/opc-sft-stage2[lang:python]")
max_length = 512
num_train_epochs = 10.0
learning_rate = 1e-4
per_device_train_batch_size = 16
per_device_eval_batch_size = 16
gradient_accumulation_steps = 2
parallel = "fsdp"
save_total_limit = 3
wandb_log = True
output_dir = ".models/a2d/Qwen3-0.6B/tulu-3-sft-mixture+smoltalk+opc-sft-stage1&2/epochs-10-bs-2048-len-512-bls-32"
