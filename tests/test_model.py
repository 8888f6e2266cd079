"""model.py against transformers (tiny random models and the real SmolLM2), its checkpoint
format, and the attention behaviours diffusion relies on (mask flag, padding, KV cache)."""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from conftest import ROOT
from model import Config, Model, bd3lm_attention_mask, default_dtype

torch.set_grad_enabled(False)
transformers.logging.set_verbosity_error()

# -----------------------------------------------------------------------------
# tiny random transformers models that keep each family's quirks

SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=256)
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}  # small, so that most frequencies of a 40-token run are rescaled
HF = {
    "qwen3": lambda: transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
        **SMALL, head_dim=32, tie_word_embeddings=False)),  # head_dim 32 != 64 / 4, qk-norm, GQA
    "qwen3-tied": lambda: transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
        **SMALL, head_dim=32, tie_word_embeddings=True)),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        **SMALL, tie_word_embeddings=False)),  # q/k/v bias, no o bias
    "llama3": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **SMALL, tie_word_embeddings=False, rope_scaling=dict(LLAMA3))),
}


def randomize(module, seed):
    # every tensor away from its init (norms off 1, biases off 0), so a dropped or misplaced one shows
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        p.copy_(1 + 0.2 * noise if name.endswith("norm.weight") else 0.1 * noise)
    return module


@pytest.fixture(scope="module", params=list(HF))
def hf_case(request, tmp_path_factory):
    """(name, transformers model, its save_pretrained dir)."""
    torch.manual_seed(0)
    hf = randomize(HF[request.param](), seed=1).eval()
    d = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(d)
    return request.param, hf, str(d)


def tokens(B, T, seed=0, V=128):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def maxdiff(a, b):
    return (a.float() - b.float()).abs().max().item()


def tiny_config(**kw):
    base = dict(model_type="qwen3", vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=32, rope_theta=10000.0,
                tie_word_embeddings=False, torch_dtype="float32")
    return Config(**{**base, **kw})


def tiny_model(seed=0, **kw):
    return randomize(Model(tiny_config(**kw)), seed).eval()


# -----------------------------------------------------------------------------
# parity with transformers


def test_parity_causal_logits(hf_case):
    name, hf, d = hf_case
    ours = Model.from_pretrained(d, dtype=torch.float32)
    assert ours.causal and ours.config.torch_dtype == "float32"
    x = tokens(2, 40)
    ref = hf(x).logits
    err = maxdiff(ours(x), ref)
    print(f"parity {name}: causal logits max abs diff {err:.2e}")
    assert err <= 1e-5
    # the comparison has teeth: a wrong mask flag is far off
    assert maxdiff(ours(x, causal=False), ref) > 1e-2
    # bf16 too, op for op (norm in fp32, scale in bf16; rope tables in fp32): bit-equal
    hf16 = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16).eval()
    assert torch.equal(Model.from_pretrained(d, dtype=torch.bfloat16)(x), hf16(x).logits)


def test_parity_left_padded_batch(hf_case):
    name, hf, d = hf_case
    ours = Model.from_pretrained(d, dtype=torch.float32)
    x = tokens(3, 24, seed=1)
    am = torch.ones(3, 24, dtype=torch.long)
    am[1, :5] = 0
    am[2, :17] = 0
    pos = (am.cumsum(-1) - 1).clamp(min=0)
    ref = hf(x, attention_mask=am, position_ids=pos).logits
    got = ours(x, attention_mask=am)  # positions from the mask by default
    real = am.bool()
    err = maxdiff(got[real], ref[real])
    print(f"parity {name}: left-padded batch max abs diff {err:.2e}")
    assert err <= 1e-5
    # explicit, unevenly spaced positions are honoured (RoPE hides a constant shift, not this)
    pos = torch.arange(24).expand(3, 24) * 3 + torch.tensor([[0], [5], [11]])
    assert maxdiff(ours(x, position_ids=pos), hf(x, position_ids=pos).logits) <= 1e-5
    # and a padded row equals the same sequence run alone
    alone = hf(x[2:, 17:]).logits
    assert maxdiff(got[2, 17:], alone[0]) <= 1e-5


