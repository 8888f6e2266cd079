"""
Does MDLM SFT learn to end its answers? The reference pads an MDLM SFT batch with pad/EOS tokens
that are attended and scored (train.py's mdlm_pad_loss=True); with the padding hidden and unscored
(False) the model never sees a masked position after its turn's end. This trains
config/cpu_sft_addition_mdlm.py both ways (same steps, data and seed), then samples every held-out
problem on a canvas of max_new_tokens masks (one block, two tokens per step, EOS kept so the
whole canvas is seen) and reports exact match and where the first EOS lands.

    python bench/mdlm_eos.py                       # ~25 min on a 2-core CPU
    python bench/mdlm_eos.py --canvases=[32]
"""

import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

from sample import chat_ids, generate, load  # noqa: E402

# -----------------------------------------------------------------------------
model_dir = ".models/a2d/SmolLM2-135M"
out_dir = "out/mdlm_eos"
config = "config/cpu_sft_addition_mdlm.py"
canvases = [32, 64]  # max_new_tokens: well above the answers' ~5 tokens
tokens_per_step = 2  # steps = max_new_tokens / tokens_per_step
batch_size = 25
dtype = ""  # sampling dtype; "": bf16 where the hardware has it, else fp32 (sample.load's default)
# -----------------------------------------------------------------------------


def run(args):
    print("$ " + " ".join(args), flush=True)
    subprocess.run([sys.executable] + args, check=True, cwd=ROOT)


def first_eos(seq, eos):
    return next((i for i, t in enumerate(seq) if t in eos), None)


def main():
    os.chdir(ROOT)
    if not os.path.isdir(model_dir):
        run(["convert.py", "--model_name_or_path=smollm2", f"--output_dir={model_dir}"])
    rows = []
    for pad_loss in (True, False):
        out = os.path.join(out_dir, f"pad_loss_{pad_loss}")
        if not os.path.isdir(os.path.join(out, "checkpoint-final")):
            run(["train.py", config, f"--model_name_or_path={model_dir}", f"--mdlm_pad_loss={pad_loss}",
                 f"--output_dir={out}", "--log_steps=10", "--resume=True"])
        with open(os.path.join(out, "heldout.jsonl")) as f:
            held = [json.loads(line) for line in f]
        model, tok, d = load(os.path.join(out, "checkpoint-final"), dtype=dtype or None, device="cpu")
        prompts = [chat_ids(tok, h["messages"][:-1]) for h in held]
        eos = set(d["eos_token_id"])
        for n in canvases:
            d.update(method="mdlm", max_new_tokens=n, steps=n // tokens_per_step, block_size=n, stop_at_eos=False)
            seqs = []
            for a in range(0, len(prompts), batch_size):
                seqs += generate(model, prompts[a:a + batch_size], **d).sequences
            ends = [first_eos(s, eos) for s in seqs]
            answers = [tok.decode(s[:e], skip_special_tokens=True).strip() for s, e in zip(seqs, ends)]
            exact = sum(a == h["answer"] and e is not None for a, e, h in zip(answers, ends, held))
            # the sum itself, wherever the answer ends: the first number on the canvas
            first_num = [re.findall(r"\d+", tok.decode(s, skip_special_tokens=True))[:1] for s in seqs]
            right = sum(f == [h["answer"]] for f, h in zip(first_num, held))
            answer_len = statistics.median(len(tok(h["answer"], add_special_tokens=False).input_ids) for h in held)
            found = [e for e in ends if e is not None]
            # a finished answer: after the first EOS the canvas holds only end tokens (the padding)
            clean = sum(e is not None and all(t in eos or t == d["pad_token_id"] for t in s[e:])
                        for s, e in zip(seqs, ends))
            model_dtype = model.lm_head.weight.dtype
            rows.append((pad_loss, n, exact / len(held), right / len(held), clean / len(held),
                         statistics.median(found) if found else float("nan"), answer_len, answers[0]))
            print(f"mdlm_pad_loss={pad_loss} canvas {n}: {exact}/{len(held)} exact; e.g. "
                  f"{held[0]['prompt']!r} -> {tok.decode(seqs[0])[:120]!r}", flush=True)
        del model

    print(f"\nheld-out synthetic:addition ({len(held)} problems), {config}, MDLM sampling, one block, "
          f"{tokens_per_step} tokens per step, {str(model_dtype)[6:]}")
    print("| mdlm_pad_loss | max_new_tokens | exact match | sum right (first number) | only end tokens after the "
          "first EOS | median first EOS at | median answer tokens |")
    print("|---|---|---|---|---|---|---|")
    for pad_loss, n, acc, right, clean, at, answer_len, _ in rows:
        print(f"| {pad_loss} | {n} | {acc:.0%} | {right:.0%} | {clean:.0%} | {at:g} | {answer_len:g} |")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    from configurator import configure
    configure(globals())
    main()
