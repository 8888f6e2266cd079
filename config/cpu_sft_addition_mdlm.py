# Minutes on a CPU: MDLM SFT of SmolLM2-135M on generated multi-digit addition chats
# ("What is 4821 + 937?" -> "5758"). The held-out questions land in output_dir/heldout.jsonl.
#   python train.py config/cpu_sft_addition_mdlm.py
model_name_or_path = ".models/a2d/SmolLM2-135M"
objective = "mdlm"
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
output_dir = "out/cpu_sft_addition_mdlm"
