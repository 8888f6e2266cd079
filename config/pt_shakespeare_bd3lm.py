# Continual pretraining of Qwen3-0.6B (A2D-converted) on tiny-shakespeare with BD3LM, 1 GPU.
# The reference's examples/a2d/bd3lm/pt.py recipe (README command).
#   python train.py config/pt_shakespeare_bd3lm.py
model_name_or_path = ".models/a2d/Qwen3-0.6B"
objective = "bd3lm"
block_size = 32
task = "pt"
dataset_args = "Trelis/tiny-shakespeare"
text_field = "Text"
insert_eos = False
max_length = 128
num_train_epochs = 10.0
learning_rate = 1e-4
per_device_train_batch_size = 16
per_device_eval_batch_size = 16
output_dir = ".models/a2d/Qwen3-0.6B/bd3lm/tiny-shakespeare"
