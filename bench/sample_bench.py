"""
Sampling speed of sample.py on a converted SmolLM2-135M (CPU), printed as a table.

    python bench/sample_bench.py --model_name_or_path=.models/a2d/SmolLM2-135M

Prompt: a few-shot GSM8K prompt of about `prompt_tokens` tokens (train shots, then a test
question), raw text. 256 new tokens in blocks of 32.

BD3LM: the exact incremental KV cache against the reference's method (the whole prefix
re-run at every block, a fresh copy of its cache at every step), steps=64 and 256. Both
must give the same tokens. Then a batch of `batch` such prompts (the same shots, other
test questions) at steps=64. After the rows, where the batch-1 time goes: the fixed costs
(prefix passes, the prompt's pass) against the per-step cost, which both paths pay, and the
GEMM rate at a step's 32 rows against a prefix pass's ~1000. The ratio is capped by how
cheap a step is next to the recompute path's fixed costs, and on a CPU a 32-row fp32 GEMM
runs well below the rate of a long one; more rows per step (a batch) lift it.

MDLM: cache none (exact: the whole canvas every step) | prefix | dual, times threshold
off / 0.9, at steps=256 (one token per step without threshold). The exact path costs a
full forward over ~1250 tokens per token, so every MDLM row runs only the first
`mdlm_blocks` block(s) of the 256-token canvas and is stopped there; tokens/s is tokens
finished / time, agreement is with the exact path's tokens over those blocks.

EOS is switched off (set to the mask id, which is never proposed), so every run produces
all its tokens: this measures throughput. Numbers on a shared machine are noisy: other
jobs take CPU time, and one thread (the default) is far steadier than two there.

On a GPU, a random model of Qwen3-0.6B's shape (the tokenizer still comes from
model_name_or_path; in bf16, exact and recompute may differ in a few near-tied tokens):

    python bench/sample_bench.py --device=cuda --shape=qwen3-0.6b
"""

import json
import math
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import sample  # noqa: E402
from bench.reference_sampler import bd3lm_recompute  # noqa: E402
from configurator import configure  # noqa: E402
from data.prepare import find  # noqa: E402

# -----------------------------------------------------------------------------
model_name_or_path = os.path.join(ROOT, ".models/a2d/SmolLM2-135M")
data_dir = ""  # GSM8K's folder; default: where data/prepare.py's find() looks
prompt_tokens = 1000
max_new_tokens = 256
block_size = 32
bd3lm_steps = [64, 256]
batch = 4  # the batched BD3LM row (steps = bd3lm_steps[0]); 0 skips it
mdlm_steps = 256
mdlm_blocks = 1  # blocks of the MDLM canvas each MDLM row runs before it is stopped
thresholds = [None, 0.9]
right_shift_logits = True  # the converted, not yet trained SmolLM2 is an AR model: logit i predicts token i+1
device = "cpu"
dtype = ""  # default float32 on CPU (the table's tokens are compared in fp32), bfloat16 on CUDA
shape = ""  # qwen3-0.6b: time a random A2D model of that shape instead of the checkpoint's weights
threads = 1
# -----------------------------------------------------------------------------
configure(globals())
torch.set_num_threads(threads)


def fewshot_prompts(tok, n=1):
    """n prompts: the same train shots (up to ~prompt_tokens), then test questions 0..n-1."""
    gsm8k = data_dir or os.path.dirname(find("gsm8k/train.jsonl"))
    shots = [json.loads(line) for line in open(os.path.join(gsm8k, "train.jsonl"))]
    with open(os.path.join(gsm8k, "test.jsonl")) as f:
        questions = [json.loads(line)["question"] for line, _ in zip(f, range(n))]
    text = ""
    for s in shots:
        shot = f"Question: {s['question']}\nAnswer: {s['answer']}\n\n"
        if len(tok(text + shot, add_special_tokens=False).input_ids) > prompt_tokens - 60:
            break
        text += shot
    ids = [tok(text + f"Question: {q}\nAnswer:", add_special_tokens=False).input_ids for q in questions]
    return ids, text.count("Question:")


class Stop(Exception):
    pass


