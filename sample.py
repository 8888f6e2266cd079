"""
Sample from an A2D diffusion LM.

    python sample.py --model_name_or_path=DIR --prompt="Lebron James is" --chat_template=False
    python sample.py --model_name_or_path=DIR --prompt_file=prompts.jsonl --output=out.jsonl --batch_size=8
    echo "What is 7 * 6?" | python sample.py --model_name_or_path=DIR --method=mdlm --threshold=0.9

The answer starts as masks and is denoised block by block, left to right: each step proposes a token for every mask
of the block and commits the most confident. MDLM (LLaDA style) attends to the whole canvas; BD3LM block-causally, so a
finished block never changes and its K/V are cached exactly. At temperature 0 both give the tokens of dLLM's
MDLMSampler / BD3LMSampler. Ours: BD3LM's incremental KV cache (the reference, like bench/reference_sampler.py, re-runs
the prefix every block), Fast-dLLM's approximate prefix / dual caches for MDLM, threshold / factor parallel decoding.
"""

import itertools
import json
import math
import os
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

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


@dataclass
class Settings:
    """The sampler settings: generate()'s keywords, sample.py / chat.py options, chat's /set keys, eval's model_args."""
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
    verify: bool = False  # bd3lm, context_causal + right shift: diffusion drafts, causal rows check them (AR greedy)
    cache: str = "none"  # mdlm: none (exact) | prefix | dual (approximate); bd3lm: none | exact (its cache is exact)
    stop_at_eos: bool = False  # trim at the first EOS, and stop once every answer has ended
    eos_suppress_steps: int = 0  # no EOS proposed in the first n steps
    right_shift_logits: bool = False  # Dream-style: the logit at i predicts token i+1
    context_causal: bool = False  # bd3lm: final tokens attend causally, as a context_causal checkpoint trained
    exclude_pad_tokens: bool = False  # bd3lm: every pad-id token is padding (the reference's rule)
    mask_token_id: int | None = None  # the checkpoint's, as are the ids below (load() reads them)
    eos_token_id: int | list | None = None  # an int or a list: any of them ends an answer
    pad_token_id: int | None = None  # bd3lm's left padding (default: the first EOS)
    bos_token_id: int | None = None  # stands in for an empty prompt under right shift

    def check(self):
        """Raise ValueError for a value the samplers refuse (generate checks the token ids)."""
        caches = {"mdlm": ("none", "prefix", "dual"), "bd3lm": ("none", "exact")}
        if self.method not in caches:
            raise ValueError(f"unknown method {self.method!r}; choose mdlm or bd3lm")
        ok = caches[self.method]
        for bad, message in [
            (self.cache not in ok, f"unknown cache {self.cache!r} for {self.method}; "
                                   f"choose {', '.join(ok[:-1])} or {ok[-1]}"),
            (self.remasking not in ("low_confidence", "random"),
             f"unknown remasking {self.remasking!r}; choose low_confidence or random"),
            *((getattr(self, k) < 1, f"{k} must be >= 1, got {getattr(self, k)}")
              for k in ("max_new_tokens", "steps", "block_size")),
            (self.threshold is not None and self.factor is not None, "set threshold or factor, not both"),
            (self.threshold is not None and not 0 < self.threshold <= 1,
             f"threshold must be in (0, 1], got {self.threshold}"),
            (self.factor is not None and self.factor <= 0, f"factor must be > 0, got {self.factor}"),
            (self.temperature < 0, f"temperature must be >= 0, got {self.temperature}"),
            (self.verify and not (self.method == "bd3lm" and self.context_causal and self.right_shift_logits and
                                  self.temperature == 0 and self.cfg_scale == 0), "verify=True is greedy BD3LM "
             "decoding (temperature 0, no cfg) of a checkpoint trained with context_causal and right_shift_logits"),
        ]:
            if bad:
                raise ValueError(message)
        return self

    @property
    def eos(self):  # eos_token_id as a list
        e = self.eos_token_id
        return [t for t in (e if isinstance(e, (list, tuple)) else [e]) if t is not None]

    @property
    def pad(self):
        return self.eos[0] if self.pad_token_id is None else self.pad_token_id

    @property
    def parallel(self):  # threshold / factor: the confidences decide how many tokens a step commits
        return self.threshold is not None or self.factor is not None


