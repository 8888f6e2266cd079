r"""
Evaluate A2D diffusion LMs with lm-evaluation-harness 0.4.13: registers the models a2d_mdlm and a2d_bd3lm and runs
lm-eval's CLI (every flag works), with the offline tasks in tasks/ unless you pass --include_path (copy them there).

    python eval.py --model a2d_mdlm --tasks gsm8k_cot --apply_chat_template --num_fewshot 0 \
        --model_args "pretrained=DIR,max_new_tokens=256,steps=256,block_size=256,cfg_scale=0.0"
    torchrun --nproc_per_node=4 eval.py --model a2d_bd3lm --tasks gsm8k_cot --apply_chat_template \
        --model_args "pretrained=DIR,max_new_tokens=256,steps=256,block_size=32"
    python eval.py --model a2d_mdlm --tasks gsm8k_local,gsm8k_mc_local,tinyshakespeare_local \
        --model_args "pretrained=DIR,mc_num=32" --batch_size 8 --limit 50     # offline, tasks/
    bash eval.sh DIR bd3lm                                               # the reference's suite

--model_args: pretrained=DIR, dtype (default: bf16 where native, else fp32), max_length (the context budget), mc_num
(Monte Carlo draws per likelihood), is_check_greedy, seed and every sample.Settings field (lists as [1;2]);
max_new_tokens and steps default to the task's max_gen_toks. Likelihoods are Monte Carlo ELBOs seeded per request, so
any batch order or process count gives the same: LLaDA's for MDLM, the training loss's at antithetic t for BD3LM.
"""

import ast
import itertools
import json
import logging
import os
import sys
import textwrap

import sample  # torch with it (~2 s); lm-eval's own imports come after the argument checks (~18 s)
from configurator import parse_value
from model import (bd3lm_forward, bd3lm_logit_rows, bd3lm_loss, could_be_hub_id, forward_mask, logit_rows, mdlm_loss,
                   sample_t)

TASKS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks")
LOCAL_TASKS = ", ".join(sorted(f[:-5] for f in os.listdir(TASKS_DIR) if f.endswith("_local.yaml")))  # need no Hub

SAMPLER_ARGS = dict({k: v for k, v in sample.SETTINGS.items() if k != "method"},  # the method is the model's name
                    stop_at_eos=True)  # not the sampler's default: the same answers (cut at EOS), fewer steps
EVAL_ARGS = dict(pretrained="", dtype="", max_length=2048, mc_num=128, is_check_greedy=False, seed=1234)
IGNORED_ARGS = ("trust_remote_code", "max_batch_size")  # lm-eval may pass these; they mean nothing here


def parse_arg(key, value, default):
    """A --model_args value (maybe typed by lm-eval) -> default's type; a None default: any literal, lists as [1;2]."""
    raw = str(value)
    try:
        return ast.literal_eval(raw.replace(";", ",")) if default is None else parse_value(key, raw, default)
    except (ValueError, SyntaxError) as e:
        why = f"{key}={raw!r}: expected a number or a list like [1;2]" if default is None else str(e).removeprefix("--")
        raise ValueError(f"model_args {why}") from None


def check_model_args(kwargs):
    """--model_args -> their values, parsed; ValueError for those that cannot work, before lm-eval is imported."""
    if "method" in kwargs:
        raise ValueError("method is fixed by the model name; use --model a2d_mdlm or --model a2d_bd3lm")
    if unknown := sorted(set(kwargs) - set(EVAL_ARGS) - set(SAMPLER_ARGS) - set(IGNORED_ARGS)):
        raise ValueError(f"unknown model_args {unknown}; valid: {', '.join(sorted({**EVAL_ARGS, **SAMPLER_ARGS}))}")
    parsed = {k: parse_arg(k, v, EVAL_ARGS.get(k, SAMPLER_ARGS.get(k))) for k, v in kwargs.items()
              if k not in IGNORED_ARGS}
    path = str(kwargs.get("pretrained") or "")
    if not path:
        raise ValueError("model_args needs pretrained=DIR (an A2D checkpoint, e.g. from convert.py or train.py)")
    if not os.path.isdir(path) and not could_be_hub_id(path):
        raise ValueError(f"model directory {path!r} does not exist (pretrained= takes a checkpoint dir or a hub id)")
    return parsed


