"""
Sample from an A2D diffusion LM.

    python sample.py --model_name_or_path=DIR --prompt="Lebron James is" --chat_template=False
    python sample.py --model_name_or_path=DIR --prompt_file=prompts.jsonl --output=out.jsonl --batch_size=8
    echo "What is 7 * 6?" | python sample.py --model_name_or_path=DIR --method=mdlm --threshold=0.9

Two samplers, both importable (chat.py and eval.py call them):

  MDLM  - the answer is a row of masks after the prompt, denoised left to right in
          blocks with bidirectional attention over the whole canvas (LLaDA style).
  BD3LM - blocks are generated one after the other; a block attends to itself and to
          everything before it (block-causal), so finished blocks are a KV cache.

At temperature 0 both are token-identical to dLLM's MDLMSampler / BD3LMSampler.
What is ours: BD3LM keeps an exact incremental KV cache (the prompt's K/V are
computed once, each denoising step runs only the current block against the cache,
a finished block's K/V are written by the next block's first step), where the
reference re-runs the whole prefix for every block and deep-copies its cache every
step. MDLM gets Fast-dLLM's approximate prefix / dual caches, and both get threshold /
factor parallel decoding.
"""

import json
import math
import os
import sys
import time
from dataclasses import dataclass, fields, replace
from functools import lru_cache

import torch
import torch.nn.functional as F

from model import Model, alpha, default_dtype, logit_rows, resolve_model_dir, special_ids

# -----------------------------------------------------------------------------
# command-line options (--key=value); every Settings field below is one too
model_name_or_path = ""  # a checkpoint dir (convert.py / train.py output) or a hub id
prompt = ""  # one prompt; else --prompt_file, else stdin (one prompt per line)
prompt_file = ""  # .txt (one prompt per line) or .jsonl ({"prompt": ...} or {"messages": [...]})
chat_template = True  # wrap plain prompts as a user turn with the tokenizer's chat template
output = ""  # .jsonl: prompt, completion, prompt_ids, completion_ids, nfe, seconds
batch_size = 1
seed = 42
dtype = ""  # bfloat16 | float16 | float32; default bfloat16 on CUDA and on CPUs with native bf16, else float32
device = ""  # default cuda if available
max_length = 0  # context limit for prompt + answer; 0: the model's max_position_embeddings
# -----------------------------------------------------------------------------

# -----------------------------------------------------------------------------
# sampler settings: each one named, typed, defaulted and explained here, once. generate() takes
# them as keywords; sample.py's flags, chat.py's /set and eval.py's model_args are these fields.


@dataclass
class Settings:
    method: str = "bd3lm"  # mdlm | bd3lm (load() gives the checkpoint's objective)
    max_new_tokens: int = 128
    steps: int = 128  # denoising steps in all, split evenly over the blocks
    block_size: int = 32
    temperature: float = 0.0  # 0: argmax; > 0: Gumbel-max in float64
    remasking: str = "low_confidence"  # low_confidence | random: what is committed first
    stochastic_transfer: bool = False  # binomial unmask counts instead of the rounded schedule
    cfg_scale: float = 0.0  # classifier-free guidance against the rows that see the prompt masked
    cfg_keep_tokens: list | None = None  # token ids those rows still see
    suppress_tokens: list | None = None  # token ids never proposed
    begin_suppress_tokens: list | None = None  # token ids that lose their confidence, not their proposal
    threshold: float | None = None  # parallel decoding: commit every token with confidence >= threshold
    factor: float | None = None  # ... or the top n with (n+1)(1 - conf_n) <= factor
    cache: str = "none"  # mdlm: none (exact) | prefix | dual (approximate); bd3lm: none (exact) | recompute
    stop_at_eos: bool = False  # trim at the first EOS, and stop once every answer has ended
    eos_suppress_steps: int = 0  # no EOS proposed in the first n steps
    right_shift_logits: bool = False  # Dream-style: the logit at i predicts token i+1
    exclude_pad_tokens: bool = False  # bd3lm: every pad-id token is padding (the reference's rule)
    # the checkpoint's token ids (load() reads them)
    mask_token_id: int | None = None
    eos_token_id: int | list | None = None  # an int or a list: any of them ends an answer
    pad_token_id: int | None = None  # bd3lm's left padding (default: the first EOS)
    bos_token_id: int | None = None  # stands in for an empty prompt under right shift

    def check(self):
        """Raise ValueError for a value the samplers refuse (the token ids are checked by generate)."""
        caches = {"mdlm": ("none", "prefix", "dual"), "bd3lm": ("none", "exact", "recompute")}
        if self.method not in caches:
            raise ValueError(f"unknown method {self.method!r}; choose mdlm or bd3lm")
        ok = caches[self.method]
        problems = [
            (self.cache not in ok, f"unknown cache {self.cache!r} for {self.method}; choose {ok[0]}, {ok[1]} or {ok[2]}"),
            (self.remasking not in ("low_confidence", "random"),
             f"unknown remasking {self.remasking!r}; choose low_confidence or random"),
            *((getattr(self, k) < 1, f"{k} must be >= 1, got {getattr(self, k)}")
              for k in ("max_new_tokens", "steps", "block_size")),
            (self.threshold is not None and self.factor is not None, "set threshold or factor, not both"),
            (self.threshold is not None and not 0 < self.threshold <= 1,
             f"threshold must be in (0, 1], got {self.threshold}"),
            (self.factor is not None and self.factor <= 0, f"factor must be > 0, got {self.factor}"),
            (self.temperature < 0, f"temperature must be >= 0, got {self.temperature}"),
        ]
        for bad, message in problems:
            if bad:
                raise ValueError(message)
        return self

    @property
    def eos(self):  # eos_token_id as a list
        e = self.eos_token_id
        return [t for t in (e if isinstance(e, (list, tuple)) else [e]) if t is not None]

    @property
    def parallel(self):  # threshold / factor: a block's commit count follows the confidences
        return self.threshold is not None or self.factor is not None


