"""
Train-step throughput (tokens/s) of MDLM and BD3LM: our Model with model.py's losses vs the same
loss computed through transformers' own model class, which is what the dLLM reference trains.
Same weights, shape, batch, noise and AdamW; one step = forward + loss + backward + optimizer.

The reference path, as its trainers do it:
  MDLM:  a 4D float mask of zeros (its bidirectional padding mask), logits on all L rows,
         cross-entropy on the (B, V, L) transposed logits.
  BD3LM: x_t ⊕ x_0 with a 4D bool mask through HF sdpa, the LM head on all 2L rows, then the
         x_t half kept.
Ours: SDPA with no mask for MDLM; the LM head and fp32 cross-entropy on the masked rows only (for
BD3LM: of the x_t half), a dense bool mask on CPU and a flex_attention BlockMask on CUDA.

    python bench/train_bench.py                        # CPU, a small Qwen3-shaped model
    python bench/train_bench.py --device=cuda --hidden_size=1024 --num_hidden_layers=28 \\
        --intermediate_size=3072 --num_attention_heads=16 --vocab_size=151936 --seq_len=1024 \\
        --batch_size=8 --peak_tflops=989                  # Qwen3-0.6B shape on a GPU, with MFU
"""

import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from model import (Config, Model, bd3lm_attention_mask, bd3lm_block_mask, bd3lm_loss, forward_mask,  # noqa: E402
                   loss_weight, mdlm_loss, sample_t)

# -----------------------------------------------------------------------------
hidden_size = 384
num_hidden_layers = 6
num_attention_heads = 6
num_key_value_heads = 2
head_dim = 64
intermediate_size = 1024
vocab_size = 32000
batch_size = 4
seq_len = 256
block_size = 32
steps = 6  # timed steps per contender (after warmup), interleaved ours / transformers
warmup = 2
device = "cpu"
dtype = "float32"  # autocast dtype on top of fp32 params: float32 | bfloat16
threads = 0  # torch threads on CPU (0: torch's default)
peak_tflops = 0.0  # the accelerator's dense peak, for MFU (e.g. 989 for an H100 in bf16)
# -----------------------------------------------------------------------------


def hf_model(cfg, sd):
    import transformers
    hf_cfg = transformers.Qwen3Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim, rope_theta=cfg.rope_theta,
        tie_word_embeddings=False, attn_implementation="sdpa", torch_dtype=torch.float32)
    m = transformers.Qwen3ForCausalLM(hf_cfg)
    m.load_state_dict(sd, strict=True)
    return m.to(device).train()


def hf_token_loss(logits, x0, masked, t):
    # the reference trainers' arithmetic: CE on (B, V, L), times w(t) = 1/t, token-normalised
    nll = F.cross_entropy(logits.transpose(1, 2), x0, reduction="none")
    return (nll * loss_weight(t)[:, None] * masked).sum() / masked.numel()


def hf_mdlm(m, x0, xt, masked, t):
    B, L = x0.shape
    mask = torch.zeros(B, 1, L, L, device=x0.device)  # _prepare_4d_attention_mask of all-ones
    return hf_token_loss(m(input_ids=xt, attention_mask=mask).logits, x0, masked, t)


def hf_bd3lm(m, x0, xt, masked, t):
    B, L = x0.shape
    mask = bd3lm_attention_mask(L, block_size, x0.device)[None, None]
    pos = torch.arange(L, device=x0.device).repeat(2)[None].expand(B, 2 * L)
    logits = m(input_ids=torch.cat([xt, x0], 1), attention_mask=mask, position_ids=pos).logits[:, :L]
    return hf_token_loss(logits, x0, masked, t)


def main():
    if threads:
        torch.set_num_threads(threads)
    cfg = Config(model_type="a2d-qwen3", vocab_size=vocab_size, hidden_size=hidden_size,
                 intermediate_size=intermediate_size, num_hidden_layers=num_hidden_layers,
                 num_attention_heads=num_attention_heads, num_key_value_heads=num_key_value_heads,
                 head_dim=head_dim, tie_word_embeddings=False, rope_theta=1e6, torch_dtype="float32",
                 mask_token_id=vocab_size - 1)
    ours = Model(cfg).init_weights(seed=0).to(device).train()
    theirs = hf_model(cfg, {k: v.cpu() for k, v in ours.state_dict().items()})
    n_head = cfg.vocab_size * cfg.hidden_size
    n_body = sum(p.numel() for p in ours.parameters()) - 2 * n_head  # embedding lookups are free
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, vocab_size - 1, (batch_size, seq_len), generator=g).to(device)
    t = sample_t(batch_size, generator=g).to(device)
    xt, masked = forward_mask(x0.cpu(), x0.cpu(), t.cpu(), cfg.mask_token_id, generator=g)
    xt, masked = xt.to(device), masked.to(device)
    cuda = device.startswith("cuda")
    bmask = bd3lm_block_mask(seq_len, block_size, device) if cuda else \
        bd3lm_attention_mask(seq_len, block_size, device)[None, None]
    amp = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    contenders = {
        "mdlm": (lambda: mdlm_loss(ours, x0, x0, xt, masked, t), lambda: hf_mdlm(theirs, x0, xt, masked, t)),
        "bd3lm": (lambda: bd3lm_loss(ours, x0, x0, xt, masked, t, block_size, full_mask=bmask),
                  lambda: hf_bd3lm(theirs, x0, xt, masked, t)),
    }
    print(f"device {device} | {torch.get_num_threads()} threads | autocast {dtype} | qwen3-shaped "
          f"{num_hidden_layers} layers x {hidden_size} (heads {num_attention_heads}/{num_key_value_heads}), "
          f"vocab {vocab_size}, {(n_body + 2 * n_head) / 1e6:.1f}M params | batch {batch_size} x {seq_len} "
          f"| bd3lm block {block_size} | median of {steps} steps")
    print("\n| objective | ours tok/s | transformers tok/s | ours / transformers | loss ours | loss transformers |"
          + (" ours MFU |" if peak_tflops else ""))
    print("|---|---|---|---|---|---|" + ("---|" if peak_tflops else ""))
    for name, fns in contenders.items():
        opts = [torch.optim.AdamW(m.parameters(), lr=1e-5) for m in (ours, theirs)]
        times, first = ([], []), [None, None]
        for i in range(warmup + steps):
            for j in ((0, 1) if i % 2 else (1, 0)):  # interleaved, alternating: machine load hits both alike
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                with amp:
                    loss = fns[j]()
                loss.backward()
                opts[j].step()
                opts[j].zero_grad(set_to_none=True)
                if cuda:
                    torch.cuda.synchronize()
                if first[j] is None:
                    first[j] = loss.item()  # same weights and noise: the two must agree
                if i >= warmup:
                    times[j].append(time.perf_counter() - t0)
        tok = [batch_size * seq_len / statistics.median(ts) for ts in times]
        row = f"| {name} | {tok[0]:,.0f} | {tok[1]:,.0f} | {tok[0] / tok[1]:.2f}x | {first[0]:.5f} | {first[1]:.5f} |"
        if peak_tflops:
            # 6 flops per param per token; BD3LM runs the body on 2L tokens and (ours) the head on L
            flops = 6 * batch_size * seq_len * (n_body * (2 if name == "bd3lm" else 1) + n_head)
            row += f" {flops * tok[0] / (batch_size * seq_len) / (peak_tflops * 1e12):.1%} |"
        print(row, flush=True)


if __name__ == "__main__":
    from configurator import configure
    configure(globals())
    main()
