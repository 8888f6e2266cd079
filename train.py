"""
Train an A2D model (MDLM or BD3LM diffusion) or an AR one on text (task=pt) or chats (task=sft), with DDP or FSDP2.

    python train.py config/cpu_shakespeare_mdlm.py                    # 1 process, CPU or 1 GPU
    torchrun --nproc_per_node=8 train.py config/sft_alpaca_bd3lm.py --parallel=fsdp --learning_rate=1e-4
    torchrun --nnodes=8 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=$HOST:29500 \\
        train.py config/tiny_a2d_bd3lm.py

Checkpoints: output_dir/checkpoint-<step> (the newest resumable: resume=True) and checkpoint-final, both HF directories.
Ctrl-C saves one and prints the command that continues. Option names follow the dLLM reference where it has one.
"""

import contextlib
import glob
import hashlib
import itertools
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

from configurator import FALSE_WORDS, TRUE_WORDS
from model import (Model, ar_loss, bd3lm_loss, causal_annealed_mask, collate, complementary_pair, default_dtype,
                   forward_mask, mdlm_loss, sample_t, special_ids)

# -----------------------------------------------------------------------------
# options (python config files and --key=value override these; --help lists them)
# model
model_name_or_path = ""  # HF-format dir: config.json + safetensors + tokenizer (convert.py writes one)
init_from_scratch = False  # same shape, random weights: the A2D-vs-scratch baseline
objective = "mdlm"  # mdlm | bd3lm | ar
# data
task = "pt"  # pt: text cut into max_length chunks | sft: chats, prompt tokens get label -100
dataset_args = "Trelis/tiny-shakespeare"  # a+b+c[k:v]: .txt/.jsonl/.parquet files, HF names, synthetic:addition|sort|reverse
text_field = "Text"  # pt: the field holding the text
insert_eos = True  # pt: EOS between documents
drop_tail = True  # pt: drop the last partial chunk (else it is padded, pads unscored)
max_length = 512  # pt: chunk length; sft: longer rows are truncated or dropped (truncation)
truncation = "right"  # sft: right (clip the response) | filter (drop the row)
streaming = False  # pt: read the source lazily (OpenWebText-size corpora); needs max_steps
mask_prompt_loss = True  # sft: no loss on the prompt
mdlm_pad_loss = True  # mdlm sft: pad rows with attended, scored pad tokens, so the model learns to end answers
eval_fraction = 0.05  # held-out share of a source that has no test split
cache_dir = ""  # tokenized data cache; default <output_dir>/data
prepare_data_only = False  # tokenize and cache, then exit
# diffusion
block_size = 32  # bd3lm block length (also recorded for samplers)
time_epsilon = 1e-3  # t ~ U[eps, 1)
schedule = "linear"  # alpha(t): linear 1-t | cosine 1-cos(pi/2 (1-t))
loss_weight_type = "scheduler"  # scheduler: -alpha'/(1-alpha) (ELBO) | uniform
loss_norm_type = "token"  # token | sequence | batch
right_shift_logits = False  # Dream-style: logit i predicts token i+1 (bd3lm: a block's first from the clean row)
antithetic = False  # low-discrepancy t over the global batch
t_per_block = False  # bd3lm: one t per block (bd3lms) instead of per sequence
t_min = 0.0  # clipped t ~ U[t_min, t_max] (bd3lms' beta, omega)
t_max = 1.0
# conversion recipe: opt-in additions that keep more of the AR parent (off: the reference's recipe)
context_causal = False  # bd3lm: the clean context attends causally, only the noisy block both ways (NBDiff)
ar_loss_weight = 0.0  # bd3lm + context_causal: plus this times next-token CE on the clean stream (NBDiff)
block_curriculum = 0.0  # bd3lm: the block grows 1, 2, 4, ... block_size over this fraction of the steps (NBDiff)
complementary_masks = False  # each row twice, masked with m and with its complement (Fast-dLLM v2)
attention_anneal = 0.0  # mdlm: attention goes causal -> bidirectional over this fraction of the steps (DiffuLLaMA)
# optimisation
num_train_epochs = 10.0
max_steps = -1  # > 0 overrides num_train_epochs
learning_rate = 1e-4
weight_decay = 0.0
adam_beta1 = 0.9
adam_beta2 = 0.999
adam_epsilon = 1e-8
max_grad_norm = 1.0  # <= 0: no clipping
lr_scheduler_type = "cosine"  # cosine | linear | constant (after warmup)
warmup_ratio = 0.1
warmup_steps = 0  # > 0 overrides warmup_ratio
min_lr_ratio = 0.0  # decay ends at learning_rate * min_lr_ratio
per_device_train_batch_size = 16
per_device_eval_batch_size = 16
gradient_accumulation_steps = 1
# system
parallel = "ddp"  # ddp | fsdp (FSDP2 fully_shard)
device = "auto"  # auto | cpu | cuda
dtype = "auto"  # autocast: auto (bfloat16 on CUDA and on CPUs with native bf16, else float32) | bfloat16 | float32
compile = False
seed = 42
# checkpoints, eval, logging
output_dir = "out/train"
save_steps = 0.1  # >= 1: every that many steps; < 1: that fraction of the run; 0: at the end (and Ctrl-C) only
save_total_limit = 1  # keep the newest k checkpoint-<step> dirs, the newest alone resumable; 0 keeps all
save_final_state = True  # at the end also save checkpoint-<step>, resumable, to continue past max_steps
final_dtype = "auto"  # checkpoint-final's weights: auto (model_name_or_path's dtype: bf16 from convert.py) | float32
resume = False  # continue from the newest complete checkpoint in output_dir
overwrite = False  # replace the previous run in output_dir (its checkpoints and metrics.jsonl)
eval_steps = 0.1  # like save_steps; 0 turns periodic eval off
eval_iters = 50  # at most this many held-out batches of per_device_eval_batch_size rows per eval
eval_on_start = False
log_steps = 1
wandb_log = False  # no-op when wandb is not installed
wandb_project = "nanoA2D"
wandb_run_name = ""
# -----------------------------------------------------------------------------