SETTINGS = {f.name: f.default for f in fields(Settings)}
globals().update(SETTINGS, stop_at_eos=True)  # the options; on the command line an answer ends at its EOS


def load(model_name_or_path, dtype=None, device=None):
    """A checkpoint dir (or hub id) -> (model, tokenizer, defaults): the sampler keywords the checkpoint decides
    (method, block_size, the token ids (EOS: a list), right shift, context_causal) for generate(..., **defaults)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(dtype, str):
        if dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"unknown dtype {dtype!r}; choose bfloat16, float16 or float32")
        dtype = getattr(torch, dtype)
    path = resolve_model_dir(model_name_or_path)
    model = Model.from_pretrained(path, dtype=dtype or default_dtype(device)[0], device=device)
    import transformers  # here, not at the top: it takes seconds to import
    tok = transformers.AutoTokenizer.from_pretrained(path)
    c = model.config
    if not c.is_a2d:
        print(f"warning: {path} is a plain {c.model_type} checkpoint, not an A2D one: sampled as a diffusion LM it "
              f"gives noise. Convert it first: python convert.py --model_name_or_path={path}", file=sys.stderr)
    ids = special_ids(c, tok)
    if ids["mask"] is None:
        raise ValueError(f"{path} has no mask token (config.json mask_token_id or tokenizer mask_token); "
                         f"make the checkpoint with convert.py")
    if not ids["eos"]:
        raise ValueError(f"{path} defines no eos token (tokenizer eos_token or config.json eos_token_id)")
    return model, tok, dict(method=c.objective if c.objective in ("mdlm", "bd3lm") else "bd3lm",
                            block_size=c.block_size or 32, right_shift_logits=bool(c.right_shift_logits),
                            context_causal=bool(c.context_causal), mask_token_id=ids["mask"],
                            eos_token_id=ids["eos"], pad_token_id=ids["pad"], bos_token_id=ids["bos"])


# -----------------------------------------------------------------------------
# what both samplers share: how many to unmask, what to propose, which to commit, guidance
def transfer_schedule(n_masked, steps, stochastic=False, generator=None):
    """Masked counts (B,) -> tokens to unmask per step (B, S <= steps), zero-padded: n_left * p rounded half to even
    (or a binomial draw). Steps that unmask nothing are dropped: the model ignores t, so they would redo a forward."""
    # p = P(unmask | masked) from t = k/K to (k-1)/K, 1/k for the linear alpha, in float32 as in the reference's
    # scheduler: its rounding decides the x.5 ties below (3 masks, 6 steps: 3 * 0.16666669 rounds to 1, not 0).
    a = alpha(torch.tensor([k / steps for k in range(steps, -1, -1)], dtype=torch.float32))  # t = 1 .. 0
    probs = [1 - r for r in ((1 - a[1:]) / (1 - a[:-1])).tolist()]
    rows = []
    for n in n_masked.tolist():
        row = []
        for p in probs:
            if n == 0:
                break
            if stochastic:
                dev = generator.device if generator is not None else "cpu"
                c = int(torch.binomial(torch.tensor([float(n)], device=dev), torch.tensor([p], device=dev),
                                       generator=generator).item())
            else:
                c = round(n * p)  # python's round is half-to-even, as torch.round
            n -= c
            if c > 0:
                row.append(c)
        rows.append(row)
    S = max((len(r) for r in rows), default=0)
    return torch.tensor([r + [0] * (S - len(r)) for r in rows], dtype=torch.long).view(len(rows), S)


def _counts(n_masked, steps, s, generator):
    # per step, each row's unmask count (B,); None (the confidences decide: threshold / factor) until the masks run out
    return itertools.repeat(None) if s.parallel else \
        transfer_schedule(n_masked, steps, s.stochastic_transfer, generator).T


def select(conf, k=None, threshold=None, factor=None):
    """conf (B, W), -inf where a position may not change -> bool (B, W): commit now. Schedule: the k[j] most confident.
    threshold: every candidate with conf >= threshold. factor: the top n, for the largest n with (n+1)(1 - conf_n) <=
    factor (conf_n the n-th best; the left side grows with n). threshold / factor commit at least the best candidate."""
    B, W = conf.shape
    cand = conf > -torch.inf
    take = torch.zeros_like(cand)
    if threshold is None and factor is None:
        n = cand.sum(1).tolist()  # one device sync, not one per row
        for j in range(B):
            take[j, torch.topk(conf[j], min(int(k[j]), n[j])).indices] = True
        return take
    srt, idx = conf.sort(-1, descending=True)  # either rule commits a prefix of this ranking
    n = torch.arange(1, W + 1, device=conf.device)
    ok = (srt >= threshold) if threshold is not None else ((n + 1) * (1 - srt) <= factor)
    take = take.scatter(1, idx, n[None] <= ok.long().cumprod(-1).sum(-1, keepdim=True))
    best = torch.zeros_like(cand).scatter(1, conf.argmax(-1, keepdim=True), True)
    return (take | best) & cand


def _unmask(region, logits, cols, cand, k, step, s, generator):
    """One denoising decision, the same in both samplers: a proposal and its confidence for each column
    cols (n,) from its logits (B, n, V), the chosen committed into region (B, W) in place. cand (B, W): the
    masks that may be committed now; k: this step's counts from _counts; step: the steps before this one."""
    # never propose <|mask|> itself: committed, it would stay a hole forever (and with a
    # threshold, loop forever). The reference allows it; a trained model never picks it.
    banned = [s.mask_token_id, *(s.suppress_tokens or []), *(s.eos if step < s.eos_suppress_steps else [])]
    logits[..., banned] = -torch.inf
    if s.temperature > 0:  # Gumbel-max in float64 (low precision Gumbel hurts generation, arXiv:2409.02908)
        u = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
        x0 = (logits.double().exp() / (-torch.log(u)) ** s.temperature).argmax(-1)  # (B, n)
    else:
        x0 = logits.argmax(-1)
    if s.begin_suppress_tokens:  # as in the reference: after the proposal, so it only lowers the confidence
        logits[..., s.begin_suppress_tokens] = -torch.inf
    if s.remasking == "low_confidence":
        conf = logits.softmax(-1).gather(-1, x0[..., None]).squeeze(-1)  # (B, n)
    else:  # random
        conf = torch.rand(x0.shape, device=x0.device, generator=generator)
    # full-width rows, -inf outside the candidates: the reference ranks exactly these rows
    conf_full = torch.full(cand.shape, -torch.inf, dtype=conf.dtype, device=conf.device)
    conf_full[:, cols] = conf
    take = select(conf_full.masked_fill(~cand, -torch.inf), k, s.threshold, s.factor)
    region[:, cols] = torch.where(take[:, cols], x0, region[:, cols])


