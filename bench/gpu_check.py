"""
GPU check (run by bench/gpu_check.sh): the CUDA-only paths and the numbers a GPU gives.

1. flex_attention BD3LM BlockMask vs the dense SDPA bool mask: the same loss in bf16.
2. Train-step throughput and MFU of MDLM and BD3LM on a random Qwen3-0.6B-shaped model,
   bf16 autocast, length 1024, with the largest batch that fits (fp32 master weights, AdamW).
3. Sampling at batch 1 and 16, the issue's table: BD3LM exact cache vs the reference's
   recompute at steps 64 and 256; MDLM cache none | prefix | dual x threshold off | 0.9
   (random weights: speed only, EOS switched off), with peak memory.
4. BD3LM exact vs recompute tokens in float32 on CUDA: they must be identical.
5. One decoding step at batch 1 against a prompt_len cache, bf16: AR (one token) against a
   BD3LM block step (8 and 32 tokens), eager and under torch.compile. A block step pays off when
   it commits more tokens than its cost in AR steps (the break-even column).

    python bench/gpu_check.py              # on a GPU, ~5 min
    python bench/gpu_check.py --tiny=True  # a CPU smoke run of the same code on a tiny model
"""

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

from model import (Config, Model, bd3lm_attention_mask, bd3lm_block_mask, bd3lm_loss,  # noqa: E402
                   forward_mask, mdlm_loss, sample_t)
from bench.reference_sampler import bd3lm_recompute  # noqa: E402
from sample import generate  # noqa: E402

# -----------------------------------------------------------------------------
tiny = False  # a tiny model on CPU: checks the script runs, not the numbers
seq_len = 1024
block_size = 32
batches = [64, 48, 32, 24, 16, 12, 8, 4, 2, 1]  # tried largest first until one fits
train_iters = 6
prompt_len = 1000
new_tokens = 256
peak_tflops = 989.0  # dense bf16 of an H100/H200 SXM; MFU = achieved / this
# -----------------------------------------------------------------------------


def qwen3_06b():
    if tiny:
        return Config(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, mask_token_id=1023)
    return Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                  mask_token_id=151669)


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def peak_gib():
    return torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")


def reset_peak():
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def flops_per_token(cfg, T):
    # 6N for the weights (forward + backward) + 12 * layers * heads * head_dim * T for attention scores
    # the matmul weights: the body and the LM head; an untied input embedding is a lookup, not a matmul
    n = sum(p.numel() for p in model.parameters()) - (0 if cfg.tie_word_embeddings else
                                                        cfg.vocab_size * cfg.hidden_size)
    return 6 * n + 12 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * T


def loss_fn(objective, x, mask):
    t = sample_t(x.shape[0], device=dev)
    xt, masked = forward_mask(x, x, t, cfg.mask_token_id)
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        if objective == "mdlm":
            return mdlm_loss(model, x, x, xt, masked, t)
        return bd3lm_loss(model, x, x, xt, masked, t, block_size, full_mask=mask)


def check_flex():
    print("\n## 1. BD3LM mask: flex_attention BlockMask vs dense SDPA bool mask (bf16)")
    if dev.type != "cuda":
        print("skipped: flex_attention BlockMask is the CUDA path")
        return
    x = torch.randint(0, cfg.vocab_size - 1, (2, seq_len), device=dev)
    torch.manual_seed(0)
    t = sample_t(2, device=dev)
    xt, masked = forward_mask(x, x, t, cfg.mask_token_id)
    dense = bd3lm_attention_mask(seq_len, block_size, dev)[None, None]
    flex = bd3lm_block_mask(seq_len, block_size, dev)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        a = bd3lm_loss(model, x, x, xt, masked, t, block_size, full_mask=dense).item()
        b = bd3lm_loss(model, x, x, xt, masked, t, block_size, full_mask=flex).item()
    rel = abs(a - b) / abs(a)
    print(f"dense {a:.5f} | flex {b:.5f} | rel diff {rel:.2e} | {'OK' if rel < 2e-2 else 'MISMATCH'}")


def train_throughput():
    print(f"\n## 2. train step, random Qwen3-0.6B shape, length {seq_len}, bf16 autocast, AdamW")
    print("| objective | batch | tokens/s | MFU | peak GiB |")
    print("|---|---|---|---|---|")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=dev.type == "cuda")
    for objective in ("mdlm", "bd3lm"):
        mask = bd3lm_block_mask(seq_len, block_size, dev) if (objective == "bd3lm" and dev.type == "cuda") \
            else bd3lm_attention_mask(seq_len, block_size, dev)[None, None] if objective == "bd3lm" else None
        for B in batches:
            reset_peak()
            try:
                x = torch.randint(0, cfg.vocab_size - 1, (B, seq_len), device=dev)
                for i in range(train_iters):
                    if i == 2:  # the first steps compile kernels and warm the allocator
                        sync()
                        t0 = time.perf_counter()
                    loss_fn(objective, x, mask).backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                sync()
            except torch.OutOfMemoryError:
                opt.zero_grad(set_to_none=True)
                continue
            dt = (time.perf_counter() - t0) / (train_iters - 2)
            tps = B * seq_len / dt
            # BD3LM runs the network over 2L tokens (x_t and x_0) for L tokens of data
            T = 2 * seq_len if objective == "bd3lm" else seq_len
            mfu = tps * (T / seq_len) * flops_per_token(cfg, T) / (peak_tflops * 1e12)
            print(f"| {objective} | {B} | {tps:,.0f} | {mfu:.1%} | {peak_gib():.1f} |", flush=True)
            break
    del opt


