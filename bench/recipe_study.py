"""
The conversion recipe: which of the field's ways of keeping what the AR parent knows close the gap
between the converted model and AR fine-tuning on the same budget?

Every row fine-tunes SmolLM2-135M-Instruct on synthetic:sort (sort 10-16 numbers below 100, ~36
answer tokens) with the same rows, steps, batch, warm-up and seed, then decodes the held-out
problems at batch 1 and scores exact match:

  AR-SFT            the parent fine-tuned as AR (objective=ar): the target
  reference         the reference's BD3LM recipe, block 8
  +shift ...        one ingredient added at a time, cumulatively (INGREDIENTS, in order)
  recipe            config/a2d_recipe.py, the chosen combination
  recipe -X         the recipe without ingredient X (leave-one-out)
  MDLM ...          the reference's MDLM, + shift, + attention annealing

BD3LM rows decode with sample.py at block 8, one token per step and at thresholds 0.9/0.7/0.5; under
context_causal + shift also at block 1 (the converted model decoding as the AR model it holds) and with
verify=True (the same answers, the diffusion rows drafting several tokens a forward); AR rows greedily
with the KV cache. Each row trains once, one at a time, with the train.py command printed
before it, and lands in out_dir/results.jsonl: a row already there is skipped, so the study resumes
where it stopped, and another seed, budget, learning rate or task only adds rows.

    python bench/recipe_study.py                                      # the screen (~3 h on 2 cores)
    python bench/recipe_study.py --rows=reference,recipe --seed=7     # a second seed
    python bench/recipe_study.py --rows=reference,recipe --steps=640  # one point of the budget curve
    python bench/recipe_study.py --rows=AR-SFT --lr=5e-4              # tune the baseline too
    python bench/recipe_study.py --rows=AR-SFT,recipe --data=synthetic:reverse  # a task it was not tuned on
    python bench/recipe_study.py --report=True                        # the tables (and plot) of all rows so far
"""

import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

from a2d_vs_ar import a2d_fn, ar_generate, decode, heldout, run, sft, sft_command, sft_flags  # noqa: E402
from model import Model, default_dtype  # noqa: E402
from sample import chat_ids, load  # noqa: E402

# -----------------------------------------------------------------------------
rows = ""  # the rows to run, comma-separated names (recipes()); "": the screen, every row but leave-one-out
seed = 42
steps = 160  # SFT steps of 8 chats: the budget
lr = 2e-4
data = "synthetic:sort"
model_dir = ".models/a2d/SmolLM2-135M"  # the converted model; made by convert.py if missing
out_dir = "out/recipe"
n_test = 64  # held-out problems, all decoded
max_new_tokens = 48  # the longest sort answer is 47 tokens
thresholds = [0.9, 0.7, 0.5]
dtype = "auto"  # one dtype for training and decoding
report = False  # print the tables of every row in out_dir/results.jsonl and draw the plots, then exit
retime = False  # decode rows already in results.jsonl again (alone on the machine, for the speed table): newest wins
plot_dir = "out/recipe"  # where report=True draws its plots; docs/ to refresh the README's
# -----------------------------------------------------------------------------

BLOCK = 8
# (name, train.py flags that add it, flags that take it out of config/a2d_recipe.py)
INGREDIENTS = [
    ("shift", ["--right_shift_logits=True"], ["--right_shift_logits=False"]),
    ("context-causal", ["--context_causal=True"], ["--context_causal=False", "--ar_loss_weight=0"]),
    ("curriculum", ["--block_curriculum=0.5"], ["--block_curriculum=0"]),
    ("AR loss", ["--ar_loss_weight=1.0"], ["--ar_loss_weight=0"]),
    ("complementary", ["--complementary_masks=True"], ["--complementary_masks=False"]),
]
RECIPE = "config/a2d_recipe.py"


def recipes():
    """name -> (objective, train.py flags after the common ones)."""
    out = {"AR-SFT": ("ar", []), "reference": ("bd3lm", [])}
    flags = []
    for name, on, _ in INGREDIENTS:
        flags = flags + on
        out["+" + name] = ("bd3lm", flags)
    out["recipe"] = ("bd3lm", [RECIPE])
    out.update({f"recipe -{name}": ("bd3lm", [RECIPE, *off]) for name, _, off in INGREDIENTS})
    out["MDLM"] = ("mdlm", [])
    out["MDLM +shift"] = ("mdlm", ["--right_shift_logits=True"])
    out["MDLM +shift +anneal"] = ("mdlm", ["--right_shift_logits=True", "--attention_anneal=0.5"])
    return out