def _reporter(s, on_step, history, dev):
    """-> report(step, answers (B, W)), for after every step: it feeds history and on_step, and says whether to stop:
    under stop_at_eos once every answer has an EOS with no mask before it, since nothing after that EOS is kept."""
    eos = torch.tensor(s.eos, device=dev)

    def report(step, answers):
        if history is not None:
            history.append(answers.to("cpu", copy=True))
        if on_step is not None:
            on_step(step, answers)
        if not s.stop_at_eos:
            return False
        is_eos = torch.isin(answers, eos)
        first = (is_eos | (answers == s.mask_token_id)).long().argmax(1)  # the first EOS or mask
        return bool(is_eos.gather(1, first[:, None]).all())
    return report


def trim(ids, eos):  # ids up to the first EOS
    return next((ids[:i] for i, t in enumerate(ids) if t in eos), ids)


@dataclass
class GenerateOutput:
    sequences: list  # list[list[int]]: completion ids per prompt (no prompt, no padding)
    nfe: int  # forward passes of the network
    seconds: float  # wall time of the call
    history: list | None = None  # (B, W) answers after every step, the first entry before any


def _with_bos(prompts, s):
    # under right shift the prompt's last logit predicts the first answer token: an empty prompt starts with BOS
    prompts = [p.tolist() if isinstance(p, torch.Tensor) else list(p) for p in prompts]
    if not s.right_shift_logits or all(prompts):
        return prompts
    if s.bos_token_id is None:
        raise ValueError("right_shift_logits with an empty prompt needs bos_token_id")
    return [p or [s.bos_token_id] for p in prompts]


