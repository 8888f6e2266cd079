#!/usr/bin/env bash
# The reference's A2D benchmark suite (dLLM examples/a2d/{mdlm,bd3lm}/eval.sh), same tasks,
# shots and sampler settings, on eval.py. Needs the Hub (datasets) unless they are cached.
#
#   bash eval.sh DIR mdlm|bd3lm [--num_gpu N] [--coder] [any lm-eval flag, e.g. --limit 50]
#
# --coder runs only HumanEval + MBPP. mmlu_generative_dream and hellaswag_gen (from the
# reference's lm-eval fork) come from tasks/; the rest are stock lm-eval tasks.
set -euo pipefail
cd "$(dirname "$0")"

if [[ $# -lt 2 || ( "$2" != "mdlm" && "$2" != "bd3lm" ) ]]; then
  echo "usage: bash eval.sh DIR mdlm|bd3lm [--num_gpu N] [--coder] [lm-eval flags...]" >&2
  exit 1
fi
model_dir="$1"; method="$2"; shift 2
num_gpu=1; coder=0; extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --num_gpu) num_gpu="$2"; shift 2 ;;
    --coder) coder=1; shift ;;
    *) extra+=("$1"); shift ;;
  esac
done

export HF_ALLOW_CODE_EVAL=1                # humaneval / mbpp execute the generated code
export HF_DATASETS_TRUST_REMOTE_CODE=True  # some suite datasets ship loading scripts

py=python; [[ -x .venv/bin/python ]] && py=.venv/bin/python
if [[ "$num_gpu" -gt 1 ]]; then
  launch=("$(dirname "$py")/torchrun" --standalone --nproc_per_node "$num_gpu")
  [[ "$py" == python ]] && launch=(torchrun --standalone --nproc_per_node "$num_gpu")
else
  launch=("$py")
fi

# MDLM decodes the answer as one block (block = max_new_tokens); BD3LM uses blocks of 32
block() { if [[ "$method" == mdlm ]]; then echo "$1"; else echo 32; fi; }

failed=()
run() {  # task, shots, max_new_tokens, extra flags; a failing task is reported at the end, not fatal
  local task="$1" shots="$2" n="$3"; shift 3
  echo ">>> ${method}: ${task} (${shots}-shot, max_new_tokens=${n}, block_size=$(block "$n"))"
  "${launch[@]}" eval.py --model "a2d_${method}" --apply_chat_template --tasks "$task" --num_fewshot "$shots" \
    --model_args "pretrained=${model_dir},max_new_tokens=${n},steps=${n},block_size=$(block "$n"),cfg_scale=0.0" \
    "$@" ${extra[@]+"${extra[@]}"} || failed+=("$task")
}
finish() {
  if [[ ${#failed[@]} -gt 0 ]]; then echo ">>> failed: ${failed[*]}" >&2; exit 1; fi
}

if [[ "$coder" == 1 ]]; then
  run humaneval_instruct 0 256 --confirm_run_unsafe_code
  run mbpp_instruct 0 256 --confirm_run_unsafe_code
  finish; exit 0
fi

# gsm8k_cot: the reference's MDLM script gives 5 shots, its BD3LM script none
gsm8k_shots=5; [[ "$method" == bd3lm ]] && gsm8k_shots=0

run mmlu_generative_dream 0 3
run mmlu_pro 0 256
run hellaswag_gen 0 3
run gsm8k_cot "$gsm8k_shots" 256
run bbh 3 256
run minerva_math 0 256
run humaneval_instruct 0 256 --confirm_run_unsafe_code
run mbpp_instruct 0 256 --confirm_run_unsafe_code
finish
