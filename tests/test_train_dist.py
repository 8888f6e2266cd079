"""train.py under torchrun on 2 CPU processes (gloo): DDP and FSDP2 follow the loss curve of one
process with the same global batch, and FSDP's gathered checkpoint loads with Model.from_pretrained."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, data_path
from model import Model

STEPS = 3


def args(tiny_dir, cache, out, per_device):
    # global batch 2 x 2 x 2 = 4 x 1 x 2 = 8 rows; accumulation exercises no_sync / requires_gradient_sync
    return [f"--model_name_or_path={tiny_dir}", f"--dataset_args={data_path('tinyshakespeare', 'input.txt')}",
            f"--cache_dir={cache}", f"--output_dir={out}", "--max_length=32", f"--max_steps={STEPS}",
            f"--per_device_train_batch_size={per_device}", "--gradient_accumulation_steps=2",
            "--learning_rate=3e-3", "--warmup_steps=1", "--eval_steps=0", "--save_steps=0",
            "--per_device_eval_batch_size=4", "--eval_iters=3",
            "--dtype=float32"]  # the tolerances below are fp32 ones; auto is bf16 on CPUs with native bf16


def run(cmd):
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def torchrun(*a):
    return run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py", *a])


def curve(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [(m["loss"], m["grad_norm"]) for m in rows if "loss" in m], [m["eval_loss"] for m in rows if "eval_loss" in m]


def weights(out):
    return Model.from_pretrained(os.path.join(out, "checkpoint-final"), dtype=torch.float32).state_dict()


@pytest.fixture(scope="module")
def single(tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    out = tmp / "single"
    run([sys.executable, "train.py", *args(tiny_dir, tmp / "cache", out, per_device=4)])
    return tmp, out


def assert_same_run(out, ref):
    (train, ev), (train_ref, ev_ref) = curve(out), curve(ref)
    assert len(train) == len(train_ref) == STEPS and len(ev) == len(ev_ref) == 1
    for (l, g), (l_ref, g_ref) in zip(train, train_ref):
        # the same rows, t and masks in every step: only float summation order differs
        assert abs(l - l_ref) < 1e-4 * l_ref and abs(g - g_ref) < 1e-3 * g_ref, (train, train_ref)
    assert abs(ev[0] - ev_ref[0]) < 1e-4 * ev_ref[0], (ev, ev_ref)
    assert train[-1][0] != train[0][0]  # it did train
    w, w_ref = weights(out), weights(ref)
    assert max((w[k] - w_ref[k]).abs().max().item() for k in w_ref) < 1e-4


def test_ddp_two_processes_match_one(tiny_dir, single):
    tmp, ref = single
    r = torchrun(*args(tiny_dir, tmp / "cache", tmp / "ddp", per_device=2), "--parallel=ddp")
    assert "2 process(es) on cpu | global batch 8 rows" in r.stdout
    assert_same_run(tmp / "ddp", ref)


def test_fsdp_two_processes_match_one_and_checkpoint_loads(tiny_dir, single):
    tmp, ref = single
    torchrun(*args(tiny_dir, tmp / "cache", tmp / "fsdp", per_device=2), "--parallel=fsdp")
    assert_same_run(tmp / "fsdp", ref)  # includes loading the gathered checkpoint-final
    with open(tmp / "fsdp" / "checkpoint-final" / "config.json") as f:
        cfg = json.load(f)
    assert cfg["model_type"] == "a2d-qwen3" and cfg["objective"] == "mdlm" and cfg["mask_token_id"] == 49152
    # the export holds every tensor at full shape (no shards), tied the same way as the source
    init = Model.from_pretrained(tiny_dir, dtype=torch.float32).state_dict()
    got = weights(tmp / "fsdp")
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in init.items()}
    state = torch.load(tmp / "fsdp" / f"checkpoint-{STEPS}" / "trainer_state.pt", weights_only=False)  # resumable
    assert state["step"] == STEPS and len(state["rng"]) == 2 and len(state["optimizer"]["state"]) > 0