def _cfg_rows(x, given, s):
    """(B, n) -> (R, n): under CFG the unconditional rows follow, the given tokens masked but cfg_keep_tokens."""
    if s.cfg_scale == 0:
        return x
    if s.cfg_keep_tokens:
        given = given & ~torch.isin(x, torch.tensor(s.cfg_keep_tokens, device=x.device))
    return torch.cat([x, torch.where(given, s.mask_token_id, x)])


def _cfg_twice(t, s):  # (B, ...) -> (R, ...): what both halves share
    return t.repeat(2, *[1] * (t.dim() - 1)) if s.cfg_scale > 0 else t


def _cfg_combine(logits, s):  # (R, n, V) -> (B, n, V): un + (w + 1) (cond - un)
    if s.cfg_scale == 0:
        return logits
    cond, un = logits.chunk(2)
    return un + (s.cfg_scale + 1) * (cond - un)


def _synced_time(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


# -----------------------------------------------------------------------------
# MDLM: the whole canvas, denoised block by block with bidirectional attention
@torch.no_grad()
def _mdlm(model, rows, blocks, answers, s, generator, on_step, return_history):
    """Denoise the masks in rows (token id lists) -> GenerateOutput, the sequences the columns answers (B, W). Canvas
    x (B, T): the rows, right-padded with EOS that attention ignores, as in the reference. blocks: (start, end, lo, hi)
    (B,) per block: the schedule counts masks in [start, end); those in [lo, hi) are candidates. One forward a step."""
    dev = model.lm_head.weight.device
    t0 = _synced_time(dev)
    B, T, mask = len(rows), max(len(r) for r in rows), s.mask_token_id
    x = torch.full((B, T), s.eos[0], dtype=torch.long, device=dev)
    for j, r in enumerate(rows):
        x[j, :len(r)] = torch.tensor(r, dtype=torch.long)
    col = torch.arange(T, device=dev)
    amask = (col < torch.tensor([len(r) for r in rows], device=dev)[:, None]).long()
    given = amask.bool() & (x != mask)
    amask, pos_ids = _cfg_twice(amask, s), _cfg_twice(col.expand(B, T), s)
    kv = model.new_cache(amask.shape[0], T) if s.cache != "none" else None
    kw = dict(attention_mask=None if amask.all() else amask, causal=False, return_hidden=True)  # no mask: faster kernel
    history = [x.gather(1, answers).cpu()] if return_history else None
    report = _reporter(s, on_step, history, dev)
    steps_per_block, step, stop = math.ceil(s.steps / len(blocks)), 0, False
    for start, end, lo, hi in blocks:
        if stop:
            break
        window = (col >= lo[:, None]) & (col < hi[:, None])
        in_block = (col >= start[:, None]) & (col < end[:, None])
        counts = _counts(((x == mask) & in_block).sum(1), steps_per_block, s, generator)
        open_cols = ((x == mask) & window).any(0).nonzero()
        if len(open_cols) == 0:
            continue
        # only rows [fs, whi) need logits: fs predicts the first open column (under right shift it is the column before)
        fs, whi = int(logit_rows(open_cols[0], s.right_shift_logits)), int(open_cols[-1]) + 1
        for i, k in enumerate(counts):
            cand = (x == mask) & window
            if k is None and not cand.any():
                break
            inp = _cfg_rows(x, given, s)
            if kv is None or i == 0:  # the whole canvas: exact, or at a block start (re)writing the cache
                h = model(inp, position_ids=pos_ids, cache=kv, cache_pos=0, append=True,
                          logits_slice=slice(fs, whi), **kw)
                if s.cache == "prefix":
                    kv.commit(fs)  # keep the prefix; the rest is recomputed every step
            elif s.cache == "prefix":  # the block and everything after it, against the cached prefix
                h = model(inp[:, fs:], position_ids=pos_ids[:, fs:], cache=kv, cache_pos=fs,
                          logits_slice=slice(0, whi - fs), **kw)
            else:  # dual: only the block; what follows it keeps its K/V from the block start
                h = model(inp[:, fs:whi], position_ids=pos_ids[:, fs:whi], cache=kv, cache_pos=fs, **kw)
            # h (R, whi - fs, C): the columns [fs, whi). The LM head only where a token may be committed
            cols = cand.any(0).nonzero()[:, 0]  # (n,)
            logits = _cfg_combine(model.lm_head(h[:, logit_rows(cols, s.right_shift_logits) - fs]), s)
            _unmask(x, logits, cols, cand, k, step, s, generator)
            step += 1
            if stop := report(step, x.gather(1, answers)):
                break
    seqs = [trim(q, s.eos) if s.stop_at_eos else q for q in x.gather(1, answers).tolist()]
    return GenerateOutput(seqs, step, _synced_time(dev) - t0, history)


def mdlm_generate(model, prompts, s, generator=None, on_step=None, return_history=False):
    """MDLM sampling: prompt + max_new_tokens masks, in blocks of block_size of ceil(steps / num_blocks) steps each."""
    prompts = _with_bos(prompts, s)
    N, bs, dev = s.max_new_tokens, s.block_size, model.lm_head.weight.device
    lens = torch.tensor([len(p) for p in prompts], device=dev)
    # a block's candidates are all the masks left of its end (so one inside the prompt, too)
    starts = [lens + b * bs for b in range(math.ceil(N / bs))]
    blocks = [(start, torch.minimum(start + bs, lens + N), torch.zeros_like(lens), start + bs) for start in starts]
    answers = lens[:, None] + torch.arange(N, device=dev)  # (B, N): the masks' columns
    rows = [p + [s.mask_token_id] * N for p in prompts]
    return _mdlm(model, rows, blocks, answers, s, generator, on_step, return_history)


def infill(model, inputs, settings=None, generator=None, on_step=None, return_history=False, **kw):
    """Fill the masks in `inputs` -> GenerateOutput, sequences as long as the inputs: MDLM whatever the checkpoint's
    objective, block_size blocks (default: one). kw: Settings fields but method, cache, max_new_tokens, stop_at_eos."""
    s = replace(settings or Settings(block_size=0), **{**kw, "method": "mdlm", "cache": "none", "stop_at_eos": False})
    inputs = _with_bos(inputs, s)
    lens = torch.tensor([len(p) for p in inputs], device=model.lm_head.weight.device)
    T = int(lens.max())
    s = replace(s, block_size=s.block_size or T).check()
    # (start, end) twice: the schedule counts the block's own masks, and those are the candidates
    blocks = [(torch.full_like(lens, a), lens.clamp(max=a + s.block_size)) * 2 for a in range(0, T, s.block_size)]
    answers = torch.arange(T, device=lens.device).expand(len(inputs), T)  # every column
    out = _mdlm(model, inputs, blocks, answers, s, generator, on_step, return_history)
    out.sequences = [row[:n] for row, n in zip(out.sequences, lens.tolist())]
    return out


# -----------------------------------------------------------------------------
# BD3LM: block by block, block-causal attention, an exact KV cache
def _bd3lm_canvas(prompts, s, dev):
    """-> canvas x (B, P + N): the prompts left-padded to P, a multiple of block_size (so blocks are canvas positions),
    then N masks; valid (B, P + N): the real tokens, the only keys and positions counted; and P. Padding is the left
    padding, or under exclude_pad_tokens (the reference's rule) every pad token. Where pad == eos (SmolLM2: <|im_end|>)
    that rule hides the chat prompt's own <|im_end|>s, which the model saw in training; Qwen3's prompts hold no pad."""
    prompts = _with_bos(prompts, s)
    P = math.ceil(max(len(p) for p in prompts) / s.block_size) * s.block_size
    x = torch.full((len(prompts), P + s.max_new_tokens), s.mask_token_id, dtype=torch.long, device=dev)
    x[:, :P] = s.pad
    for j, p in enumerate(prompts):
        x[j, P - len(p):P] = torch.tensor(p, dtype=torch.long)
    valid = torch.ones_like(x, dtype=torch.bool)  # the answer: masks now, real tokens when committed
    lens = torch.tensor([len(p) for p in prompts], device=dev)
    valid[:, :P] = (x[:, :P] != s.pad) if s.exclude_pad_tokens else torch.arange(P, device=dev) >= P - lens[:, None]
    return x, valid, P


def _block_causal(valid, a, hi, block_size, causal_below=0):
    """Queries [a, hi) against keys [0, hi) -> attention mask (B, 1, hi - a, hi) and position ids (B, hi - a). A query
    sees its own block and the blocks before it; one below causal_below (a final token, under context_causal) only the
    keys up to itself. Padding is no key and takes no position, so a row attends and counts as if it had none."""
    v = valid[:, :hi]
    q, k = torch.arange(a, hi, device=v.device)[:, None], torch.arange(hi, device=v.device)
    am = (q // block_size >= k // block_size) & ((q >= causal_below) | (k <= q))  # (hi - a, hi)
    am = am & v[:, None, a:, None] & v[:, None, None, :]
    return am, ((v.cumsum(1) - 1).clamp(min=0) * v)[:, a:]


@torch.no_grad()
def bd3lm_generate(model, prompts, s, generator=None, on_step=None, return_history=False):
    """BD3LM sampling with an exact KV cache, of final tokens only: a step runs just the current block against it. Final
    tokens enter the cache riding along with the next step, which writes their K/V as it denoises: the prompt with the
    first block's first step, each finished block with the next block's; so NFE = steps."""
    dev = model.lm_head.weight.device
    t0 = _synced_time(dev)
    x, valid, P = _bd3lm_canvas(prompts, s, dev)
    B, bs, N, mask = len(x), s.block_size, s.max_new_tokens, s.mask_token_id
    given = valid & (x != mask)
    history = [x[:, P:].to("cpu", copy=True)] if return_history else None
    report, eos = _reporter(s, on_step, history, dev), torch.tensor(s.eos, device=dev)
    kv = model.new_cache(2 * B if s.cfg_scale > 0 else B, P + N)
    num_blocks, step, stop, hi, last = math.ceil(N / bs), 0, False, P, None
    for b in range(num_blocks):
        if stop or torch.isin(x[:, P:hi], eos).any(1).all():  # all ended: the reference stops too, whatever stop_at_eos
            break
        lo, hi = P + b * bs, min(P + (b + 1) * bs, P + N)  # the block
        a = lo - bs if b else 0  # the first query row: the final tokens not yet cached ride along
        am, pos = _block_causal(valid, a, hi, bs, lo if s.context_causal else 0)
        for k in _counts(torch.full((B,), hi - lo), math.ceil(s.steps / num_blocks), s, generator):
            masked = x[:, lo:hi] == mask
            if not masked.any():
                break
            h = model(_cfg_rows(x[:, a:hi], given[:, a:hi], s), attention_mask=_cfg_twice(am, s),
                      position_ids=_cfg_twice(pos, s), causal=False, cache=kv, cache_pos=a, return_hidden=True)
            if a < lo:  # the riders' K/V are cached for good; from now on only the block's rows run
                kv.commit(lo)
                last = model.lm_head(h[:, lo - a - 1:lo - a]) if s.right_shift_logits else None
                h, am, pos, a = h[:, lo - a:], am[:, :, lo - a:], pos[:, lo - a:], lo
            # the LM head only where a mask is left; right shift: the block's first token from the prefix's last logit
            cols = masked.any(0).nonzero()[:, 0]  # (n,)
            logits = model.lm_head(h[:, logit_rows(cols, s.right_shift_logits)])  # (R, n, V)
            if s.right_shift_logits and cols[0] == 0:
                logits[:, :1] = last
            _unmask(x[:, lo:hi], _cfg_combine(logits, s), cols, masked, k, step, s, generator)
            step += 1
            if stop := report(step, x[:, P:]):
                break
        if s.exclude_pad_tokens:  # the reference's rule: its pad tokens are padding from now on
            valid[:, lo:hi] = x[:, lo:hi] != s.pad
    seqs = [trim(q, s.eos) if s.stop_at_eos else q for q in x[:, P:hi].tolist()]
    return GenerateOutput(seqs, step, _synced_time(dev) - t0, history)


@torch.no_grad()
def verify_generate(model, prompts, s, generator=None, on_step=None, return_history=False):
    """The AR model inside a context_causal, right-shifted BD3LM, decoding greedily several tokens a forward (as TiDAR).
    A forward runs the tokens not yet cached as causal rows, whose logits are the AR model's next tokens, and after them
    a block of masks, whose rows draft the next block. The AR rows check the drafts they run on: the longest confirmed
    run is kept, plus the AR token after it. The answer is the model's greedy AR one; the drafts only make it faster."""
    dev = model.lm_head.weight.device
    t0 = _synced_time(dev)
    B, N, bs, mask = len(prompts), s.max_new_tokens, s.block_size, s.mask_token_id
    x, valid, P = _bd3lm_canvas(prompts, replace(s, block_size=1, max_new_tokens=N + bs), dev)  # + bs: the last drafts
    history = [x[:, P:P + N].to("cpu", copy=True)] if return_history else None
    report, col = _reporter(s, on_step, history, dev), torch.arange(N, device=dev)
    kv, n, c, m, step = model.new_cache(B, P + N + bs), 0, P - 1, P, 0  # cached [0, n), certain [n, c], drafts (c, m)
    while c < P + N - 1:
        hi = min(m + bs, x.shape[1])
        am, pos = _block_causal(valid, n, hi, hi, m)  # [n, m) causal; the masks [m, hi) see everything up to hi
        logits = model(x[:, n:hi], attention_mask=am, position_ids=pos, causal=False, cache=kv, cache_pos=n,
                       logits_slice=slice(c - n, hi - n - 1))  # rows c .. hi - 2 predict c + 1 .. m, then the drafts
        logits[..., [mask, *(s.suppress_tokens or [])]] = -torch.inf
        pred = logits.argmax(-1)
        k = int((x[:, c + 1:m] == pred[:, :m - c - 1]).long().cumprod(1).sum(1).min())  # drafts confirmed in every row
        x[:, c + 1 + k] = pred[:, k]
        if c + 1 + k == m:  # all confirmed: the masks drafted after the right tokens
            x[:, m + 1:hi] = pred[:, m - c:]
            n, c, m = m, m, hi
        else:
            x[:, c + 2 + k:] = mask
            n = c = c + 1 + k
            m = n + 1
        kv.commit(n)
        step += 1
        if report(step, torch.where(col <= c - P, x[:, P:P + N], mask)):
            break
    seqs = [trim(q, s.eos) if s.stop_at_eos else q for q in x[:, P:P + N].tolist()]
    return GenerateOutput(seqs, step, _synced_time(dev) - t0, history)


def generate(model, prompts, settings=None, *, generator=None, on_step=None, return_history=False, **kw):
    """Sample completions for a batch of prompts (token id lists, any lengths) -> GenerateOutput. settings: a Settings
    (default: its defaults); kw: any of its fields, which win (so generate(model, prompts, **defaults_from_load,
    steps=64) works). generator: a Generator on the model's device; on_step(step, answers (B, W)) after each step."""
    if not prompts:
        raise ValueError("prompts is empty")
    s = replace(settings or Settings(), **kw).check()
    if s.mask_token_id is None or not s.eos:
        raise ValueError("mask_token_id and eos_token_id are required (sample.load reads them from the checkpoint)")
    sampler = mdlm_generate if s.method == "mdlm" else verify_generate if s.verify else bd3lm_generate
    return sampler(model, prompts, s, generator, on_step, return_history)


# -----------------------------------------------------------------------------
# command line
def read_prompts(prompt, prompt_file):
    """-> a list of prompts: strings, or message lists (jsonl "messages")."""
    if prompt:
        return [prompt]
    if not prompt_file and sys.stdin.isatty():
        raise SystemExit("error: no prompts. Pass --prompt=TEXT, --prompt_file=FILE (.txt, one per line, or "
                         ".jsonl with prompt or messages), or pipe prompts on stdin, one per line")
    if prompt_file and not Path(prompt_file).is_file():
        raise SystemExit(f"error: --prompt_file {prompt_file!r} does not exist")
    text = Path(prompt_file).read_text() if prompt_file else sys.stdin.read()
    lines = [(i, line) for i, line in enumerate(text.split("\n"), 1) if line.strip()]
    if not lines:
        raise SystemExit("error: no prompts found (empty --prompt_file or stdin)")
    if not prompt_file.endswith(".jsonl"):
        return [line for _, line in lines]
    items = []
    for i, line in lines:
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


def chat_ids(tok, messages):
    # render, then tokenize: apply_chat_template(tokenize=True) returns ids in transformers 4 but a dict in 5; the
    # template holds every special token. Thinking off, as in training, whatever the template defaults to
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    return tok(text, add_special_tokens=False).input_ids


def encode(tok, item, chat_template):
    """A prompt string (or a message list) -> token ids."""
    if isinstance(item, list) or chat_template:
        if not tok.chat_template:
            raise SystemExit("error: this tokenizer has no chat template; pass --chat_template=False")
        return chat_ids(tok, item if isinstance(item, list) else [{"role": "user", "content": item}])
    return tok(item, add_special_tokens=False).input_ids


def cli_load(g, given):
    """sample.py's and chat.py's start -> (model, tokenizer, settings, generator seeded by --seed); bad settings fail
    before the model loads. g: the script's options; given: those the command line set, which beat the checkpoint's."""
    if not g["model_name_or_path"]:
        raise SystemExit("error: --model_name_or_path is required (a checkpoint dir written by convert.py or train.py)")
    try:
        cli = Settings(**{k: g[k] for k in SETTINGS})
        # what depends on the checkpoint (the cache's choices, verify's options) is checked once it is read
        replace(cli, verify=False, **({} if "method" in given else dict(cache="none"))).check()
        model, tok, d = load(g["model_name_or_path"], dtype=g["dtype"] or None, device=g["device"] or None)
        s = replace(cli, **{k: v for k, v in d.items() if k not in given}).check()
        return model, tok, s, torch.Generator(device=model.lm_head.weight.device).manual_seed(g["seed"])
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}")


def main(given):
    from tqdm import tqdm
    if batch_size < 1:
        raise SystemExit(f"error: --batch_size must be >= 1, got {batch_size}")
    if output and (os.path.isdir(output) or not os.path.isdir(os.path.dirname(os.path.abspath(output)))):
        raise SystemExit(f"error: --output={output!r} must name a file in an existing directory")
    items = read_prompts(prompt, prompt_file)  # before the model loads, to fail at once
    model, tok, s, gen = cli_load(globals(), given)
    limit = max_length or model.config.max_position_embeddings
    budget = limit - s.max_new_tokens
    if budget < 1:
        raise SystemExit(f"error: --max_new_tokens={s.max_new_tokens} leaves no room for a prompt in the context "
                         f"of {limit} tokens; lower it")
    ids = [encode(tok, item, chat_template) for item in items]
    if long := [i for i, p in enumerate(ids) if len(p) > budget]:
        print(f"warning: prompt(s) {long} have more than the {budget} tokens that fit before {s.max_new_tokens} "
              f"new ones in a context of {limit}; truncated from the left", file=sys.stderr)
    ids = [p[-budget:] for p in ids]
    num_blocks = math.ceil(s.max_new_tokens / s.block_size)
    if s.max_new_tokens % s.block_size:
        print(f"note: --block_size={s.block_size} does not divide --max_new_tokens={s.max_new_tokens}: the last "
              f"block has {s.max_new_tokens % s.block_size} tokens", file=sys.stderr)
    if not s.parallel and s.steps > s.max_new_tokens:
        print(f"note: --steps={s.steps} > --max_new_tokens={s.max_new_tokens}: one token per step at most, so "
              f"{s.max_new_tokens} forward passes", file=sys.stderr)
    batches = [range(i, min(i + batch_size, len(ids))) for i in range(0, len(ids), batch_size)]
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
        bar.update((bi + 1) * per_batch - bar.n)  # past the steps an early stop skipped
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
          + (f" -> {output}" if output else ""), file=sys.stderr)


if __name__ == "__main__":
    from configurator import configure
    main(configure(globals()))
