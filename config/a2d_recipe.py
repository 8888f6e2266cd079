# The conversion recipe: the reference's BD3LM plus the additions that keep what the AR parent knows
# (bench/recipe_study.py measures each one; docs/recipe.md). Recipe options only, so it applies to any SFT:
#   python train.py config/a2d_recipe.py --model_name_or_path=DIR --task=sft --dataset_args=DATA --max_steps=N
objective = "bd3lm"
block_size = 8
right_shift_logits = True  # logit i predicts token i+1, as the AR head already does
context_causal = True  # the clean context stays causal: at block 1 this is the AR model, K/V and all
block_curriculum = 0.5  # start at block 1 (AR) and double the block up to 8 over the first half of the run
ar_loss_weight = 1.0  # the clean stream keeps training as the AR model it is