def test_llama3_scaling_and_rope_base_matter(hf_case):
    # a wrong rope base or ignored scaling is silent unless something checks it
    name, hf, d = hf_case
    x = tokens(1, 40)
    ref = Model.from_pretrained(d, dtype=torch.float32)(x)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    for change in ("rope_theta", "rope_scaling"):
        if change == "rope_scaling" and not cfg.get("rope_scaling"):
            continue
        c = Config.from_hf({**cfg, **({"rope_theta": 500000.0} if change == "rope_theta" else {"rope_scaling": None})})
        m = Model(c)
        m.load_state_dict(Model.from_pretrained(d, dtype=torch.float32).state_dict())
        assert maxdiff(m.eval()(x), ref) > 1e-3, f"{name}: changing {change} did not change the logits"


def test_transformers5_rope_parameters(hf_case, tmp_path):
    # transformers 5 nests the base and scaling under rope_parameters; both layouts must give the same model
    name, hf, d = hf_case
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    rp = {"rope_type": "default", "rope_theta": cfg.pop("rope_theta")}
    rp.update(cfg.pop("rope_scaling", None) or {})
    cfg["rope_parameters"] = rp
    cfg["dtype"] = cfg.pop("torch_dtype", cfg.get("dtype"))
    os.symlink(os.path.join(d, "model.safetensors"), tmp_path / "model.safetensors")
    with open(tmp_path / "config.json", "w") as f:
        json.dump(cfg, f)
    a, b = Model.from_pretrained(d, dtype=torch.float32), Model.from_pretrained(str(tmp_path), dtype=torch.float32)
    assert b.config.rope_theta == a.config.rope_theta == 10000.0
    assert b.config.rope_scaling == a.config.rope_scaling
    x = tokens(1, 40)
    assert torch.equal(a(x), b(x))
    # a different base in the new layout is read, not defaulted
    rp["rope_theta"] = 20000.0
    with open(tmp_path / "config.json", "w") as f:
        json.dump(cfg, f)
    assert maxdiff(Model.from_pretrained(str(tmp_path), dtype=torch.float32)(x), a(x)) > 1e-3


def test_our_save_loads_in_transformers(hf_case, tmp_path):
    name, hf, d = hf_case
    Model.from_pretrained(d, dtype=torch.float32).save_pretrained(tmp_path)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(back) is type(hf)
    x = tokens(2, 40)
    assert torch.equal(back(x).logits, hf(x).logits)


# -----------------------------------------------------------------------------
# checkpoint format


def load_all(d):
    if os.path.exists(os.path.join(d, "model.safetensors.index.json")):
        with open(os.path.join(d, "model.safetensors.index.json")) as f:
            files = set(json.load(f)["weight_map"].values())
        return {k: v for fn in files for k, v in load_file(os.path.join(d, fn)).items()}
    return load_file(os.path.join(d, "model.safetensors"))


@pytest.mark.parametrize("model_type", ["qwen3", "a2d-qwen3", "a2d-llama", "qwen2"])
@pytest.mark.parametrize("tied", [True, False])
def test_round_trip_bit_exact(tmp_path, model_type, tied):
    m = tiny_model(model_type=model_type, tie_word_embeddings=tied, mask_token_id=127, objective="mdlm")
    m.save_pretrained(tmp_path / "a")
    back = Model.from_pretrained(str(tmp_path / "a"))
    assert back.causal == (not model_type.startswith("a2d-"))
    sd, sd2 = m.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert (back.lm_head.weight is back.model.embed_tokens.weight) == tied
    x = tokens(2, 12)
    assert torch.equal(back(x), m(x, causal=back.causal))
    assert back.config.to_hf() == m.config.to_hf()


