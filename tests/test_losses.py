"""The training objectives in model.py against independent hand computations.

A stub network returns fixed logits, so each loss reduces to arithmetic done here in plain
python floats (math.log of a softmax) from a fixed mask and fixed t."""

import math

import pytest
import torch

from model import (Config, Model, ar_loss, bd3lm_attention_mask, bd3lm_forward, bd3lm_logit_rows, bd3lm_loss, collate,
                   complementary_pair, forward_mask, mdlm_loss, sample_t)

V = 5


class Stub:
    """Stands in for Model: records the call, returns fixed logits (or the rows logits_slice picks)."""

    def __init__(self, logits):
        self.logits, self.calls = logits, []

    def __call__(self, input_ids, **kw):
        self.calls.append((input_ids, kw))
        sl = kw.get("logits_slice")
        return self.logits if sl is None else self.logits[sl] if isinstance(sl, tuple) else self.logits[:, sl]


def nll(row, target):  # -log softmax(row)[target], in python floats
    row = [float(v) for v in row]
    return math.log(sum(math.exp(v) for v in row)) - row[target]


@pytest.fixture
def case():
    torch.manual_seed(0)
    x0 = torch.tensor([[1, 2, 3, 4], [2, 2, 0, 1]])
    labels = torch.tensor([[-100, 2, 3, 4], [2, 2, 0, 1]])  # row 0: position 0 is prompt
    masked = torch.tensor([[False, True, False, True], [True, True, True, False]])
    t = torch.tensor([0.25, 0.8])
    logits = torch.randn(2, 4, V)
    return x0, labels, masked, t, logits


def hand_loss(x0, labels, masked, w, logits, norm, shift=False):
    """sum over masked positions of w * CE, normalised; w[b][i] per token."""
    B, L = x0.shape
    rows = [[0.0] * L for _ in range(B)]
    for b in range(B):
        for i in range(L):
            if masked[b, i]:
                src = logits[b, max(i - 1, 0)] if shift else logits[b, i]
                rows[b][i] = w[b][i] * nll(src, int(x0[b, i]))
    scored = [[int(labels[b, i]) != -100 for i in range(L)] for b in range(B)]
    if norm == "token":
        return sum(map(sum, rows)) / sum(map(sum, scored))
    if norm == "sequence":
        return sum(sum(r) / sum(s) for r, s in zip(rows, scored)) / B
    return sum(map(sum, rows)) / B


@pytest.mark.parametrize("schedule,weight_type,norm,shift", [
    ("linear", "scheduler", "token", False),
    ("linear", "scheduler", "sequence", False),
    ("cosine", "scheduler", "batch", False),
    ("linear", "uniform", "token", True),
])
def test_mdlm_loss_by_hand(case, schedule, weight_type, norm, shift):
    x0, labels, masked, t, logits = case
    mask_id = 4
    xt = torch.where(masked, mask_id, x0)
    stub = Stub(logits)
    got = mdlm_loss(stub, x0, labels, xt, masked, t, schedule=schedule, weight_type=weight_type,
                    norm_type=norm, right_shift_logits=shift)
    # w(t) = -alpha'(t) / (1 - alpha(t)): linear 1/t; cosine (pi/2) sin(pi/2 (1-t)) / cos(pi/2 (1-t))
    def w(tv):
        if weight_type == "uniform":
            return 1.0
        if schedule == "linear":
            return 1 / tv
        a = math.pi / 2 * (1 - tv)
        return (math.pi / 2) * math.sin(a) / math.cos(a)
    ws = [[w(float(t[b]))] * 4 for b in range(2)]
    want = hand_loss(x0, labels, masked, ws, logits, norm, shift)
    assert abs(got.item() - want) < 1e-5, (got.item(), want)
    ids, kw = stub.calls[0]
    assert torch.equal(ids, xt) and kw["causal"] is False  # bidirectional forward on x_t


def test_unknown_loss_settings_name_the_choices(case):
    x0, labels, masked, t, logits = case
    for kw, message in [(dict(schedule="cos"), "unknown schedule 'cos'; choose one of \\('linear', 'cosine'\\)"),
                        (dict(weight_type="elbo"), "unknown loss_weight_type 'elbo'; choose scheduler or uniform"),
                        (dict(norm_type="row"), "unknown loss_norm_type 'row'; choose token, sequence or batch")]:
        with pytest.raises(ValueError, match=message):
            mdlm_loss(Stub(logits), x0, labels, torch.where(masked, 4, x0), masked, t, **kw)


