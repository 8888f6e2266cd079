"""
Draw the training attention masks as docs/bd3lm_mask.png, from model.py's own rule
(bd3lm_allowed), with no plotting library: a PNG is a zlib stream of RGB rows.

Left: MDLM, one bidirectional forward over x_t (every query sees every key).
Right: BD3LM, one forward over x_t ⊕ x_0 (rows = queries, columns = keys, L tokens each half):
  blue   x_t -> x_t  block diagonal: a noisy block sees itself;
  orange x_t -> x_0  offset block-causal: ... and the clean blocks before it;
  green  x_0 -> x_0  block-causal: the clean stream, as in AR but block by block;
  white  not allowed (x_0 never sees x_t).

    python bench/mask_picture.py                 # L=8, block 2
    python bench/mask_picture.py --L=16 --block_size=4
"""

import os
import struct
import sys
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402

from model import bd3lm_attention_mask  # noqa: E402

# -----------------------------------------------------------------------------
L = 8
block_size = 2
cell = 24  # pixels per mask entry
out = os.path.join(ROOT, "docs", "bd3lm_mask.png")
# -----------------------------------------------------------------------------

WHITE, GRID, MDLM = (255, 255, 255), (200, 200, 200), (90, 90, 90)
QUADRANT = {(False, False): (66, 133, 244), (False, True): (244, 160, 0), (True, True): (15, 157, 88)}


def png(pixels):
    """pixels: rows of (r, g, b) -> PNG bytes (8-bit RGB, no interlace)."""
    h, w = len(pixels), len(pixels[0])
    raw = b"".join(b"\0" + bytes(c for px in row for c in px) for row in pixels)
    chunk = lambda tag, data: struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def draw(colors, split=None):
    """colors: n x n entries -> pixel rows, a grid line between cells and a thick one at `split`."""
    n = len(colors)
    rows = []
    for y in range(n * cell):
        row = []
        for x in range(n * cell):
            i, j = y // cell, x // cell
            edge = y % cell == 0 or x % cell == 0
            thick = split is not None and (abs(y - split * cell) <= 1 or abs(x - split * cell) <= 1)
            row.append((0, 0, 0) if thick else GRID if edge else colors[i][j])
        rows.append(row)
    return rows


def main():
    allowed = bd3lm_attention_mask(L, block_size)  # (2L, 2L), True = may attend
    bd3 = [[QUADRANT[(i >= L, j >= L)] if allowed[i, j] else WHITE for j in range(2 * L)] for i in range(2 * L)]
    mdlm = [[MDLM] * L for _ in range(L)]
    left, right = draw(mdlm), draw(bd3, split=L)
    gap = [WHITE] * (2 * cell)
    # MDLM's L x L panel at the top of the BD3LM panel's 2L height
    pixels = [(left[y] if y < len(left) else [WHITE] * len(left[0])) + gap + right[y] for y in range(len(right))]
    with open(out, "wb") as f:
        f.write(png(pixels))
    assert torch.equal(allowed[L:, :L], torch.zeros(L, L, dtype=torch.bool))  # x_0 never sees x_t
    print(f"wrote {out}: MDLM {L}x{L} | BD3LM {2 * L}x{2 * L}, block {block_size}")


if __name__ == "__main__":
    from configurator import configure
    configure(globals())
    main()