def precheck(argv):
    """--help, and our models' --model_args, before lm-eval's imports and task index (~18 s)."""
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip() + "\n\n--model_args of a2d_mdlm / a2d_bd3lm, with their defaults:")
        print(textwrap.fill(", ".join(f"{k}={v!r}" for k, v in {**EVAL_ARGS, **SAMPLER_ARGS}.items()), 100,
                            initial_indent="  ", subsequent_indent="  ") + "\n\nlm-eval's own help:\n")
        return
    flags = {}  # --flag=value or --flag value
    for a, following in zip(argv, argv[1:] + [""]):
        key, eq, value = a.partition("=")
        flags[key] = value if eq else following
    margs, name = flags.get("--model_args", ""), flags.get("--model", "")
    if name.startswith("a2d") and name not in ("a2d_mdlm", "a2d_bd3lm"):
        raise SystemExit(f"error: unknown --model {name}; ours are a2d_mdlm and a2d_bd3lm")
    if name in ("a2d_mdlm", "a2d_bd3lm") and not margs.lstrip().startswith("{"):  # not JSON
        try:
            check_model_args(dict(item.partition("=")[::2] for item in margs.split(",") if item))
        except ValueError as e:
            raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    precheck(sys.argv[1:])  # a typo fails at once, not after the imports below

import lm_eval.models  # noqa: E402,F401  lm-eval's own models (hf, ...): its lazy import skips them once ours exist
import torch  # noqa: E402
from lm_eval.api.model import LM  # noqa: E402
from lm_eval.api.registry import register_model  # noqa: E402
from tqdm import tqdm  # noqa: E402

log = logging.getLogger("nanoa2d.eval")
# lm-eval tells every custom_dataset task (ours in tasks/) how --metadata works, each run: not news
logging.getLogger("lm_eval.api.task").addFilter(lambda r: "Custom kwargs can be passed" not in r.getMessage())