def test_sharded_save(tmp_path):
    m = tiny_model(model_type="a2d-qwen3")
    m.save_pretrained(tmp_path, max_shard_bytes=20_000)
    with open(tmp_path / "model.safetensors.index.json") as f:
        wm = json.load(f)["weight_map"]
    shards = sorted(fn for fn in os.listdir(tmp_path) if fn.endswith(".safetensors"))
    assert len(shards) > 3 and sorted(set(wm.values())) == shards
    assert set(wm) == set(m.state_dict())
    back = Model.from_pretrained(str(tmp_path))
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in m.state_dict().items())
    # saving again unsharded into the same dir must not leave stale shards for loaders to trip on
    m.save_pretrained(tmp_path)
    assert sorted(fn for fn in os.listdir(tmp_path) if fn.startswith("model")) == ["model.safetensors"]
    assert torch.equal(Model.from_pretrained(str(tmp_path)).lm_head.weight, m.lm_head.weight)


@pytest.mark.parametrize("family", ["qwen3", "qwen2", "llama"])
def test_a2d_config_layout(tmp_path, family):
    kw = dict(rope_scaling=dict(LLAMA3)) if family == "llama" else {}
    m = tiny_model(model_type="a2d-" + family, tie_word_embeddings=True, mask_token_id=127, objective="bd3lm",
                   block_size=32, right_shift_logits=True, **kw)
    m.save_pretrained(tmp_path)
    with open(tmp_path / "config.json") as f:
        cfg = json.load(f)
    assert cfg["model_type"] == "a2d-" + family
    assert cfg["architectures"] == [{"qwen3": "A2DQwen3LMHeadModel", "qwen2": "A2DQwen2LMHeadModel",
                                     "llama": "A2DLlamaLMHeadModel"}[family]]
    assert cfg["rope_theta"] == 10000.0 and "rope_parameters" not in cfg
    assert cfg["rope_scaling"] == (LLAMA3 if family == "llama" else None)
    assert (cfg["mask_token_id"], cfg["objective"], cfg["block_size"], cfg["right_shift_logits"]) == \
        (127, "bd3lm", 32, True)
    assert cfg["tie_word_embeddings"] is True and "lm_head.weight" not in load_all(str(tmp_path))
    assert ("attention_bias" in cfg) == (family != "qwen2")  # Qwen2's bias is implied, not configured
    back = Model.from_pretrained(str(tmp_path))
    assert not back.causal and Model.from_pretrained(str(tmp_path), causal=True).causal
    assert (back.config.mask_token_id, back.config.objective, back.config.block_size) == (127, "bd3lm", 32)


# -----------------------------------------------------------------------------
# strict loading


@pytest.fixture
def saved(tmp_path):
    d = tmp_path / "m"
    tiny_model(model_type="qwen3").save_pretrained(d)
    return d


def edit_weights(d, fn):
    sd = load_file(d / "model.safetensors")
    fn(sd)
    save_file(sd, d / "model.safetensors")


def test_missing_tensor_is_named(saved):
    edit_weights(saved, lambda sd: sd.pop("model.layers.1.self_attn.k_norm.weight"))
    with pytest.raises(ValueError, match=r"missing tensors: \['model.layers.1.self_attn.k_norm.weight'\]"):
        Model.from_pretrained(str(saved))


def test_unexpected_tensor_is_named(saved):
    edit_weights(saved, lambda sd: sd.update({"model.layers.0.self_attn.q_proj.bias": torch.zeros(128)}))
    with pytest.raises(ValueError, match=r"unexpected tensors: \['model.layers.0.self_attn.q_proj.bias'\]"):
        Model.from_pretrained(str(saved))


def test_shape_mismatch_is_named(saved):
    edit_weights(saved, lambda sd: sd.update({"model.norm.weight": torch.ones(65)}))
    with pytest.raises(ValueError, match=r"model.norm.weight: checkpoint \(65,\) vs model \(64,\)"):
        Model.from_pretrained(str(saved))


def test_tied_head_that_differs_is_an_error(tmp_path):
    tiny_model(tie_word_embeddings=True).save_pretrained(tmp_path)
    edit_weights(tmp_path, lambda sd: sd.update({"lm_head.weight": torch.zeros(128, 64)}))
    with pytest.raises(ValueError, match="lm_head.weight differs"):
        Model.from_pretrained(str(tmp_path))


def test_unsupported_model_type_lists_supported(saved):
    cfg = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match="'gpt2'.*qwen3, qwen2, llama, a2d-qwen3, a2d-qwen2, a2d-llama"):
        Model.from_pretrained(str(saved))