def test_bd3lm_loss_by_hand_per_block_t(case):
    x0, labels, masked, _, logits = case
    L, block = 4, 2
    t = torch.tensor([[0.2, 0.2, 0.9, 0.9], [0.5, 0.5, 0.1, 0.1]])  # per-block t, broadcast to tokens
    xt = torch.where(masked, 4, x0)
    stub = Stub(torch.cat([logits, torch.randn(2, L, V)], 1))  # 2L rows; only the x_t half may be read
    got = bd3lm_loss(stub, x0, labels, xt, masked, t, block)
    want = hand_loss(x0, labels, masked, (1 / t).tolist(), logits, "token")
    assert abs(got.item() - want) < 1e-5, (got.item(), want)
    ids, kw = stub.calls[0]
    assert torch.equal(ids, torch.cat([xt, x0], 1))  # x_t ⊕ x_0
    assert kw["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 3]] * 2  # both halves at 0..L-1
    b, i = kw["logits_slice"]  # the LM head runs on the masked rows of the x_t half only
    assert list(zip(b.tolist(), i.tolist())) == [(0, 1), (0, 3), (1, 0), (1, 1), (1, 2)]
    assert torch.equal(kw["attention_mask"][0, 0], bd3lm_attention_mask(L, block))


def test_ar_loss_by_hand():
    torch.manual_seed(1)
    ids = torch.tensor([[3, 1, 4, 1], [0, 2, 2, 3]])
    labels = torch.tensor([[-100, -100, 4, 1], [0, 2, 2, 3]])
    logits = torch.randn(2, 4, V)
    stub = Stub(logits)
    got = ar_loss(stub, ids, labels)
    terms = [nll(logits[b, i], int(labels[b, i + 1])) for b in range(2) for i in range(3)
             if int(labels[b, i + 1]) != -100]
    assert len(terms) == 5
    assert abs(got.item() - sum(terms) / len(terms)) < 1e-5
    assert stub.calls[0][1]["causal"] is True
    # the other normalisations, as for the diffusion losses: sum / B, and the mean of row means
    assert abs(ar_loss(Stub(logits), ids, labels, norm_type="batch").item() - sum(terms) / 2) < 1e-5
    assert abs(ar_loss(Stub(logits), ids, labels, norm_type="sequence").item()
               - (sum(terms[:2]) / 2 + sum(terms[2:]) / 3) / 2) < 1e-5
    assert ar_loss(Stub(logits), ids, torch.full_like(labels, -100)).item() == 0.0  # nothing scored: 0, not NaN


def test_bd3lm_mask_L4_block2():
    # rows = queries, cols = keys; 0-3 are x_t positions 0-3, 4-7 are x_0 positions 0-3
    expected = torch.tensor([
        # x_t keys  x_0 keys
        [1, 1, 0, 0, 0, 0, 0, 0],  # x_t 0 (block 0): its own block
        [1, 1, 0, 0, 0, 0, 0, 0],  # x_t 1
        [0, 0, 1, 1, 1, 1, 0, 0],  # x_t 2 (block 1): own block + clean block 0
        [0, 0, 1, 1, 1, 1, 0, 0],  # x_t 3
        [0, 0, 0, 0, 1, 1, 0, 0],  # x_0 0 (block 0): clean blocks <= 0
        [0, 0, 0, 0, 1, 1, 0, 0],  # x_0 1
        [0, 0, 0, 0, 1, 1, 1, 1],  # x_0 2 (block 1): clean blocks <= 1
        [0, 0, 0, 0, 1, 1, 1, 1],  # x_0 3
    ], dtype=torch.bool)
    assert torch.equal(bd3lm_attention_mask(4, 2), expected)


def tiny_model():  # 2 layers, vocab 64, mask id 63, random weights
    cfg = Config(model_type="a2d-qwen3", vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=8, rope_theta=10000.0,
                 torch_dtype="float32", mask_token_id=63)
    return Model(cfg).init_weights(seed=3)


def test_bd3lm_with_one_block_equals_mdlm():
    # block_size = L: the x_t half sees only itself (one block, no earlier clean blocks), so it is
    # MDLM's bidirectional forward on x_t, and the loss must match for the same mask and t
    model = tiny_model()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 63, (3, 16), generator=g)
    labels = x0.clone()
    labels[0, :5] = -100
    t = sample_t(3, generator=g)
    xt, masked = forward_mask(x0, labels, t, 63, generator=g)
    assert masked.any()
    a = mdlm_loss(model, x0, labels, xt, masked, t)
    b = bd3lm_loss(model, x0, labels, xt, masked, t, block_size=16)
    assert abs(a.item() - b.item()) < 1e-5 * abs(a.item()), (a.item(), b.item())
    # and a smaller block really changes it (the test can tell the two apart)
    c = bd3lm_loss(model, x0, labels, xt, masked, t, block_size=4)
    assert abs(a.item() - c.item()) > 1e-3


