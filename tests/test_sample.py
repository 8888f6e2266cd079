"""sample.py against an independent slow reference written here from dLLM's MDLMSampler /
BD3LMSampler semantics (full recompute, plain loops, no cache), on tiny random models in
float64 and on the real SmolLM2 A2D checkpoint; plus the transfer schedule by hand, the
fast-decoding rules, EOS handling and the CLI."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sample
from bench.reference_sampler import bd3lm_recompute  # the reference's cache handling, kept as a baseline
from model import Config, Model

pytestmark = pytest.mark.usefixtures("one_thread")

torch.set_grad_enabled(False)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V, MASK, EOS, BOS = 64, 63, 62, 61

# -----------------------------------------------------------------------------
# the reference, written independently of sample.py


def ref_counts(n, steps):
    # dLLM's get_num_transfer_tokens for one row with the linear alpha, float32 like its scheduler
    one, out = np.float32(1), []
    for j in range(steps):
        t, s = np.float32((steps - j) / steps), np.float32((steps - j - 1) / steps)
        keep = (one - (one - s)) / (one - (one - t))  # (1 - alpha(s)) / (1 - alpha(t)), float32
        c = min(int(np.round(n * (1.0 - float(keep)))), n)  # np.round: half to even
        out.append(c)
        n -= c
        if n == 0:
            break
    return [c for c in out if c > 0]


def ref_schedule(n_masked, steps):
    rows = [ref_counts(int(n), steps) for n in n_masked]
    S = max(len(r) for r in rows)
    return [r + [0] * (S - len(r)) for r in rows]


def ref_pick(logits, x_row, cand_row, k, mask=MASK):
    # greedy proposal, softmax confidence of it, top-k among the candidates of one row. Our one
    # deviation from dLLM: the mask token itself is never proposed
    logits = logits.clone()
    logits[:, mask] = -math.inf
    x0 = logits.argmax(-1)
    conf = F.softmax(logits, -1).gather(-1, x0[:, None])[:, 0]
    conf = torch.where(cand_row, conf, torch.tensor(-math.inf, dtype=conf.dtype))
    out = x_row.clone()
    if k > 0:
        idx = torch.topk(conf, k).indices
        out[idx] = x0[idx]
    return out


def ref_mdlm(model, prompts, N, steps, bs, right_shift=False, cfg=0.0, suppress=None, mask=MASK, eos=EOS):
    B, lens = len(prompts), [len(p) for p in prompts]
    T = max(lens) + N
    x = torch.full((B, T), eos)
    am = torch.zeros((B, T), dtype=torch.long)
    for j, p in enumerate(prompts):
        x[j, :len(p)] = torch.tensor(p, dtype=torch.long)
        x[j, len(p):len(p) + N] = mask
        am[j, :len(p) + N] = 1
    given = (x != mask) & am.bool()
    nb = math.ceil(N / bs)
    for b in range(nb):
        counts = [int((x[j, lens[j] + b * bs:min(lens[j] + (b + 1) * bs, lens[j] + N)] == mask).sum())
                  for j in range(B)]
        sched = ref_schedule(counts, math.ceil(steps / nb))
        for i in range(len(sched[0])):
            logits = model(x, attention_mask=am)
            if cfg > 0:
                un = model(torch.where(given, mask, x), attention_mask=am)
                logits = un + (cfg + 1) * (logits - un)
            for t in suppress or []:
                logits[:, :, t] = -math.inf
            if right_shift:
                logits = torch.cat([logits[:, :1], logits[:, :-1]], 1)
            for j in range(B):
                cand = (x[j] == mask) & (torch.arange(T) < lens[j] + (b + 1) * bs)
                x[j] = ref_pick(logits[j], x[j], cand, sched[j][i], mask)
    return [x[j, lens[j]:lens[j] + N].tolist() for j in range(B)]


def ref_bd3lm(model, prompts, N, steps, bs, right_shift=False, cfg=0.0, mask=MASK, eos=EOS, pad=EOS,
              context_causal=False):
    # every step one forward over the whole canvas under the block-causal mask: no cache at all.
    # context_causal: the final tokens (all before the block) attend causally instead
    B = len(prompts)
    P = math.ceil(max(len(p) for p in prompts) / bs) * bs
    x = torch.full((B, P), pad)
    for j, p in enumerate(prompts):
        x[j, P - len(p):] = torch.tensor(p, dtype=torch.long)
    given = (x != mask) & (x != pad)
    done = torch.zeros(B, dtype=torch.bool)
    nb = math.ceil(N / bs)
    for b in range(nb):
        if done.all():
            break
        Lc, L = x.shape[1], min(bs, N - b * bs)
        valid = torch.cat([x != pad, torch.ones((B, L), dtype=torch.bool)], 1)  # the block: masks, all valid
        x = torch.cat([x, torch.full((B, L), mask)], 1)
        given = torch.cat([given, torch.zeros((B, L), dtype=torch.bool)], 1)
        blk = torch.arange(Lc + L) // bs
        am = (blk[None, :, None] >= blk[None, None, :]) & valid[:, :, None] & valid[:, None, :]
        if context_causal:
            q = torch.arange(Lc + L)[:, None]
            am &= (q >= Lc) | (q >= q.T)
        pos = torch.where(valid, valid.long().cumsum(1) - 1, 0)
        sched = ref_schedule([L] * B, math.ceil(steps / nb))
        for i in range(len(sched[0])):
            if not (x[:, Lc:] == mask).any():
                break
            logits = model(x, attention_mask=am[:, None], position_ids=pos)
            if cfg > 0:
                un = model(torch.where(given, mask, x), attention_mask=am[:, None], position_ids=pos)
                logits = un + (cfg + 1) * (logits - un)
            logits = logits[:, Lc - 1:] if right_shift else logits[:, Lc:]
            for j in range(B):
                x[j, Lc:] = ref_pick(logits[j, :L], x[j, Lc:], x[j, Lc:] == mask, sched[j][i], mask)
        done |= torch.isin(x[:, Lc:], torch.tensor(eos)).any(1)
    return [x[j, P:].tolist() for j in range(B)]


def cut(seq, tok):
    return seq[:seq.index(tok)] if tok in seq else seq


# -----------------------------------------------------------------------------
# tiny models


def tiny(seed=0, scale=20.0, dtype=torch.float64, vocab=V):
    # a random bidirectional model whose weights are scaled up, so that it prefers some tokens
    # strongly and its greedy outputs vary (the 0.02 init would give near-uniform logits)
    cfg = Config(model_type="a2d-qwen3", vocab_size=vocab, hidden_size=64, intermediate_size=128,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 max_position_embeddings=512, rope_theta=10000.0)
    m = Model(cfg).init_weights(seed)
    for name, p in m.named_parameters():
        if not name.endswith("norm.weight"):
            p.mul_(scale)
    return m.to(dtype)


PROMPTS = [[5, 6, 7, 8, 9], [11, 12, 13], list(range(20, 31)), list(range(40, 48))]
KW = dict(mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS, bos_token_id=BOS)


@pytest.fixture(scope="module")
def m():
    return tiny()


def test_transfer_schedule_by_hand():
    S = lambda n, k: sample.transfer_schedule(torch.tensor([n]), k)[0].tolist()
    assert S(8, 4) == [2, 2, 2, 2]
    assert S(32, 32) == [1] * 32
    # 2 masks over 8 steps: 2/8, 2/7, 2/6, 2/5 round to 0, 2/4 = 0.5 rounds to even 0: those steps are skipped
    assert S(2, 8) == [1, 1]
    # 3 masks over 6 steps: exactly 3/6 = 0.5 would round to 0, but the reference's float32
    # schedule gives 1 - fl32(5/6) = 0.16666669, 3 * that = 0.50000006, which rounds to 1
    assert S(3, 6)[0] == 1
    assert sample.transfer_schedule(torch.tensor([0, 3]), 4).tolist() == [[0, 0, 0], [1, 1, 1]]
    for n in range(0, 41):
        for k in range(1, 41):
            assert S(n, k) == ref_counts(n, k), (n, k)
    rows = sample.transfer_schedule(torch.tensor([7, 2, 0]), 5)
    assert rows.tolist() == ref_schedule([7, 2, 0], 5) and rows.sum(1).tolist() == [7, 2, 0]


def test_select_threshold_and_factor_by_hand():
    ninf = -math.inf
    conf = torch.tensor([[0.95, 0.5, 0.91, ninf, 0.2], [0.3, 0.1, ninf, ninf, 0.2], [ninf] * 5])
    assert sample.select(conf, threshold=0.9).tolist() == [[1, 0, 1, 0, 0], [1, 0, 0, 0, 0], [0] * 5]
    assert sample.select(conf, k=torch.tensor([2, 1, 0])).tolist() == [[1, 0, 1, 0, 0], [1, 0, 0, 0, 0], [0] * 5]
    # factor 1: rank n is taken while (n+1)(1 - conf_n) <= 1: 2*0.05 = 0.1 yes, 3*0.09 = 0.27 yes, 4*0.5 = 2 no
    assert sample.select(conf, factor=1.0).tolist() == [[1, 0, 1, 0, 0], [1, 0, 0, 0, 0], [0] * 5]
    # factor 2.0 also takes 0.5 (4 * 0.5 = 2 <= 2) but not 0.2 (5 * 0.8 = 4)
    assert sample.select(conf, factor=2.0).tolist()[0] == [1, 1, 1, 0, 0]


@pytest.mark.parametrize("bs,steps,N,batch", [(4, 12, 12, 4), (8, 8, 16, 2), (8, 24, 20, 3), (16, 16, 16, 1)])
def test_bd3lm_exact_cache_matches_reference(m, bs, steps, N, batch):
    ps = PROMPTS[:batch]
    ref = ref_bd3lm(m, ps, N, steps, bs)
    for run in (sample.generate, bd3lm_recompute):
        out = run(m, ps, method="bd3lm", cache="exact", max_new_tokens=N, steps=steps, block_size=bs, **KW)
        assert out.sequences == ref, run.__name__
    assert len({t for s in ref for t in s}) > 4  # the test model is not degenerate


def test_bd3lm_nfe_and_options_match_reference(m):
    ps, N, bs = PROMPTS[:3], 16, 8
    # exact: one forward per step (the prompt and each finished block ride along with the next
    # block's first step); recompute: 1 prefix pass per block on top
    out = sample.generate(m, ps, method="bd3lm", max_new_tokens=N, steps=16, block_size=bs, **KW)
    assert out.nfe == 16
    out = bd3lm_recompute(m, ps, max_new_tokens=N, steps=16, block_size=bs, **KW)
    assert out.nfe == 2 + 16
    for opts in (dict(right_shift_logits=True), dict(cfg_scale=0.5), dict(right_shift_logits=True, cfg_scale=1.0)):
        ref = ref_bd3lm(m, ps, N, 8, bs, right_shift=opts.get("right_shift_logits", False),
                        cfg=opts.get("cfg_scale", 0))
        got = sample.generate(m, ps, method="bd3lm", max_new_tokens=N, steps=8, block_size=bs, **KW, **opts)
        # after a block that ends in a pad token, the right-shifted logit is that padding query's:
        # undefined in the reference (it attends to nothing), so compare up to the first pad token
        assert [cut(s, EOS) for s in got.sequences] == [cut(s, EOS) for s in ref], opts
        assert any(len(cut(s, EOS)) > 8 for s in ref)


@pytest.mark.parametrize("bs,shift,batch", [(4, False, 4), (8, True, 3), (5, True, 2)])
def test_context_causal_exact_cache_matches_full_recompute(m, bs, shift, batch):
    # under context_causal the cache holds each final token's K/V computed causally, as the slow path
    # recomputes them at every step; the answers differ from the block-causal sampler's
    ps, kw = PROMPTS[:batch], dict(max_new_tokens=16, steps=16, block_size=bs, right_shift_logits=shift, **KW)
    ref = ref_bd3lm(m, ps, 16, 16, bs, right_shift=shift, context_causal=True)
    for run in (sample.generate, bd3lm_recompute):
        got = run(m, ps, method="bd3lm", context_causal=True, **kw).sequences
        assert [cut(s, EOS) for s in got] == [cut(s, EOS) for s in ref], run.__name__
    assert sample.generate(m, ps, method="bd3lm", **kw).sequences != got


def test_block_size_1_with_shift_and_context_causal_is_ar_greedy(m):
    # every token is then predicted by the causal row before it: AR greedy decoding of the same
    # weights, which a plain loop re-running the whole sequence causally computes here
    N, ps = 10, PROMPTS[:3]
    want = []
    for p in ps:
        seq = list(p)
        for _ in range(N):
            logits = m(torch.tensor([seq]), causal=True)[0, -1]
            logits[MASK] = -math.inf  # never proposed by the sampler
            seq.append(int(logits.argmax()))
        want.append(cut(seq[len(p):], EOS))
    out = sample.generate(m, ps, method="bd3lm", max_new_tokens=N, steps=N, block_size=1, right_shift_logits=True,
                          context_causal=True, **KW)
    assert [cut(s, EOS) for s in out.sequences] == want and out.nfe <= N
    assert len({t for s in want for t in s}) > 4 and max(map(len, want)) > 5  # not degenerate


@pytest.mark.parametrize("bs,batch", [(4, 1), (3, 3)])
def test_verify_is_ar_greedy_with_several_tokens_a_forward(m, bs, batch):
    # verify=True keeps only what the causal rows (the AR model) would say: AR greedy, whatever the drafts
    N, ps = 12, PROMPTS[:batch]
    want = []
    for p in ps:
        seq = list(p)
        for _ in range(N):
            logits = m(torch.tensor([seq]), causal=True)[0, -1]
            logits[MASK] = -math.inf
            seq.append(int(logits.argmax()))
        want.append(seq[len(p):])
    kw = dict(method="bd3lm", max_new_tokens=N, block_size=bs, right_shift_logits=True, context_causal=True, **KW)
    out = sample.generate(m, ps, verify=True, **kw)
    assert out.sequences == want
    # where the drafts are right (a model whose every logit is 0 says token 0 everywhere), a forward keeps a whole
    # block: N tokens in about N / bs forwards, where one token a step takes N
    zero = tiny(seed=0)
    for p in zero.parameters():
        p.data.zero_()
    out = sample.generate(zero, ps, verify=True, **kw)
    assert out.sequences == [[0] * N] * batch and out.nfe == math.ceil(N / bs) + 1
    with pytest.raises(ValueError, match="verify=True is greedy BD3LM"):
        sample.generate(m, ps, verify=True, **{**kw, "context_causal": False})


def test_bd3lm_pad_tokens_inside_prompt(m):
    # a prompt token equal to pad_token_id is padding for the reference (SmolLM2: pad == <|im_end|>)
    ps = [[5, EOS, 7, 8, 9, 10], [11, 12, EOS, 13]]
    ref = ref_bd3lm(m, ps, 12, 12, 4)
    assert sample.generate(m, ps, method="bd3lm", max_new_tokens=12, steps=12, block_size=4, exclude_pad_tokens=True,
                           **KW).sequences == ref
    # exclude_pad_tokens=False (the default) keeps them as tokens: the reference with a pad id nobody uses
    ref2 = ref_bd3lm(m, ps, 12, 12, 4, pad=60)
    got = sample.generate(m, ps, method="bd3lm", max_new_tokens=12, steps=12, block_size=4, **KW)
    assert got.sequences == ref2 and ref2 != ref


def test_bd3lm_stops_when_every_row_has_eos():
    m = tiny(seed=1)
    ps = PROMPTS[:2]
    kw = {**KW, "eos_token_id": 0, "pad_token_id": 60}
    full = sample.generate(m, ps, method="bd3lm", max_new_tokens=32, steps=32, block_size=4, **kw)
    # declare as EOS (a list: any of them ends a row) a token of each row's second block
    eos = [full.sequences[0][5], full.sequences[1][6]]
    kw["eos_token_id"] = eos
    out = sample.generate(m, ps, method="bd3lm", max_new_tokens=32, steps=32, block_size=4, **kw)
    assert len(out.sequences[0]) == 8 and out.sequences == [s[:8] for s in full.sequences]
    assert out.sequences == ref_bd3lm(m, ps, 32, 32, 4, eos=eos, pad=60)
    trimmed = sample.generate(m, ps, method="bd3lm", max_new_tokens=32, steps=32, block_size=4, stop_at_eos=True,
                              **kw)
    first = [min(i for i, t in enumerate(s) if t in eos) for s in out.sequences]
    assert trimmed.sequences == [s[:i] for s, i in zip(out.sequences, first)]
    assert trimmed.nfe <= out.nfe


@pytest.mark.parametrize("bs,steps,N,batch", [(4, 12, 12, 4), (8, 8, 16, 2), (32, 32, 32, 3), (5, 9, 13, 2)])
def test_mdlm_matches_reference(m, bs, steps, N, batch):
    ps = PROMPTS[:batch]
    ref = ref_mdlm(m, ps, N, steps, bs)
    out = sample.generate(m, ps, method="mdlm", max_new_tokens=N, steps=steps, block_size=bs, **KW)
    assert out.sequences == ref
    assert out.nfe == sum(len(ref_schedule([min(bs, N - b * bs)] * batch, math.ceil(steps / math.ceil(N / bs)))[0])
                          for b in range(math.ceil(N / bs)))


def test_mdlm_options_match_reference(m):
    ps = PROMPTS[:3]
    for opts in (dict(right_shift_logits=True), dict(cfg_scale=0.5), dict(suppress_tokens=[5, 6, 23])):
        ref = ref_mdlm(m, ps, 12, 12, 4, right_shift=opts.get("right_shift_logits", False),
                       cfg=opts.get("cfg_scale", 0), suppress=opts.get("suppress_tokens"))
        got = sample.generate(m, ps, method="mdlm", max_new_tokens=12, steps=12, block_size=4, **KW, **opts)
        assert got.sequences == ref, opts
    got = sample.generate(m, ps, method="mdlm", max_new_tokens=12, steps=12, block_size=4, suppress_tokens=[5, 6, 23],
                          **KW)
    assert not {5, 6, 23} & {t for s in got.sequences for t in s}


def test_mdlm_caches_and_parallel_decoding(m):
    ps, N = PROMPTS[:3], 16
    exact = sample.generate(m, ps, method="mdlm", max_new_tokens=N, steps=N, block_size=8, **KW)
    for cache in ("prefix", "dual"):
        # one step per block: the refresh forward is the only one, so the cache changes nothing
        one = sample.generate(m, ps, method="mdlm", cache=cache, max_new_tokens=N, steps=2, block_size=8, **KW)
        two = sample.generate(m, ps, method="mdlm", max_new_tokens=N, steps=2, block_size=8, **KW)
        assert one.sequences == two.sequences
        out = sample.generate(m, ps, method="mdlm", cache=cache, max_new_tokens=N, steps=N, block_size=8, **KW)
        assert out.nfe == exact.nfe and all(MASK not in s for s in out.sequences)
    # approximate, and these scaled-up random models are chaotic: the agreement with the exact
    # path swings 0.5-0.85 from seed to seed, so average three models (chance is 1/64)
    for cache in ("prefix", "dual"):
        agree = []
        for mm in (m, tiny(seed=1), tiny(seed=2)):
            ex = sample.generate(mm, ps, method="mdlm", max_new_tokens=N, steps=N, block_size=8, **KW)
            out = sample.generate(mm, ps, method="mdlm", cache=cache, max_new_tokens=N, steps=N, block_size=8, **KW)
            agree += [a == b for s, t in zip(out.sequences, ex.sequences) for a, b in zip(s, t)]
        assert np.mean(agree) > 0.6, (cache, np.mean(agree))
    # threshold 1.0 commits only the best candidate per step, the same as one token per step
    thr = sample.generate(m, ps, method="mdlm", max_new_tokens=N, steps=64, block_size=8, threshold=1.0, **KW)
    assert thr.sequences == exact.sequences and thr.nfe == N
    fast = sample.generate(m, ps, method="mdlm", cache="dual", max_new_tokens=N, steps=N, block_size=8, threshold=0.5,
                           **KW)
    assert fast.nfe < N and all(MASK not in s for s in fast.sequences)
    fac = sample.generate(m, ps, method="bd3lm", max_new_tokens=N, steps=N, block_size=8, factor=1.0, **KW)
    assert fac.nfe < N and all(MASK not in s for s in fac.sequences)


def test_mask_token_is_never_proposed():
    # a model whose favourite token is <|mask|>: the reference would commit it (a hole that never
    # fills; with a threshold the block never empties and the loop never ends)
    bad = tiny(seed=3)
    bad.lm_head.weight[MASK] = 0.0
    bad.lm_head.weight[MASK, 0] = 1e4  # huge logit wherever the final hidden state's dim 0 > 0
    bad.model.norm.weight[0] = 1.0
    ps = PROMPTS[:2]
    for method in ("mdlm", "bd3lm"):
        for extra in (dict(steps=16), dict(steps=16, threshold=0.9), dict(steps=16, factor=1.0)):
            out = sample.generate(bad, ps, method=method, max_new_tokens=16, block_size=8, **extra, **KW)
            assert all(len(s) == 16 and MASK not in s for s in out.sequences), (method, extra)
            assert out.nfe <= 16
    # and the model does prefer it: the unguarded argmax is <|mask|> somewhere
    x = torch.tensor([PROMPTS[0] + [MASK] * 8])
    assert (bad(x).argmax(-1) == MASK).any()


def test_infill_matches_reference(m):
    # fill masks in place: the reference's infill over blocks of the whole sequence
    inputs = [[5, MASK, MASK, 8, MASK, 10, MASK, MASK], [MASK, 12, 13, MASK]]
    out = sample.infill(m, inputs, steps=8, block_size=4, **KW)
    for s, inp in zip(out.sequences, inputs):
        assert len(s) == len(inp) and MASK not in s and all(a == b for a, b in zip(s, inp) if b != MASK)
    # the reference, by hand: blocks [0,4) and [4,8), masks of each filled in ceil(8 / 2) steps
    x = torch.full((2, 8), EOS)
    x[0], x[1, :4] = torch.tensor(inputs[0]), torch.tensor(inputs[1])
    am = torch.tensor([[1] * 8, [1] * 4 + [0] * 4])
    for b in range(2):
        lo, his = 4 * b, [min(4 * b + 4, 8), min(4 * b + 4, 4)]
        sched = ref_schedule([int((x[j, lo:max(his[j], lo)] == MASK).sum()) for j in range(2)], 4)
        for i in range(len(sched[0])):
            logits = m(x, attention_mask=am)
            for j in range(2):
                cand = (x[j] == MASK) & (torch.arange(8) >= lo) & (torch.arange(8) < his[j])
                x[j] = ref_pick(logits[j], x[j], cand, sched[j][i])
    assert out.sequences == [x[0].tolist(), x[1, :4].tolist()]
    # the history starts with the inputs as given (a copy, not the canvas filled in later)
    h = sample.infill(m, inputs, steps=8, block_size=4, return_history=True, **KW).history
    assert h[0][0].tolist() == inputs[0] and h[-1][0].tolist() == out.sequences[0] and len(h) == out.nfe + 1


def test_eos_options_history_and_callbacks(m):
    ps = PROMPTS[:2]
    steps_seen = []
    out = sample.generate(m, ps, method="mdlm", max_new_tokens=8, steps=8, block_size=8, return_history=True,
                          suppress_tokens=[MASK], on_step=lambda i, region: steps_seen.append((i, region.shape)), **KW)
    assert len(out.history) == out.nfe + 1 == len(steps_seen) + 1
    assert (out.history[0] == MASK).all() and out.history[-1].tolist() == out.sequences
    assert [(h != MASK).sum().item() for h in out.history] == [2 * i for i in range(9)]  # 8 over 8 steps: 1 per row
    # EOS: pick the token the model likes most as EOS; forbidding it for the first steps removes it from them
    eos = max({t for s in out.sequences for t in s}, key=lambda t: sum(s.count(t) for s in out.sequences))
    kw = {**KW, "eos_token_id": [60, eos]}
    free = sample.generate(m, ps, method="mdlm", max_new_tokens=8, steps=8, block_size=8, return_history=True, **kw)
    sup = sample.generate(m, ps, method="mdlm", max_new_tokens=8, steps=8, block_size=8, return_history=True,
                          eos_suppress_steps=4, **kw)
    assert (free.history[4] == eos).any() and not (sup.history[4] == eos).any()
    trimmed = sample.generate(m, ps, method="mdlm", max_new_tokens=8, steps=8, block_size=8, stop_at_eos=True, **kw)
    assert trimmed.sequences == [cut(cut(s, 60), eos) for s in free.sequences]
    assert any(len(s) < 8 for s in trimmed.sequences)


def test_generator_makes_sampling_reproducible(m):
    def run(seed, method):
        return sample.generate(m, PROMPTS[:2], method=method, max_new_tokens=16, steps=16, block_size=8,
                               temperature=1.0, generator=torch.Generator().manual_seed(seed), **KW).sequences

    for method in ("mdlm", "bd3lm"):
        assert run(0, method) == run(0, method) != run(1, method)


def test_bad_arguments_say_what_to_do(m):
    with pytest.raises(ValueError, match="choose mdlm or bd3lm"):
        sample.generate(m, [[1]], method="ar", **KW)
    with pytest.raises(ValueError, match="prefix or dual"):
        sample.generate(m, [[1]], method="mdlm", cache="exact2", **KW)
    with pytest.raises(ValueError, match="none or exact"):
        sample.generate(m, [[1]], method="bd3lm", cache="dual", **KW)
    with pytest.raises(ValueError, match="low_confidence or random"):
        sample.generate(m, [[1]], remasking="lowest", **KW)
    # the same checks without a model, for callers that take settings one at a time (chat.py's /set)
    with pytest.raises(ValueError, match="unknown cache 'dual' for bd3lm; choose none or exact"):
        sample.Settings(method="bd3lm", cache="dual").check()
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        sample.Settings(max_new_tokens=0).check()
    sample.Settings(method="mdlm", cache="dual", threshold=0.9).check()
    with pytest.raises(TypeError, match="stepz"):  # a mistyped setting is no silent default
        sample.generate(m, [[1]], stepz=4, **KW)
    no_bos = {k: v for k, v in KW.items() if k != "bos_token_id"}
    for method in ("mdlm", "bd3lm"):
        with pytest.raises(ValueError, match="empty prompt needs bos_token_id"):
            sample.generate(m, [[5], []], method=method, right_shift_logits=True, **no_bos)
    with pytest.raises(ValueError, match="empty prompt needs bos_token_id"):
        sample.infill(m, [[]], right_shift_logits=True, **no_bos)


# -----------------------------------------------------------------------------
# the real checkpoint


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    return sample.load(smollm2_dir, dtype="float32", device="cpu")


def test_load_defaults(smollm2):
    model, tok, d = smollm2
    assert d["mask_token_id"] == tok.convert_tokens_to_ids("<|mask|>") == model.config.vocab_size - 1
    assert tok.convert_tokens_to_ids("<|im_end|>") in d["eos_token_id"]
    assert d["method"] in ("mdlm", "bd3lm") and d["block_size"] >= 1


def test_smollm2_exact_cache_matches_reference(smollm2):
    model, tok, d = smollm2
    ps = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
          for q in ("What is the capital of France?", "Name three colours.")]
    ps.append(tok("The quick brown fox jumps over the lazy dog. The quick brown", add_special_tokens=False).input_ids)
    kw = {**d, "method": "bd3lm", "block_size": 8, "right_shift_logits": True}
    got = sample.generate(model, ps, max_new_tokens=24, steps=24, **kw)
    ref = ref_bd3lm(model, ps, 24, 24, 8, right_shift=True, mask=d["mask_token_id"], eos=d["eos_token_id"][0],
                    pad=d["pad_token_id"])
    pad = d["pad_token_id"]
    assert [cut(s, pad) for s in got.sequences] == [cut(s, pad) for s in ref]  # see test_bd3lm_nfe_and_options...
    assert len(set(cut(ref[2], pad))) > 2  # a real continuation, not one repeated token


# -----------------------------------------------------------------------------
# CLI


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "sample.py", *args], cwd=ROOT, input=stdin, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_prompt_file_jsonl_and_errors(tiny_dir, tmp_path):
    pf = tmp_path / "p.jsonl"
    pf.write_text(json.dumps({"prompt": "Hello there"}) + "\n"
                  + json.dumps({"messages": [{"role": "user", "content": "Hi"}]}) + "\n")
    out = tmp_path / "out.jsonl"
    r = run_cli(f"--model_name_or_path={tiny_dir}", f"--prompt_file={pf}", f"--output={out}", "--batch_size=2",
                "--max_new_tokens=8", "--steps=4", "--block_size=4", "--stop_at_eos=False", "--dtype=float32")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(len(row["completion_ids"]) == 8 and row["nfe"] > 0 for row in rows)
    # the same prompts through the library give the same ids
    model, tok, d = sample.load(tiny_dir, dtype="float32", device="cpu")
    ids = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
           for q in ("Hello there", "Hi")]
    assert [row["prompt_ids"] for row in rows] == ids
    lib = sample.generate(model, ids, **{**d, "block_size": 4}, max_new_tokens=8, steps=4)
    assert [row["completion_ids"] for row in rows] == lib.sequences
    # stdin, raw text, and the errors
    r = run_cli(f"--model_name_or_path={tiny_dir}", "--chat_template=False", "--max_new_tokens=4", "--steps=2",
                f"--output={out}", stdin="one\ntwo\n\n")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["prompt"] for row in rows] == ["one", "two"]
    assert rows[0]["prompt_ids"] == tok("one", add_special_tokens=False).input_ids
    r = run_cli("--model_name_or_path=/nonexistent/dir", "--prompt=hi")
    assert r.returncode != 0 and "does not exist" in r.stderr
    for path in ("/nonexistent_dir/o.jsonl", str(tmp_path)):  # checked before the model loads: one line each
        r = run_cli(f"--model_name_or_path={tiny_dir}", "--prompt=hi", f"--output={path}")
        assert r.returncode == 1 and r.stderr.strip() == f"error: --output={path!r} must name a file in an existing " \
            f"directory", r.stderr
    # what sample.py adjusts, it says
    r = run_cli(f"--model_name_or_path={tiny_dir}", "--prompt=hi", "--max_new_tokens=64", "--block_size=24",
                "--steps=512", "--dtype=float32")
    assert r.returncode == 0 and "note: --block_size=24 does not divide --max_new_tokens=64: the last block has 16 " \
        "tokens" in r.stderr and "note: --steps=512 > --max_new_tokens=64: one token per step at most" in r.stderr
    # prompts are checked before the model is loaded (here: it could not be)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": \n')
    for flag, message in ((f"--prompt_file={tmp_path / 'missing.txt'}", "missing.txt' does not exist"),
                          (f"--prompt_file={bad}", "bad.jsonl:2 is not valid JSON")):
        r = run_cli("--model_name_or_path=/nonexistent/dir", flag)
        assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    # --verify=True is checked against the checkpoint's options (context_causal, shift), not the CLI's defaults
    cc = tmp_path / "cc"
    shutil.copytree(tiny_dir, cc)
    cfg = json.loads((cc / "config.json").read_text())
    (cc / "config.json").write_text(json.dumps({**cfg, "context_causal": True, "right_shift_logits": True}))
    r = run_cli(f"--model_name_or_path={cc}", "--prompt=hi", "--verify=True", "--max_new_tokens=8", "--block_size=4",
                "--stop_at_eos=False", f"--output={out}", "--dtype=float32")
    assert r.returncode == 0, r.stderr
    row = json.loads(out.read_text())
    model, _, d = sample.load(str(cc), dtype="float32", device="cpu")
    ar = sample.generate(model, [row["prompt_ids"]], **{**d, "block_size": 1}, max_new_tokens=8, steps=8,
                         stop_at_eos=False)
    assert row["completion_ids"] == ar.sequences[0]  # block 1 reads every token from a causal row: the AR answer
    r = run_cli(f"--model_name_or_path={tiny_dir}", "--prompt=hi", "--verify=True")
    assert r.returncode == 1 and "verify=True is greedy BD3LM" in r.stderr, r.stderr
    r = run_cli(f"--model_name_or_path={tiny_dir}", "--prompt=hi", "--method=ar")
    assert r.returncode != 0 and "mdlm or bd3lm" in r.stderr
    r = run_cli(f"--model_name_or_path={tiny_dir}", "--prompt=hi", "--stepz=3")
    assert r.returncode != 0 and "--steps" in r.stderr


def test_cli_truncates_long_prompt_from_the_left(tiny_dir, tmp_path):
    out = tmp_path / "o.jsonl"
    r = run_cli(f"--model_name_or_path={tiny_dir}", "--prompt=" + "word " * 300, "--chat_template=False",
                "--max_new_tokens=8", "--steps=2", "--block_size=8", "--max_length=128", f"--output={out}")
    assert r.returncode == 0, r.stderr
    assert "truncated" in r.stderr
    row = json.loads(out.read_text())
    assert len(row["prompt_ids"]) == 120 and len(row["completion_ids"]) == 8


def test_chat_ids_equal_transformers_tokenized_template(tiny_dir):
    # sample.chat_ids renders then tokenizes, which works in transformers 4 and 5 alike (5's
    # apply_chat_template(tokenize=True) returns a dict); in 4 it must give the very same ids
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    for messages in ([{"role": "user", "content": "What is 12 + 30? ünï 😀"}],
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}]):
        ids = sample.chat_ids(tok, messages)
        assert ids == list(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
        assert tok.decode(ids).endswith("<|im_start|>assistant\n")


def test_every_chat_prompt_renders_thinking_off(tiny_dir):
    # a Qwen3-style template that thinks unless told otherwise (a dllm-hub or foreign checkpoint):
    # sample/chat and eval render with the empty think block, as the model was trained
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    import eval as ev
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined "
                         "and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")
    msgs = [{"role": "user", "content": "Hi"}]
    want = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert tok.decode(sample.chat_ids(tok, msgs)) == want
    assert ev.A2DLM.apply_chat_template(SimpleNamespace(tokenizer=tok), msgs) == want
