"""
What converting buys: the A2D model against its AR parent fine-tuned on the same data, in
accuracy and in decoding speed.

One task with long, checkable answers: synthetic:sort (sort 10-16 numbers below 100; ~36 answer
tokens), scored by exact match on a fixed, seeded held-out set. Four models, the three SFTs with
the same rows, steps, batch, learning rate and seed:

  AR parent   SmolLM2-135M-Instruct as it is (causal attention)
  AR-SFT      the parent fine-tuned as AR (objective=ar): the baseline that matters
  BD3LM-SFT   the converted model fine-tuned as BD3LM (block_size 8)
  MDLM-SFT    the converted model fine-tuned as MDLM

AR models decode greedily with the KV cache (one token per forward). A2D models decode with
sample.py: one token per step, a threshold sweep, a factor sweep, and block sizes 4/8/16. Each
row runs at batch 1 and batch 16, in one dtype. Tokens/s counts answer tokens up to the first
EOS over the wall time of the whole decode, so the rows compare fairly. Forwards per call count
the network passes of one generate call (of one answer at batch 1, of 16 at batch 16); tokens
per forward are answer tokens per pass and per row. The speedup over AR-SFT is tokens per
forward times how much cheaper a forward is: the two columns say which one decides it.

    python bench/a2d_vs_ar.py                          # trains what out_dir lacks (~1 h on 2 cores), then decodes
    python bench/a2d_vs_ar.py --batches=[1] --n_test=32 # quicker
"""

import glob
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

from model import Model, default_dtype  # noqa: E402
from sample import chat_ids, generate, load  # noqa: E402

# -----------------------------------------------------------------------------
model_dir = ".models/a2d/SmolLM2-135M"  # the converted model; made by convert.py if missing
out_dir = "out/a2d_vs_ar"
max_steps = 160  # the same SFT budget for every objective
batch_size = 8
learning_rate = 2e-4
train_block_size = 8  # BD3LM's training block
n_test = 64  # held-out problems, kept out of the SFT data
n_decode = 32  # of them decoded (batch-1 AR decoding runs at ~40 tokens/s on 2 cores in bf16)
max_new_tokens = 48  # the longest answer is 47 tokens
batches = [1, 16]
thresholds = [0.9, 0.7, 0.5]
factors = [1.0]
block_sizes = [4, 8, 16]
dtype = "auto"  # one dtype for training and decoding: auto (bf16 where the CPU has it, else fp32)
threads = 0  # torch threads while decoding; 0: torch's default
plot = "out/a2d_vs_ar/a2d_vs_ar.png"  # exact match vs tokens/s (matplotlib); docs/a2d_vs_ar.png: the README's
# -----------------------------------------------------------------------------


def run(args):
    print("$ python " + shlex.join(args), flush=True)  # the command that reruns it
    before = signal.signal(signal.SIGINT, lambda *_: None)  # Ctrl-C reaches the child: train.py saves
    try:
        rc = subprocess.run([sys.executable] + args, cwd=ROOT).returncode
    finally:
        signal.signal(signal.SIGINT, before)
    if rc:
        sys.exit(rc if rc > 0 else 128 - rc)  # the child has said why


def sft_flags(objective, steps, batch, lr, block, n_heldout, data="synthetic:sort", seed=42):
    """train.py's flags for one SFT of the comparison: the same rows, steps, batch, lr and warm-up for all."""
    return [f"--objective={objective}", f"--dataset_args={data}[test:{n_heldout}]", f"--block_size={block}",
            f"--max_steps={steps}", f"--per_device_train_batch_size={batch}", f"--learning_rate={lr}",
            f"--warmup_steps={max(1, steps // 12)}", f"--seed={seed}"]


def sft_command(source, out, flags, train_dtype):
    """-> (train.py's arguments, its output_dir): out-<hash of the arguments and of the config files they
    name>, so that other settings train into another directory and a rerun never reuses a checkpoint that
    they did not make."""
    args = [f"--model_name_or_path={source}", "--task=sft", "--max_length=160", "--eval_steps=0", "--save_steps=0",
            "--log_steps=20", f"--dtype={train_dtype}", *flags]
    h = hashlib.sha1(" ".join(args).encode())
    for a in args:
        if not a.startswith("--"):
            with open(os.path.join(ROOT, a), "rb") as f:
                h.update(f.read())
    return args, f"{out}-{h.hexdigest()[:8]}"


def sft(source, out, flags, train_dtype):
    """Fine-tune source with train.py and flags (later ones win), resuming a stopped run -> checkpoint-final."""
    args, out = sft_command(source, out, flags, train_dtype)
    final = os.path.join(out, "checkpoint-final")
    if not os.path.isdir(final):
        run(["train.py", *args, f"--output_dir={out}", *(["--resume=True"] if os.path.isdir(out) else [])])
        for d in glob.glob(os.path.join(out, "checkpoint-[0-9]*")):  # a Ctrl-C's resumable save: done with
            shutil.rmtree(d)
    return final