def test_antithetic_t_is_evenly_spread_and_clipped():
    t = sample_t(8, eps=1e-3, antithetic=True, generator=torch.Generator().manual_seed(0))
    gaps = t.sort().values.diff()
    assert torch.allclose(gaps, torch.full_like(gaps, (1 - 1e-3) / 8), atol=1e-6)
    t = sample_t(1000, eps=1e-3, low=0.3, high=0.8, generator=torch.Generator().manual_seed(0))
    assert 0.3 <= t.min() and t.max() <= 0.8 and t.max() - t.min() > 0.45


# -----------------------------------------------------------------------------
# batches: model.collate against batches built by hand. Token ids: pad 0, BOS 1, EOS 9; the rows
# are (ids, prompt_len); max_length 8, block_size 4. "_" = -100 (unscored).
IDS = {"pad": 0, "eos": 9, "bos": 1}
SFT_ROWS = [([5, 6, 7, 8, 9], 2), ([5, 6, 9], 1)]
_ = -100
# (objective, mask_prompt_loss, right_shift_logits) -> input_ids, labels, key-padding mask (None: all real)
SFT_BATCHES = {
    # MDLM: the pad tokens are attended and scored (the reference's EOS padding), no key mask
    ("mdlm", True, False): ([[5, 6, 7, 8, 9], [5, 6, 9, 0, 0]], [[_, _, 7, 8, 9], [_, 6, 9, 0, 0]], None),
    ("mdlm", False, False): ([[5, 6, 7, 8, 9], [5, 6, 9, 0, 0]], [[5, 6, 7, 8, 9], [5, 6, 9, 0, 0]], None),
    # every row's first label is -100 already: no BOS column (the reference's rule)
    ("mdlm", True, True): ([[5, 6, 7, 8, 9], [5, 6, 9, 0, 0]], [[_, _, 7, 8, 9], [_, 6, 9, 0, 0]], None),
    ("mdlm", False, True): ([[1, 5, 6, 7, 8, 9], [1, 5, 6, 9, 0, 0]], [[_, 5, 6, 7, 8, 9], [_, 5, 6, 9, 0, 0]], None),
    # BD3LM: scored EOS up to the block multiple, then unscored batch padding in whole blocks, which
    # needs no key mask; under right shift the BOS column leaves a block part padding, which does
    ("bd3lm", True, False): ([[5, 6, 7, 8, 9, 9, 9, 9], [5, 6, 9, 9, 0, 0, 0, 0]],
                             [[_, _, 7, 8, 9, 9, 9, 9], [_, 6, 9, 9, _, _, _, _]], None),
    ("bd3lm", False, False): ([[5, 6, 7, 8, 9, 9, 9, 9], [5, 6, 9, 9, 0, 0, 0, 0]],
                              [[5, 6, 7, 8, 9, 9, 9, 9], [5, 6, 9, 9, _, _, _, _]], None),
    ("bd3lm", True, True): ([[5, 6, 7, 8, 9, 9, 9, 9], [5, 6, 9, 9, 0, 0, 0, 0]],
                            [[_, _, 7, 8, 9, 9, 9, 9], [_, 6, 9, 9, _, _, _, _]], None),
    ("bd3lm", False, True): ([[1, 5, 6, 7, 8, 9, 9, 9, 9], [1, 5, 6, 9, 9, 0, 0, 0, 0]],
                             [[_, 5, 6, 7, 8, 9, 9, 9, 9], [_, 5, 6, 9, 9, _, _, _, _]],
                             [[1] * 9, [1, 1, 1, 1, 1, 0, 0, 0, 0]]),
}