def test_missing_weights_and_dir(tmp_path, saved):
    os.remove(saved / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        Model.from_pretrained(str(saved))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Model.from_pretrained(str(tmp_path / "nope"))


def test_damaged_files_are_named(saved):
    # an interrupted copy or download: the error names the file and says what to do
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match=rf"{weights} is damaged or truncated \(.*\); copy, download or save it"):
        Model.from_pretrained(str(saved))
    cfg = saved / "config.json"
    cfg.write_text(cfg.read_text()[:-30])
    with pytest.raises(ValueError, match=rf"{cfg} is not valid JSON \(.*line \d+"):
        Model.from_pretrained(str(saved))


def test_local_path_typo_is_not_blamed_on_the_network(monkeypatch, capsys):
    # out/sft_typo has the shape of a hub id: first say that no such directory exists, then try the Hub
    import huggingface_hub

    def offline(*a, **kw):
        assert "no local directory 'out/sft_typo'" in capsys.readouterr().err
        raise huggingface_hub.errors.LocalEntryNotFoundError("check your internet connection")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError, match="no local directory 'out/sft_typo', and fetching it from the "
                                                "Hugging Face Hub failed .*check the path"):
        Model.from_pretrained("out/sft_typo")


def test_saved_files_have_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        tiny_model().save_pretrained(tmp_path / "m", max_shard_bytes=20_000)
    finally:
        os.umask(old)
    assert {oct(os.stat(f).st_mode & 0o777) for f in (tmp_path / "m").iterdir()} == {"0o644"}


@pytest.mark.parametrize("flags,want", [("fpu avx2 avx512f", torch.float32), ("avx2 avx512_bf16", torch.bfloat16),
                                        ("avx2 amx_bf16 amx_tile", torch.bfloat16), ("", torch.float32)])
def test_default_dtype_follows_the_hardware(tmp_path, flags, want):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    dtype, reason = default_dtype("cpu", cpuinfo=str(info))
    if want == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():  # oneDNN says no: fp32
        assert dtype == torch.float32 and "oneDNN may not use" in reason
    else:
        assert dtype == want and ("no native bf16" in reason) == (want == torch.float32)
    assert default_dtype("cuda", cpuinfo=str(info)) == (torch.bfloat16, "CUDA")


def test_default_dtype_is_float32_when_onednn_is_held_to_avx2():
    # as some containers and schedulers do: the CPU flags say bf16, oneDNN may not use it
    code = "import model; print(model.default_dtype('cpu'))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert r.returncode == 0 and "torch.float32" in r.stdout, r.stdout + r.stderr


# -----------------------------------------------------------------------------
# attention: mask flag, padding, NaN safety, KV cache


@pytest.fixture(scope="module")
def bidir():
    return tiny_model(seed=3, model_type="a2d-qwen3")


def test_bidirectional_padding_invariance(bidir):
    a, b = tokens(1, 10, seed=4)[0], tokens(1, 6, seed=5)[0]
    ref_a, ref_b = bidir(a[None])[0], bidir(b[None])[0]
    pad = torch.zeros(4, dtype=torch.long)
    left = torch.cat([pad, b])[None]
    right = torch.cat([b, pad])[None]
    m_left = torch.cat([torch.zeros(4), torch.ones(6)])[None].long()
    m_right = m_left.flip(-1)
    assert maxdiff(bidir(left, attention_mask=m_left)[0, 4:], ref_b) <= 1e-5
    assert maxdiff(bidir(right, attention_mask=m_right)[0, :6], ref_b) <= 1e-5
    batch = bidir(torch.stack([a, left[0]]), attention_mask=torch.cat([torch.ones(1, 10).long(), m_left]))
    assert maxdiff(batch[0], ref_a) <= 1e-5 and maxdiff(batch[1, 4:], ref_b) <= 1e-5
    # without the mask the padding leaks into every position: the invariance is the mask's doing
    assert maxdiff(bidir(left)[0, 4:], ref_b) > 1e-3