def run_blocks(model, ids, n_blocks, **kw):
    """generate, stopped once the first n_blocks blocks are final -> (tokens, nfe, seconds)."""
    seen = {}
    n = n_blocks * block_size

    def on_step(step, region):
        seen["nfe"], seen["tokens"] = step, region[0, :n].tolist()
        if (region[0, :n] != kw["mask_token_id"]).all():
            raise Stop
    t0 = time.perf_counter()
    try:
        sample.generate(model, [ids], on_step=on_step, **kw)
    except Stop:
        pass
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return seen["tokens"], seen["nfe"], time.perf_counter() - t0


def timed(sampler, model, prompts, **kw):
    """sampler (sample.generate or bd3lm_recompute), and the seconds each denoising step took
    -> (output, [seconds per step])."""
    ts = [time.perf_counter()]
    out = sampler(model, prompts, on_step=lambda step, region: ts.append(time.perf_counter()), **kw)
    return out, [b - a for a, b in zip(ts, ts[1:])]


def time_split(model, prompt_len, steps, ref_dt, out_dt):
    """Where the single-prompt BD3LM time goes. A block's first step carries the fixed costs
    (recompute: the prefix pass; exact: the prompt, or the last block's K/V, riding along);
    every other step is a plain 32-token denoising step, the same work on both paths (the
    recompute path also copies its cache and takes logits for the whole block). With fixed
    costs F and a step of s seconds, n steps take F + n*s, so the ratio is capped by how small
    s is next to the recompute's F."""
    spb = steps // math.ceil(max_new_tokens / block_size)
    if spb < 2:  # no plain steps to measure: every step is a block's first
        return

    def parts(dt):
        first = [d for i, d in enumerate(dt) if i % spb == 0]
        rest = [d for i, d in enumerate(dt) if i % spb]
        s = sum(rest) / len(rest)
        return sum(first) - len(first) * s, s

    fr, sr = parts(ref_dt)
    fe, se = parts(out_dt)
    n = len(out_dt)
    cap = (fr + n * (sr - se) - 3 * fe) / (2 * n)  # the step time at which the ratio reaches 3x
    print(f"\nwhere the time goes (batch 1, steps={steps}, {n} steps, a block's first step carries the fixed costs):")
    print(f"  recompute: fixed {fr:5.1f} s (prefix passes), then {sr * 1e3:5.1f} ms per step")
    print(f"  exact:     fixed {fe:5.1f} s (the prompt's pass; finished blocks riding along), "
          f"then {se * 1e3:5.1f} ms per step")
    print(f"  ratio = ({fr:.1f} s + {n} x {sr * 1e3:.0f} ms) / ({fe:.1f} s + {n} x {se * 1e3:.0f} ms) "
          f"= {(fr + n * sr) / (fe + n * se):.2f}; 3x needs a step of <= {cap * 1e3:.0f} ms")
    # the layers' GEMMs of one forward, run as the forward runs them (every weight once, in order)
    ws = [p for p in model.model.layers.parameters() if p.dim() == 2]
    rate = {}
    for m in (block_size, block_size, prompt_len):  # a step's rows (twice: the first warms up); a prefix pass's
        xs = {k: torch.randn(m, k, dtype=ws[0].dtype, device=ws[0].device) for k in {w.shape[1] for w in ws}}
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for w in ws:
            torch.nn.functional.linear(xs[w.shape[1]], w)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        rate[m] = 2 * m * sum(w.numel() for w in ws) / (time.perf_counter() - t0) / 1e9
    gflop = 2 * block_size * sum(w.numel() for w in ws) / 1e9
    short, long = gflop / rate[block_size], gflop / rate[prompt_len]
    print(f"  the layers' GEMMs: {rate[block_size]:.0f} GFLOP/s at a step's {block_size} rows, {rate[prompt_len]:.0f} "
          f"at a prefix pass's {prompt_len}: a step's {gflop:.1f} GFLOP take {short * 1e3:.0f} ms, and at the "
          f"long rate {long * 1e3:.0f} ms, a step of {(se - short + long) * 1e3:.0f} ms")


