# BD3LM continual pretraining of Qwen3-0.6B on OpenWebText, streamed (never downloaded whole), 8 GPUs.
# The reference's streaming example (README), with its eval turned off.
#   torchrun --nproc_per_node=8 train.py config/pt_openwebtext_bd3lm.py
model_name_or_path = ".models/a2d/Qwen3-0.6B"
objective = "bd3lm"
block_size = 32
task = "pt"
dataset_args = "dylanebert/openwebtext"
text_field = "text"
streaming = True
insert_eos = True  # documents are unrelated: separate them
max_length = 512
max_steps = 20000
learning_rate = 1e-4
per_device_train_batch_size = 16
per_device_eval_batch_size = 16
eval_steps = 0
eval_fraction = 0.0  # no held-out chunks: the reference runs with eval_strategy "no"
save_steps = 2000
save_total_limit = 3
output_dir = ".models/a2d/Qwen3-0.6B/bd3lm/openwebtext"