def test_causal_flag_changes_attention(bidir):
    x = tokens(1, 12, seed=6)
    y = x.clone()
    y[0, 8] = (y[0, 8] + 1) % 128
    for causal in (True, False):
        lx, ly = bidir(x, causal=causal), bidir(y, causal=causal)
        assert maxdiff(lx[:, 8:], ly[:, 8:]) > 1e-3
        if causal:
            assert torch.equal(lx[:, :8], ly[:, :8])  # the future is invisible
        else:
            assert (lx[0, :8] - ly[0, :8]).abs().amax(-1).min() > 1e-4  # every earlier row sees it
    # the model-level flag and the per-call override agree
    ar = Model(bidir.config, causal=True).eval()
    ar.load_state_dict(bidir.state_dict())
    assert torch.equal(ar(x), bidir(x, causal=True)) and torch.equal(bidir(x), bidir(x, causal=False))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA kernels are where an all-masked row turns into NaN"))])
def test_padded_rows_never_nan(bidir, device):
    bidir = copy.deepcopy(bidir).to(device)
    x = tokens(2, 8, seed=7).to(device)
    tol = 1e-5 if device == "cpu" else 1e-4  # GPU kernels sum in another order
    m = torch.ones(2, 8, dtype=torch.long, device=device)
    m[1] = 0  # a fully padded row
    zero_pos = torch.zeros(1, 8, dtype=torch.long, device=device)
    for causal in (True, False):
        out = bidir(x, attention_mask=m, causal=causal)
        assert torch.isfinite(out).all()
        assert maxdiff(out[0], bidir(x[:1], causal=causal)[0]) <= tol
        # the guard's promise, which CPU SDPA (zeros, not NaN, for an empty row) would not show:
        # the padded row sees every key, at position 0
        assert maxdiff(out[1], bidir(x[1:], causal=False, position_ids=zero_pos)[0]) <= tol
    m[1, :5] = 0
    m[1, 5:] = 1  # causal + left padding: the first query rows have no visible key
    out = bidir(x, attention_mask=m, causal=True)
    assert torch.isfinite(out).all()
    assert maxdiff(out[1, 5:], bidir(x[1:, 5:], causal=True)[0]) <= tol
    # an explicit 4-D mask with an empty row
    m4 = torch.ones(1, 1, 8, 8, dtype=torch.bool, device=device)
    m4[..., 3, :] = False
    out = bidir(x, attention_mask=m4)
    assert torch.isfinite(out).all() and maxdiff(out, bidir(x)) <= tol  # the empty row sees everything


def test_block_causal_mask_equals_kv_cache(bidir):
    bs = 5
    x = tokens(2, 2 * bs, seed=8)
    blk = torch.arange(2 * bs) // bs
    full = bidir(x, attention_mask=(blk[:, None] >= blk[None, :])[None, None], causal=False)
    cache = bidir.new_cache(2, 3 * bs)
    first = bidir(x[:, :bs], cache=cache, append=True, causal=False)
    assert cache.length == bs
    second = bidir(x[:, bs:], cache=cache, causal=False)
    assert cache.length == bs  # not appended
    err = max(maxdiff(first, full[:, :bs]), maxdiff(second, full[:, bs:]))
    print(f"block-causal full forward vs KV cache: max abs diff {err:.2e}")
    assert err <= 1e-5
    # a non-appending forward leaves the cache as it was: the same call gives the same logits
    assert torch.equal(bidir(x[:, bs:], cache=cache, causal=False), second)
    # and the cache really feeds the second block: without it the logits differ
    assert maxdiff(bidir(x[:, bs:], position_ids=(bs + torch.arange(bs)).expand(2, bs)), second) > 1e-3


def test_cache_rewrite_before_length_sees_everything(bidir):
    # a denoising step may rewrite positions already in the cache (cache_pos < length); it
    # must still attend to all `length` committed positions, not just up to its own end
    x = tokens(1, 12, seed=11)
    cache = bidir.new_cache(1, 12)
    bidir(x, cache=cache, append=True, causal=False)
    got = bidir(x[:, :4], cache=cache, cache_pos=0, causal=False)
    assert cache.length == 12 and maxdiff(got, bidir(x, causal=False)[:, :4]) <= 1e-5