SETTINGS = {f.name: f.default for f in fields(Settings)}
# ... as options: method, block_size, the token ids and right_shift_logits default to the
# checkpoint's (see main), and on the command line an answer ends at its first EOS
globals().update(SETTINGS, stop_at_eos=True)


# -----------------------------------------------------------------------------
# loading


def load(model_name_or_path, dtype=None, device=None):
    """A checkpoint dir (or hub id) -> (model, tokenizer, defaults).

    defaults holds the sampler keywords the checkpoint decides, ready for
    generate(model, prompts, **defaults): method, block_size, mask_token_id,
    right_shift_logits, eos_token_id (a list: every id that ends an answer),
    pad_token_id, bos_token_id."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(dtype, str):
        if dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"unknown dtype {dtype!r}; choose bfloat16, float16 or float32")
        dtype = getattr(torch, dtype)
    dtype = dtype or default_dtype(device)[0]  # bf16 on CUDA and on CPUs with native bf16, else fp32
    path = resolve_model_dir(model_name_or_path)
    model = Model.from_pretrained(path, dtype=dtype, device=device)
    import transformers  # here, not at the top: it takes seconds to import
    tok = transformers.AutoTokenizer.from_pretrained(path)
    c = model.config
    if not c.is_a2d:
        print(f"warning: {path} is a plain {c.model_type} checkpoint, not an A2D one; sampling it as a "
              f"diffusion LM gives noise. Convert it first: python convert.py --model_name_or_path={path}",
              file=sys.stderr)
    ids = special_ids(c, tok)
    if ids["mask"] is None:
        raise ValueError(f"{path} has no mask token (config.json mask_token_id or tokenizer mask_token); "
                         f"make the checkpoint with convert.py")
    if not ids["eos"]:
        raise ValueError(f"{path} defines no eos token (tokenizer eos_token or config.json eos_token_id)")
    defaults = dict(
        method=c.objective if c.objective in ("mdlm", "bd3lm") else "bd3lm",
        block_size=c.block_size or 32,
        mask_token_id=ids["mask"],
        right_shift_logits=bool(c.right_shift_logits),
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
        bos_token_id=ids["bos"],
    )
    return model, tok, defaults


# -----------------------------------------------------------------------------
# one denoising step: how many to unmask, what to propose, which to commit


@lru_cache(maxsize=None)
def unmask_prob(k, steps):
    # P(unmask | masked) at the step from t = k/K to s = (k-1)/K under the linear alpha:
    # 1 - (1 - alpha(s)) / (1 - alpha(t)) = 1/k in exact arithmetic. Evaluated in float32
    # the way the reference's scheduler does it, because its rounding decides the x.5 ties
    # of the count below (3 masks over 6 steps: 3 * 0.16666669 rounds to 1, not to 0).
    s, t = (torch.tensor(v / steps, dtype=torch.float32) for v in (k - 1, k))
    return 1 - ((1 - alpha(s)) / (1 - alpha(t))).item()


def transfer_schedule(n_masked, steps, stochastic=False, generator=None):
    """Masked counts (B,) -> tokens to unmask per step (B, S), S <= steps.

    Each step unmasks round_half_even(n_left * unmask_prob) (or a binomial draw).
    Steps that would unmask nothing are dropped: the model is not conditioned on t,
    so they would only repeat the same forward. Rows are right-padded with zeros."""
    rows = []
    for n in n_masked.tolist():
        row = []
        for k in range(steps, 0, -1):
            if n == 0:
                break
            p = unmask_prob(k, steps)
            if stochastic:
                dev = generator.device if generator is not None else "cpu"
                c = int(torch.binomial(torch.tensor([float(n)], device=dev), torch.tensor([p], device=dev),
                                       generator=generator).item())
            else:
                c = round(n * p)  # python's round is half-to-even, as torch.round
            c = min(c, n)
            n -= c
            if c > 0:
                row.append(c)
        rows.append(row)
    S = max((len(r) for r in rows), default=0)
    return torch.tensor([r + [0] * (S - len(r)) for r in rows], dtype=torch.long).view(len(rows), S)


def propose(logits, temperature, remasking, begin_suppress_tokens=None, generator=None):
    """logits (B, W, V) -> proposed tokens (B, W) and their confidence (B, W)."""
    if temperature > 0:
        # Gumbel-max in float64 (low precision Gumbel hurts generation, arXiv:2409.02908)
        u = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
        x0 = (logits.double().exp() / (-torch.log(u)) ** temperature).argmax(-1)
    else:
        x0 = logits.argmax(-1)
    if begin_suppress_tokens:
        # as in the reference: applied after the proposal, so it only lowers the confidence
        logits = logits.clone()
        logits[..., begin_suppress_tokens] = -torch.inf
    if remasking == "low_confidence":
        conf = F.softmax(logits, dim=-1).gather(-1, x0[..., None]).squeeze(-1)
    else:  # random
        conf = torch.rand(x0.shape, device=x0.device, generator=generator)
    return x0, conf


def select(conf, k=None, threshold=None, factor=None):
    """conf (B, W), -inf where a position may not change -> bool (B, W): commit now.

    Schedule: the k[j] most confident. threshold: every candidate with conf >= threshold.
    factor: the top n, for the largest n with (n+1)(1 - conf_n) <= factor (conf_n the
    n-th best; the left side grows with n, so this is a prefix of the ranking).
    threshold / factor commit at least the single best candidate."""
    B, W = conf.shape
    cand = conf > -torch.inf
    take = torch.zeros_like(cand)
    if threshold is None and factor is None:
        n = cand.sum(1).tolist()  # one device sync, not one per row
        for j in range(B):
            kj = min(int(k[j]), n[j])
            if kj > 0:
                take[j, torch.topk(conf[j], kj).indices] = True
        return take
    if threshold is not None:
        take = cand & (conf >= threshold)
    else:
        srt, idx = conf.sort(-1, descending=True)
        n = torch.arange(1, W + 1, device=conf.device)
        ok = ((n + 1) * (1 - srt) <= factor).long().cumprod(-1).sum(-1, keepdim=True)  # (B, 1)
        take = take.scatter(1, idx, n[None] <= ok)
    best = torch.zeros_like(cand).scatter(1, conf.argmax(-1, keepdim=True), True)
    return (take | best) & cand


def _unmask(logits, cols, cand, k, gstep, s, generator):
    """One denoising decision, shared by both samplers. logits (B, n, V) for the columns `cols`
    (n,) of a region whose candidates are cand (B, W); k: the schedule's counts (or None)
    -> proposals x0 (B, n), take (B, W): what to commit now (inside cand)."""
    # never propose <|mask|> itself: committed, it would stay a hole forever (and with a
    # threshold, loop forever). The reference allows it; a trained model never picks it.
    logits[..., s.mask_token_id] = -torch.inf
    if s.suppress_tokens:
        logits[..., s.suppress_tokens] = -torch.inf
    if gstep < s.eos_suppress_steps:
        logits[..., s.eos] = -torch.inf
    x0, conf = propose(logits, s.temperature, s.remasking, s.begin_suppress_tokens, generator)
    # full-width rows, -inf outside the candidates: the reference ranks exactly these rows
    conf_full = torch.full(cand.shape, -torch.inf, dtype=conf.dtype, device=conf.device)
    conf_full[:, cols] = conf
    return x0, select(conf_full.masked_fill(~cand, -torch.inf), k, s.threshold, s.factor)


def _after_step(gstep, region, history, on_step, s, eos_t):
    """History, callback and the EOS stop after a step; True = every row's answer is settled."""
    if history is not None:
        history.append(region.to("cpu", copy=True))
    if on_step is not None:
        on_step(gstep, region)
    return s.stop_at_eos and bool(first_eos_done(region, eos_t, s.mask_token_id).all())


