# Minutes on a laptop CPU: BD3LM continual pretraining of SmolLM2-135M on tiny-shakespeare.
#   python train.py config/cpu_shakespeare_bd3lm.py
from data.prepare import find  # in $NANOA2D_DATA, ../shared/data or data/ (python data/prepare.py fetches it)
model_name_or_path = ".models/a2d/SmolLM2-135M"
objective = "bd3lm"
block_size = 16
task = "pt"
dataset_args = find("tinyshakespeare/input.txt")
insert_eos = False
max_length = 64
max_steps = 60
learning_rate = 5e-5
warmup_steps = 5
per_device_train_batch_size = 4
per_device_eval_batch_size = 8
eval_steps = 20
eval_iters = 4
save_steps = 0
output_dir = "out/cpu_shakespeare_bd3lm"
