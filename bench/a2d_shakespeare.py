"""
The A2D claim at small scale, on tiny-shakespeare, on CPU.

Claim 1 (A2D): a diffusion LM started from a pretrained AR model beats one trained
from scratch with the same step budget.
Claim 2 (BD3LM paper, table of test perplexities): AR < BD3LM small blocks
< BD3LM large blocks < MDLM.

Runs, all through train.py with a char-level Qwen3-shaped model (nanoGPT's CPU
shakespeare size):
  AR         pretrained from scratch (the source model)
  MDLM-scr   MDLM from scratch
  MDLM-A2D   MDLM from the AR weights
  BD3LM-4    BD3LM from the AR weights, block 4
  BD3LM-16   BD3LM from the AR weights, block 16
Then scores each on held-out text (the last 10% of the file, never trained on):
AR by exact next-token NLL, the diffusion models by their ELBO with fixed masks
and stratified t, as nats per token and perplexity. Validation curves from
train.py's metrics.jsonl go to out/a2d_shakespeare/ (--plot=docs/a2d_shakespeare.png: the README's; matplotlib).

    python bench/a2d_shakespeare.py                       # ~25 min on 2 CPU cores
    python bench/a2d_shakespeare.py --steps=300 --ar_steps=300   # a quick look
"""

import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

from data.prepare import find  # noqa: E402
from model import Config, Model, bd3lm_loss, forward_mask, mdlm_loss  # noqa: E402

# -----------------------------------------------------------------------------
data = ""  # a text file; default: tinyshakespeare/input.txt where data/prepare.py's find() looks
out_dir = "out/a2d_shakespeare"
ar_steps = 2000  # AR pretraining steps
steps = 1500  # steps of each diffusion run (the same budget for scratch and A2D)
max_length = 64  # characters per training sequence (a multiple of 16)
batch_size = 32
learning_rate = 1e-3
n_layer, n_head, n_embd = 4, 4, 128
eval_seqs = 256  # held-out sequences scored at the end
eval_t = 16  # stratified times per sequence for the ELBO
dtype = "float32"  # train.py autocast dtype
seed = 1337
plot = "out/a2d_shakespeare/a2d_shakespeare.png"  # the curves (matplotlib); docs/a2d_shakespeare.png: the README's
# -----------------------------------------------------------------------------


