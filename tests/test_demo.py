"""bench/demo.py on the tiny model: Ctrl-C during its SFT leaves a checkpoint and one line (no
tracebacks), and running the demo again continues from that checkpoint to the end."""

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
    ckpt = [d for d in os.listdir(tmp_path / "sft") if d.startswith("checkpoint-")]
    assert len(ckpt) == 1 and ckpt[0] != "checkpoint-final"

    r = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {tmp_path}/sft/{ckpt[0]}" in r.stdout and "| A2D after SFT | bd3lm block 8 |" in r.stdout
