"""convert.py: the SmolLM2 conversion checked against its source, the mask token and vocab
resize on tiny local HF dirs, the thinking switch, and clean failures that write nothing."""

import json
import os
import subprocess
import sys

import pytest
import torch
import transformers
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers

import convert
from model import Model

torch.set_grad_enabled(False)
transformers.logging.set_verbosity_error()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# -----------------------------------------------------------------------------
# a tiny local HF source: transformers Qwen3 + a word-level tokenizer of 40 tokens

WORDS = ["<unk>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "user", "assistant", "system"] + \
    [f"w{i}" for i in range(32)]
# Qwen3-style: a thinking switch the caller may set; off = an empty think block in the prompt
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }} {{ m.content }}<|im_end|> {% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant "
            "{% if enable_thinking is defined and enable_thinking is false %}<think> </think> {% endif %}{% endif %}")


def make_source(d, vocab_size, tied=False, template=TEMPLATE, eos_token="<|im_end|>"):
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<|im_start|>",
                                               eos_token=eos_token, pad_token="<|im_end|>")
    tok.chat_template = template
    tok.save_pretrained(d)
    cfg = transformers.Qwen3Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, head_dim=24, rope_theta=10000.0,
                                   tie_word_embeddings=tied, eos_token_id=2, bos_token_id=1)
    torch.manual_seed(0)
    hf = transformers.Qwen3ForCausalLM(cfg)
    for p in hf.parameters():
        p.normal_(0, 0.3)
    hf.save_pretrained(d)
    return {k: v.clone() for k, v in hf.state_dict().items()}


def run(monkeypatch, src, out, **kw):
    opts = dict(model_name_or_path=str(src), output_dir=str(out), random_init=False, dtype="bfloat16",
                mask_token="<|mask|>", overwrite=False, seed=0)
    for k, v in {**opts, **kw}.items():
        monkeypatch.setattr(convert, k, v)
    convert.main()


def entries(d):
    return sorted(os.listdir(d))


# -----------------------------------------------------------------------------
# tiny sources


@pytest.mark.parametrize("tied", [False, True])
def test_mask_token_fits_without_resize(tmp_path, monkeypatch, tied):
    src = make_source(tmp_path / "src", vocab_size=48, tied=tied)  # 40 tokens, 48 rows: room
    run(monkeypatch, tmp_path / "src", tmp_path / "out", dtype="float32")
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["model_type"] == "a2d-qwen3" and cfg["architectures"] == ["A2DQwen3LMHeadModel"]
    assert cfg["mask_token_id"] == 40 and cfg["vocab_size"] == 48 and cfg["torch_dtype"] == "float32"
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tok.mask_token == "<|mask|>" and tok.encode("<|mask|>") == [40] and len(tok) == 41
    sd = load_file(tmp_path / "out" / "model.safetensors")
    assert set(sd) == set(src) - ({"lm_head.weight"} if tied else set())
    assert all(sd[k].dtype == torch.float32 and torch.equal(sd[k], src[k]) for k in sd)  # weights unchanged
    m = Model.from_pretrained(str(tmp_path / "out"))
    assert not m.causal and m.config.mask_token_id == 40


@pytest.mark.parametrize("tied", [False, True])
def test_no_room_grows_vocab_with_mean_rows(tmp_path, monkeypatch, capsys, tied):
    src = make_source(tmp_path / "src", vocab_size=40, tied=tied)  # every row taken
    run(monkeypatch, tmp_path / "src", tmp_path / "out", dtype="float32")
    assert "resizing vocab 40 -> 41" in capsys.readouterr().out  # and says so
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["mask_token_id"] == 40 and cfg["vocab_size"] == 41
    sd = load_file(tmp_path / "out" / "model.safetensors")
    for k in ["model.embed_tokens.weight"] + ([] if tied else ["lm_head.weight"]):
        assert sd[k].shape == (41, 32)
        assert torch.equal(sd[k][:40], src[k])
        assert torch.allclose(sd[k][40], src[k].mean(0), atol=1e-7)
    m = Model.from_pretrained(str(tmp_path / "out"))
    assert m(torch.tensor([[40, 5, 9]])).shape == (1, 3, 41)


