"""Shared fixtures: real data paths and checkpoints built once, cached under .models/."""

import fcntl
import os
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, ".models")
sys.path.insert(0, ROOT)
torch.set_num_threads(min(2, os.cpu_count() or 1))


def data_path(*parts):
    from data.prepare import find  # $NANOA2D_DATA, ../shared/data, data/
    try:
        return find(os.path.join(*parts))
    except SystemExit as e:
        pytest.skip(str(e))


@pytest.fixture
def one_thread():
    """Tiny models on a loaded 2-core machine: two OpenMP threads spinning on each other make
    every small op ~50x slower than one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _build_once(path, build):
    """Build `path` (a directory) once, even with several pytest processes racing."""
    os.makedirs(MODELS, exist_ok=True)
    with open(os.path.join(MODELS, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isdir(path):
            tmp = path + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            build(tmp)
            os.rename(tmp, path)
    return path


@pytest.fixture(scope="session")
def smollm2_dir():
    """SmolLM2-135M-Instruct converted to an A2D checkpoint by convert.py (bf16)."""
    def build(tmp):
        subprocess.run([sys.executable, "convert.py", "--model_name_or_path=smollm2", f"--output_dir={tmp}"],
                       cwd=ROOT, check=True, capture_output=True)
    return _build_once(os.path.join(MODELS, "test", "a2d-SmolLM2-135M"), build)


@pytest.fixture(scope="session")
def smollm2_hf_dir():
    """The AR source as transformers sees it: GGUF -> LlamaForCausalLM, saved as an HF dir (fp32)."""
    def build(tmp):
        import transformers
        from convert import smollm2_gguf
        d, fn = os.path.split(smollm2_gguf())
        transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=fn, dtype=torch.float32).save_pretrained(tmp)
    return _build_once(os.path.join(MODELS, "test", "hf-SmolLM2-135M"), build)


@pytest.fixture(scope="session")
def tiny_dir(smollm2_dir):
    """A tiny random qwen3-shaped A2D checkpoint with the SmolLM2 tokenizer (+ <|mask|>)."""
    def build(tmp):
        from model import Config, Model
        cfg = Config(model_type="a2d-qwen3", vocab_size=49153, hidden_size=64, intermediate_size=128,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                     tie_word_embeddings=False, rope_theta=10000.0, bos_token_id=1, eos_token_id=2,
                     pad_token_id=2, mask_token_id=49152, torch_dtype="float32")
        Model(cfg).init_weights(seed=0).save_pretrained(tmp)
        for fn in os.listdir(smollm2_dir):
            if fn.startswith(("tokenizer", "special_tokens", "chat_template")):
                shutil.copy(os.path.join(smollm2_dir, fn), tmp)
    return _build_once(os.path.join(MODELS, "test", "tiny-a2d-qwen3"), build)
