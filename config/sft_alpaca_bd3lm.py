# BD3LM SFT of Qwen3-0.6B (A2D-converted) on Alpaca, 8 GPUs. The reference's examples/a2d/bd3lm/sft.py.
#   torchrun --nproc_per_node=8 train.py config/sft_alpaca_bd3lm.py --parallel=fsdp --learning_rate=1e-4
model_name_or_path = ".models/a2d/Qwen3-0.6B"
objective = "bd3lm"
block_size = 32  # rows are EOS-padded to a multiple of it, as the reference does
task = "sft"
dataset_args = "tatsu-lab/alpaca"
mask_prompt_loss = True
max_length = 512
num_train_epochs = 10.0
learning_rate = 1e-4
per_device_train_batch_size = 16
per_device_eval_batch_size = 16
output_dir = ".models/a2d/Qwen3-0.6B/bd3lm/alpaca"