def first_eos_done(region, eos, mask_id):
    # (B, W) -> (B,) rows whose answer is settled: an EOS with no mask before it
    is_eos = torch.isin(region, eos)
    first = torch.where(is_eos.any(1), is_eos.long().argmax(1), region.shape[1])
    before = torch.arange(region.shape[1], device=region.device)[None] < first[:, None]
    return is_eos.any(1) & ~((region == mask_id) & before).any(1)


def trim(ids, eos):
    for i, t in enumerate(ids):
        if t in eos:
            return ids[:i]
    return ids


@dataclass
class GenerateOutput:
    sequences: list  # list[list[int]]: completion ids per prompt (no prompt, no padding)
    nfe: int  # forward passes of the network
    seconds: float  # wall time of the call
    history: list | None = None  # (B, W) canvas region after every step, first entry before any


# -----------------------------------------------------------------------------
# MDLM: the whole canvas, denoised block by block with bidirectional attention


def _as_lists(prompts):
    return [p.tolist() if isinstance(p, torch.Tensor) else list(p) for p in prompts]


def _with_bos(prompts, bos_token_id, right_shift_logits):
    # under right-shift an empty prompt has no logit to shift into the first answer token: start it with BOS
    prompts = _as_lists(prompts)
    if not right_shift_logits or all(prompts):
        return prompts
    if bos_token_id is None:
        raise ValueError("right_shift_logits with an empty prompt needs bos_token_id")
    return [p or [bos_token_id] for p in prompts]