def decodings(model, d):
    """(label, fn) per decoding of an A2D checkpoint: block 8 one token per step, then the thresholds."""
    out = [(f"block {BLOCK}, one token per step", a2d_fn(model, d, max_new_tokens, block_size=BLOCK))]
    out += [(f"block {BLOCK}, threshold {t}", a2d_fn(model, d, max_new_tokens, block_size=BLOCK, threshold=t))
            for t in thresholds]
    if d["context_causal"] and d["right_shift_logits"]:  # block 1: every token from a causal row, as AR; verify:
        out.append(("block 1 (as AR)", a2d_fn(model, d, max_new_tokens, block_size=1)))  # the same, drafts checked
        out += [(f"verify, block {b}", a2d_fn(model, d, max_new_tokens, block_size=b, verify=True)) for b in (4, BLOCK)]
    return out


def flags_of(name, dev_dtype):
    objective, extra = recipes()[name]
    return objective, [model_dir, os.path.join(out_dir, name.replace(" ", "_")),
                       sft_flags(objective, steps, 8, lr, BLOCK, n_test, data, seed) + extra, dev_dtype]


def train_and_score(name, dev, one):
    """Train one row (or find it trained), decode the held-out problems -> result dicts, one per decoding."""
    objective, args = flags_of(name, str(one)[6:])
    t0 = time.time()
    ckpt = sft(*args)
    with open(os.path.join(os.path.dirname(ckpt), "metrics.jsonl")) as f:
        logged = [json.loads(line) for line in f]
    meta = dict(recipe=name, run=os.path.basename(os.path.dirname(ckpt)), seed=seed, steps=steps, lr=lr, data=data,
                train_min=(time.time() - t0) / 60, first_loss=logged[0]["loss"],
                eval_loss=next((m["eval_loss"] for m in logged[::-1] if "eval_loss" in m), float("nan")))
    test = heldout(ckpt)
    if objective == "ar":
        m = Model.from_pretrained(ckpt, dtype=one, device=dev)
        _, tok, d = load(model_dir, dtype=one, device=dev)  # the tokenizer and ids of the same family
        fns = [("greedy, KV cache", lambda p: ar_generate(m, p, max_new_tokens, d["eos_token_id"]))]
    else:
        m, tok, d = load(ckpt, dtype=one, device=dev)
        fns = decodings(m, d)
    prompts = [chat_ids(tok, r["messages"]) for r in test]
    out = []
    for label, fn in fns:
        out.append({**meta, **decode(name, label, test, prompts, tok, fn, 1)})
        print(f"  {label}: exact {out[-1]['exact']:.1%}, {out[-1]['tok_per_fwd']:.2f} tokens/forward, "
              f"{out[-1]['tps']:.1f} tokens/s", flush=True)
    return out


def key(r):  # what a table line stands for
    return r["recipe"], r["seed"], r["steps"], r["lr"], r["data"]


def newest(results):
    """One result per line and decoding: the line's newest run (an edited config/a2d_recipe.py trains a new
    one) and of it the newest decode (retime=True decodes again)."""
    last_run = {key(r): r["run"] for r in results}
    return list({key(r) + (r["decoding"],): r for r in results if r["run"] == last_run[key(r)]}.values())


def tables(results):
    """Markdown: one line per trained row (accuracy at each decoding, tokens per forward), then the speeds."""
    by_row = {}
    for r in newest(results):
        by_row.setdefault(key(r), []).append(r)
    head = ["| row | seed | steps | lr | data | held-out loss | step-1 loss | exact: one/step | 0.9 | 0.7 | 0.5 | "
            "block 1 | verify 8 | tokens/fwd at 0.9 / 0.7 / 0.5 | verify 4 / 8 |", "|" + "---|" * 15]
    speed = ["| row | seed | steps | data | decoding | exact | tokens / forward | ms / forward | tokens/s | vs AR-SFT |",
             "|" + "---|" * 10]
    for k, rs in by_row.items():
        at = {r["decoding"]: r for r in rs}
        ex = lambda d: f"{at[d]['exact']:.1%}" if d in at else "–"
        th = [f"block {BLOCK}, threshold {t}" for t in thresholds]
        one = "greedy, KV cache" if "greedy, KV cache" in at else f"block {BLOCK}, one token per step"
        head.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]:g} | {k[4].removeprefix('synthetic:')} | "
                    f"{rs[0]['eval_loss']:.3f} | {rs[0]['first_loss']:.2f} | {ex(one)} | "
                    + " | ".join(map(ex, th)) + f" | {ex('block 1 (as AR)')} | {ex(f'verify, block {BLOCK}')} | "
                    + " / ".join(f"{at[d]['tok_per_fwd']:.2f}" for d in th if d in at) + " | "
                    + " / ".join(f"{at[d]['tok_per_fwd']:.2f}" for d in ("verify, block 4", f"verify, block {BLOCK}")
                                 if d in at) + " |")
        # against the best-tuned AR-SFT of the same seed, budget and task
        ar = max((a for a in newest(results) if a["recipe"] == "AR-SFT" and (a["seed"], a["steps"], a["data"]) ==
                  (k[1], k[2], k[4])), key=lambda a: a["exact"], default=None)
        for r in rs:
            vs = f"{r['tps'] / ar['tps']:.2f}x" if ar else "–"
            speed.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[4].removeprefix('synthetic:')} | {r['decoding']} | "
                         f"{r['exact']:.1%} | {r['tok_per_fwd']:.2f} | {r['ms_per_fwd']:.1f} | {r['tps']:.1f} | {vs} |")
    return "\n".join(head), "\n".join(speed)