def test_thinking_off_by_default(tmp_path, monkeypatch):
    make_source(tmp_path / "src", vocab_size=48)
    run(monkeypatch, tmp_path / "src", tmp_path / "out")
    msgs = [{"role": "user", "content": "w1 w2"}]
    src = transformers.AutoTokenizer.from_pretrained(tmp_path / "src")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    render = lambda t, **kw: t.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, **kw)
    assert "<think>" not in render(src)  # the source thinks unless told not to
    assert render(tok) == "<|im_start|>user w1 w2<|im_end|> <|im_start|>assistant <think> </think> "
    assert render(tok, enable_thinking=True) == render(src)  # still switchable
    assert render(tok, enable_thinking=False) == render(tok)


def test_special_ids_are_written_once_and_read_back(tmp_path, monkeypatch):
    # a base-model tokenizer whose eos_token (w0) is not the chat turn's end (<|im_end|>): config.json
    # gets both, the tokenizer's first, and every reader takes them from there
    make_source(tmp_path / "src", vocab_size=48, eos_token="w0")
    run(monkeypatch, tmp_path / "src", tmp_path / "out")
    with open(tmp_path / "out" / "config.json") as f:
        cfg = json.load(f)
    assert (cfg["eos_token_id"], cfg["pad_token_id"], cfg["bos_token_id"], cfg["mask_token_id"]) == ([8, 2], 2, 1, 40)
    import sample
    _, _, d = sample.load(str(tmp_path / "out"), dtype="float32", device="cpu")
    assert (d["eos_token_id"], d["pad_token_id"], d["bos_token_id"], d["mask_token_id"]) == ([8, 2], 2, 1, 40)


def test_template_without_thinking_is_kept_verbatim(tmp_path, monkeypatch):
    make_source(tmp_path / "src", vocab_size=48, template=TEMPLATE.split("{% if enable")[0] + "{% endif %}")
    run(monkeypatch, tmp_path / "src", tmp_path / "out")
    src = transformers.AutoTokenizer.from_pretrained(tmp_path / "src")
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "out").chat_template == src.chat_template


def test_random_init_and_dtype(tmp_path, monkeypatch):
    src = make_source(tmp_path / "src", vocab_size=48)
    run(monkeypatch, tmp_path / "src", tmp_path / "out", random_init=True)
    sd = load_file(tmp_path / "out" / "model.safetensors")
    assert set(sd) == set(src)
    for k in sd:
        assert sd[k].shape == src[k].shape and sd[k].dtype == torch.bfloat16  # bf16 by default
        if not k.endswith("norm.weight"):
            assert not torch.equal(sd[k].float(), src[k].to(torch.bfloat16).float()), k
    assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    # the default (no random init) keeps the weights, rounded to bf16
    run(monkeypatch, tmp_path / "src", tmp_path / "out2")
    sd = load_file(tmp_path / "out2" / "model.safetensors")
    assert all(torch.equal(sd[k], src[k].to(torch.bfloat16)) for k in sd)


# -----------------------------------------------------------------------------
# clean failures


def test_nonexistent_source(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="does not exist"):
        run(monkeypatch, tmp_path / "nope", tmp_path / "out")
    with pytest.raises(SystemExit, match="does not exist"):
        run(monkeypatch, tmp_path / "nope.gguf", tmp_path / "out")
    assert entries(tmp_path) == []


def test_unsupported_model_type(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 64}))
    with pytest.raises(SystemExit, match="'gpt2'.*supported: qwen3, qwen2, llama, a2d-qwen3"):
        run(monkeypatch, tmp_path / "src", tmp_path / "out")
    assert entries(tmp_path) == ["src"]


def test_source_without_tokenizer(tmp_path, monkeypatch):
    make_source(tmp_path / "src", vocab_size=48)
    for fn in os.listdir(tmp_path / "src"):
        if fn.startswith(("tokenizer", "special_tokens", "chat_template")):
            os.remove(tmp_path / "src" / fn)
    with pytest.raises(SystemExit, match="has no tokenizer"):
        run(monkeypatch, tmp_path / "src", tmp_path / "out")
    assert entries(tmp_path) == ["src"]


