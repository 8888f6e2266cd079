# MDLM SFT of Qwen3-0.6B (A2D-converted) on Alpaca, 8 GPUs. The reference's examples/a2d/mdlm/sft.py.
#   torchrun --nproc_per_node=8 train.py config/sft_alpaca_mdlm.py
model_name_or_path = ".models/a2d/Qwen3-0.6B"
objective = "mdlm"
task = "sft"
dataset_args = "tatsu-lab/alpaca"  # instruction/input/output rows become a user + assistant turn
mask_prompt_loss = True
max_length = 512
num_train_epochs = 10.0
learning_rate = 1e-4
per_device_train_batch_size = 16
per_device_eval_batch_size = 16
output_dir = ".models/a2d/Qwen3-0.6B/mdlm/alpaca"