def check_batch(got, want):
    x, y, keep = got
    wx, wy, wkeep = want
    assert x.tolist() == wx and y.tolist() == wy
    assert (keep is None and wkeep is None) or keep.int().tolist() == wkeep, keep


@pytest.mark.parametrize("key", SFT_BATCHES, ids=lambda k: "-".join(map(str, k)))
def test_collate_sft_by_hand(key):
    objective, mask_prompt, shift = key
    check_batch(collate(SFT_ROWS, IDS, objective, 8, 4, sft=True, mask_prompt_loss=mask_prompt,
                        right_shift_logits=shift), SFT_BATCHES[key])


def test_collate_mdlm_sft_without_pad_loss_and_pretraining_tail():
    # mdlm_pad_loss=False: padding unscored and hidden, as for pretraining
    check_batch(collate(SFT_ROWS, IDS, "mdlm", 8, 4, sft=True, mdlm_pad_loss=False),
                ([[5, 6, 7, 8, 9], [5, 6, 9, 0, 0]], [[_, _, 7, 8, 9], [_, 6, 9, _, _]], [[1] * 5, [1, 1, 1, 0, 0]]))
    # pretraining chunks with a padded tail (drop_tail=False), clipped to max_length, every token
    # scored; the first is predicted from a BOS column under right shift
    pt = [([5, 6, 7, 8, 5, 6, 7, 8, 3], 0), ([5, 6, 7], 0)]
    for objective in ("mdlm", "bd3lm", "ar"):
        check_batch(collate(pt, IDS, objective, 8, 4),
                    ([[5, 6, 7, 8, 5, 6, 7, 8], [5, 6, 7, 0, 0, 0, 0, 0]],
                     [[5, 6, 7, 8, 5, 6, 7, 8], [5, 6, 7, _, _, _, _, _]], [[1] * 8, [1, 1, 1, 0, 0, 0, 0, 0]]))
    # with the BOS column the short row's padding fills whole blocks: BD3LM needs no key mask then
    check_batch(collate(pt, IDS, "bd3lm", 8, 4, right_shift_logits=True),
                ([[1, 5, 6, 7, 8, 5, 6, 7, 8], [1, 5, 6, 7, 0, 0, 0, 0, 0]],
                 [[_, 5, 6, 7, 8, 5, 6, 7, 8], [_, 5, 6, 7, _, _, _, _, _]], None))
    check_batch(collate(pt, IDS, "mdlm", 8, 4, right_shift_logits=True),
                ([[1, 5, 6, 7, 8, 5, 6, 7, 8], [1, 5, 6, 7, 0, 0, 0, 0, 0]],
                 [[_, 5, 6, 7, 8, 5, 6, 7, 8], [_, 5, 6, 7, _, _, _, _, _]], [[1] * 9, [1, 1, 1, 1, 0, 0, 0, 0, 0]]))


def test_bd3lm_padded_tail_never_sees_padding():
    # a padded tail chunk's last block is part real, part padding: under the key-padding mask its
    # loss must be that of the same tokens alone, unpadded (same noise), whatever the pad token is
    model = tiny_model()
    g = torch.Generator().manual_seed(0)
    real = torch.randint(2, 63, (1, 10), generator=g)  # 10 tokens: block 3 of 4 is half padding
    t = torch.tensor([0.6])
    xt, masked = forward_mask(real, real, t, 63, generator=g)
    alone = bd3lm_loss(model, real, real, xt, masked, t, 4, norm_type="batch").item()
    for pad in (0, 7):
        x, xt_p = (torch.cat([v, torch.full((1, 2), pad)], 1) for v in (real, xt))  # (1, 12)
        y = torch.cat([real, torch.full((1, 2), -100)], 1)
        masked_p = torch.cat([masked, torch.zeros(1, 2, dtype=torch.bool)], 1)
        got = bd3lm_loss(model, x, y, xt_p, masked_p, t, 4, attention_mask=y != -100, norm_type="batch").item()
        assert abs(got - alone) < 1e-5 * abs(alone), (pad, got, alone)
        seen = bd3lm_loss(model, x, y, xt_p, masked_p, t, 4, norm_type="batch").item()
        assert abs(seen - alone) > 1e-4  # without the key mask the padding is seen


# -----------------------------------------------------------------------------
# the conversion recipe's additions (train.py's opt-in options)


