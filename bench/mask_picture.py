"""
Draw the training attention masks from model.py's own rule (bd3lm_allowed): rows are queries,
columns keys, a cell coloured where the query may attend to the key (needs matplotlib).

Left: MDLM, one bidirectional forward over x_t (every query sees every key).
Middle: BD3LM, one forward over x_t ⊕ x_0 (L tokens each half, at the same positions 0..L-1):
  blue   x_t -> x_t  a noisy block sees itself;
  orange x_t -> x_0  ... and the clean blocks before it;
  green  x_0 -> x_0  the clean stream, block-causal;
  white  not allowed (x_0 never sees x_t).
Right: BD3LM with context_causal=True (config/a2d_recipe.py): the clean stream is causal token by
  token, exactly the AR parent's mask, so its rows are the AR model's and its K/V are what a causal
  model caches; only the noisy block attends both ways.

    python bench/mask_picture.py                                # L=8, block 2, into out/
    python bench/mask_picture.py --out=docs/bd3lm_mask.png      # the README's picture
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

from model import bd3lm_attention_mask  # noqa: E402

# -----------------------------------------------------------------------------
L = 8
block_size = 2
out = "out/bd3lm_mask.png"
# -----------------------------------------------------------------------------

COLORS = ["white", "#4285f4", "#f4a000", "#0f9d58", "#5a5a5a"]  # none, x_t->x_t, x_t->x_0, x_0->x_0, MDLM


def quadrants(allowed):
    """(2L, 2L) bool -> colour index per cell: which half the query and the key are in."""
    q_x0, k_x0 = torch.arange(2 * L)[:, None] >= L, torch.arange(2 * L)[None, :] >= L
    kind = torch.where(q_x0, 3, torch.where(k_x0, 2, 1))
    return torch.where(allowed, kind, 0)


def panel(ax, cells, title, halves):
    from matplotlib.colors import ListedColormap
    n = cells.shape[0]
    ax.imshow(cells, cmap=ListedColormap(COLORS), vmin=0, vmax=len(COLORS) - 1, extent=(0, n, n, 0))
    ax.set_xticks(range(n + 1), minor=True)
    ax.set_yticks(range(n + 1), minor=True)
    ax.grid(which="minor", color="#c8c8c8", linewidth=0.5)
    for b in range(0, n + 1, block_size if halves else n):  # block boundaries, and the x_t | x_0 cut in bold
        w = 2.5 if halves and b == L else 1.2
        ax.axhline(b, color="black", linewidth=w)
        ax.axvline(b, color="black", linewidth=w)
    names = ["x_t", "x_0"] if halves else ["x_t"]
    ticks = [L * i + L / 2 for i in range(len(names))]
    ax.set_xticks(ticks, names)
    ax.set_yticks(ticks, names)
    ax.tick_params(length=0)
    ax.set_xlabel("keys")
    ax.set_ylabel("queries")
    ax.xaxis.set_label_position("top")
    ax.xaxis.tick_top()
    ax.annotate(title, (0.5, 0), xycoords="axes fraction", xytext=(0, -8), textcoords="offset points",
                ha="center", va="top", fontsize=12)


def main():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    fig, axes = plt.subplots(1, 3, figsize=(13, 5.4), gridspec_kw={"width_ratios": [1, 2, 2]})
    panel(axes[0], torch.full((L, L), 4), "MDLM: bidirectional over x_t", False)
    panel(axes[1], quadrants(bd3lm_attention_mask(L, block_size)), f"BD3LM, block {block_size}", True)
    panel(axes[2], quadrants(bd3lm_attention_mask(L, block_size, context_causal=True)),
          f"BD3LM, block {block_size}, context_causal", True)
    meaning = ["", "x_t -> x_t: a noisy block sees itself", "x_t -> x_0: ... and the clean blocks before it",
               "x_0 -> x_0: the clean stream (block-causal, or causal)", "MDLM: every query sees every key"]
    fig.legend([Patch(color=c) for c in COLORS[1:]], meaning[1:], loc="lower center", ncol=2, frameon=False,
               fontsize=11)
    fig.tight_layout(rect=(0, 0.12, 1, 0.97))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    from configurator import configure
    configure(globals())
    main()