def heldout(ckpt):
    """The held-out chats train.py wrote beside ckpt -> rows of {messages (the prompt turns), question, answer}."""
    rows = []
    with open(os.path.join(os.path.dirname(ckpt), "heldout.jsonl")) as f:
        for line in f:
            m = json.loads(line)["messages"]
            rows.append({"messages": m[:-1], "question": m[-2]["content"], "answer": m[-1]["content"]})
    return rows


@torch.no_grad()
def ar_generate(model, prompts, max_new, eos):
    """Greedy AR decoding with the KV cache: prompts left-padded into one batch, one prefill, then
    one token per forward until every row has an EOS -> (answers cut before their EOS, NFE)."""
    dev = model.lm_head.weight.device
    B, P = len(prompts), max(len(p) for p in prompts)
    x = torch.full((B, P), eos[0], dtype=torch.long, device=dev)
    keep = torch.zeros((B, P + max_new), dtype=torch.bool, device=dev)  # the keys that are real tokens
    for j, p in enumerate(prompts):
        x[j, P - len(p):] = torch.tensor(p, dtype=torch.long)
        keep[j, P - len(p):P] = True
    n = keep.sum(1, keepdim=True)  # the next token's position: padding takes none
    cache = model.new_cache(B, P + max_new)
    logits = model(x, attention_mask=keep[:, :P], position_ids=(keep[:, :P].cumsum(1) - 1).clamp(min=0),
                   causal=True, cache=cache, append=True, logits_slice=slice(-1, None))[:, 0]  # (B, V)
    eos_t = torch.tensor(eos, device=dev)
    out, done, nfe = [], torch.zeros(B, dtype=torch.bool, device=dev), 1
    for i in range(max_new):
        nxt = logits.argmax(-1)  # (B,)
        out.append(nxt)
        done |= torch.isin(nxt, eos_t)
        if done.all() or i == max_new - 1:
            break
        keep[:, P + i] = True
        logits = model(nxt[:, None], attention_mask=keep[:, :P + i + 1], position_ids=n + i, causal=True,
                       cache=cache, append=True)[:, 0]
        nfe += 1
    seqs = []
    for row in torch.stack(out, 1).tolist():
        cut = next((k for k, t in enumerate(row) if t in eos), len(row))
        seqs.append(row[:cut])
    return seqs, nfe


def ar_models(source, ar_ckpt, dtype, device):
    """(AR parent, AR-SFT, tokenizer, the converted checkpoint's sampler ids): the parent is the
    converted weights attending causally; AR-SFT is a plain (causal) checkpoint."""
    parent, tok, d = load(source, dtype=dtype, device=device)
    parent.causal = True
    return parent, Model.from_pretrained(ar_ckpt, dtype=dtype, device=device), tok, d


def decode(name, kind, rows, prompts, tok, fn, batch):
    """Decode every prompt in batches with fn(prompts) -> (answers, nfe); score and time it."""
    t0, seqs, nfe = time.perf_counter(), [], 0
    for a in range(0, len(prompts), batch):
        s, n = fn(prompts[a:a + batch])
        seqs, nfe = seqs + s, nfe + n
    secs = time.perf_counter() - t0
    answers = [tok.decode(s, skip_special_tokens=True).strip() for s in seqs]
    exact = sum(a == r["answer"] for a, r in zip(answers, rows)) / len(rows)
    # partial credit, so that a short run shows how far it got: the answer's words at their right place
    in_place = sum(sum(map(str.__eq__, a.split(), r["answer"].split())) / max(len(a.split()), len(r["answer"].split()))
                   for a, r in zip(answers, rows)) / len(rows)
    n_tok = sum(len(s) for s in seqs)  # answer tokens, up to (not counting) the EOS
    calls = len(range(0, len(prompts), batch))
    return dict(model=name, decoding=kind, batch=batch, exact=exact, in_place=in_place, nfe=nfe / calls,
                tok_per_fwd=n_tok / len(prompts) / (nfe / calls), ms_per_fwd=1e3 * secs / nfe, tps=n_tok / secs,
                example=answers[0])


def a2d_fn(model, d, max_new, **kw):
    """fn(prompts) for decode(): sample.generate with the checkpoint's ids d and the settings kw."""
    s = dict(d, max_new_tokens=max_new, steps=max_new, stop_at_eos=True, **kw)  # steps: one token per step

    def fn(prompts):
        o = generate(model, prompts, **s)
        return o.sequences, o.nfe
    return fn


def a2d_rows(objective):
    """(label, sampler settings) for every A2D decoding in the sweep."""
    if objective == "mdlm":  # the whole canvas every step: the exact cache, then the dual one
        return [("one token per step", dict(block_size=train_block_size)),
                ("threshold 0.9, dual cache", dict(block_size=train_block_size, threshold=0.9, cache="dual"))]
    out = [(f"block {b}, one token per step", dict(block_size=b)) for b in block_sizes]
    out += [(f"block {train_block_size}, threshold {t}", dict(block_size=train_block_size, threshold=t))
            for t in thresholds]
    out += [(f"block {train_block_size}, factor {f}", dict(block_size=train_block_size, factor=f)) for f in factors]
    out += [(f"block {b}, threshold 0.9", dict(block_size=b, threshold=0.9)) for b in block_sizes
            if b != train_block_size]
    return out