def test_context_causal_mask_L4_block2():
    # as test_bd3lm_mask_L4_block2, but the clean stream is a causal LM token by token
    x_t = bd3lm_attention_mask(4, 2)[:4]
    expected = torch.tensor([
        [0, 0, 0, 0, 1, 0, 0, 0],  # x_0 0: itself
        [0, 0, 0, 0, 1, 1, 0, 0],  # x_0 1: positions <= 1
        [0, 0, 0, 0, 1, 1, 1, 0],  # x_0 2: positions <= 2 (not its block's position 3)
        [0, 0, 0, 0, 1, 1, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(bd3lm_attention_mask(4, 2, context_causal=True), torch.cat([x_t, expected]))


def ar_parent():  # tiny_model with weights large enough that its logits differ from position to position
    model = tiny_model().double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.mul_(10)
    return model


@pytest.mark.parametrize("block_size", [1, 4])
def test_context_causal_shift_predicts_each_blocks_first_token_with_the_ar_logits(block_size):
    # context-causal attention + right shift: a block's first token is predicted by the clean row
    # before it, which sees exactly what the AR parent's row sees. At block size 1 that is every
    # token, so the masked tokens' logits are the AR model's causal logits, all of them
    model = ar_parent()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 63, (2, 12), generator=g)
    xt = torch.full_like(x0, 63)
    b, i = torch.arange(2).repeat_interleave(11), torch.arange(1, 12).repeat(2)  # every token but the first
    rows = bd3lm_logit_rows(i, 12, block_size, right_shift_logits=True)
    got = bd3lm_forward(model, xt, x0, block_size, logits_slice=(b, rows), context_causal=True)
    ar = model(x0, causal=True)[b, i - 1]  # the causal row before each token
    first = i % block_size == 0
    assert torch.allclose(got[first], ar[first], atol=1e-9, rtol=0)
    assert first.all() if block_size == 1 else not torch.allclose(got[~first], ar[~first], atol=1e-3)
    # the same rows without context_causal see their whole block: not the AR model
    block_causal = bd3lm_forward(model, xt, x0, block_size, logits_slice=(b, rows))
    assert block_size == 1 or not torch.allclose(block_causal[first], ar[first], atol=1e-3)


def test_ar_loss_term_is_next_token_ce_of_the_plain_causal_forward():
    model = ar_parent()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, 63, (3, 16), generator=g)
    labels = x0.clone()
    labels[0, :5], labels[2, :9] = -100, -100  # prompts
    t = sample_t(3, generator=g)
    xt, masked = forward_mask(x0, labels, t, 63, generator=g)
    kw = dict(context_causal=True, right_shift_logits=True)
    with_ar = bd3lm_loss(model, x0, labels, xt, masked, t, 4, ar_weight=0.5, **kw)
    without = bd3lm_loss(model, x0, labels, xt, masked, t, 4, **kw)
    ar = ar_loss(model, x0, labels)  # its own causal forward of x_0
    assert abs((with_ar - without).item() - 0.5 * ar.item()) < 1e-9, (with_ar.item(), without.item(), ar.item())
    with pytest.raises(AssertionError, match="context_causal"):  # a block-causal clean row sees its target
        bd3lm_loss(model, x0, labels, xt, masked, t, 4, ar_weight=0.5)


def test_complementary_pair_covers_every_scored_token_exactly_once():
    g = torch.Generator().manual_seed(2)
    x0 = torch.randint(0, 63, (4, 20), generator=g)
    labels = x0.clone()
    labels[:, :6] = -100
    labels[1, 15:] = -100
    t = sample_t(4, generator=g)
    xt, masked = forward_mask(x0, labels, t, 63, generator=g)
    ids2, labels2, xt2, masked2, t2 = complementary_pair(x0, labels, xt, masked, t, 63)
    first, copy = masked2[:4], masked2[4:]
    assert torch.equal(first, masked) and torch.equal(first ^ copy, labels != -100) and not (first & copy).any()
    assert torch.equal(xt2[4:], torch.where(copy, 63, x0)) and torch.equal(xt2[:4], xt)
    assert torch.equal(ids2, x0.repeat(2, 1)) and torch.equal(labels2, labels.repeat(2, 1))
    assert torch.allclose(t2, torch.cat([t, 1 - t]))  # the copy's mask rate: 1 - (1 - t) = alpha(t)
