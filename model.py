"""
The network and the diffusion math, in one file.

A decoder-only transformer for the Qwen3, Qwen2 and Llama families (their differences are config flags) with one
switch from causal to bidirectional attention: that switch is the whole of "AR to diffusion", the weights stay the
same. Below it sits the math that training, sampling and evaluation share. Imports torch, safetensors and the stdlib.
"""

import functools
import json
import math
import os
import sys
from dataclasses import dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

FAMILIES = ("qwen3", "qwen2", "llama")
MODEL_TYPES = FAMILIES + tuple("a2d-" + f for f in FAMILIES)
ARCHITECTURES = {
    "qwen3": "Qwen3ForCausalLM", "qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM",
    "a2d-qwen3": "A2DQwen3LMHeadModel", "a2d-qwen2": "A2DQwen2LMHeadModel", "a2d-llama": "A2DLlamaLMHeadModel",
}
ROPE_TYPES = ("default", "linear", "llama3")
SCHEDULES = ("linear", "cosine")  # alpha(t), the noise schedule

# -----------------------------------------------------------------------------
# config
@dataclass
class Config:
    # HF field names, so config.json maps onto this one to one.
    model_type: str = "qwen3"  # qwen3 | qwen2 | llama | a2d-<family>
    vocab_size: int = 151936
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128  # stored explicitly: Qwen3's 128 != 1024 / 16
    max_position_embeddings: int = 40960
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    rope_scaling: dict | None = None  # None or {"rope_type": "llama3"|"linear", "factor": ..., ...}
    tie_word_embeddings: bool = True
    attention_bias: bool = False  # bias on q/k/v (and o, except qwen2)
    bos_token_id: int | None = None
    eos_token_id: int | list | None = None
    pad_token_id: int | None = None
    torch_dtype: str = "bfloat16"
    # diffusion facts, stored as extra keys in config.json that other readers ignore
    mask_token_id: int | None = None
    objective: str | None = None  # mdlm | bd3lm | ar
    block_size: int | None = None
    right_shift_logits: bool = False
    context_causal: bool = False  # bd3lm: the clean context attends causally (train.py's option)
    extra: dict = field(default_factory=dict, repr=False)  # the rest of config.json: save -> load loses nothing

    @property
    def family(self):
        return self.model_type.removeprefix("a2d-")

    @property
    def is_a2d(self):
        return self.model_type.startswith("a2d-")

    @classmethod
    def from_hf(cls, d):
        """Read an HF config.json dict (transformers 4.x or 5.x layout)."""
        d = dict(d)
        if d.get("model_type") not in MODEL_TYPES:
            raise ValueError(f"unsupported model_type {d.get('model_type')!r}; supported: {', '.join(MODEL_TYPES)}")
        rp = dict(d.pop("rope_parameters", None) or {})  # transformers 5 nests the rope base and scaling here
        d.setdefault("rope_theta", rp.pop("rope_theta", cls.rope_theta))
        if rp.get("rope_type", "default") != "default":
            d.setdefault("rope_scaling", rp)
        if rs := d.get("rope_scaling"):
            rs = dict(rs)
            rs["rope_type"] = rs.pop("type", None) or rs.get("rope_type", "default")
            if rs["rope_type"] not in ROPE_TYPES:
                raise ValueError(f"unsupported rope_scaling type {rs['rope_type']!r}; supported: {', '.join(ROPE_TYPES)}")
            d["rope_scaling"] = None if rs["rope_type"] == "default" else rs
        if d.get("use_sliding_window"):
            raise ValueError("use_sliding_window=True is not supported; set it to false in config.json")
        if d.get("mlp_bias"):
            raise ValueError("mlp_bias=True is not supported")
        d["head_dim"] = d.get("head_dim") or d["hidden_size"] // d["num_attention_heads"]
        d.setdefault("num_key_value_heads", d["num_attention_heads"])
        if "dtype" in d and "torch_dtype" not in d:  # transformers 5 renamed it
            d["torch_dtype"] = d.pop("dtype")
        if d["model_type"] == "qwen2":
            d.pop("attention_bias", None)  # qwen2's biases are fixed (see Attention), not switched
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in known},
                   extra={k: v for k, v in d.items() if k not in known and k not in ("architectures", "dtype")})

    def to_hf(self):
        """The config.json dict in the layout of the Hub's Qwen3/Llama checkpoints (transformers 4.x)."""
        d = self.extra | {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        d["architectures"] = [ARCHITECTURES[self.model_type]]
        if self.family == "qwen2":
            d.pop("attention_bias")
        return d


# -----------------------------------------------------------------------------
# the network
class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        h = x.float()  # normalise in fp32, scale in the input dtype: the order HF uses, needed for bit parity
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def rope_inv_freq(config):
    """Inverse frequencies (head_dim/2,), with Llama-3 or linear scaling applied."""
    d = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    rs = config.rope_scaling
    if rs is None:
        return inv_freq
    if rs["rope_type"] == "linear":
        return inv_freq / rs["factor"]
    # llama3: keep high frequencies, divide low ones by `factor`, blend in between
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old_ctx = rs["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_ctx / lo, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - lo) / (hi - lo)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    mid = ~(wavelen < old_ctx / hi) & ~(wavelen > old_ctx / lo)
    return torch.where(mid, blended, scaled)


def rope_cos_sin(inv_freq, position_ids, dtype):
    # position_ids (B, T) -> cos, sin (B, T, D), computed in fp32 like HF
    freqs = position_ids[..., None].float() * inv_freq.float()  # (B, T, D/2)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x, cos, sin):
    # x (B, H, T, D); cos/sin (B, T, D); rotate the two halves of the head dim
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos[:, None] + torch.cat([-x2, x1], dim=-1) * sin[:, None]


class KVCache:
    """A static, preallocated cache: keys and values (L, B, Hkv, max_len, D), positions [0, `length`) final. A forward
    writes its chunk's K/V at [pos, pos+T) (pos defaults to `length`) and attends to [0, max(length, pos+T)). Only
    commit() moves `length` (so does a forward with append=True): a denoising step sees itself without committing."""

    def __init__(self, config, batch_size, max_len, dtype, device):
        shape = (config.num_hidden_layers, batch_size, config.num_key_value_heads, max_len, config.head_dim)
        self.k, self.v = torch.zeros((2, *shape), dtype=dtype, device=device)  # keys and values, one buffer
        self.length, self.max_len = 0, max_len

    def update(self, layer, pos, k, v):  # k, v (B, Hkv, T, D)
        T = k.shape[2]
        self.k[layer, :, :, pos:pos + T], self.v[layer, :, :, pos:pos + T] = k, v
        n = max(self.length, pos + T)
        return self.k[layer, :, :, :n], self.v[layer, :, :, :n]

    def commit(self, length):
        self.length = length


@functools.cache
def _flex_attention():
    # compiled once, lazily: uncompiled flex_attention materialises the full score matrix
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


class Attention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv, self.head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        qwen2 = config.family == "qwen2"  # always a q/k/v bias and no o bias: its config has no switch
        qkv_bias, o_bias = qwen2 or config.attention_bias, not qwen2 and config.attention_bias
        C = config.hidden_size
        self.q_proj = nn.Linear(C, self.n_head * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(C, self.n_kv * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(C, self.n_kv * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, C, bias=o_bias)
        if config.family == "qwen3":  # the Qwen3 quirk: per-head RMSNorm on q and k
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask, is_causal, cache, pos):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim)  # (B, T, H, D)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim)  # (B, T, Hkv, D)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer_idx, pos, k, v)  # (B, Hkv, kv_len, D)
        gqa = self.n_kv != self.n_head
        if mask is not None and not isinstance(mask, torch.Tensor):  # a flex_attention BlockMask (CUDA)
            y = _flex_attention()(q, k, v, block_mask=mask, enable_gqa=gqa)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        C, I = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(C, I, bias=False)
        self.up_proj = nn.Linear(C, I, bias=False)
        self.down_proj = nn.Linear(I, C, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask, is_causal, cache, pos):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, is_causal, cache, pos)
        return x + self.mlp(self.post_attention_layernorm(x))


class Model(nn.Module):
    def __init__(self, config, causal=None):
        super().__init__()
        self.config = config
        self.causal = (not config.is_a2d) if causal is None else causal  # AR: causal, A2D: bidirectional
        self.model = nn.ModuleDict(dict(  # the `model.` prefix of HF tensor names
            embed_tokens=nn.Embedding(config.vocab_size, config.hidden_size),
            layers=nn.ModuleList(Block(config, i) for i in range(config.num_hidden_layers)),
            norm=RMSNorm(config.hidden_size, config.rms_norm_eps),
        ))
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.register_buffer("inv_freq", rope_inv_freq(config), persistent=False)

    def init_weights(self, seed=0):
        """Random init for training from scratch (normal(0, 0.02), norms at 1, biases at 0)."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                elif name.endswith(".bias"):
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        self.inv_freq = rope_inv_freq(self.config).to(self.inv_freq.device)
        return self

    def new_cache(self, batch_size, max_len, dtype=None, device=None):
        p = self.lm_head.weight
        return KVCache(self.config, batch_size, max_len, dtype or p.dtype, device or p.device)

    def forward(self, input_ids, attention_mask=None, position_ids=None, causal=None,
                cache=None, cache_pos=None, append=False, logits_slice=None, return_hidden=False):
        """input_ids (B, T) -> logits (B, T, V), or the final hidden states with return_hidden.

        attention_mask: a key-padding mask (B, Tk), 1 = real token; a bool mask (B or 1, 1, T, Tk), True = may
          attend; or a flex_attention BlockMask. Tk: T, or the cache's visible length. position_ids (B, T): by
          default real tokens count from 0 under a key-padding mask (padding never shifts positions), else
          pos + arange(T). cache / cache_pos / append: see KVCache. causal overrides the model's flag for this call.
        logits_slice: the LM head runs on x[:, logits_slice] only, or on rows x[b, i] of a tuple (b, i) -> (N, V)."""
        B, T = input_ids.shape
        causal = self.causal if causal is None else causal
        pos = 0 if cache is None else (cache.length if cache_pos is None else cache_pos)
        if cache is not None and pos + T > cache.max_len:
            raise ValueError(f"KV cache overflow: writing [{pos}, {pos + T}) into a cache of {cache.max_len}")
        kv_len = T if cache is None else max(cache.length, pos + T)
        dev = input_ids.device
        if position_ids is None:
            if attention_mask is not None and attention_mask.ndim == 2 and cache is None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            else:
                position_ids = (pos + torch.arange(T, device=dev)).expand(B, T)

        mask = attention_mask  # one mask for every layer: True = may attend, shape (B or 1, 1, T, kv_len)
        if isinstance(mask, torch.Tensor):
            if mask.ndim not in (2, 4) or mask.ndim == 2 and mask.shape[1] != kv_len:
                raise ValueError(f"attention_mask must be (B, {kv_len}) or (B, 1, {T}, {kv_len}), got {tuple(mask.shape)}")
            mask = mask.bool() if mask.ndim == 4 else mask.bool()[:, None, None, :]
        is_causal = causal and mask is None and cache is None  # SDPA's own causal kernel, no mask tensor
        if causal and not is_causal and (mask is None or isinstance(mask, torch.Tensor)):  # not a BlockMask
            cm = torch.arange(kv_len, device=dev) <= (pos + torch.arange(T, device=dev))[:, None]  # (T, kv_len)
            mask = cm[None, None] if mask is None else mask & cm
        if isinstance(mask, torch.Tensor):
            # a query with no key (a padded row) would give NaN: it sees every key, finite garbage nobody reads
            mask = mask | ~mask.any(-1, keepdim=True)

        x = self.model.embed_tokens(input_ids)  # (B, T, C)
        cos, sin = rope_cos_sin(self.inv_freq, position_ids, x.dtype)
        for block in self.model.layers:
            x = block(x, cos, sin, mask, is_causal, cache, pos)
        if cache is not None and append:
            cache.commit(pos + T)
        x = self.model.norm(x)
        if logits_slice is not None:
            x = x[logits_slice] if isinstance(logits_slice, tuple) else x[:, logits_slice]
        return x if return_hidden else self.lm_head(x)

    # -------------------------------------------------------------------------
    # load / save (HF directory layout)

    @staticmethod
    def config_of(path):  # the Config of an HF directory or hub id
        fn = os.path.join(resolve_model_dir(path), "config.json")
        with open(fn) as f:
            try:
                return Config.from_hf(json.load(f))
            except json.JSONDecodeError as e:
                raise ValueError(f"{fn} is not valid JSON ({e}); repair it or copy it again from the source") from None

    @classmethod
    def from_pretrained(cls, path, dtype=None, device=None, causal=None):
        """Load an HF directory or hub id, strictly: a missing, unexpected or misshapen tensor is an error naming it."""
        from safetensors import SafetensorError, safe_open
        path = resolve_model_dir(path)
        config = cls.config_of(path)
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(index):
            files = sorted(set(json.load(open(index))["weight_map"].values()))
        elif os.path.exists(os.path.join(path, "model.safetensors")):
            files = ["model.safetensors"]
        else:
            raise FileNotFoundError(f"{path} has no model.safetensors or model.safetensors.index.json")
        with torch.device("meta"):  # no memory until the real tensors arrive
            model = cls(config, causal=causal)
        expected = model.state_dict()
        sd = {}
        for fn in files:
            try:
                with safe_open(os.path.join(path, fn), framework="pt", device="cpu") as f:
                    sd.update({k: f.get_tensor(k) for k in f.keys()})
            except SafetensorError as e:  # e.g. "incomplete metadata": a copy or download cut short
                raise ValueError(f"{os.path.join(path, fn)} is damaged or truncated ({e}); copy, download or "
                                 f"save it again") from None
        if config.tie_word_embeddings:
            expected.pop("lm_head.weight")
            head = sd.pop("lm_head.weight", None)  # some tied checkpoints store it anyway; it must equal the embedding
            if head is not None and not torch.equal(head, sd.get("model.embed_tokens.weight", head)):
                raise ValueError("tie_word_embeddings=true but lm_head.weight differs from model.embed_tokens.weight")
        missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
        shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in expected if k in sd and sd[k].shape != expected[k].shape]
        if missing or unexpected or shapes:
            raise ValueError(f"checkpoint {path} does not match the config:\n"
                             f"  missing tensors: {missing}\n  unexpected tensors: {unexpected}\n"
                             f"  shape mismatches: {shapes}")
        dtype = dtype or getattr(torch, config.torch_dtype)
        model.load_state_dict({k: v.to(device=device or "cpu", dtype=dtype) for k, v in sd.items()},
                              strict=False, assign=True)
        if config.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        model.inv_freq = rope_inv_freq(config).to(device or "cpu")
        return model.eval()

    def save_pretrained(self, out_dir, dtype=None, max_shard_bytes=5 * 1024**3):
        """Write config.json + safetensors (sharded above max_shard_bytes) into out_dir."""
        from safetensors.torch import save_file
        os.makedirs(out_dir, exist_ok=True)
        sd = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in self.state_dict().items()}
        if self.config.tie_word_embeddings:
            sd.pop("lm_head.weight")  # transformers re-ties it on load
        self.config.torch_dtype = str(next(iter(sd.values())).dtype).removeprefix("torch.")
        shards, size = [{}], 0
        for k in sorted(sd):
            if shards[-1] and size + sd[k].nbytes > max_shard_bytes:
                shards, size = shards + [{}], 0
            shards[-1][k], size = sd[k], size + sd[k].nbytes
        for fn in os.listdir(out_dir):  # stale shards from an earlier save would confuse loaders
            if fn.startswith("model") and fn.endswith((".safetensors", ".index.json")):
                os.remove(os.path.join(out_dir, fn))
        names = ["model.safetensors"] if len(shards) == 1 else \
            [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        for fn, shard in zip(names, shards):
            save_file(shard, os.path.join(out_dir, fn), metadata={"format": "pt"})
            umask_mode(os.path.join(out_dir, fn))  # safetensors writes 0600: others could not read the checkpoint
        if len(shards) > 1:
            index = {"metadata": {"total_size": sum(t.nbytes for t in sd.values())},
                     "weight_map": {k: fn for fn, shard in zip(names, shards) for k in shard}}
            with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
                json.dump(index, f, indent=2)
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(self.config.to_hf(), f, indent=2, sort_keys=True)


def could_be_hub_id(path):  # owner/name, and nothing on disk by that name
    return not (os.path.exists(path) or path.startswith((".", "/")) or path.count("/") != 1)


def resolve_model_dir(path):
    """A local directory, or a hub id downloaded (once) with huggingface_hub."""
    if os.path.isdir(path):
        return path
    if not could_be_hub_id(path):
        raise FileNotFoundError(f"model directory {path!r} does not exist (expected a local HF directory "
                                f"with config.json, or a hub id like Qwen/Qwen3-0.6B)")
    # a mistyped local path (out/sft_typo) has a hub id's shape too: say so before the Hub's own errors
    print(f"no local directory {path!r}: trying it as a Hugging Face Hub id", file=sys.stderr)
    from huggingface_hub import snapshot_download
    try:
        return snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"])
    except Exception as e:  # offline, no such repo, gated
        raise FileNotFoundError(f"no local directory {path!r}, and fetching it from the Hugging Face Hub failed "
                                f"({type(e).__name__}); check the path (or, for a hub id, the connection)") from None


def special_ids(config, tok):
    """The special token ids every stage uses, resolved once: {"eos": every id that ends an answer (the tokenizer's EOS
    first), "pad", "bos", "mask"}. convert.py writes them into config.json, else the tokenizer's fill in; a chat
    template's turn end (<|im_end|>, <|eot_id|>), which may differ from its eos_token, ends an answer too."""
    listed = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    eos = [tok.eos_token_id, *listed]
    for t in ("<|im_end|>", "<|eot_id|>"):
        if t in (tok.chat_template or "") and t in tok.get_vocab():
            eos.append(tok.convert_tokens_to_ids(t))
    eos = list(dict.fromkeys(e for e in eos if e is not None))
    pick = lambda *xs: next((x for x in xs if x is not None), None)
    return {"eos": eos, "pad": pick(tok.pad_token_id, config.pad_token_id, *eos[:1]),
            "bos": pick(tok.bos_token_id, config.bos_token_id), "mask": pick(config.mask_token_id, tok.mask_token_id)}


def umask_mode(path):
    """Give path the mode a plain open() / mkdir would under the user's umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


def default_dtype(device, cpuinfo="/proc/cpuinfo"):
    """(dtype, reason): bf16 on CUDA and on CPUs that compute it natively (AMX, AVX512-BF16), else fp32: there bf16
    matmuls are emulated, and on an AVX2-only CPU a bf16 train step is ~20x slower than an fp32 one."""
    if torch.device(device).type == "cuda":
        return torch.bfloat16, "CUDA"
    try:
        with open(cpuinfo) as f:  # the x86 flags of every core
            native = bool({"amx_bf16", "avx512_bf16"} & set(f.read().split()))
    except OSError:  # not Linux: oneDNN's answer alone
        native = True
    # oneDNN's own check also honours ONEDNN_MAX_CPU_ISA, which containers and schedulers set to hold a process to AVX2
    onednn = bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
    if native and onednn:
        return torch.bfloat16, "this CPU computes bf16 natively (AMX / AVX512-BF16)"
    return torch.float32, ("this CPU has no native bf16 (no AMX / AVX512-BF16)" if not native else
                           "oneDNN may not use this CPU's native bf16 (ONEDNN_MAX_CPU_ISA)") + \
        ", where bf16 would be ~20x slower"


# -----------------------------------------------------------------------------
# diffusion math: noise schedule, forward masking, the BD3LM mask, losses
# Masked diffusion: at time t in [0, 1] each token is kept with probability alpha(t) and replaced by <|mask|>
# otherwise (alpha(0) = 1: clean, alpha(1) = 0: all masks). The negative ELBO, where w(t) = 1/t for alpha = 1 - t:
#     E_t E_{x_t} [ w(t) * sum_{i masked} -log p(x0_i | x_t) ],  w(t) = -alpha'(t) / (1 - alpha(t))
def alpha(t, schedule="linear"):
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    return 1 - t if schedule == "linear" else 1 - torch.cos(math.pi / 2 * (1 - t))


def loss_weight(t, schedule="linear", weight_type="scheduler"):
    """The ELBO's w(t) ('scheduler') or 1 ('uniform')."""
    if weight_type == "uniform":
        return torch.ones_like(t)
    if weight_type != "scheduler":
        raise ValueError(f"unknown loss_weight_type {weight_type!r}; choose scheduler or uniform")
    alpha_prime = -torch.ones_like(t) if schedule == "linear" else -(math.pi / 2) * torch.sin(math.pi / 2 * (1 - t))
    return -alpha_prime / (1 - alpha(t, schedule))  # alpha() rejects an unknown schedule


def sample_t(n, eps=1e-3, antithetic=False, low=0.0, high=1.0, generator=None, device="cpu"):
    """n times in [eps, 1), optionally clipped to [low, high]. antithetic: one uniform offset u, then
    t_i = (u + i/n) mod 1, so the batch covers [0, 1) evenly (the MDLM paper's variance reduction)."""
    if antithetic:
        r = (torch.rand(1, generator=generator, device=device) + torch.arange(n, device=device) / n) % 1
    else:
        r = torch.rand(n, generator=generator, device=device)
    lo, hi = max(eps, low), min(1.0, high)
    return lo + (hi - lo) * r


def forward_mask(input_ids, labels, t, mask_token_id, schedule="linear", generator=None):
    """q(x_t | x_0): mask scored tokens (label != -100) with prob 1 - alpha(t), t (B,) or (B, L) -> (x_t, masked)."""
    p_mask = (1 - alpha(t, schedule)).reshape(len(t), -1)  # (B, 1) or (B, L)
    masked = (torch.rand(input_ids.shape, generator=generator, device=input_ids.device) < p_mask) & (labels != -100)
    return torch.where(masked, mask_token_id, input_ids), masked


def bd3lm_allowed(q, k, L, block_size, context_causal=False):
    """May query index q attend to key index k in the x_t ⊕ x_0 forward of block diffusion?
    Index i < L is x_t position i, index L + i is x_0 position i. The union of:
      x_t -> x_t of the same block         (a noisy block sees itself),
      x_t -> x_0 of strictly earlier blocks (a noisy block is conditioned on the clean past),
      x_0 -> x_0 of same or earlier blocks  (block-causal clean stream; context_causal: causal, as the AR parent).
    One rule for the dense mask and flex's mask_mod (q, k: broadcastable index tensors)."""
    q_x0, k_x0 = q >= L, k >= L
    q_i, k_i = torch.where(q_x0, q - L, q), torch.where(k_x0, k - L, k)
    q_b, k_b = q_i // block_size, k_i // block_size
    noisy_block = (q_b == k_b) & ~q_x0 & ~k_x0
    clean_past = (q_b > k_b) & ~q_x0 & k_x0
    clean = ((q_i >= k_i) if context_causal else (q_b >= k_b)) & q_x0 & k_x0
    return noisy_block | clean_past | clean


def bd3lm_attention_mask(L, block_size, device="cpu", context_causal=False):
    """(2L, 2L) bool mask for the x_t ⊕ x_0 forward (True = may attend); see bd3lm_allowed."""
    idx = torch.arange(2 * L, device=device)
    return bd3lm_allowed(idx[:, None], idx[None, :], L, block_size, context_causal)


def bd3lm_block_mask(L, block_size, device, context_causal=False):
    """The same mask as a flex_attention BlockMask (CUDA): sparse, never materialised."""
    from torch.nn.attention.flex_attention import create_block_mask
    return create_block_mask(lambda b, h, q, k: bd3lm_allowed(q, k, L, block_size, context_causal), None, None,
                             2 * L, 2 * L, device=device)


@functools.lru_cache(maxsize=16)
def _bd3lm_base_mask(L, block_size, device, flex, context_causal):
    return bd3lm_block_mask(L, block_size, device, context_causal) if flex else \
        bd3lm_attention_mask(L, block_size, device, context_causal)[None, None]


def bd3lm_mask(L, block_size, device, keep=None, context_causal=False):
    """The mask bd3lm_loss attends with; keep (B, L), False = padding, hides the padded keys of both halves. On CUDA,
    unpadded rows of L >= 256 get the flex BlockMask, the rest the dense bool mask (1 or B, 1, 2L, 2L), a few MB at
    most (flex's short-query kernel has failed to compile on an H200 for 2L <= 128)."""
    device = torch.device(device)
    flex = device.type == "cuda" and keep is None and L >= 256
    base = _bd3lm_base_mask(L, block_size, device, flex, context_causal)
    return base if keep is None else base & keep.bool().repeat(1, 2)[:, None, None, :]


def causal_annealed_mask(L, ratio, keep=None, generator=None, device="cpu"):
    """DiffuLLaMA's attention annealing for MDLM: causal, plus each future key with probability ratio
    (0: the AR parent's mask, 1: bidirectional) -> (1 or B, 1, L, L) bool, keep (B, L) hiding padding."""
    future = torch.rand(L, L, generator=generator, device=device) < ratio
    m = (torch.ones(L, L, dtype=torch.bool, device=device).tril() | future)[None, None]
    return m if keep is None else m & keep.bool()[:, None, None, :]


def complementary_pair(input_ids, labels, xt, masked, t, mask_token_id):
    """Fast-dLLM v2's complementary masks: each row twice, the copy masking exactly the scored tokens the first left
    clean (each trained once a step; linear: a draw at 1 - t) -> (input_ids, labels, x_t, masked, t), 2B rows."""
    other = (labels != -100) & ~masked
    return (input_ids.repeat(2, 1), labels.repeat(2, 1), torch.cat([xt, torch.where(other, mask_token_id, input_ids)]),
            torch.cat([masked, other]), torch.cat([t, 1 - t]))


def collate(rows, special, objective, max_length, block_size=32, sft=False, mask_prompt_loss=True,
            right_shift_logits=False, mdlm_pad_loss=True):
    """Rows of (token ids, prompt_len) -> input_ids, labels (B, T) (-100 = unscored) and a key-padding mask (B, T),
    None when every key is real. special: the "pad", "eos" and "bos" ids. Padding as in the reference's collators:
      MDLM SFT (mdlm_pad_loss): pad tokens, attended *and scored*: a sampler answers on a fixed canvas of masks, and
        the model can end a short answer there only if it learned to fill the rest with padding after its end of turn.
      BD3LM SFT: EOS, scored, up to a block multiple; the batch padding after it fills whole blocks.
      otherwise: unscored padding behind the key-padding mask (for BD3LM only when a block is part padding: whole
        padding blocks are invisible already, and the shared (flex) mask stays).
    right_shift_logits: logit i predicts token i+1, so a BOS column goes first (unless no row scores token 0)."""
    seqs = []
    for x, plen in rows:
        x = torch.as_tensor(x[:max_length].copy(), dtype=torch.long)  # a list or array; a memmap is read-only
        y = x.clone()
        y[:plen if sft and mask_prompt_loss else 0] = -100
        if sft and objective == "bd3lm":
            pad = torch.full((-len(x) % block_size,), special["eos"])
            x, y = torch.cat([x, pad]), torch.cat([y, pad])
        seqs.append((x, y))
    B, T = len(seqs), max(len(x) for x, _ in seqs)
    scored_pad = sft and objective == "mdlm" and mdlm_pad_loss
    x, y = torch.full((B, T), special["pad"]), torch.full((B, T), special["pad"] if scored_pad else -100)
    keep = torch.full((B, T), scored_pad)  # scored padding is attended too
    for i, (xi, yi) in enumerate(seqs):
        x[i, :len(xi)], y[i, :len(yi)], keep[i, :len(xi)] = xi, yi, True
    if right_shift_logits and not (y[:, 0] == -100).all():
        col = lambda v: torch.full((B, 1), v)
        x, y, keep = torch.cat([col(special["bos"]), x], 1), torch.cat([col(-100), y], 1), torch.cat([col(True), keep], 1)
    n = keep.sum(1)
    if objective == "bd3lm" and not ((n % block_size != 0) & (n < keep.shape[1])).any():
        keep[:] = True  # padding only in whole blocks, which no real token's mask reaches: keep the shared mask
    return x, y, None if keep.all() else keep


def logit_rows(i, right_shift_logits=False):
    # the row whose logit predicts token i: i, or under Dream-style right shift i - 1 (row 0 predicts itself)
    return (i - 1).clamp(min=0) if right_shift_logits else i


def normalize_loss(token_loss, labels, norm_type="token"):
    """token_loss (B, L), weighted and zero where unscored -> scalar. token: sum / #scored in the
    batch; sequence: mean over rows of (row sum / #scored in row); batch: sum / B."""
    B, scored = labels.shape[0], labels != -100
    if norm_type == "token":
        return token_loss.sum() / scored.sum().clamp_min(1)
    if norm_type == "sequence":
        return (token_loss.sum(-1) / scored.sum(-1).clamp_min(1)).sum() / B
    if norm_type == "batch":
        return token_loss.sum() / B
    raise ValueError(f"unknown loss_norm_type {norm_type!r}; choose token, sequence or batch")


def _token_ce(logits, targets, b, i):
    # logits (N, V) of the scored tokens (b, i) -> their fp32 CE in a zero (B, L) grid like targets. Only those rows
    # reach the LM head (logits_slice): no head or fp32 log-softmax on unscored positions (~half under diffusion)
    ce = F.cross_entropy(logits.float(), targets[b, i], reduction="none")
    return torch.zeros(targets.shape, dtype=ce.dtype, device=ce.device).index_put((b, i), ce)


def _diffusion_loss(logits, input_ids, labels, b, i, t, schedule, weight_type, norm_type):
    # the ELBO term above: the CE of the masked tokens (b, i) times w(t), t per row (B,) or per token (B, L)
    w = loss_weight(t, schedule, weight_type).reshape(len(t), -1)  # (B, 1) or (B, L)
    return normalize_loss(_token_ce(logits, input_ids, b, i) * w, labels, norm_type)


def mdlm_loss(model, input_ids, labels, xt, masked, t, attention_mask=None, schedule="linear",
              weight_type="scheduler", norm_type="token", right_shift_logits=False):
    """MDLM loss at times t (B,): CE of x_t's masked tokens under bidirectional attention, times w(t), normalised."""
    b, i = masked.nonzero(as_tuple=True)
    logits = model(xt, attention_mask=attention_mask, causal=False, logits_slice=(b, logit_rows(i, right_shift_logits)))
    return _diffusion_loss(logits, input_ids, labels, b, i, t, schedule, weight_type, norm_type)


def bd3lm_logit_rows(i, L, block_size, right_shift_logits=False):
    """The x_t ⊕ x_0 forward's row whose logit predicts x_t token i: i, or under right shift the row before it, for a
    block's first token the clean stream's (as the sampler reads it: the noisy row before belongs to another block)."""
    return torch.where((i % block_size == 0) & (i > 0), L + i - 1, logit_rows(i, True)) if right_shift_logits else i


def bd3lm_forward(model, xt, x0, block_size, attention_mask=None, logits_slice=None, full_mask=None,
                  context_causal=False):
    """x_t ⊕ x_0 (B, 2L) in one pass under the block-diffusion mask, both halves at positions 0..L-1
    (a noisy token and its clean twin share a position) -> the logits of the rows logits_slice picks."""
    B, L = xt.shape
    if full_mask is None:
        full_mask = bd3lm_mask(L, block_size, xt.device, attention_mask, context_causal)
    return model(torch.cat([xt, x0], 1), attention_mask=full_mask, causal=False, logits_slice=logits_slice,
                 position_ids=torch.arange(L, device=xt.device).repeat(2)[None].expand(B, 2 * L))


def bd3lm_loss(model, input_ids, labels, xt, masked, t, block_size, attention_mask=None, schedule="linear",
               weight_type="scheduler", norm_type="token", right_shift_logits=False, full_mask=None,
               context_causal=False, ar_weight=0.0):
    """BD3LM loss: one bd3lm_forward, scored on the masked rows of the x_t half only. t is (B,) or per token (B, L).
    attention_mask: a key-padding mask (B, L) or None; full_mask (benchmarks): the whole (2L, 2L) mask. ar_weight > 0:
    plus that times the clean rows' next-token CE (as ar_loss scores it) from the same forward."""
    assert context_causal or not ar_weight, "the AR loss needs context_causal: a block-causal row sees its target"
    L = xt.shape[1]
    b, i = masked.nonzero(as_tuple=True)
    rows = (b, bd3lm_logit_rows(i, L, block_size, right_shift_logits))
    if ar_weight:  # clean row L + j predicts token j + 1, as ar_loss's row j does
        tgt = labels[:, 1:]
        ab, aj = (tgt != -100).nonzero(as_tuple=True)
        rows = (torch.cat([b, ab]), torch.cat([rows[1], L + aj]))
    logits = bd3lm_forward(model, xt, input_ids, block_size, attention_mask, rows, full_mask, context_causal)
    loss = _diffusion_loss(logits[:len(b)], input_ids, labels, b, i, t, schedule, weight_type, norm_type)
    if ar_weight:
        loss = loss + ar_weight * normalize_loss(_token_ce(logits[len(b):], tgt, ab, aj), tgt, norm_type)
    return loss


def ar_loss(model, input_ids, labels, attention_mask=None, norm_type="token"):
    """Next-token CE under causal attention: logit i predicts token i+1, scored where labels[:, i+1] != -100."""
    tgt = labels[:, 1:]
    b, i = (tgt != -100).nonzero(as_tuple=True)
    logits = model(input_ids, attention_mask=attention_mask, causal=True, logits_slice=(b, i))
    return normalize_loss(_token_ce(logits, tgt, b, i), tgt, norm_type)