def table(results):
    ar = {r["batch"]: r["tps"] for r in results if r["model"] == "AR-SFT"}
    lines = ["| model | decoding | batch | exact match | words in place | forwards / call | tokens / forward | "
             "ms / forward | tokens/s | vs AR-SFT |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        vs = f"{r['tps'] / ar[r['batch']]:.2f}x" if r["batch"] in ar else "–"
        lines.append(f"| {r['model']} | {r['decoding']} | {r['batch']} | {r['exact']:.1%} | "
                     f"{r['in_place']:.1%} | {r['nfe']:.1f} | "
                     f"{r['tok_per_fwd']:.2f} | {r['ms_per_fwd']:.1f} | {r['tps']:.1f} | {vs} |")
    return "\n".join(lines)


def draw(results, path):
    """Accuracy against tokens/s at batch 1: AR points, the BD3LM threshold and factor sweeps as curves."""
    try:
        import matplotlib
    except ImportError:  # not in requirements.txt: only this picture needs it
        return print(f"notice: no plot ({path}): pip install matplotlib, then rerun (it reuses the trained models)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    b1 = [r for r in results if r["batch"] == 1]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r, style in ((r, dict(marker="*", s=220, c="black")) for r in b1 if r["model"] == "AR-SFT"):
        ax.scatter(r["tps"], r["exact"], label="AR-SFT (greedy, KV cache)", zorder=3, **style)
    for r in (r for r in b1 if r["model"] == "AR parent"):
        ax.scatter(r["tps"], r["exact"], marker="x", c="gray", label="AR parent", zorder=3)
    for key, color in (("threshold", "tab:blue"), ("factor", "tab:orange")):
        pts = sorted((r["tps"], r["exact"]) for r in b1 if r["model"] == "BD3LM-SFT"
                     and f"block {train_block_size}, {key}" in r["decoding"])
        if pts:
            ax.plot(*zip(*pts), "-o", c=color, label=f"BD3LM-SFT, block {train_block_size}, {key} sweep")
    one = [r for r in b1 if r["model"] == "BD3LM-SFT" and "one token" in r["decoding"]]
    ax.scatter([r["tps"] for r in one], [r["exact"] for r in one], marker="s", c="tab:green",
               label="BD3LM-SFT, one token per step (block 4/8/16)")
    md = [r for r in b1 if r["model"] == "MDLM-SFT"]
    ax.scatter([r["tps"] for r in md], [r["exact"] for r in md], marker="^", c="tab:red", label="MDLM-SFT")
    ax.set_xlabel("answer tokens / s, batch 1")
    ax.set_ylabel("exact match")
    ax.set_title("synthetic:sort, SmolLM2-135M, the same SFT budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main():
    if not os.path.isdir(model_dir):
        run(["convert.py", "--model_name_or_path=smollm2", f"--output_dir={model_dir}"])
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    one = default_dtype(dev)[0] if dtype == "auto" else getattr(torch, dtype)
    name = str(one).removeprefix("torch.")
    ckpt = {o: sft(model_dir, os.path.join(out_dir, o), sft_flags(o, max_steps, batch_size, learning_rate,
                                                                  train_block_size, n_test), name)
            for o in ("ar", "bd3lm", "mdlm")}
    if threads:
        torch.set_num_threads(threads)
    rows = heldout(ckpt["ar"])[:n_decode]
    results = []

    parent, ar_sft, tok, d = ar_models(model_dir, ckpt["ar"], one, dev)
    prompts = [chat_ids(tok, r["messages"]) for r in rows]
    eos = d["eos_token_id"]
    for label, m in (("AR parent", parent), ("AR-SFT", ar_sft)):
        for b in batches:
            results.append(decode(label, "greedy, KV cache", rows, prompts, tok,
                                  lambda p: ar_generate(m, p, max_new_tokens + 16, eos), b))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    del parent, ar_sft
    for objective, label in (("bd3lm", "BD3LM-SFT"), ("mdlm", "MDLM-SFT")):
        model, _, d = load(ckpt[objective], dtype=one, device=dev)
        for kind, kw in a2d_rows(objective):
            for b in batches:
                results.append(decode(label, kind, rows, prompts, tok, a2d_fn(model, d, max_new_tokens, **kw), b))
                print(table(results[-1:]).splitlines()[-1], flush=True)
        del model

    print(f"\nsynthetic:sort, {len(rows)} held-out problems; SFT {max_steps} steps x {batch_size} rows, lr "
          f"{learning_rate}; {name}, {torch.get_num_threads()} threads, {dev}\n")
    print(table(results))
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    if plot:
        draw(results, os.path.join(ROOT, plot))


if __name__ == "__main__":
    from configurator import configure
    configure(globals())
    main()