def main():
    model, tok, d = sample.load(model_name_or_path, dtype=dtype or ("float32" if device == "cpu" else None),
                                device=device)
    name = os.path.basename(model_name_or_path.rstrip("/"))
    if shape == "qwen3-0.6b":  # Config's defaults are Qwen3-0.6B's shape
        from model import Config, Model
        dt = model.lm_head.weight.dtype  # the dtype picked above
        model = Model(Config(model_type="a2d-qwen3", mask_token_id=d["mask_token_id"])).init_weights(seed=0)
        model = model.to(device=device, dtype=dt)
        name = "random Qwen3-0.6B-shaped A2D model"
    elif shape:
        raise SystemExit(f"error: unknown --shape={shape!r}; choose qwen3-0.6b or leave it empty")
    (ids,), shots = fewshot_prompts(tok)
    kw = dict(d, block_size=block_size, right_shift_logits=right_shift_logits, eos_token_id=[d["mask_token_id"]])
    del kw["method"]
    sample.generate(model, [ids[:64]], method="bd3lm", max_new_tokens=32, steps=4, **kw)  # warm-up
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    where = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU {cpu}, {threads} thread(s)"
    print(f"{name}, {str(model.lm_head.weight.dtype).removeprefix('torch.')}, {where}, torch {torch.__version__}")
    print(f"prompt: {len(ids)} tokens ({shots}-shot GSM8K), {max_new_tokens} new tokens, block {block_size}, "
          f"right_shift_logits={right_shift_logits}\n")
    head = f"{'method':7} {'cache':10} {'thresh':>6} {'steps':>5} {'tokens':>6} {'NFE':>5} {'seconds':>8} " \
           f"{'tok/s':>7} {'speedup':>8}  agreement"
    print(head + "\n" + "-" * len(head))

    def row(m, cache, thr, steps, n, nfe, secs, base, agree):
        print(f"{m:7} {cache:10} {'-' if thr is None else thr:>6} {steps:>5} {n:>6} {nfe:>5} {secs:>8.1f} "
              f"{n / secs:>7.2f} {base / secs if base else 1.0:>7.1f}x  {agree}", flush=True)

    def bd3lm_pair(prompts, steps, note=""):
        """The reference method, then the exact cache: two rows -> the seconds of each one's steps."""
        ref, ref_dt = timed(bd3lm_recompute, model, prompts, steps=steps, max_new_tokens=max_new_tokens, **kw)
        n = sum(len(s) for s in ref.sequences)
        row("bd3lm", "recompute", None, steps, n, ref.nfe, ref.seconds, None, f"(reference method{note})")
        out, out_dt = timed(sample.generate, model, prompts, method="bd3lm", cache="exact", steps=steps,
                            max_new_tokens=max_new_tokens, **kw)
        diff = sum(a != b for s, t in zip(out.sequences, ref.sequences) for a, b in zip(s, t))
        row("bd3lm", "exact", None, steps, n, out.nfe, out.seconds, ref.seconds,
            ("identical tokens" if diff == 0 else f"{diff}/{n} tokens differ") + note)
        return ref_dt, out_dt

    dts = {steps: bd3lm_pair([ids], steps) for steps in bd3lm_steps}
    time_split(model, len(ids), bd3lm_steps[0], *dts[bd3lm_steps[0]])

    if batch > 1:
        prompts, _ = fewshot_prompts(tok, batch)
        bd3lm_pair(prompts, bd3lm_steps[0], f", batch {batch}")
        print(f"batch {batch} prompts: {[len(p) for p in prompts]} tokens")

    mkw = dict(kw, method="mdlm", steps=mdlm_steps, max_new_tokens=max_new_tokens)
    base, base_tokens = None, None
    for cache in ("none", "prefix", "dual"):
        for thr in thresholds:
            toks, nfe, secs = run_blocks(model, ids, mdlm_blocks, cache=cache, threshold=thr, **mkw)
            if base is None:
                base, base_tokens = secs, toks
            agree = sum(a == b for a, b in zip(toks, base_tokens)) / len(toks)
            row("mdlm", cache, thr, mdlm_steps, len(toks), nfe, secs, base, f"{agree:.0%} of exact's tokens")
    print(f"\nmdlm rows: the first {mdlm_blocks} block(s) of a {max_new_tokens}-token canvas, then stopped.")


if __name__ == "__main__":
    main()