def test_nonempty_output_needs_overwrite(tmp_path, monkeypatch):
    make_source(tmp_path / "src", vocab_size=48)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="--overwrite=True"):
        run(monkeypatch, tmp_path / "src", tmp_path / "out")
    assert entries(tmp_path / "out") == ["notes.txt"] and entries(tmp_path) == ["out", "src"]
    umask = os.umask(0o022)
    try:
        run(monkeypatch, tmp_path / "src", tmp_path / "out", overwrite=True)
    finally:
        os.umask(umask)
    assert "notes.txt" not in entries(tmp_path / "out") and "model.safetensors" in entries(tmp_path / "out")
    assert entries(tmp_path) == ["out", "src"]  # no temp dir left behind
    # the modes a plain write gives under the umask, not the temp dir's 0700 or safetensors' 0600
    out = tmp_path / "out"
    assert oct(out.stat().st_mode & 0o777) == "0o755"
    assert {oct(f.stat().st_mode & 0o777) for f in out.iterdir()} == {"0o644"}


def test_cli_bad_dtype(tmp_path):
    r = subprocess.run([sys.executable, "convert.py", "--dtype=fp8", f"--output_dir={tmp_path / 'out'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "bfloat16, float16, float32" in r.stderr and "fp8" in r.stderr
    assert entries(tmp_path) == []


# -----------------------------------------------------------------------------
# the real conversion: SmolLM2-135M-Instruct (GGUF) -> a2d-llama


@pytest.fixture(scope="module")
def gguf_tok():
    # transformers' own reading of the GGUF tokenizer: the reference the converted one must agree with
    d, fn = os.path.split(convert.smollm2_gguf())
    return transformers.AutoTokenizer.from_pretrained(d, gguf_file=fn)


def test_smollm2_weights_equal_source(smollm2_dir, smollm2_hf_dir):
    cfg = json.loads(open(os.path.join(smollm2_dir, "config.json")).read())
    assert (cfg["model_type"], cfg["architectures"], cfg["torch_dtype"]) == ("a2d-llama", ["A2DLlamaLMHeadModel"],
                                                                            "bfloat16")
    src, got = load_file(os.path.join(smollm2_hf_dir, "model.safetensors")), \
        load_file(os.path.join(smollm2_dir, "model.safetensors"))
    assert set(got) == set(src) and "lm_head.weight" not in got  # tied
    emb = "model.embed_tokens.weight"
    for k in src:
        n = src[k].shape[0]
        assert torch.equal(got[k][:n], src[k].to(torch.bfloat16)), k
    # SmolLM2 has no spare row (49152 tokens, 49152 rows): <|mask|> is a new row at the mean embedding
    assert got[emb].shape[0] == src[emb].shape[0] + 1 == cfg["vocab_size"] == cfg["mask_token_id"] + 1
    assert torch.equal(got[emb][-1], src[emb].mean(0).to(torch.bfloat16))


def test_smollm2_tokenizer(smollm2_dir, gguf_tok):
    cfg = json.loads(open(os.path.join(smollm2_dir, "config.json")).read())
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    assert tok.encode("<|mask|>") == [cfg["mask_token_id"]] == [tok.mask_token_id]
    text = "The capital of France is Paris.\n  Ünïcode, digits 12345 and <|im_end|>"
    ids = tok.encode(text)
    ref = gguf_tok.encode(text)
    assert ref[0] == gguf_tok.bos_token_id and ids == ref[1:]  # same ids, without the BOS the GGUF import adds
    assert tok.decode(ids) == text and tok.encode("Hello")[0] != tok.bos_token_id  # no BOS
    # saved as the generic class, which reads tokenizer.json as it is: transformers 5 (< 5.24)
    # rebuilds a "LlamaTokenizer" as sentencepiece and gets the ids wrong
    with open(os.path.join(smollm2_dir, "tokenizer_config.json")) as f:
        assert json.load(f)["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert Tokenizer.from_file(os.path.join(smollm2_dir, "tokenizer.json")).encode(text).ids == ids
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == cfg["eos_token_id"] == 2
    assert tok.chat_template == gguf_tok.chat_template and "<|im_start|>" in tok.chat_template
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_smollm2_converted_answers(smollm2_dir):
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    m = Model.from_pretrained(smollm2_dir, dtype=torch.float32)
    assert not m.causal  # a2d: bidirectional unless told
    m.causal = True  # the converted weights are still the AR model's
    x = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                add_generation_prompt=True, return_tensors="pt")
    cache, out = m.new_cache(1, x.shape[1] + 16), []
    nxt = m(x, cache=cache, append=True)[0, -1].argmax().item()
    while nxt != tok.eos_token_id and len(out) < 16:  # greedy
        out.append(nxt)
        nxt = m(torch.tensor([[nxt]]), cache=cache, append=True)[0, -1].argmax().item()
    answer = tok.decode(out)
    assert "Paris" in answer, answer