def char_tokenizer(text, path):
    """A char-level tokenizer that AutoTokenizer loads: one token per character, plus EOS and <|mask|>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    chars = sorted(set(text))
    vocab = {c: i for i, c in enumerate(chars)}
    vocab["<|endoftext|>"], vocab["<|mask|>"] = len(chars), len(chars) + 1
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("(.|\\n)"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", mask_token="<|mask|>",
                                  pad_token="<|endoftext|>")
    tok.save_pretrained(path)
    return tok


def source_model(tok, path):
    cfg = Config(model_type="qwen3", vocab_size=len(tok), hidden_size=n_embd, intermediate_size=4 * n_embd,
                 num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_head // 2,
                 head_dim=n_embd // n_head, max_position_embeddings=max_length, rope_theta=10000.0,
                 tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id,
                 mask_token_id=tok.mask_token_id, torch_dtype="float32")
    Model(cfg).init_weights(seed).save_pretrained(path)
    tok.save_pretrained(path)


def train(name, init, objective, n_steps, **kw):
    run = os.path.join(out_dir, name)
    final = os.path.join(run, "checkpoint-final")
    if os.path.isdir(final):
        print(f"[{name}] found {final}, skipping training")
        return final
    # --resume=True: a run stopped by Ctrl-C (or killed) goes on from its newest checkpoint
    args = [sys.executable, os.path.join(ROOT, "train.py"), f"--model_name_or_path={init}",
            f"--objective={objective}", "--task=pt", f"--dataset_args={os.path.join(out_dir, 'train.txt')}",
            f"--max_length={max_length}", f"--max_steps={n_steps}", f"--learning_rate={learning_rate}",
            f"--per_device_train_batch_size={batch_size}", f"--per_device_eval_batch_size={batch_size}",
            "--warmup_steps=100", "--min_lr_ratio=0.1", "--insert_eos=False", "--eval_fraction=0.02",
            "--eval_steps=100", "--eval_iters=8", "--save_steps=100000", f"--dtype={dtype}", f"--seed={seed}",
            f"--output_dir={run}", "--log_steps=50", "--resume=True"] + [f"--{k}={v}" for k, v in kw.items()]
    print(f"[{name}] " + " ".join(args[1:]), flush=True)
    t0 = time.time()
    subprocess.run(args, check=True, cwd=ROOT)
    print(f"[{name}] trained in {time.time() - t0:.0f}s", flush=True)
    return final


@torch.no_grad()
def score(path, objective, block, val):
    """Held-out nats/token: exact NLL for AR, ELBO with fixed masks and stratified t for diffusion."""
    model = Model.from_pretrained(path, dtype=torch.float32)
    mask_id = model.config.mask_token_id
    total, count = 0.0, 0
    for i in range(0, len(val), batch_size):
        x = val[i:i + batch_size]  # (B, L)
        B, L = x.shape
        if objective == "ar":
            logits = model(x, causal=True)[:, :-1]  # token 0 has no context to be predicted from
            total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                                       reduction="sum").item()
            count += B * (L - 1)
            continue
        g = torch.Generator().manual_seed(seed + i)  # the same masks for every model
        for k in range(eval_t):
            # stratified t: one draw in each of eval_t equal slices of (0, 1]
            t = (k + torch.rand(B, generator=g)) / eval_t
            t = t.clamp_min(1e-3)
            xt, masked = forward_mask(x, x, t, mask_id, generator=g)
            if objective == "mdlm":
                loss = mdlm_loss(model, x, x, xt, masked, t, norm_type="batch")
            else:
                loss = bd3lm_loss(model, x, x, xt, masked, t, block, norm_type="batch")
            total += loss.item() * B / eval_t  # batch-normalised: sum over the batch / B
        count += B * L
    return total / count


def main():
    torch.manual_seed(seed)
    os.makedirs(out_dir, exist_ok=True)
    text = open(data or find("tinyshakespeare/input.txt")).read()
    cut = int(0.9 * len(text))
    with open(os.path.join(out_dir, "train.txt"), "w") as f:
        f.write(text[:cut])
    src = os.path.join(out_dir, "source")
    tok = char_tokenizer(text, src)
    if not os.path.exists(os.path.join(src, "config.json")):
        source_model(tok, src)

    t0 = time.time()
    ar = train("AR", src, "ar", ar_steps)
    runs = {
        "AR": (ar, "ar", None),
        "MDLM-scratch": (train("MDLM-scratch", src, "mdlm", steps, init_from_scratch=True), "mdlm", None),
        "MDLM-A2D": (train("MDLM-A2D", ar, "mdlm", steps), "mdlm", None),
        "BD3LM-4": (train("BD3LM-4", ar, "bd3lm", steps, block_size=4), "bd3lm", 4),
        "BD3LM-16": (train("BD3LM-16", ar, "bd3lm", steps, block_size=16), "bd3lm", 16),
    }
    train_s = time.time() - t0

    ids = torch.tensor(tok(text[cut:], add_special_tokens=False)["input_ids"])
    n = min(eval_seqs, len(ids) // max_length)
    val = ids[: n * max_length].view(n, max_length)
    rows = []
    for name, (path, objective, block) in runs.items():
        nll = score(path, objective, block, val)
        rows.append((name, nll, math.exp(nll)))

    print(f"\nheld-out tiny-shakespeare (last 10%, {n} x {max_length} chars), "
          f"{ar_steps} AR steps then {steps} steps per diffusion run; training took {train_s / 60:.1f} min")
    print(f"| run | objective | held-out nats/char (AR: NLL, diffusion: ELBO bound) | perplexity |")
    print("|---|---|---|---|")
    for name, nll, ppl in rows:
        print(f"| {name} | {runs[name][1]}{'' if runs[name][2] is None else f' block {runs[name][2]}'} "
              f"| {nll:.4f} | {ppl:.3f} |")
    ppl = {name: p for name, _, p in rows}
    a2d = ppl["MDLM-A2D"] < ppl["MDLM-scratch"]
    order = ppl["AR"] < ppl["BD3LM-4"] < ppl["BD3LM-16"] < ppl["MDLM-A2D"]
    print(f"\nA2D beats scratch (MDLM-A2D < MDLM-scratch): {'yes' if a2d else 'NO'}")
    print(f"BD3LM ordering (AR < BD3LM-4 < BD3LM-16 < MDLM): {'yes' if order else 'NO'}")
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"rows": rows, "a2d_beats_scratch": a2d, "ordering_holds": order}, f, indent=2)
    curves(runs)


def curves(runs):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (path, _, _) in runs.items():
        pts = []
        with open(os.path.join(os.path.dirname(path), "metrics.jsonl")) as f:
            for line in f:
                m = json.loads(line)
                if "eval_loss" in m:
                    pts.append((m["step"], m["eval_loss"]))
        if pts:
            ax.plot(*zip(*pts), label=name, marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats/char; ELBO for diffusion)")
    ax.set_title("tiny-shakespeare, char-level Qwen3-shaped model, CPU")
    ax.legend()
    ax.grid(alpha=0.3)
    os.makedirs(os.path.dirname(plot), exist_ok=True)
    fig.savefig(plot, dpi=120, bbox_inches="tight")
    print(f"wrote {plot}")


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from configurator import configure
    configure(globals())
    main()