def _right_padded(rows, T, fill, dev):
    x = torch.full((len(rows), T), fill, dtype=torch.long, device=dev)
    for j, p in enumerate(rows):
        x[j, :len(p)] = torch.tensor(p, dtype=torch.long)
    return x


def _cfg_given(x, given, s):
    # classifier-free guidance: the unconditional rows see these tokens (the prompt's) masked,
    # except cfg_keep_tokens
    if s.cfg_keep_tokens:
        given = given & ~torch.isin(x, torch.tensor(s.cfg_keep_tokens, device=x.device))
    return given


def _cfg_rows(x, given, s):  # (B, n) -> (R, n): the rows through the network, conditional first
    return torch.cat([x, torch.where(given, s.mask_token_id, x)]) if s.cfg_scale > 0 else x


def _cfg_combine(logits, s):  # (R, n, V) -> (B, n, V): un + (w + 1) (cond - un)
    if s.cfg_scale == 0:
        return logits
    cond, un = logits.chunk(2)
    return un + (s.cfg_scale + 1) * (cond - un)


def _synced_time(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@torch.no_grad()
def _mdlm_loop(model, x, amask, blocks, regions, s, steps_per_block, generator=None, on_step=None, history=None):
    """Denoise canvas x (B, T) in place; returns the NFE. blocks: per block, (start, end, lo, hi)
    (B,) tensors: the schedule counts masks in [start, end), candidates are masks in [lo, hi).
    regions (B, W) indices into x: what history / on_step / stop_at_eos look at."""
    B, T = x.shape
    dev, mask = x.device, s.mask_token_id
    eos_t = torch.tensor(s.eos, device=dev)
    col = torch.arange(T, device=dev)
    pos_ids = col.expand(B, T)
    given = _cfg_given(x, amask.bool() & (x != mask), s)
    if s.cfg_scale > 0:
        amask, pos_ids = amask.repeat(2, 1), pos_ids.repeat(2, 1)
    kv = model.new_cache(amask.shape[0], T) if s.cache != "none" else None
    if amask.all():  # no padding: attention without a mask runs a faster kernel
        amask = None
    nfe, gstep = 0, 0
    for start, end, lo, hi in blocks:
        in_block = (col >= start[:, None]) & (col < end[:, None])
        window = (col >= lo[:, None]) & (col < hi[:, None])
        sched = None if s.parallel else \
            transfer_schedule(((x == mask) & in_block).sum(1), steps_per_block, s.stochastic_transfer, generator)
        cols = ((x == mask) & window).any(0).nonzero()
        if len(cols) == 0:
            continue
        # logits are needed on [wlo, whi) only; right-shift needs the one before too
        wlo, whi = int(cols[0]), int(cols[-1]) + 1
        fs = max(wlo - 1, 0) if s.right_shift_logits else wlo
        i = 0
        while True:
            cand = (x == mask) & window
            if (sched is not None and i >= sched.shape[1]) or (sched is None and not cand.any()):
                break
            inp = _cfg_rows(x, given, s)
            kw = dict(attention_mask=amask, causal=False, return_hidden=True)
            if s.cache == "none":  # exact: the whole canvas, every step
                h = model(inp, position_ids=pos_ids, logits_slice=slice(fs, whi), **kw)
            elif i == 0:  # refresh the cache with a full forward at block start (it is a step too)
                kv.length = 0
                h = model(inp, position_ids=pos_ids, cache=kv, cache_pos=0, append=True,
                          logits_slice=slice(fs, whi), **kw)
                if s.cache == "prefix":
                    kv.length = fs  # keep the prefix; the suffix is recomputed every step
            elif s.cache == "prefix":  # the block and everything after it, against the cached prefix
                h = model(inp[:, fs:], position_ids=pos_ids[:, fs:], cache=kv, cache_pos=fs,
                          logits_slice=slice(0, whi - fs), **kw)
            else:  # dual: only the block; the masked suffix's K/V stay as they were at block start
                h = model(inp[:, fs:whi], position_ids=pos_ids[:, fs:whi], cache=kv, cache_pos=fs, **kw)
            nfe += 1
            # h (R, whi - fs, C) covers columns [fs, whi). The LM head runs only where a token may be
            # committed; with right-shift the logit of column c-1 predicts token c (column 0: itself)
            cols = cand.any(0).nonzero()[:, 0]  # (n,)
            logits = _cfg_combine(model.lm_head(h[:, logit_rows(cols, s.right_shift_logits) - fs]), s)  # (B, n, V)
            x0, take = _unmask(logits, cols, cand, sched[:, i] if sched is not None else None, gstep, s, generator)
            x[:, cols] = torch.where(take[:, cols], x0, x[:, cols])  # take lies inside cols
            i, gstep = i + 1, gstep + 1
            if _after_step(gstep, x.gather(1, regions), history, on_step, s, eos_t):
                return nfe
    return nfe


def mdlm_generate(model, prompts, s, generator=None, on_step=None, return_history=False):
    """MDLM sampling. Canvas: prompt, then max_new_tokens masks; shorter rows padded with EOS
    (excluded by the attention mask), as the reference. The masks are split into blocks of
    block_size, each denoised in ceil(steps / num_blocks) steps. cache none is exact; prefix /
    dual are Fast-dLLM's approximate caches, refreshed at every block start."""
    dev = model.lm_head.weight.device
    t0 = _synced_time(dev)
    prompts = _with_bos(prompts, s.bos_token_id, s.right_shift_logits)
    N, bs = s.max_new_tokens, s.block_size
    lens = torch.tensor([len(p) for p in prompts], device=dev)
    T = int(lens.max()) + N
    x = _right_padded(prompts, T, s.eos[0], dev)
    col = torch.arange(T, device=dev)
    x[(col >= lens[:, None]) & (col < lens[:, None] + N)] = s.mask_token_id
    amask = (col < lens[:, None] + N).long()
    blocks = []
    for b in range(math.ceil(N / bs)):
        start = lens + b * bs
        # candidates: every mask left of this block's end (so a mask inside the prompt, too)
        blocks.append((start, torch.minimum(start + bs, lens + N), torch.zeros_like(lens), start + bs))
    regions = lens[:, None] + torch.arange(N, device=dev)
    history = [x.gather(1, regions).cpu()] if return_history else None
    nfe = _mdlm_loop(model, x, amask, blocks, regions, s, math.ceil(s.steps / len(blocks)), generator, on_step,
                     history)
    seqs = [trim(q, s.eos) if s.stop_at_eos else q for q in x.gather(1, regions).tolist()]
    return GenerateOutput(seqs, nfe, _synced_time(dev) - t0, history)


def infill(model, inputs, settings=None, generator=None, on_step=None, return_history=False, **kw):
    """Fill the mask tokens already inside `inputs`, never changing the known tokens.

    The whole (EOS right-padded) sequence is cut into blocks of block_size (default here: one
    block) filled left to right, MDLM style with bidirectional attention, whatever the
    checkpoint's objective. Returns the completed sequences (same lengths as the inputs).
    kw: Settings fields; method, cache, max_new_tokens and stop_at_eos do not apply."""
    s = replace(settings or Settings(block_size=0), **{**kw, "method": "mdlm", "cache": "none", "stop_at_eos": False})
    dev = model.lm_head.weight.device
    t0 = _synced_time(dev)
    inputs = _with_bos(inputs, s.bos_token_id, s.right_shift_logits)
    B = len(inputs)
    lens = torch.tensor([len(p) for p in inputs], device=dev)
    T = int(lens.max())
    s = replace(s, block_size=s.block_size or T).check()
    x = _right_padded(inputs, T, s.eos[0], dev)
    amask = (torch.arange(T, device=dev) < lens[:, None]).long()
    blocks = []
    for b in range(math.ceil(T / s.block_size)):
        start = torch.full_like(lens, b * s.block_size)
        end = torch.maximum(torch.minimum(start + s.block_size, lens), start)
        blocks.append((start, end, start, end))
    regions = torch.arange(T, device=dev).expand(B, T)
    history = [x.cpu()] if return_history else None
    nfe = _mdlm_loop(model, x, amask, blocks, regions, s, math.ceil(s.steps / len(blocks)), generator, on_step,
                     history)
    return GenerateOutput([row[:n] for row, n in zip(x.tolist(), lens.tolist())], nfe, _synced_time(dev) - t0,
                          history)


# -----------------------------------------------------------------------------
# BD3LM: block by block, block-causal attention, exact incremental KV cache


@torch.no_grad()
def bd3lm_generate(model, prompts, s, generator=None, on_step=None, return_history=False):
    """BD3LM sampling. Prompts are left-padded with pad_token_id to a multiple of block_size;
    padding is no key and takes no position (position ids count real tokens only). Block
    boundaries are physical canvas positions, and the prompt attends block-causally across
    them too. Stops once every row has an EOS in a finished block, as the reference does, even
    with stop_at_eos=False: later blocks would only follow an ended answer.

    exclude_pad_tokens=False (default): only the left padding is padding. True is the
    reference's rule: every token equal to pad_token_id is padding, wherever it is; where
    pad == eos (SmolLM2: <|im_end|>) that drops the chat prompt's own <|im_end|>s from
    attention, which the model saw in training. Both agree when the prompt holds no pad
    token (Qwen3 pads with <|endoftext|>, which its chat prompts never contain).

    cache="none": the exact cache. The prompt's K/V once, then each step runs only the current
    block against the cache; a finished block's K/V are written by the next block's first step
    (no extra pass), so NFE = steps. cache="recompute": the reference's method, the whole prefix
    re-run at every block and a fresh copy of its cache every step (the baseline of the benches)."""
    dev = model.lm_head.weight.device
    t0 = _synced_time(dev)
    eos_t = torch.tensor(s.eos, device=dev)
    pad = s.eos[0] if s.pad_token_id is None else s.pad_token_id
    mask, bs, N, recompute = s.mask_token_id, s.block_size, s.max_new_tokens, s.cache == "recompute"
    prompts = _with_bos(prompts, s.bos_token_id, s.right_shift_logits)
    B = len(prompts)
    P = math.ceil(max(len(p) for p in prompts) / bs) * bs
    x = torch.full((B, P + N), mask, dtype=torch.long, device=dev)
    x[:, :P] = pad
    for j, p in enumerate(prompts):
        if p:
            x[j, P - len(p):P] = torch.tensor(p, dtype=torch.long)
    valid = torch.zeros((B, P + N), dtype=torch.bool, device=dev)  # may be a key / counts as a position
    valid[:, :P] = x[:, :P] != pad
    if not s.exclude_pad_tokens:
        valid[:, :P] = torch.arange(P, device=dev) >= P - torch.tensor([len(p) for p in prompts], device=dev)[:, None]
    blk = torch.arange(P + N, device=dev) // bs
    given = _cfg_given(x, valid & (x != mask), s)
    R = 2 * B if s.cfg_scale > 0 else B  # rows through the network
    rows = (lambda t: t.repeat(2, *[1] * (t.dim() - 1))) if R > B else (lambda t: t)  # (B, ...) -> (R, ...)

    def final_view(a, Lc):
        # queries [a, Lc) as final tokens, keys [0, Lc): block-causal, padding neither key nor query,
        # positions counting real tokens -> mask (B, 1, Lc-a, Lc), position ids (B, Lc-a)
        v = valid[:, :Lc]
        am = (blk[a:Lc, None] >= blk[None, :Lc]) & v[:, None, a:Lc, None] & v[:, None, None, :]
        return am, ((v.cumsum(1) - 1).clamp(min=0) * v)[:, a:Lc]

    num_blocks = math.ceil(N / bs)
    spb = math.ceil(s.steps / num_blocks)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    history = [x[:, P:].to("cpu", copy=True)] if return_history else None
    nfe, gstep, end, stop = 0, 0, P, False
    # [0, committed) of the cache holds final K/V. What lies between committed and the current
    # block (the prompt, then each finished block) rides along with the block's first step: one
    # forward writes its K/V and denoises, and `last` (right-shift) comes out of the same pass.
    kv = model.new_cache(R, P + N) if not recompute else None
    committed, last = 0, None
    for b in range(num_blocks):
        if done.all() or stop:
            break
        Lc, L = P + b * bs, min(bs, N - b * bs)
        if recompute:  # the reference: the whole prefix into a fresh cache, every block
            kv, last = _recompute_prefix(model, _cfg_rows(x[:, :Lc], given[:, :Lc], s), final_view, R, Lc, L, rows)
            nfe += Lc > 0
        # the block's queries: all masks at block start, so all valid; positions follow the prefix
        pos_b = valid[:, :Lc].sum(1, keepdim=True) + torch.arange(L, device=dev)
        am_b = torch.cat([valid[:, None, None, :Lc].expand(B, 1, L, Lc),
                          torch.ones((B, 1, L, L), dtype=torch.bool, device=dev)], -1)  # (B, 1, L, Lc+L)
        sched = None if s.parallel else transfer_schedule(torch.full((B,), L), spb, s.stochastic_transfer, generator)
        i = 0
        while True:
            x_blk = x[:, Lc:Lc + L]
            masked = x_blk == mask
            if not masked.any() or (sched is not None and i >= sched.shape[1]):
                break
            a, am, pos, step_kv = Lc, am_b, pos_b, kv
            if not recompute and committed < Lc:  # ride-along: [committed, Lc) as final tokens
                a = committed
                am_f, pos_f = final_view(a, Lc)
                am_f = torch.cat([am_f, am_f.new_zeros((B, 1, Lc - a, L))], -1)  # finished rows never see the block
                am, pos = torch.cat([am_f, am_b], 2), torch.cat([pos_f, pos_b], 1)
            if recompute:  # the reference deep-copies its prefix cache every step
                step_kv = model.new_cache(R, Lc + L)
                step_kv.k.copy_(kv.k)
                step_kv.v.copy_(kv.v)
                step_kv.length = kv.length
            h = model(_cfg_rows(x[:, a:Lc + L], given[:, a:Lc + L], s), attention_mask=rows(am),
                      position_ids=rows(pos), causal=False, cache=step_kv, cache_pos=a, return_hidden=True)
            nfe += 1
            if a < Lc:
                kv.length = committed = Lc  # commit the ride-along rows only
                last = model.lm_head(h[:, Lc - a - 1:Lc - a]) if s.right_shift_logits else None
                h = h[:, Lc - a:]  # (R, L, C)
            # the LM head only where a mask is left; with right-shift the logit of position c-1
            # predicts token c, and the block's first token comes from the prefix's last logit
            cols = masked.any(0).nonzero()[:, 0] if not recompute else torch.arange(L, device=dev)  # (n,)
            logits = model.lm_head(h[:, logit_rows(cols, s.right_shift_logits)])  # (R, n, V)
            if s.right_shift_logits and cols[0] == 0:
                logits[:, :1] = last
            x0, take = _unmask(_cfg_combine(logits, s), cols, masked, sched[:, i] if sched is not None else None,
                               gstep, s, generator)
            x_blk[:, cols] = torch.where(take[:, cols], x0, x_blk[:, cols])  # x_blk is a view of x
            i, gstep = i + 1, gstep + 1
            if _after_step(gstep, x[:, P:], history, on_step, s, eos_t):
                stop = True
                break
        end = Lc + L
        valid[:, Lc:end] = (x[:, Lc:end] != pad) if s.exclude_pad_tokens else True
        done |= torch.isin(x[:, Lc:end], eos_t).any(1)
    seqs = [trim(q, s.eos) if s.stop_at_eos else q for q in x[:, P:end].tolist()]
    return GenerateOutput(seqs, nfe, _synced_time(dev) - t0, history)


def _recompute_prefix(model, inp, final_view, R, Lc, L, rows):
    """The reference's per-block prefix pass (cache="recompute"): the whole prefix [0, Lc) into a
    fresh cache, with the LM head on every row as its HF forward does -> (cache, last logit)."""
    kv = model.new_cache(R, Lc + L)
    if Lc == 0:
        return kv, None
    am, pos = final_view(0, Lc)
    out = model(inp, attention_mask=rows(am), position_ids=rows(pos), causal=False, cache=kv, cache_pos=0, append=True)
    return kv, out[:, -1:]


def generate(model, prompts, settings=None, *, generator=None, on_step=None, return_history=False, **kw):
    """Sample completions for a batch of prompts (token id lists, any lengths) -> GenerateOutput.

    settings: a Settings (default: its defaults); kw: any of its fields, which win (so
    generate(model, prompts, **defaults_from_load, steps=64) works). generator: a torch.Generator
    on the model's device; on_step(step, region (B, W)) after every step; return_history: the
    answer region after every step."""
    if not prompts:
        raise ValueError("prompts is empty")
    s = replace(settings or Settings(), **kw).check()
    if s.mask_token_id is None or not s.eos:
        raise ValueError("mask_token_id and eos_token_id are required (sample.load reads them from the checkpoint)")
    sampler = mdlm_generate if s.method == "mdlm" else bd3lm_generate
    return sampler(model, prompts, s, generator, on_step, return_history)


# -----------------------------------------------------------------------------
# command line


def read_prompts(prompt, prompt_file):
    """-> a list of prompts: strings, or message lists (jsonl "messages")."""
    if prompt:
        return [prompt]
    if prompt_file:
        if not os.path.isfile(prompt_file):
            raise SystemExit(f"error: --prompt_file {prompt_file!r} does not exist")
        with open(prompt_file) as f:
            lines = [line.rstrip("\n") for line in f]
        if not prompt_file.endswith(".jsonl"):
            return [line for line in lines if line.strip()]
        items = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"error: {prompt_file}:{i} is not valid JSON ({e.msg})")
            if isinstance(d, dict) and isinstance(d.get("messages"), list):
                items.append(d["messages"])
            elif isinstance(d, dict) and isinstance(d.get("prompt"), str):
                items.append(d["prompt"])
            else:
                raise SystemExit(f'error: {prompt_file}:{i} needs a "prompt" string or a "messages" list')
        return items
    if sys.stdin.isatty():
        raise SystemExit("error: no prompts. Pass --prompt=TEXT, --prompt_file=FILE (.txt, one per line, or .jsonl "
                         "with prompt or messages), or pipe prompts on stdin, one per line")
    return [line.rstrip("\n") for line in sys.stdin if line.strip()]