_CHOICES = dict(objective=("mdlm", "bd3lm", "ar"), task=("pt", "sft"), parallel=("ddp", "fsdp"),
                schedule=("linear", "cosine"), loss_weight_type=("scheduler", "uniform"),
                loss_norm_type=("token", "sequence", "batch"), lr_scheduler_type=("cosine", "linear", "constant"),
                truncation=("right", "filter"), dtype=("auto", "bfloat16", "float32"), device=("auto", "cpu", "cuda"),
                final_dtype=("auto", "bfloat16", "float32"))
_rank, _world, _device = 0, 1, torch.device("cpu")  # set by setup_distributed
_stop = 0  # the first Ctrl-C or SIGTERM that asks the run to stop: save, then exit 128 + _stop


def print0(*a):
    if _rank == 0:
        print(*a, flush=True)


def options():  # the run's settings, as trainer_state.json records them
    return {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, str, bool))}


def check_options():  # before any heavy work; each error says what to do
    synthetic = [n for n, _ in parse_dataset_args(dataset_args) if n.startswith("synthetic:")]
    # another run's results: a fresh run would overwrite some and leave the rest for --resume to pick up
    previous = sorted(f for f in os.listdir(output_dir) if f == "metrics.jsonl" or re.match(r"(tmp-)?checkpoint-", f)) \
        if os.path.isdir(output_dir) else []
    problems = [
        *((globals()[k] not in allowed, f"--{k}={globals()[k]!r}; choose one of: {', '.join(allowed)}")
          for k, allowed in _CHOICES.items()),
        (not model_name_or_path, "--model_name_or_path is required: an HF-format directory "
                                 "(convert.py --model_name_or_path=smollm2 --output_dir=DIR makes one)"),
        *((globals()[k] < 1, f"--{k}={globals()[k]} must be >= 1") for k in ("max_length", "block_size",
          "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "log_steps")),
        (objective == "bd3lm" and block_size > 0 and max_length % block_size,
         f"bd3lm needs max_length ({max_length}) to be a multiple of block_size ({block_size})"),
        (not 0 < time_epsilon < 1, f"--time_epsilon={time_epsilon} must be in (0, 1)"),
        (not 0 <= t_min < t_max <= 1 or t_max <= time_epsilon,
         f"clipped t needs 0 <= t_min < t_max <= 1 and t_max > time_epsilon (got {t_min}, {t_max})"),
        *((globals()[k] and objective != o, f"--{k} only applies to --objective={o}") for k, o in
          dict(t_per_block="bd3lm", context_causal="bd3lm", block_curriculum="bd3lm", attention_anneal="mdlm").items()),
        (ar_loss_weight and not context_causal, "--ar_loss_weight needs --context_causal=True (a block-causal clean "
                                                "row sees the token it would predict)"),
        (not 0 <= block_curriculum < 1 or not 0 <= attention_anneal < 1 or ar_loss_weight < 0,
         "need 0 <= block_curriculum < 1, 0 <= attention_anneal < 1 and ar_loss_weight >= 0"),
        (block_curriculum and block_size & (block_size - 1), f"--block_curriculum needs a power-of-two block_size "
                                                             f"(got {block_size})"),
        (complementary_masks and (objective == "ar" or schedule != "linear"),
         "--complementary_masks=True is for mdlm / bd3lm under the linear schedule (the copy's time is 1 - t)"),
        (learning_rate <= 0 or not 0 <= warmup_ratio < 1 or warmup_steps < 0 or not 0 <= min_lr_ratio <= 1,
         "need learning_rate > 0, 0 <= warmup_ratio < 1, warmup_steps >= 0, 0 <= min_lr_ratio <= 1"),
        (max_steps <= 0 and num_train_epochs <= 0 or max_steps < -1,
         f"--max_steps={max_steps}: set it > 0 (or leave it at -1 and set --num_train_epochs > 0)"),
        (streaming and (task != "pt" or max_steps <= 0 or "+" in dataset_args),
         "--streaming=True is for task=pt with one source and needs --max_steps > 0 (a stream has no epochs)"),
        (not 0 <= eval_fraction < 1 or min(save_total_limit, save_steps, eval_steps) < 0,
         "need 0 <= eval_fraction < 1 and save_steps, eval_steps, save_total_limit >= 0"),
        (any(n not in ("synthetic:addition", "synthetic:sort", "synthetic:reverse") for n in synthetic),
         f"unknown data {synthetic}; choose synthetic:addition, synthetic:sort or synthetic:reverse"),
        (synthetic and task != "sft", "synthetic data are chats: use them with --task=sft"),
        (previous and not resume and not overwrite, f"output_dir {output_dir} holds a previous run "
         f"({', '.join(previous[:4])}); pass --resume=True to continue it, --overwrite=True to replace it, or pick "
         f"another --output_dir"),
        (resume and overwrite, "--resume=True continues the run in output_dir, --overwrite=True deletes it: pick one"),
    ]
    if message := next((m for bad, m in problems if bad), None):
        raise SystemExit("error: " + message)


# -----------------------------------------------------------------------------
# data sources "a+b+c[k:v]": [train:N] / [test:N] cap a split, [name:X] picks an HF config, other [k:v] keep rows k == v
def parse_dataset_args(spec):  # -> [(name, {k: v})]
    out = []
    for part in filter(None, (p.strip() for p in spec.split("+"))):
        name, _, inner = part.partition("[")
        items = [s.strip() for s in inner.rstrip("]").split(",") if s.strip()]
        if bad := [s for s in items if ":" not in s]:
            raise SystemExit(f"error: dataset_args entry {bad[0]!r} in {part!r} must be key:value, "
                             f"e.g. tatsu-lab/alpaca[train:5000] or opc-sft-stage1[lang:python]")
        out.append((name.strip(), {k.strip(): v.strip() for k, v in (s.split(":", 1) for s in items)}))
    if not out:
        raise SystemExit("error: --dataset_args is empty")
    return out


def synthetic_rows(kind, n_train, n_test):
    """Seeded chats, answers long enough for parallel decoding: 1-4 digit sums, sorting or reversing 10-16 numbers."""
    rng = random.Random(f"nanoA2D-synthetic-{kind}")

    def draw():
        if kind == "addition":
            a, b = (rng.randrange(10 ** rng.randint(1, 4)) for _ in range(2))
            return f"What is {a} + {b}?", str(a + b)
        xs = [rng.randrange(100) for _ in range(rng.randint(10, 16))]
        if kind == "reverse":
            return "Reverse: " + " ".join(map(str, xs)), " ".join(map(str, xs[::-1]))
        return "Sort ascending: " + " ".join(map(str, xs)), " ".join(map(str, sorted(xs)))

    test, train = {}, []
    while len(test) < n_test:
        test.setdefault(*draw())
    while len(train) < n_train:
        q, a = draw()
        if q not in test:
            train.append((q, a))
    chat = lambda q, a: {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
    return [chat(*r) for r in train], [chat(*r) for r in test.items()]


def read_file(fn):  # .txt: one document; .jsonl/.json: a row per line (or a json list); .parquet: rows
    if fn.endswith(".txt"):
        yield {text_field: open(fn, encoding="utf-8").read()}
    elif fn.endswith((".jsonl", ".json")):
        with open(fn, encoding="utf-8") as f:
            first = f.read(1)
            f.seek(0)
            yield from json.load(f) if first == "[" else (json.loads(line) for line in f if line.strip())
    elif fn.endswith(".parquet"):
        import pyarrow.parquet as pq
        yield from pq.read_table(fn).to_pylist()
    else:
        raise SystemExit(f"error: cannot read {fn}: use .txt, .jsonl, .json or .parquet")


def load_source(name, kv):
    """-> (train, test or None): lists or HF datasets of row dicts; iterator factories when streaming."""
    kv = dict(kv)
    caps = {s: int(kv.pop(s)) for s in ("train", "test") if s in kv}  # a stream ignores them
    hf_name = kv.pop("name", None)
    wanted = lambda r: all(row_has(r, k, v) for k, v in kv.items())
    if name.startswith("synthetic:"):
        return synthetic_rows(name.split(":", 1)[1], caps.get("train", 20000), caps.get("test", 200))
    if os.path.exists(name):
        files = sorted(f for f in glob.glob(os.path.join(name, "**", "*"), recursive=True)
                       if f.endswith((".txt", ".jsonl", ".json", ".parquet"))) if os.path.isdir(name) else [name]
        rows = lambda: (r for f in files for r in read_file(f) if wanted(r))
        return (rows if streaming else list(itertools.islice(rows(), caps.get("train")))), None
    offline = not hub_reachable()
    if offline:  # the Hub's own retries take ~25 s; cached datasets still load
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets
    try:
        configs = datasets.get_dataset_config_names(name) if hf_name is None else [hf_name]
        if len(configs) > 1:  # several configs and none named: all of them (the reference's OPC loader)
            parts = [datasets.load_dataset(name, c, streaming=streaming) for c in configs]
            ds = {s: datasets.concatenate_datasets([p[s] for p in parts if s in p]) for s in set().union(*parts)}
        else:
            ds = datasets.load_dataset(name, hf_name, streaming=streaming)
    except Exception as e:
        why = "the Hugging Face Hub is unreachable and no copy is cached" if offline else f"{type(e).__name__}: {e}"
        raise SystemExit(f"error: cannot load dataset {name!r} ({why}). Give a local .txt/.jsonl/.parquet path "
                         f"(python data/prepare.py fetches tiny-shakespeare and GSM8K while online), an HF dataset "
                         f"name, or synthetic:addition|sort|reverse")

    def split(s, role):  # HF datasets stay memory-mapped Arrow tables (rows decoded on access)
        d = ds[s].filter(wanted) if kv else ds[s]
        if streaming:
            return lambda: iter(d)
        return d.select(range(min(caps[role], len(d)))) if role in caps else d
    test = next((s for s in ("test", "validation") if s in ds), None)
    return split("train" if "train" in ds else next(iter(ds)), "train"), split(test, "test") if test else None


def hub_reachable():  # a quick probe (offline, the name does not even resolve); behind a proxy, assume so
    import socket
    import urllib.parse
    import urllib.request
    host = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return bool(urllib.request.getproxies().get("https"))


def row_has(row, k, v):  # no field k: a chat passes when its reply holds v (the reference's [lang:python] on OpenCoder)
    if k in row:
        return str(row[k]) == v
    replies = [m["content"] for m in row.get("messages", []) if m.get("role") == "assistant"]
    if not replies:
        raise SystemExit(f"error: a [{k}:{v}] filter, but rows have no field {k!r} (fields: {sorted(row)}) "
                         f"and no assistant reply to look in; drop the filter or name a field")
    return v in replies[0]


def to_messages(row):  # alpaca (instruction, blank line, input), GSM8K, prompt/response: one user, one assistant turn
    if "messages" in row:
        return row["messages"]
    for q, a in (("instruction", "output"), ("question", "answer"), ("prompt", "response")):
        if q in row and a in row:
            user = "\n\n".join(s.strip() for s in (row[q], row.get("input") or "") if s.strip())
            return [{"role": "user", "content": user}, {"role": "assistant", "content": row[a].strip()}]
    raise SystemExit(f"error: cannot turn a row with fields {sorted(row)} into chat messages; sft rows need "
                     f"messages, instruction/input/output, question/answer or prompt/response")


def split_off(rows, test):  # no test split: eval_fraction of the rows is held out, the same ones every run
    if test is not None or eval_fraction == 0:
        return rows, test or []
    idx = list(range(len(rows)))
    random.Random(1234).shuffle(idx)
    n = max(1, round(eval_fraction * len(rows))) if len(rows) > 1 else 0
    return [rows[i] for i in sorted(idx[n:])], [rows[i] for i in sorted(idx[:n])]


def cache_key(*parts):  # hashes the options that shape the tokens, the tokenizer files, local data files' size/mtime
    files = [f for n, _ in parse_dataset_args(dataset_args) for f in [n, *glob.glob(f"{n}/**/*", recursive=True)]]
    stats = [(f, os.path.getsize(f), os.path.getmtime(f)) for f in files if os.path.isfile(f)]
    h = hashlib.sha256(repr((parts, stats)).encode())
    for fn in ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "tokenizer_config.json"):
        if os.path.exists(path := os.path.join(model_name_or_path, fn)):
            h.update(open(path, "rb").read())
    return h.hexdigest()[:16]


def token_stream(rows, encode, eos):  # documents -> the token ids of their text_field (EOS appended when insert_eos)
    rows = iter(rows)
    while batch := list(itertools.islice(rows, 512)):
        if bad := [row for row in batch if text_field not in row]:
            raise SystemExit(f"error: rows have no field {text_field!r} (fields: {sorted(bad[0])}); set --text_field")
        texts = [row[text_field] for row in batch]
        yield from (ids + [eos] if insert_eos and (not ids or ids[-1] != eos) else ids for ids in encode(texts))


def write_tokens(rows, encode, eos, path):  # -> the token count of a flat uint32 file, written atomically
    with open(path + ".tmp", "wb") as f:
        for ids in token_stream(rows, encode, eos):
            np.asarray(ids, dtype=np.uint32).tofile(f)
    os.replace(path + ".tmp", path)
    return os.path.getsize(path) // 4  # 4 bytes a token


class Chunks:  # a flat uint32 token file seen as rows (ids, prompt_len=0) of max_length tokens
    def __init__(self, tokens, lo, hi):
        self.tokens, self.n = tokens[lo * max_length:], hi - lo  # a memmap slice: nothing is read yet

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.tokens[i * max_length:(i + 1) * max_length].astype(np.int64), 0


def prepare_pt(encode, eos, cache):
    """Pretraining rows: tokenized once into <cache>/pt-<key>-{train,test}.bin, then cut into chunks."""
    key = cache_key("pt", dataset_args, text_field, insert_eos)
    paths = {s: os.path.join(cache, f"pt-{key}-{s}.bin") for s in ("train", "test")}
    if _rank == 0 and not os.path.exists(paths["train"]):  # the train file, written last, marks the cache complete
        t0, sources = time.time(), [load_source(n, kv) for n, kv in parse_dataset_args(dataset_args)]
        if any(te is not None for _, te in sources):
            write_tokens((r for _, te in sources for r in te or []), encode, eos, paths["test"])
        n = write_tokens((r for tr, _ in sources for r in tr), encode, eos, paths["train"])
        print0(f"tokenized {n:,} train tokens in {time.time() - t0:.1f}s -> {paths['train']}")
    barrier()
    tokens = np.memmap(paths["train"], dtype=np.uint32, mode="r")
    n_chunks = len(tokens) // max_length if drop_tail else -(-len(tokens) // max_length)
    if os.path.exists(paths["test"]):
        test = np.memmap(paths["test"], dtype=np.uint32, mode="r")
        return Chunks(tokens, 0, n_chunks), Chunks(test, 0, len(test) // max_length)
    n_eval = max(1, round(eval_fraction * n_chunks)) if eval_fraction > 0 else 0  # the tail: no leakage across the cut
    return Chunks(tokens, 0, n_chunks - n_eval), Chunks(tokens, n_chunks - n_eval, n_chunks)


def prepare_sft(tok, encode, cache):
    """SFT rows (ids, prompt_len): chats rendered (thinking off, as the reference) and tokenized once into <cache>."""
    if not tok.chat_template:
        raise SystemExit(f"error: the tokenizer in {model_name_or_path} has no chat template, which task=sft "
                         f"needs; convert.py writes one, or use --task=pt")
    base = os.path.join(cache, "sft-" + cache_key("sft", dataset_args, tok.chat_template, eval_fraction, "no-think"))
    render = lambda m, **kw: tok.apply_chat_template(m, tokenize=False, enable_thinking=False, **kw)
    if _rank == 0 and not os.path.exists(base + "-test.jsonl"):
        t0, splits = time.time(), {"train": [], "test": []}
        for name, kv in parse_dataset_args(dataset_args):
            for s, rows in zip(splits, split_off(*load_source(name, kv))):
                splits[s] += [to_messages(r) for r in rows]
        for s, convs in splits.items():
            ids, plens = [], []
            for a in range(0, len(convs), 4096):  # in slices: a million chats never sit in python lists
                part = convs[a:a + 4096]
                ids += [np.asarray(x, dtype=np.uint32) for x in encode([render(m) for m in part])]
                # the prompt: all but the last message, then the assistant header; its tokens get -100
                plens += [len(p) for p in encode([render(m[:-1], add_generation_prompt=True) for m in part])]
            np.save(base + f"-{s}-ids.npy", np.concatenate(ids) if ids else np.zeros(0, np.uint32))
            np.save(base + f"-{s}-off.npy", np.cumsum([0] + [len(x) for x in ids]))
            np.save(base + f"-{s}-plen.npy", np.asarray(plens, dtype=np.int64))
        with open(base + "-test.jsonl.tmp", "w") as f:  # written last: it marks the cache complete
            f.writelines(json.dumps({"messages": m, "prompt": m[-2]["content"] if len(m) > 1 else "",
                                     "answer": m[-1]["content"]}) + "\n" for m in splits["test"])
        os.replace(base + "-test.jsonl.tmp", base + "-test.jsonl")
        print0(f"tokenized {len(splits['train']):,} train / {len(splits['test']):,} held-out chats in "
               f"{time.time() - t0:.1f}s -> {base}-*")
    barrier()
    if _rank == 0:  # the held-out chats, for scripts that score generations later
        shutil.copyfile(base + "-test.jsonl", os.path.join(output_dir, "heldout.jsonl"))
    out = []
    for s in ("train", "test"):
        ids = np.load(base + f"-{s}-ids.npy", mmap_mode="r")
        off, plen = np.load(base + f"-{s}-off.npy"), np.load(base + f"-{s}-plen.npy")
        rows = [(ids[off[i]:off[i + 1]], int(plen[i])) for i in range(len(plen))]
        # the reference's rule: filter drops long rows; right drops those with a long (masked) prompt, clips the rest
        fits = [r for r in rows if (len(r[0]) <= max_length if truncation == "filter" else
                                    r[1] <= max_length or not mask_prompt_loss)]
        print0(f"sft {s}: {len(rows):,} rows, {len(rows) - len(fits):,} over max_length={max_length} dropped, "
               f"{sum(len(r[0]) > max_length for r in fits):,} clipped")
        out.append(fits)
    return out


def stream_chunks(docs_fn, encode, eos, skip, shuffle=False):
    """Endless pretraining chunks from a streamed source, re-read each pass; the first `skip` of every pass are held
    out. shuffle: the rest pass through a 1,000-chunk random buffer seeded by seed + pass (as the reference does)."""
    def one_pass():
        buf = []
        for ids in token_stream(docs_fn(), encode, eos):
            buf += ids
            while len(buf) >= max_length:
                yield np.asarray(buf[:max_length], dtype=np.int64), 0
                del buf[:max_length]

    for p in itertools.count():
        chunks, n = one_pass(), 0
        if len(list(itertools.islice(chunks, skip))) == skip:
            for n, chunk in enumerate(buffer_shuffle(chunks, random.Random(seed + p)) if shuffle else chunks, 1):
                yield chunk
        if n == 0:
            raise SystemExit(f"error: the stream {dataset_args!r} has fewer than {skip + 1} chunks of {max_length}")


def buffer_shuffle(items, rng, size=1000):
    buf = []
    for x in items:
        if len(buf) < size:
            buf.append(x)
            continue
        i = rng.randrange(size)
        yield buf[i]
        buf[i] = x
    rng.shuffle(buf)
    yield from buf


def batch_of(rows, special, bs=None):  # model.collate holds each objective's padding rules (the reference's collators)
    x, y, keep = collate(rows, special, objective, max_length, bs or block_size, task == "sft", mask_prompt_loss,
                         right_shift_logits, mdlm_pad_loss)
    return x.to(_device), y.to(_device), None if keep is None else keep.to(_device)


# -----------------------------------------------------------------------------
# distributed: one entry point for python and torchrun (multi-node too), nccl on CUDA, gloo on CPU
def setup_distributed():
    global _rank, _world, _device
    dev = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    _device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if dev == "cuda" else "cpu")
    if dev == "cuda":
        torch.cuda.set_device(_device)
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        dist.init_process_group("nccl" if dev == "cuda" else "gloo")
        _rank, _world = dist.get_rank(), dist.get_world_size()


def barrier():
    if _world > 1:
        dist.barrier()


def all_sum(*xs):
    t = torch.tensor([float(x) for x in xs], dtype=torch.float64, device=_device)
    if _world > 1:
        dist.all_reduce(t)  # gloo has no AVG: sum, callers divide
    return t.tolist()


def wrap(model, amp):  # -> the model to call: DDP, or FSDP2 with each block sharded, then the root
    if _world == 1:
        if parallel == "fsdp":
            print0("notice: parallel=fsdp with one process trains unsharded; launch with torchrun to shard")
        return model
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP
        return DDP(model, device_ids=[_device.index] if _device.type == "cuda" else None)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if _device.type == "cuda" and amp == torch.bfloat16 else MixedPrecisionPolicy()
    for block in model.model.layers:
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


# -----------------------------------------------------------------------------
# objectives, whose math lives in model.py. Each rank noises the *global* micro-batch with one generator seeded alike
# everywhere, then keeps its own rows: N processes draw the t and masks of one, so loss curves match across world sizes.
def recipe_at(progress):
    """(block size, MDLM attention ratio) at `progress`; None (eval): the final ones. Both start as AR (1, 0)."""
    if progress is None:
        return block_size, 1.0
    bs = block_size if progress >= block_curriculum else 2 ** int(math.log2(block_size) * progress / block_curriculum)
    return bs, min(1.0, progress / attention_anneal) if attention_anneal else 1.0


def loss_of(model, batch, gen, rows, mask_id, weight_type, norm_type, progress=None):
    """Loss of this rank's `rows` of the noised global batch at `progress` through the run; None (eval): ELBO alone."""
    ids, labels, keep = batch
    if objective == "ar":
        return ar_loss(model, ids[rows], labels[rows], keep[rows] if keep is not None else None, norm_type)
    (n, L), (bs, ratio), train = ids.shape, recipe_at(progress), progress is not None
    t_hi = min(t_max, 1 - time_epsilon) if complementary_masks and train else t_max  # so the copy's 1 - t >= eps
    if objective == "bd3lm" and t_per_block:
        nb = -(-L // bs)
        t = sample_t(n * nb, time_epsilon, antithetic, t_min, t_hi, gen, _device).view(n, nb)
        t = t.repeat_interleave(bs, dim=1)[:, :L]  # (n, L): each token carries its block's t
    else:
        t = sample_t(n, time_epsilon, antithetic, t_min, t_hi, gen, _device)  # (n,)
    xt, masked = forward_mask(ids, labels, t, mask_id, schedule, generator=gen)
    ids, labels, xt, masked, t, keep = (v[rows] if v is not None else None for v in (ids, labels, xt, masked, t, keep))
    if complementary_masks and train:
        ids, labels, xt, masked, t = complementary_pair(ids, labels, xt, masked, t, mask_id)
        keep = keep.repeat(2, 1) if keep is not None else None
    kw = dict(schedule=schedule, weight_type=weight_type, norm_type=norm_type, right_shift_logits=right_shift_logits)
    if objective == "mdlm":
        if ratio < 1:  # the random future keys are drawn alike on every rank
            keep = causal_annealed_mask(L, ratio, keep, gen, _device)
        return mdlm_loss(model, ids, labels, xt, masked, t, keep, **kw)
    return bd3lm_loss(model, ids, labels, xt, masked, t, bs, keep, context_causal=context_causal,
                      ar_weight=ar_loss_weight if train else 0.0, **kw)


@torch.no_grad()
def evaluate(model, rows, special, amp):
    """Held-out loss per scored token (ELBO or AR's CE); batch k's rows and masks are fixed at any world size."""
    B = per_device_eval_batch_size
    n = min(eval_iters, len(rows) // B)
    total = count = 0.0
    for k in range(_rank, -(-n // _world) * _world, _world):  # equal counts per rank (FSDP needs it)
        batch = batch_of([rows[i] for i in range(k % n * B, (k % n + 1) * B)], special)
        gen = torch.Generator(device=_device).manual_seed(seed + 1 + k % n)
        with amp:
            s = loss_of(model, batch, gen, slice(None), special["mask"], "scheduler", "batch")
        if k < n:  # past n: a repeat that only keeps the ranks in step
            total += s.item() * B
            count += (batch[1][:, 1:] if objective == "ar" else batch[1]).ne(-100).sum().item()
    total, count = all_sum(total, count)
    return total / count if count else float("nan")


# -----------------------------------------------------------------------------
# checkpoints: checkpoint-<step>, HF dirs of the fp32 weights plus (newest only) trainer_state.pt (optimizer, step,
# every rank's RNG); checkpoint-final, the weights in final_dtype, to ship. Each is renamed from tmp-<name> when done.
def find_checkpoint():  # -> the newest resumable checkpoint (one with trainer_state.pt), or None
    done = [os.path.dirname(f) for f in glob.glob(os.path.join(output_dir, "checkpoint-*", "trainer_state.pt"))]
    return max(done, key=lambda d: json.load(open(os.path.join(d, "trainer_state.json")))["step"], default=None)


def save_checkpoint(name, step, total, raw, tok, opt, gen, loss, dtype=None):
    """Every rank calls this. dtype: checkpoint-final's, no training state; None: fp32 weights + state (resumable)."""
    fsdp, t0 = _world > 1 and parallel == "fsdp", time.time()
    if fsdp:  # gather full (unsharded) tensors onto rank 0 for an HF export anyone can load
        from torch.distributed.checkpoint import state_dict as dcp
        o = dcp.StateDictOptions(full_state_dict=True, cpu_offload=True)
        sd = dcp.get_model_state_dict(raw, options=o)
        osd = dcp.get_optimizer_state_dict(raw, opt, options=o) if dtype is None else None
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state(),
           "noise": gen.get_state(), "cuda": torch.cuda.get_rng_state() if _device.type == "cuda" else None}
    rngs = [rng] * _world
    if _world > 1:
        dist.all_gather_object(rngs, rng)
    if _rank == 0:
        final, tmp = os.path.join(output_dir, name), os.path.join(output_dir, "tmp-" + name)
        shutil.rmtree(tmp, ignore_errors=True)
        export = raw
        if fsdp:
            with torch.device("meta"):
                export = Model(raw.config)
            export.load_state_dict(sd, strict=False, assign=True)
            if raw.config.tie_word_embeddings:
                export.lm_head.weight = export.model.embed_tokens.weight
        export.save_pretrained(tmp, dtype)
        tok.save_pretrained(tmp)
        if dtype is None:  # the data position is step x the global batch; the world size is len(rngs)
            torch.save({"step": step, "optimizer": osd if fsdp else opt.state_dict(), "rng": rngs},
                       os.path.join(tmp, "trainer_state.pt"))
        with open(os.path.join(tmp, "trainer_state.json"), "w") as f:
            json.dump({"step": step, "total": total, "loss": loss, "options": options()}, f, indent=2)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        if dtype is None:  # the optimizer state is 2/3 of a checkpoint: older ones keep their weights only
            for old in glob.glob(os.path.join(output_dir, "checkpoint-*", "trainer_state.pt")):
                if os.path.dirname(old) != final:
                    os.remove(old)
            steps = sorted(int(m[1]) for d in os.listdir(output_dir) if (m := re.fullmatch(r"checkpoint-(\d+)", d)))
            for n in steps[:-save_total_limit] if save_total_limit else []:
                shutil.rmtree(os.path.join(output_dir, f"checkpoint-{n}"))
        size = sum(os.path.getsize(f) for f in glob.glob(os.path.join(final, "*")))
        print0(f"saved {final} ({size / 1e6:,.1f} MB, {'resumable' if dtype is None else str(dtype)[6:]}, "
               f"{time.time() - t0:.1f} s)")
    barrier()


def restore(ckpt, raw, opt, gen, total):  # -> the step to continue from
    state = torch.load(os.path.join(ckpt, "trainer_state.pt"), weights_only=False)
    if _world > 1 and parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
        set_optimizer_state_dict(raw, opt, state["optimizer"] if _rank == 0 else {},
                                 options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    else:
        opt.load_state_dict(state["optimizer"])
    if len(state["rng"]) != _world:
        print0(f"notice: resuming on {_world} processes a run made on {len(state['rng'])}: the global batch "
               f"differs now, so the data resumes at step x the new batch (rows may be skipped or repeated)")
    rng = state["rng"][_rank % len(state["rng"])]
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    gen.set_state(rng["noise"])
    if rng["cuda"] is not None and _device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"])
    planned = json.load(open(os.path.join(ckpt, "trainer_state.json"))).get("total", total)
    print0(f"resumed from {ckpt} at step {state['step']}" + (f"; the run was planned for {planned} steps, now "
           f"{total}: the learning rate follows the {total}-step schedule from here" if planned != total else ""))
    return state["step"]


# -----------------------------------------------------------------------------
# the run
def load():
    """(model, tokenizer, special ids, checkpoint or None, checkpoint-final's dtype); config.json set for samplers."""
    if _rank == 0:  # a tmp-* dir is a save that never finished (never loadable); overwrite=True drops the rest too
        stale = glob.glob(os.path.join(output_dir, "tmp-checkpoint-*"))
        for d in stale + (glob.glob(os.path.join(output_dir, "checkpoint-*")) if overwrite else []):
            shutil.rmtree(d)
    barrier()
    import transformers
    ckpt = find_checkpoint() if resume else None
    if resume and ckpt is None:
        print0(f"notice: resume=True but {output_dir} has no complete checkpoint; starting from the model")
    try:
        raw = Model.from_pretrained(ckpt or model_name_or_path, dtype=torch.float32, device=_device)
        tok = transformers.AutoTokenizer.from_pretrained(model_name_or_path)
        source = Model.config_of(model_name_or_path)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: cannot load the model or tokenizer from {ckpt or model_name_or_path!r}: {e}")
    if init_from_scratch and ckpt is None:
        raw.init_weights(seed)
        print0(f"init_from_scratch=True: random weights of the same shape (seed {seed})")
    cfg = raw.config
    special = special_ids(cfg, tok)
    special["eos"] = special["eos"][0] if special["eos"] else None  # what pads and separates documents
    if objective != "ar" and (special["mask"] is None or special["mask"] >= cfg.vocab_size):
        raise SystemExit(f"error: {objective} needs a mask token inside the vocabulary (got {special['mask']}, vocab "
                         f"{cfg.vocab_size}); convert the model with convert.py, which adds <|mask|>")
    if special["eos"] is None or (right_shift_logits and special["bos"] is None):
        raise SystemExit("error: the tokenizer needs an eos token (and a bos token for right_shift_logits=True)")
    cfg.model_type = cfg.family if objective == "ar" else "a2d-" + cfg.family
    cfg.objective, cfg.block_size, cfg.right_shift_logits = objective, block_size, right_shift_logits
    cfg.context_causal, cfg.mask_token_id = context_causal, special["mask"]
    return raw, tok, special, ckpt, getattr(torch, source.torch_dtype if final_dtype == "auto" else final_dtype)


def load_data(tok, eos):
    """(train, held-out) rows of (token ids, prompt length); streaming, train is a function that starts a pass."""
    encode = lambda texts: tok(texts, add_special_tokens=False)["input_ids"]  # a batch at a time, in Rust
    cache = cache_dir or os.path.join(output_dir, "data")
    os.makedirs(cache, exist_ok=True)
    if streaming:  # the first eval_iters batches of chunks are held out, every pass
        docs = load_source(*parse_dataset_args(dataset_args)[0])[0]
        head = stream_chunks(docs, encode, eos, 0)
        eval_rows = [next(head) for _ in range(eval_iters * per_device_eval_batch_size if eval_fraction else 0)]
        return lambda: stream_chunks(docs, encode, eos, len(eval_rows), shuffle=True), eval_rows
    train, eval_rows = prepare_pt(encode, eos, cache) if task == "pt" else prepare_sft(tok, encode, cache)
    need = _world * per_device_train_batch_size * gradient_accumulation_steps
    if len(train) < need:
        raise SystemExit(f"error: {len(train)} train rows < a global batch ({need}); lower the batch size or add data")
    return train, eval_rows


def global_batches(train, start):
    """Global micro-batches from `start` on, batch m a pure function of m (epoch e: seed + e): exact resumes."""
    R = _world * per_device_train_batch_size
    if streaming:
        chunks = itertools.islice(train(), start * R, None)  # exact, but it re-reads the stream
        while True:
            yield [next(chunks) for _ in range(R)]
    per_epoch = len(train) // R
    for m in itertools.count(start):
        e, i = divmod(m, per_epoch)
        if i == 0 or m == start:
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + e)).tolist()
        yield [train[j] for j in order[i * R:(i + 1) * R]]


def lr_factor(step, total):
    # HF's schedules (the reference's), stateless like nanoGPT's: a resume with a larger max_steps stretches the decay
    warm = warmup_steps or math.ceil(warmup_ratio * total)
    if step < warm:
        return step / warm
    p = min(1.0, (step - warm) / max(1, total - warm))
    decay = {"cosine": 0.5 * (1 + math.cos(math.pi * p)), "linear": 1 - p, "constant": 1.0}[lr_scheduler_type]
    return min_lr_ratio + (1 - min_lr_ratio) * decay


def open_log(ckpt, step):
    """(log, finish): on rank 0, log(dict) appends a line to output_dir/metrics.jsonl and sends it to wandb."""
    if _rank > 0:
        return (lambda d: None), (lambda: None)
    fn, wandb = os.path.join(output_dir, "metrics.jsonl"), None
    old = open(fn).readlines() if ckpt and os.path.exists(fn) else []
    with open(fn, "w") as f:  # a fresh run starts the file; a resumed one drops what came after its checkpoint
        f.writelines(line for line in old if json.loads(line)["step"] <= step)
    if wandb_log:
        try:
            import wandb
            wandb.init(project=wandb_project, name=wandb_run_name or None, config=options())
        except ImportError:
            print0("notice: wandb is not installed; wandb_log=True does nothing")

    def log(d):
        with open(fn, "a") as f:
            f.write(json.dumps(d) + "\n")
        if wandb:
            wandb.log(d, step=d["step"])
    return log, wandb.finish if wandb else (lambda: None)


def resume_command():
    """This run's command with --resume=True (and without --overwrite, which would delete what it resumes)."""
    argv, flag, bools = sys.argv[1:], r"--(resume|overwrite)", TRUE_WORDS | FALSE_WORDS
    args = [a for prev, a in zip(["", *argv], argv)  # drop --flag, --flag=value and --flag value
            if not (re.fullmatch(flag + "(=.*)?", a) or re.fullmatch(flag, prev) and a.lower() in bools)]
    launcher = [sys.executable] if _world == 1 else ["torchrun", "<the same launcher options>"]
    return shlex.join(launcher + [sys.argv[0], *args, "--resume=True"])


def on_stop(signum, _):
    """First Ctrl-C or SIGTERM (kill, timeout, Slurm, Kubernetes): save after the step, exit; a second quits at once."""
    global _stop
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    if _stop:
        if _rank == 0:  # os.write: a print here could land inside one the loop is making
            survives = f"{ckpt} survives" if (ckpt := find_checkpoint()) else "No checkpoint survives"
            os.write(2, f"\n{name} again: quitting without saving. {survives}; continue with: {resume_command()}\n".encode())
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    _stop = signum
    if _rank == 0:
        os.write(2, f"\n{name}: finishing this step, then saving a checkpoint ({name} again quits without it)\n".encode())


def accumulate_gradients(model, raw, batches, gen, special, amp, progress):
    """Forward, backward over a step's micro-batches (this rank's rows) -> (its mean loss, global tokens, grad norm)."""
    ddp, fsdp = _world > 1 and parallel == "ddp", _world > 1 and parallel == "fsdp"
    mine = slice(_rank * per_device_train_batch_size, (_rank + 1) * per_device_train_batch_size)
    loss_sum, tokens = 0.0, 0
    for micro in range(gradient_accumulation_steps):
        batch = batch_of(next(batches), special, recipe_at(progress)[0])
        tokens += batch[0].numel()
        last = micro == gradient_accumulation_steps - 1
        if fsdp:  # gradients are reduced across ranks on the last micro-step only
            raw.set_requires_gradient_sync(last)
        with model.no_sync() if ddp and not last else contextlib.nullcontext():
            with amp:
                loss = loss_of(model, batch, gen, mine, special["mask"], loss_weight_type, loss_norm_type, progress)
            (loss / gradient_accumulation_steps).backward()
        loss_sum += loss.detach()
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm if max_grad_norm > 0 else 1e30)
    return loss_sum / gradient_accumulation_steps, tokens, gnorm.full_tensor() if fsdp else gnorm


def main():
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # until training starts: as Ctrl-C, nothing to save
    check_options()
    setup_distributed()
    os.makedirs(output_dir, exist_ok=True)
    for s in (torch.manual_seed, random.seed, np.random.seed):
        s(seed + _rank)
    amp_dtype, why = default_dtype(_device) if dtype == "auto" else (getattr(torch, dtype), "--dtype")
    print0(f"dtype {str(amp_dtype).removeprefix('torch.')} ({why})")
    amp = torch.autocast(_device.type, dtype=amp_dtype) if amp_dtype != torch.float32 else contextlib.nullcontext()
    raw, tok, special, ckpt, ship = load()
    train_rows, eval_rows = load_data(tok, special["eos"])
    if prepare_data_only:
        return print0("prepare_data_only=True: data cached, exiting")
    batch_rows = _world * per_device_train_batch_size * gradient_accumulation_steps  # rows per optimizer step
    total = max_steps if max_steps > 0 else math.ceil(num_train_epochs * (len(train_rows) // batch_rows))
    model = wrap(raw, amp_dtype)
    params = [p for p in model.parameters() if p.requires_grad]  # after wrap: FSDP's shards
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                            lr=learning_rate, betas=(adam_beta1, adam_beta2), eps=adam_epsilon)
    gen = torch.Generator(device=_device).manual_seed(seed)  # the training noise, alike on every rank
    step = restore(ckpt, raw, opt, gen, total) if ckpt else 0
    if step >= total:
        return print0(f"already at step {step} of {total}: nothing to train, nothing written (raise --max_steps)")
    model = (torch.compile(model) if compile else model).train()
    batches = global_batches(train_rows, step * gradient_accumulation_steps)
    log, finish_log = open_log(ckpt, step)
    n_params = sum(p.numel() for p in raw.parameters())
    # MFU (CUDA): 6 flops/param/token per pass; BD3LM (x_t, x_0) and complementary masks make 2; attention not counted
    peak = next((f for k, f in (("H100", 989e12), ("H200", 989e12), ("A100", 312e12)) if _device.type == "cuda"
                 and k in torch.cuda.get_device_name(_device)), 0) * _world
    flops_per_token = 6 * n_params * (2 if objective == "bd3lm" else 1) * (2 if complementary_masks else 1)
    print0(f"{objective} {task}: {n_params / 1e6:.1f}M params | {_world} "
           f"process(es) on {_device.type} | global batch {batch_rows} rows | {total} steps")
    if 0 < len(eval_rows) < per_device_eval_batch_size:
        print0(f"notice: {len(eval_rows)} held-out rows do not fill one eval batch: no eval")

    def run_eval():
        if len(eval_rows) >= per_device_eval_batch_size:
            loss = evaluate(model, eval_rows, special, amp)
            print0(f"eval step {step}: loss {loss:.4f} | ppl {math.exp(min(loss, 50)):.2f}")
            log({"step": step, "eval_loss": loss, "eval_ppl": math.exp(min(loss, 50))})

    if eval_on_start and step == 0:
        run_eval()
    save_every, eval_every = (max(1, round(x * total)) if 0 < x < 1 else int(x) for x in (save_steps, eval_steps))
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    loss, dt_avg, last_log = None, None, time.time()
    while step < total:
        t0 = time.time()
        loss, tokens, gnorm = accumulate_gradients(model, raw, batches, gen, special, amp, step / total)
        bs, ratio = recipe_at(step / total)
        # one all-reduce for the logged means and the stop flag: a Ctrl-C or SIGTERM on any rank stops them all
        loss, gnorm, stopping = all_sum(loss, gnorm, _stop > 0)
        loss, gnorm = loss / _world, gnorm / _world
        if not (math.isfinite(loss) and math.isfinite(gnorm)):
            raise SystemExit(f"error: non-finite loss ({loss}) or grad norm ({gnorm}) at step {step + 1}; "
                             f"stopped before the update, no checkpoint written. Newest good checkpoint: "
                             f"{find_checkpoint()}. Lower --learning_rate or check the data, then --resume=True")
        lr = learning_rate * lr_factor(step, total)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        dt = time.time() - t0
        dt_avg = dt if dt_avg is None else 0.9 * dt_avg + 0.1 * dt
        if step % log_steps == 0 or step in (1, total) or time.time() - last_log > 30:  # never silent for long
            last_log, eta = time.time(), dt_avg * (total - step)
            recipe = {**({"block": bs} if block_curriculum else {}), **({"attn": ratio} if attention_anneal else {})}
            mfu = [f"mfu {flops_per_token * tokens / dt / peak:.1%}"] if peak else []
            print0(" | ".join([f"step {step}/{total}", f"loss {loss:.4f}", f"lr {lr:.2e}", f"gnorm {gnorm:.3f}",
                               *(f"{k} {v:g}" for k, v in recipe.items()), f"dt {dt * 1000:.0f}ms",
                               f"tok/s {tokens / dt:,.0f}", *mfu, f"eta {eta // 3600:.0f}h{eta % 3600 / 60:02.0f}m"]))
            log({"step": step, "loss": loss, "lr": lr, "grad_norm": gnorm, "dt": dt, "tok_per_s": tokens / dt, **recipe})
        if step < total and eval_every and step % eval_every == 0:
            run_eval()
        if step < total and (stopping or save_every and step % save_every == 0):
            save_checkpoint(f"checkpoint-{step}", step, total, raw, tok, opt, gen, loss)
        if step < total and stopping:
            print0(f"interrupted at step {step}; continue with: {resume_command()}")
            raise SystemExit(128 + (_stop or signal.SIGTERM))
    run_eval()
    if save_final_state:
        save_checkpoint(f"checkpoint-{step}", step, total, raw, tok, opt, gen, loss)
    save_checkpoint("checkpoint-final", step, total, raw, tok, opt, gen, loss, ship)
    finish_log()
    if _world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    from configurator import configure
    configure(globals())
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM before the training loop, which saves on them
        raise SystemExit("\ninterrupted before training started: nothing to save")