def setup_distributed(device):
    """RANK, WORLD_SIZE, LOCAL_RANK (torchrun, accelerate) -> (rank, world, device); each rank runs a request shard."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = torch.device(device or "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():  # lm-eval's CLI asks for cuda by default
        device = torch.device("cpu")
    if device.type == "cuda":
        if world > 1 or device.index is None:  # one GPU per rank, whatever --device said (lm-eval: cuda:0)
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")  # only lm-eval's gathers
    return rank, world, device


class A2DLM(LM):
    """The lm-eval interface over sample.py's samplers and the ELBO estimators below."""
    METHOD = None  # mdlm | bd3lm, set by the two registered classes at the bottom

    def __init__(self, batch_size=1, device=None, **kwargs):
        super().__init__()
        self.user_args = check_model_args(kwargs)
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise ValueError(f"batch_size must be a number >= 1 (it is the Monte Carlo batch too), got {batch_size!r}")
        self.batch_size = int(batch_size)
        e = {k: self.user_args.get(k, default) for k, default in EVAL_ARGS.items()}
        self.mc_num, self.seed, self.is_check_greedy = e["mc_num"], e["seed"], e["is_check_greedy"]
        self._rank, self._world_size, self._device = setup_distributed(device)
        try:
            self.model, self.tokenizer, defaults = sample.load(e["pretrained"], e["dtype"] or None, self._device)
        except (OSError, ValueError) as err:  # missing or damaged: one line, not lm-eval's traceback
            raise SystemExit(f"error: {err}")
        cfg = self.model.config
        self.max_length = min(e["max_length"], cfg.max_position_embeddings)
        if cfg.objective in ("mdlm", "bd3lm") and cfg.objective != self.METHOD:
            log.warning(f"{e['pretrained']} was trained as {cfg.objective}, evaluated here as {self.METHOD}")
        defaults["block_size"] = cfg.block_size or (128 if self.METHOD == "mdlm" else 32)  # not load()'s 32
        merged = {**SAMPLER_ARGS, **defaults, **self.user_args}  # model_args > checkpoint > reference defaults
        self.sampler = {k: v for k, v in merged.items() if k in SAMPLER_ARGS and v is not None}
        try:
            settings = sample.Settings(method=self.METHOD, **self.sampler).check()
        except ValueError as err:
            raise SystemExit(f"error: model_args: {err}")
        self.mask_id, self.eos = settings.mask_token_id, settings.eos
        self._warned = set()
        shown = {k: v for k, v in self.sampler.items() if k in self.user_args or k in
                 ("max_new_tokens", "steps", "block_size", "temperature", "cache")}
        dt = str(self.model.lm_head.weight.dtype).removeprefix("torch.")
        if self.rank == 0:
            print(f"{self.METHOD} eval of {e['pretrained']} on {self._device} ({dt}, world size {self.world_size}): "
                  f"batch_size={self.batch_size} mc_num={self.mc_num} max_length={self.max_length} sampler={shown}",
                  file=sys.stderr)

    def warn_once(self, key, msg):
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg)

    def all_gather(self, tensor):
        # lm-eval 0.4.12+ syncs ranks with these three; it gathers a 0-d count per rank, indexed by rank: stack scalars
        if self.world_size == 1:
            return tensor[None] if tensor.ndim == 0 else tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, tensor.contiguous())
        return torch.stack(parts) if tensor.ndim == 0 else torch.cat(parts)

    def gather_object(self, obj, dst=0):
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj, out, dst=dst)
        return out

    def barrier(self):
        if self.world_size > 1:
            torch.distributed.barrier()

    @property
    def tokenizer_name(self):
        return self.tokenizer.name_or_path.replace("/", "__")

    def chat_template(self, chat_template=False):
        return self.tokenizer.chat_template if chat_template else None

    def apply_chat_template(self, chat_history, add_generation_prompt=True):
        kw = dict(tokenize=False, add_generation_prompt=add_generation_prompt,
                  continue_final_message=not add_generation_prompt, enable_thinking=False)  # as train.py
        try:
            return self.tokenizer.apply_chat_template(chat_history, **kw)
        except Exception as e:  # a template without a system role: fold it away, as lm-eval's HF model does
            if not any(m["role"] == "system" for m in chat_history):
                raise
            self.warn_once("system", f"chat template failed ({e}); retrying without the system message")
            return self.tokenizer.apply_chat_template([m for m in chat_history if m["role"] != "system"], **kw)

    def encode(self, text):
        bos = self.tokenizer.bos_token  # a chat template may have written BOS already (Llama 3): no second one
        return self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]

    def encode_pair(self, context, continuation):
        """Trailing context spaces go to the continuation (' 42', not ' ' + '42'); diffusion needs no context."""
        context, continuation = context.rstrip(), context[len(context.rstrip()):] + continuation
        ctx, whole = self.encode(context), self.encode(context + continuation)
        if whole[:len(ctx)] != ctx:  # the joint encoding merged across the boundary: encode apart
            return ctx, self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        return ctx, whole[len(ctx):]

    def fit(self, ctx, cont):
        """Keep ctx + cont within max_length by cutting the context (then the continuation) from the left."""
        if len(ctx) + len(cont) > self.max_length:
            self.warn_once("long", f"a request of {len(ctx) + len(cont)} tokens exceeds max_length={self.max_length}; "
                                   f"its context is truncated from the left")
        kept, cont = (ctx + cont)[-self.max_length:], cont[-self.max_length:]
        return kept[:len(kept) - len(cont)], cont

    def gen_settings(self, gen_kwargs):  # the sampler keywords for one request
        s, n = dict(self.sampler), gen_kwargs.get("max_gen_toks", gen_kwargs.get("max_new_tokens"))
        if n is not None and "max_new_tokens" not in self.user_args:
            s["max_new_tokens"] = int(n)
            if "steps" not in self.user_args:
                s["steps"] = int(n)
        if "temperature" not in self.user_args and gen_kwargs.get("do_sample") and "temperature" in gen_kwargs:
            s["temperature"] = float(gen_kwargs["temperature"])
        return s

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm=False):
        todo = []  # (index, prompt ids, settings, until)
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args
            s, until = self.gen_settings(gen_kwargs), gen_kwargs.get("until") or []
            ids, room = self.encode(context), self.max_length - s["max_new_tokens"]
            if len(ids) > room:
                self.warn_once("long_prompt", f"a prompt of {len(ids)} tokens exceeds max_length - max_new_tokens = "
                                              f"{room}; it is truncated from the left")
                ids = ids[len(ids) - max(room, 1):]
            todo.append((i, ids, s, [until] if isinstance(until, str) else list(until)))
        # one batch = one set of sampler settings; longest prompts first so a batch pads little
        todo.sort(key=lambda r: (json.dumps(r[2], sort_keys=True, default=str), -len(r[1])))
        groups = [list(g) for _, g in itertools.groupby(todo, key=lambda r: r[2])]
        batches = [g[i:i + self.batch_size] for g in groups for i in range(0, len(g), self.batch_size)]
        out = [None] * len(requests)
        for batch in tqdm(batches, desc=f"generating ({self.METHOD})", disable=disable_tqdm or self.rank > 0):
            g = torch.Generator(self._device).manual_seed(self.seed)  # at temperature 0 too: remasking=random draws
            res = sample.generate(self.model, [r[1] for r in batch], method=self.METHOD, generator=g, **batch[0][2])
            for (i, _, _, until), seq in zip(batch, res.sequences):
                text = self.tokenizer.decode(sample.trim(seq, self.eos), skip_special_tokens=True)
                for stop in until:
                    text = text.split(stop)[0]
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out

    def draw(self, x0, P, g):
        """One Monte Carlo batch: x0 (B, L) -> x_t (B, L), p_mask (B, 1); only the continuation x0[:, P:] is masked."""
        B, T = x0.shape[0], x0.shape[1] - P
        if self.METHOD == "mdlm":
            k = float(torch.randint(1, T + 1, (), generator=g))  # LLaDA: from k, B evenly spaced counts in [1, T]
            counts = (torch.round(torch.linspace(k, k + (B - 1) * T / B, B)).long() - 1) % T + 1  # (B,)
            order = torch.rand(B, T, generator=g).argsort(-1)  # a random permutation per row
            masked = torch.cat([torch.zeros(B, P, dtype=torch.bool), order < counts[:, None]], 1)
            return torch.where(masked, self.mask_id, x0), (counts / T)[:, None]
        t = sample_t(B, antithetic=True, generator=g)
        labels = x0.masked_fill(torch.arange(x0.shape[1]) < P, -100)
        xt, _ = forward_mask(x0, labels, t, self.mask_id, generator=g)
        return xt, t[:, None]  # BD3LM: training's q(x_t | x_0) at antithetic t; p_mask = 1 - alpha(t) = t

    def score(self, xt, x0, P, p_mask):
        """B ELBO draws, summed: -(masked continuation tokens' CE / p_mask), the training loss with w = 1/p_mask."""
        xt, x0, p_mask = xt.to(self._device), x0.to(self._device), p_mask.to(self._device)
        masked = xt == self.mask_id
        masked[:, :P] = False  # the context may hold the mask token's text
        kw = dict(norm_type="batch", right_shift_logits=self.sampler["right_shift_logits"])
        loss = (mdlm_loss(self.model, x0, x0, xt, masked, p_mask[:, 0], **kw) if self.METHOD == "mdlm"
                else bd3lm_loss(self.model, x0, x0, xt, masked, p_mask[:, 0], self.sampler["block_size"],
                                context_causal=self.sampler["context_causal"], **kw))
        return (-loss * xt.shape[0]).item()  # "batch" normalisation divided the sum by B

    @torch.no_grad()
    def elbo(self, ctx, cont):
        """Monte Carlo ELBO of log p(cont | ctx), token id lists, averaged over mc_num draws."""
        if self.mc_num < 1 or self.mc_num % self.batch_size:
            near = max(1, round(self.mc_num / self.batch_size)) * self.batch_size
            raise ValueError(f"mc_num={self.mc_num} must be a positive multiple of batch_size={self.batch_size} "
                             f"(a batch holds batch_size draws of one request), e.g. mc_num={near}")
        ctx, cont = self.fit(ctx, cont)
        if not cont:
            return 0.0
        x0 = torch.tensor(ctx + cont, dtype=torch.long)[None].expand(self.batch_size, -1)
        g = torch.Generator().manual_seed(self.seed)  # the same draws for every request, on any device
        draws = (self.draw(x0, len(ctx), g) for _ in range(self.mc_num // self.batch_size))
        return sum(self.score(xt, x0, len(ctx), p_mask) for xt, p_mask in draws) / self.mc_num

    @torch.no_grad()
    def is_greedy(self, ctx, cont):
        """Would greedy decoding, one most-confident token per step, produce cont? (BD3LM: block by block.)"""
        ctx, cont = self.fit(ctx, cont)
        P, T = len(ctx), len(cont)
        x0 = torch.tensor(ctx + cont, dtype=torch.long, device=self._device)[None]
        xt = torch.tensor(ctx + [self.mask_id] * T, dtype=torch.long, device=self._device)[None]
        bs, idx, shift = self.sampler["block_size"], torch.arange(P, P + T, device=self._device), \
            self.sampler["right_shift_logits"]
        blocks = idx // bs
        rows = logit_rows(idx, shift) if self.METHOD == "mdlm" else bd3lm_logit_rows(idx, P + T, bs, shift)
        for _ in range(T):
            # BD3LM: while every committed token matches cont, x_0 = ctx + cont is the clean past it sees
            logits = (self.model(xt, causal=False, logits_slice=rows) if self.METHOD == "mdlm"
                      else bd3lm_forward(self.model, xt, x0, bs, logits_slice=rows,
                                         context_causal=self.sampler["context_causal"]))
            conf, tok = logits[0].float().softmax(-1).max(-1)  # (T,)
            open_ = xt[0, P:] == self.mask_id
            if self.METHOD == "bd3lm":
                open_ &= blocks == blocks[open_].min()
            i = torch.where(open_, conf, -1.0).argmax()
            if int(tok[i]) != cont[i]:
                return False
            xt[0, P + i] = tok[i]
        return True

    def loglikelihood(self, requests, disable_tqdm=False):
        out = []
        for req in tqdm(requests, desc=f"loglikelihood ({self.METHOD})", disable=disable_tqdm or self.rank > 0):
            ctx, cont = self.encode_pair(*req.args)
            out.append((self.elbo(ctx, cont), self.is_greedy(ctx, cont) if self.is_check_greedy else False))
            self.cache_hook.add_partial("loglikelihood", req.args, out[-1])
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        """The summed ELBOs of disjoint max_length windows, each given the token before (the first: BOS, else EOS)."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
        prefix = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.eos[0]
        out = []
        for req in tqdm(requests, desc=f"rolling loglikelihood ({self.METHOD})", disable=disable_tqdm or self.rank > 0):
            ids = self.tokenizer(req.args[0], add_special_tokens=False)["input_ids"]
            windows = get_rolling_token_windows(ids, prefix, self.max_length - 1, context_len=1)
            out.append(sum(self.elbo(*make_disjoint_window(w)) for w in windows))
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, out[-1])
        return out


@register_model("a2d_mdlm")
class A2DMDLM(A2DLM):
    METHOD = "mdlm"


@register_model("a2d_bd3lm")
class A2DBD3LM(A2DLM):
    METHOD = "bd3lm"


def main():
    argv = sys.argv[1:]
    if argv and argv[0] not in ("-h", "--help") and not any(a.split("=")[0] == "--include_path" for a in argv):
        sys.argv += ["--include_path", TASKS_DIR]  # our offline tasks; with your own path, copy them there
    from lm_eval.__main__ import cli_evaluate
    try:
        cli_evaluate()
    except ValueError as e:
        if not str(e).startswith("Tasks not found"):
            raise
        raise SystemExit(f"error: {e}. `python eval.py ls tasks` lists lm-eval's tasks; offline ones: {LOCAL_TASKS}")
    except ConnectionError as e:  # datasets' error for a task whose data live on the Hub
        raise SystemExit(f"error: {e}. Offline, use a task from tasks/ (local files, see data/prepare.py): {LOCAL_TASKS}")
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
