"""bench/demo.py on the tiny model: Ctrl-C during its SFT leaves a checkpoint and one line (no
tracebacks), and running the demo again continues from that checkpoint to the end. And the AR
baseline's batched greedy decoder against a plain loop."""

import glob
import os
import signal
import subprocess
import sys

from conftest import ROOT


def test_ctrl_c_in_the_demo_is_one_line_and_a_rerun_continues(tiny_dir, tmp_path):
    cmd = [sys.executable, "bench/demo.py", f"--model_dir={tiny_dir}", f"--out_dir={tmp_path}", "--max_steps=200",
           "--batch_size=2", "--n_test=4", "--max_new_tokens=8", "--dtype=float32"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    # its own session, so that a signal to the group reaches the demo and its train.py, as a terminal's Ctrl-C does
    p = subprocess.Popen(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         start_new_session=True)
    while not (line := p.stdout.readline()).startswith("step 1/200"):
        assert line, p.stderr.read()[-3000:]
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 130 and "Traceback" not in err, err[-3000:]
    said = [line for line in out.splitlines() + err.splitlines() if "interrupted" in line]
    assert len(said) == 1 and said[0].startswith("interrupted at step ") and "--resume=True" in said[0], said
    ar_dir, = glob.glob(str(tmp_path / "AR-SFT-*"))  # out_dir/<arm>-<hash of its settings>
    ckpt = [d for d in os.listdir(ar_dir) if d.startswith("checkpoint-")]
    assert len(ckpt) == 1 and ckpt[0] != "checkpoint-final"

    r = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {ar_dir}/{ckpt[0]}" in r.stdout, r.stdout[-3000:]
    for row in ("| AR-SFT | greedy, KV cache | 1 |", "| reference | block 8, one token per step | 1 |",
                "| recipe | block 8, one token per step | 1 |", "| recipe | verify, block 8 | 1 |"):
        assert row in r.stdout, r.stdout[-3000:]
    # each SFT keeps checkpoint-final alone (no training state), and a rerun with other settings trains anew
    assert sorted(os.listdir(ar_dir)) == ["checkpoint-final", "data", "heldout.jsonl", "metrics.jsonl"]
    r = subprocess.run([*cmd, "--max_steps=2"], cwd=ROOT, text=True, capture_output=True, env=env, timeout=600)
    assert r.returncode == 0 and len(glob.glob(str(tmp_path / "AR-SFT-*"))) == 2, r.stderr[-3000:]
    assert "each SFT 2 steps x 2 rows, trained in" in r.stdout


def test_batched_ar_greedy_matches_one_prompt_full_recompute(tiny_dir, one_thread):
    """bench/a2d_vs_ar.ar_generate (left-padded batch, KV cache, one token per forward) gives the tokens
    of a plain loop that re-runs each prompt's whole sequence for every token."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import torch
    from a2d_vs_ar import ar_generate
    from model import Model
    m = Model.from_pretrained(tiny_dir, dtype=torch.float32, causal=True)
    prompts = [[5, 9, 13], [7, 3, 8, 100, 42, 11, 12], [400]]
    ref = []
    for p in prompts:
        seq = list(p)
        for _ in range(8):
            seq.append(int(m(torch.tensor([seq]))[0, -1].argmax()))
        ref.append(seq[len(p):])
    eos = [ref[0][5]]  # a token the first answer makes at its 6th step: that row stops there
    want = [r[:r.index(eos[0])] if eos[0] in r else r for r in ref]
    got, nfe = ar_generate(m, prompts, 8, eos)
    need = max(r.index(eos[0]) + 1 if eos[0] in r else 8 for r in ref)  # forwards until every row has ended
    assert got == want and len(want[0]) <= 5 and nfe == need