def test_bd3lm_training_mask_equals_sampling_with_cache(bidir):
    # the x_t ⊕ x_0 training forward scores block 2 of x_t exactly as sampling does:
    # clean block 1 appended to the cache, then noisy block 2 attending to it
    L, bs, mask_id = 8, 4, 127
    x0 = tokens(1, L, seed=9, V=127)
    xt = x0.clone()
    xt[0, [1, 2, 5, 7]] = mask_id
    pos = torch.arange(L).repeat(2)[None]
    full = bidir(torch.cat([xt, x0], 1), attention_mask=bd3lm_attention_mask(L, bs)[None, None],
                 position_ids=pos, causal=False)[:, :L]
    assert maxdiff(bidir(xt[:, :bs], causal=False), full[:, :bs]) <= 1e-5
    cache = bidir.new_cache(1, L)
    bidir(x0[:, :bs], cache=cache, append=True, causal=False)
    got = bidir(xt[:, bs:], cache=cache, causal=False)
    assert maxdiff(got, full[:, bs:]) <= 1e-5


def test_causal_cache_matches_full_forward():
    m = tiny_model(seed=4, model_type="llama", head_dim=16, rope_scaling=dict(LLAMA3))
    x = tokens(2, 20, seed=10)
    full = m(x)
    cache = m.new_cache(2, 20)
    parts = [m(x[:, :11], cache=cache, append=True)] + [m(x[:, i:i + 1], cache=cache, append=True)
                                                         for i in range(11, 20)]
    assert cache.length == 20
    assert maxdiff(torch.cat(parts, 1), full) <= 1e-5
    with pytest.raises(ValueError, match="KV cache overflow"):
        m(x[:, :1], cache=cache)
    with pytest.raises(ValueError, match=r"attention_mask must be \(B, 20\) or \(B, 1, 20, 20\), got \(2, 19\)"):
        m(x, attention_mask=torch.ones(2, 19))


# -----------------------------------------------------------------------------
# the real model: SmolLM2-135M-Instruct, ours vs transformers (fp32, causal)


@pytest.fixture(scope="module")
def smol(smollm2_hf_dir, smollm2_dir):
    hf = transformers.AutoModelForCausalLM.from_pretrained(smollm2_hf_dir, dtype=torch.float32).eval()
    ours = Model.from_pretrained(smollm2_hf_dir, dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    return hf, ours, tok


def chat(tok, text):
    return tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                   return_tensors="pt")


def test_smollm2_logits(smol):
    hf, ours, tok = smol
    assert ours.causal and ours.config.tie_word_embeddings
    x = chat(tok, "Explain in one sentence why the sky is blue.")
    err = maxdiff(ours(x), hf(x).logits)
    print(f"parity SmolLM2-135M ({x.shape[1]} tokens): causal logits max abs diff {err:.2e}")
    assert err <= 1e-4


def test_smollm2_greedy_matches_generate(smol):
    hf, ours, tok = smol
    x = chat(tok, "Write a short poem about the sea.")
    ref = hf.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=32,
                      pad_token_id=tok.pad_token_id)[0, x.shape[1]:].tolist()
    assert len(ref) == 32  # a long answer, so all 32 tokens are compared
    # the plain loop, in one forward: if every argmax along prompt + ref is the next ref token,
    # then a loop that feeds its own argmax back produces exactly ref (by induction)
    seq = torch.cat([x, torch.tensor([ref])], 1)
    assert ours(seq)[0, x.shape[1] - 1:-1].argmax(-1).tolist() == ref
    # the KV-cache path: prefill appended, then one token at a time
    cache = ours.new_cache(1, x.shape[1] + 32)
    nxt, out = ours(x, cache=cache, append=True)[:, -1:].argmax(-1), []
    for _ in range(32):
        out.append(nxt.item())
        nxt = ours(nxt, cache=cache, append=True)[:, -1:].argmax(-1)
    assert out == ref
    print("greedy 32 tokens equal transformers.generate:", repr(tok.decode(ref)))
