# Minutes on a CPU: BD3LM SFT of SmolLM2-135M on generated addition chats, 16-token blocks.
#   python train.py config/cpu_sft_addition_bd3lm.py
model_name_or_path = ".models/a2d/SmolLM2-135M"
objective = "bd3lm"
block_size = 16
task = "sft"
dataset_args = "synthetic:addition[train:2000,test:100]"
max_length = 64
max_steps = 80
learning_rate = 1e-4
warmup_steps = 5
per_device_train_batch_size = 8
per_device_eval_batch_size = 10
eval_steps = 40
eval_iters = 2
save_steps = 0
output_dir = "out/cpu_sft_addition_bd3lm"
