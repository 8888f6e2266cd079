"""
The reference's way to run BD3LM (dLLM's BD3LMSampler), kept as the baseline that
sample.py's exact KV cache is timed and checked against (bench/sample_bench.py,
bench/gpu_check.py, tests/test_sample.py). Token-identical to sample.bd3lm_generate
in exact arithmetic; what differs is the work:

  - at every block the whole prefix (prompt and finished blocks) is re-run into a fresh
    cache, with the LM head on every row as an HF forward does: one more forward per block;
  - every step runs the block against a fresh copy of that cache;
  - every step takes logits for the whole block, masked or not.

    from bench.reference_sampler import bd3lm_recompute
    out = bd3lm_recompute(model, prompts, steps=64, **defaults_from_load)  # as sample.generate
"""

import math
from dataclasses import replace

import torch

from sample import (GenerateOutput, Settings, _bd3lm_canvas, _block_causal, _cfg_combine, _cfg_rows, _cfg_twice,
                    _counts, _reporter, _synced_time, _unmask, logit_rows, trim)


@torch.no_grad()
def bd3lm_recompute(model, prompts, settings=None, *, generator=None, on_step=None, return_history=False, **kw):
    """sample.generate's interface and GenerateOutput, for method bd3lm only; NFE counts the
    prefix passes too."""
    s = replace(settings or Settings(), **{**kw, "method": "bd3lm"}).check()
    dev = model.lm_head.weight.device
    t0 = _synced_time(dev)
    x, valid, P = _bd3lm_canvas(prompts, s, dev)
    B, bs, N, mask = len(x), s.block_size, s.max_new_tokens, s.mask_token_id
    R = 2 * B if s.cfg_scale > 0 else B
    given = valid & (x != mask)
    history = [x[:, P:].to("cpu", copy=True)] if return_history else None
    report, eos = _reporter(s, on_step, history, dev), torch.tensor(s.eos, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    nfe, step, stop, hi = 0, 0, False, P
    for b in range(math.ceil(N / bs)):
        if stop or done.all():
            break
        lo, hi = P + b * bs, min(P + (b + 1) * bs, P + N)
        prefix, last = model.new_cache(R, hi), None
        if lo > 0:  # the whole prefix, into a fresh cache
            am, pos = _block_causal(valid, 0, lo, bs, lo if s.context_causal else 0)
            last = model(_cfg_rows(x[:, :lo], given[:, :lo], s), attention_mask=_cfg_twice(am, s),
                         position_ids=_cfg_twice(pos, s), causal=False, cache=prefix, cache_pos=0, append=True)[:, -1:]
            nfe += 1
        am, pos = _block_causal(valid, lo, hi, bs)
        cols = torch.arange(hi - lo, device=dev)  # the whole block
        for k in _counts(torch.full((B,), hi - lo), math.ceil(s.steps / math.ceil(N / bs)), s, generator):
            masked = x[:, lo:hi] == mask
            if not masked.any():
                break
            kv = model.new_cache(R, hi)  # a copy of the prefix cache, every step
            kv.k.copy_(prefix.k)
            kv.v.copy_(prefix.v)
            kv.commit(prefix.length)
            h = model(_cfg_rows(x[:, lo:hi], given[:, lo:hi], s), attention_mask=_cfg_twice(am, s),
                      position_ids=_cfg_twice(pos, s), causal=False, cache=kv, cache_pos=lo, return_hidden=True)
            nfe += 1
            logits = model.lm_head(h[:, logit_rows(cols, s.right_shift_logits)])
            if s.right_shift_logits:  # the block's first token comes from the prefix's last logit
                logits[:, :1] = last
            _unmask(x[:, lo:hi], _cfg_combine(logits, s), cols, masked, k, step, s, generator)
            step += 1
            if stop := report(step, x[:, P:]):
                break
        if s.exclude_pad_tokens:
            valid[:, lo:hi] = x[:, lo:hi] != s.pad
        done |= torch.isin(x[:, lo:hi], eos).any(1)
    seqs = [trim(q, s.eos) if s.stop_at_eos else q for q in x[:, P:hi].tolist()]
    return GenerateOutput(seqs, nfe, _synced_time(dev) - t0, history)