def sampling():
    print(f"\n## 3. sampling, random weights, prompt {prompt_len}, {new_tokens} new tokens, block {block_size}")
    print("random weights never reach threshold 0.9, so those rows show the per-call cost, not the NFE saving")
    print("| method | cache | batch | steps | NFE | seconds | tokens/s | speedup | same tokens as | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    model.eval()
    g = torch.Generator().manual_seed(0)
    never = cfg.mask_token_id  # EOS set to the mask id, never proposed: every run makes all its tokens
    kw = dict(mask_token_id=cfg.mask_token_id, eos_token_id=never, pad_token_id=never,
              max_new_tokens=new_tokens, block_size=block_size)

    def run(method, cache, thr, B, steps, base=None, prompts=None):
        reset_peak()
        if cache == "recompute":  # the reference's method, bench/reference_sampler.py
            out = bd3lm_recompute(model, prompts, threshold=thr, steps=steps, **kw)
        else:
            out = generate(model, prompts, method=method, cache=cache, threshold=thr, steps=steps, **kw)
        n = sum(len(s) for s in out.sequences)
        same = "-" if base is None else f"{sum(a == b for x, y in zip(out.sequences, base.sequences) for a, b in zip(x, y)) / n:.1%}"
        speed = "1.0x" if base is None else f"{base.seconds / out.seconds:.1f}x"
        print(f"| {method} | {cache}{'' if thr is None else f' + threshold {thr}'} | {B} | {steps} | {out.nfe} "
              f"| {out.seconds:.2f} | {n / out.seconds:,.1f} | {speed} | {same} | {peak_gib():.1f} |", flush=True)
        return out

    for B in (1, 16):
        prompts = torch.randint(0, cfg.vocab_size - 1, (B, prompt_len), generator=g).tolist()
        generate(model, [p[:64] for p in prompts], method="bd3lm", **dict(kw, max_new_tokens=block_size), steps=4)
        for steps in (64, new_tokens):
            ref = run("bd3lm", "recompute", None, B, steps, prompts=prompts)
            run("bd3lm", "exact", None, B, steps, base=ref, prompts=prompts)
        ref = run("mdlm", "none", None, B, new_tokens, prompts=prompts)
        for cache in ("prefix", "dual"):
            for thr in (None, 0.9):
                run("mdlm", cache, thr, B, new_tokens, base=ref, prompts=prompts)

    # exactness on CUDA: in fp32 (TF32 off) the exact cache must give the recompute path's tokens
    print("\n## 4. BD3LM exact cache vs recompute in float32 on this device (TF32 off), batch 4, steps 64")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model.float()
    prompts = [torch.randint(0, cfg.vocab_size - 1, (n,), generator=g).tolist() for n in (prompt_len, 301, 77, 5)]
    a = bd3lm_recompute(model, prompts, steps=64, **kw)
    b = generate(model, prompts, method="bd3lm", cache="exact", steps=64, **kw)
    n = sum(len(s) for s in a.sequences)
    diff = sum(x != y for p, q in zip(a.sequences, b.sequences) for x, y in zip(p, q))
    print(f"{diff}/{n} tokens differ | {'IDENTICAL' if diff == 0 else 'DIFFERENT'}")


@torch.no_grad()
def step_cost(iters=30):
    print(f"\n## 5. one decoding step, batch 1, after a {prompt_len}-token prompt: AR vs a BD3LM block step")
    print("| step | eager ms | compiled ms | break-even tokens / forward (eager, compiled) |")
    print("|---|---|---|---|")
    m = model.to(torch.bfloat16 if dev.type == "cuda" else torch.float32).eval()
    cache = m.new_cache(1, prompt_len + 32)
    m(torch.randint(0, cfg.vocab_size - 1, (1, prompt_len), device=dev), causal=True, cache=cache, append=True)

    def step(x, causal):  # the block (or token) against the cache, written at the same place every time
        return m(x, causal=causal, cache=cache, cache_pos=prompt_len)

    def ms(fn, x, causal):
        for _ in range(3):  # warm-up (and compilation)
            fn(x, causal)
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn(x, causal)
        sync()
        return 1e3 * (time.perf_counter() - t0) / iters

    compiled = torch.compile(step, dynamic=False)
    ar = None
    for n in (1, 8, 32):
        x = torch.randint(0, cfg.vocab_size - 1, (1, n), device=dev)
        e = ms(step, x, n == 1)
        try:
            c = ms(compiled, x, n == 1)
        except Exception as err:  # a compiler failure is a result too
            print(f"torch.compile failed ({type(err).__name__}: {str(err)[:200]})")
            c = float("nan")
        ar = ar or (e, c)
        name = "AR, 1 token" if n == 1 else f"BD3LM block of {n}"
        print(f"| {name} | {e:.2f} | {c:.2f} | {e / ar[0]:.2f}, {c / ar[1]:.2f} |", flush=True)


if __name__ == "__main__":
    from configurator import configure
    configure(globals())
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if tiny:
        seq_len, prompt_len, new_tokens, batches, train_iters = 64, 32, 32, [4], 3
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    print(f"# gpu_check on {name}, torch {torch.__version__}")
    cfg = qwen3_06b()
    model = Model(cfg).to(dev).init_weights(0) if tiny else Model(cfg).to(dev)
    if not tiny:
        with torch.no_grad():  # init on the GPU: a CPU init of 0.6B params would take a minute
            for n, p in model.named_parameters():
                p.copy_(torch.ones_like(p) if n.endswith("norm.weight") else torch.randn_like(p) * 0.02)
    model.causal = False
    check_flex()
    train_throughput()
    step_cost()
    sampling()