def draw(results, path):
    """Left: exact match against tokens/s at batch 1 (one token per step, then the thresholds) at `steps`.
    Right: the budget curve, exact match (one token per step; AR greedy) against SFT steps."""
    try:
        import matplotlib
    except ImportError:
        return print(f"notice: no plot ({path}): pip install matplotlib, then rerun with --report=True")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    mine = [r for r in newest(results) if (r["data"], r["seed"], r["lr"]) == (data, seed, lr)
            and "block 1" not in r["decoding"]]
    curve = len({r["steps"] for r in mine}) > 1  # the right panel once a second budget is trained
    fig, axes = plt.subplots(1, 1 + curve, figsize=(6 + 6 * curve, 4.2), squeeze=False)
    speed, budget = axes[0][0], axes[0][-1]
    for name, style in (("AR-SFT", "*"), ("reference", "s-"), ("recipe", "o-")):
        rs = [r for r in mine if r["recipe"] == name]
        pts = sorted((r["tps"], r["exact"]) for r in rs if r["steps"] == steps and "verify" not in r["decoding"])
        if pts:
            speed.plot(*zip(*pts), style, markersize=12 if name == "AR-SFT" else 6, label=name)
        checked = [(r["tps"], r["exact"]) for r in rs if r["steps"] == steps and "verify" in r["decoding"]]
        if checked:  # the causal rows checking the drafts: a separate decoder, not a point of the threshold curve
            speed.plot(*zip(*checked), "D", markersize=8, label=f"{name}, verify=True (block 4, 8)")
        one = sorted((r["steps"], r["exact"]) for r in rs if r["decoding"].endswith(("KV cache", "one token per step")))
        if curve and one:
            budget.plot(*zip(*one), style.replace("*", "*-"), label=name)
    speed.set(xlabel="answer tokens / s, batch 1 (lines: one token per step, thresholds 0.9 / 0.7 / 0.5)",
              ylabel="exact match", title=f"{data}, SmolLM2-135M, {steps} SFT steps x 8")
    if curve:
        budget.set(xscale="log", xlabel="SFT steps of 8 chats", ylabel="exact match (one token per step; AR greedy)",
                   title="the budget each needs")
        budget.set_xticks([80, 160, 320, 640], ["80", "160", "320", "640"])
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main():
    path = os.path.join(out_dir, "results.jsonl")
    done = [json.loads(line) for line in open(path)] if os.path.exists(path) else []
    if report:
        for t in tables(done):
            print(t + "\n")
        return draw(done, os.path.join(plot_dir, "recipe.png"))
    all_rows = recipes()
    todo = [n.strip() for n in rows.split(",") if n.strip()] or [n for n in all_rows if " -" not in n]
    if unknown := [n for n in todo if n not in all_rows]:
        raise SystemExit(f"error: unknown rows {unknown}; choose from {list(all_rows)}")
    if not os.path.isdir(model_dir):
        run(["convert.py", "--model_name_or_path=smollm2", f"--output_dir={model_dir}"])
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    one = default_dtype(dev)[0] if dtype == "auto" else getattr(torch, dtype)
    os.makedirs(out_dir, exist_ok=True)
    for name in todo:
        run_dir = os.path.basename(sft_command(*flags_of(name, str(one)[6:])[1])[1])
        if not retime and any(r["run"] == run_dir for r in done):
            continue
        print(f"\n== {name} (seed {seed}, {steps} steps, lr {lr:g}, {data})", flush=True)
        new = train_and_score(name, dev, one)
        with open(path, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in new)
        done += new
    for t in tables(done):
        print("\n" + t)


if __name__ == "__main__":
    from configurator import configure
    configure(globals())
    main()
