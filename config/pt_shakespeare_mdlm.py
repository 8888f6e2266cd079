# Continual pretraining of Qwen3-0.6B (A2D-converted) on tiny-shakespeare with MDLM, 1 GPU.
# The reference's examples/a2d/mdlm/pt.py recipe (README command). First:
#   python convert.py --model_name_or_path=Qwen/Qwen3-0.6B --output_dir=.models/a2d/Qwen3-0.6B
# then: python train.py config/pt_shakespeare_mdlm.py
model_name_or_path = ".models/a2d/Qwen3-0.6B"
objective = "mdlm"
task = "pt"
dataset_args = "Trelis/tiny-shakespeare"
text_field = "Text"
insert_eos = False  # adjacent rows are one continuous play
max_length = 128
num_train_epochs = 10.0
learning_rate = 1e-4
per_device_train_batch_size = 16
per_device_eval_batch_size = 16
output_dir = ".models/a2d/Qwen3-0.6B/mdlm/tiny-shakespeare"