def chat_ids(tok, messages):
    # render, then tokenize: apply_chat_template(tokenize=True) returns ids in transformers 4 but
    # a dict in 5; the template already holds every special token. Thinking off, as in training,
    # whatever the checkpoint's template defaults to
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    return tok(text, add_special_tokens=False).input_ids


def encode(tok, item, chat_template):
    """A prompt string (or a message list) -> token ids."""
    if isinstance(item, list) or chat_template:
        if not tok.chat_template:
            raise SystemExit("error: this tokenizer has no chat template; pass --chat_template=False")
        return chat_ids(tok, item if isinstance(item, list) else [{"role": "user", "content": item}])
    return tok(item, add_special_tokens=False).input_ids


def main(given):
    """given: the options set on the command line (configure's answer): those settings win over the
    checkpoint's defaults (method, block size, token ids, right shift), which win over Settings'."""
    from tqdm import tqdm
    if not model_name_or_path:
        raise SystemExit("error: --model_name_or_path is required (a checkpoint dir written by convert.py or train.py)")
    if batch_size < 1:
        raise SystemExit(f"error: --batch_size must be >= 1, got {batch_size}")
    cli = Settings(**{k: globals()[k] for k in SETTINGS})
    try:
        cli.check()  # before the model loads: a bad value fails at once
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    items = read_prompts(prompt, prompt_file)
    if not items:
        raise SystemExit("error: no prompts found (empty --prompt_file or stdin)")
    try:
        model, tok, d = load(model_name_or_path, dtype=dtype or None, device=device or None)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    s = replace(cli, **{k: v for k, v in d.items() if k not in given})
    limit = max_length or model.config.max_position_embeddings
    budget = limit - s.max_new_tokens
    if budget < 1:
        raise SystemExit(f"error: --max_new_tokens={s.max_new_tokens} leaves no room for a prompt in the context "
                         f"of {limit} tokens; lower it")
    ids = []
    for i, item in enumerate(items):
        p = encode(tok, item, chat_template)
        if len(p) > budget:
            print(f"warning: prompt {i} has {len(p)} tokens, more than the {budget} that fit before "
                  f"{s.max_new_tokens} new ones in a context of {limit}; truncated from the left", file=sys.stderr)
            p = p[-budget:]
        ids.append(p)
    torch.manual_seed(seed)
    gen = torch.Generator(device=model.lm_head.weight.device).manual_seed(seed)
    batches = [list(range(i, min(i + batch_size, len(ids)))) for i in range(0, len(ids), batch_size)]
    num_blocks = math.ceil(s.max_new_tokens / s.block_size)
    # a block takes at most block_size steps when threshold / factor decide
    per_batch = num_blocks * (s.block_size if s.parallel else math.ceil(s.steps / num_blocks))
    bar = tqdm(total=len(batches) * per_batch, unit="step", file=sys.stderr, disable=None, leave=False)
    out_f = open(output, "w") if output else None
    n_tok, n_fe, secs = 0, 0, 0.0
    for bi, batch in enumerate(batches):
        try:
            res = generate(model, [ids[i] for i in batch], s, generator=gen, on_step=lambda *_: bar.update(1))
        except ValueError as e:
            raise SystemExit(f"error: {e}")
        bar.n = (bi + 1) * per_batch
        bar.refresh()
        n_fe, secs = n_fe + res.nfe, secs + res.seconds
        for i, seq in zip(batch, res.sequences):
            n_tok += len(seq)
            text = tok.decode(seq, skip_special_tokens=True)
            if out_f:
                out_f.write(json.dumps(dict(prompt=items[i], completion=text, prompt_ids=ids[i], completion_ids=seq,
                                            nfe=res.nfe, seconds=round(res.seconds, 4))) + "\n")
            else:
                print(text if len(ids) == 1 else f"{text}\n{'-' * 40}", flush=True)
    bar.close()
    if out_f:
        out_f.close()
    print(f"{len(ids)} prompt(s), {n_tok} tokens, {n_fe} forward passes, {secs:.1f}s "
          f"({n_tok / max(secs, 1e-9):.1f} tokens/s, {s.method}, {str(model.lm_head.weight.dtype)[6:]})"
          + (f" -> {output}" if output else ""),
          file=sys.stderr)


if __name__ == "__main__":
    from configurator import configure
    main(configure(globals()))
