"""chat.py through a pipe and through a pseudo-terminal (two turns, /set, /reset, EOF), its
answers checked against sample.generate on the same conversation; and the frame renderer."""

import os
import pty
import re
import select
import struct
import subprocess
import sys
import signal
import termios
import fcntl
import time

import pytest
import torch

import sample
from chat import render, render_frames

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--max_new_tokens=16", "--steps=8", "--block_size=8", "--dtype=float32"]  # fp32, as the `tiny` fixture
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "LINES": "50"}


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # as the chat subprocess (OMP_NUM_THREADS=1): same float sums, same argmax
    yield sample.load(tiny_dir, dtype="float32", device="cpu")
    torch.set_num_threads(n)


def expected_answers(tiny, turns):
    """What chat.py should answer: sample.generate on the conversation so far, after each turn.
    turns: user strings, "/reset", or ("steps", 4) for a /set."""
    model, tok, d = tiny
    settings = dict(d, block_size=8, max_new_tokens=16, steps=8, stop_at_eos=True)
    messages, answers = [], []
    for t in turns:
        if t == "/reset":
            messages = []
        elif isinstance(t, tuple):
            settings[t[0]] = t[1]
        else:
            messages.append({"role": "user", "content": t})
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            text = tok.decode(sample.generate(model, [ids], **settings).sequences[0], skip_special_tokens=True)
            messages.append({"role": "assistant", "content": text})
            answers.append(text)
    return answers


def test_render_and_frames(tiny):
    model, tok, d = tiny
    a, b = tok("Hello world", add_special_tokens=False).input_ids
    M, E = d["mask_token_id"], d["eos_token_id"]
    assert render(tok, [a, M, b, M], M, E) == "Hello░ world░"
    assert render(tok, [a, b, E[0], a], M, E) == "Hello world"
    out = sample.generate(model, [[a, b]], **{**d, "block_size": 4}, max_new_tokens=8, steps=8, return_history=True)
    frames = render_frames(tok, out.history, M, E, placeholder="_")
    assert frames[0] == "_" * 8 and len(frames) == 9  # 8 steps, one token each
    assert [f.count("_") for f in frames] == list(range(8, -1, -1))
    assert frames[-1] == tok.decode(out.sequences[0], skip_special_tokens=True)


def test_chat_through_a_pipe(tiny_dir, tiny):
    script = "hello\nhow are you\n/set steps=4\n/set remasking=bogus\n/reset\nagain\n/set bogus=1\n"
    r = subprocess.run([sys.executable, "chat.py", f"--model_name_or_path={tiny_dir}", *FLAGS], cwd=ROOT,
                       input=script, capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr
    a = expected_answers(tiny, ["hello", "how are you", ("steps", 4), "/reset", "again"])
    assert r.stdout == "".join(x + "\n" for x in a)  # answers only: no prompts, no frames
    assert a[0] != a[1] and "steps=4" in r.stderr and "usage: /set" in r.stderr
    # a bad value is refused at /set (and the setting kept), not when the next answer fails
    assert "error: unknown remasking 'bogus'; choose low_confidence or random" in r.stderr
    assert "remasking='bogus'" not in r.stderr and r.stderr.count("error:") == 1


def test_right_shift_flag_overrides_the_checkpoint(tiny_dir, tiny):
    assert tiny[2]["right_shift_logits"] is False  # what the checkpoint records
    r = subprocess.run([sys.executable, "chat.py", f"--model_name_or_path={tiny_dir}", "--right_shift_logits=True",
                        *FLAGS], cwd=ROOT, input="hello\n/set\n", capture_output=True, text=True, timeout=300,
                       env=ENV)
    assert r.returncode == 0, r.stderr
    shifted = expected_answers(tiny, [("right_shift_logits", True), "hello"])
    assert r.stdout == shifted[0] + "\n" and shifted != expected_answers(tiny, ["hello"])
    assert "right_shift_logits=True" in r.stderr


def test_raw_continuation_from_scratch(tiny_dir, tiny):
    r = subprocess.run([sys.executable, "chat.py", f"--model_name_or_path={tiny_dir}", "--chat_template=False", *FLAGS],
                       cwd=ROOT, input="\nOnce upon a time\n", capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr
    model, tok, d = tiny
    want = [tok.decode(sample.generate(model, [ids], **{**d, "block_size": 8}, max_new_tokens=16, steps=8,
                                       stop_at_eos=True).sequences[0], skip_special_tokens=True)
            for ids in ([], tok("Once upon a time", add_special_tokens=False).input_ids)]
    assert r.stdout == want[0] + "\n" + want[1] + "\n"


def read_until(fd, marker, timeout=120):
    buf, t0 = b"", time.time()
    while marker not in buf:
        if time.time() - t0 > timeout:
            raise AssertionError(f"no {marker!r} after {timeout}s; got {buf[-500:]!r}")
        if select.select([fd], [], [], 1)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            buf += chunk
    return buf.decode("utf-8", "replace")


def flat(s):
    # the screen text without ANSI sequences and line breaks (frames are wrapped to the width)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", s).replace("\r", "").replace("\n", "")


def chat_in_a_pty(tiny_dir):  # chat.py on a 200-column pseudo-terminal -> (its master fd, the process)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    p = subprocess.Popen([sys.executable, "chat.py", f"--model_name_or_path={tiny_dir}", *FLAGS], cwd=ROOT,
                         stdin=slave, stdout=slave, stderr=slave, env=ENV, start_new_session=True)
    os.close(slave)
    return master, p


def test_chat_in_a_terminal(tiny_dir, tiny):
    master, p = chat_in_a_pty(tiny_dir)
    try:
        read_until(master, b"commands.")
        answers = expected_answers(tiny, ["hello", ("steps", 4), "how are you", "/reset", "again"])
        end = b"\x1b[0m\r\n> "  # the stats line, then the next prompt
        os.write(master, b"hello\n")
        out1 = read_until(master, end)
        os.write(master, b"/set steps=4\n")
        assert "steps=4" in read_until(master, b"steps=4")
        os.write(master, b"how are you\n")
        out2 = read_until(master, end)
        os.write(master, b"/reset\n")
        read_until(master, b"(conversation cleared)")
        os.write(master, b"again\n")
        out3 = read_until(master, end)
        for out, want, nfe in ((out1, answers[0], 8), (out2, answers[1], 4), (out3, answers[2], 4)):
            assert "░" * 16 in out  # the first frame: all masks
            assert out.count("\x1b[J") == 1 + nfe + 1  # the blank canvas, one redraw per step, the final text
            assert flat(want) in flat(out)
            assert re.search(rf"\[\d+ tokens, {nfe} forward passes, ", out)  # the stats line counts the steps
        os.write(master, b"\x04")  # Ctrl-D on an empty line: EOF
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)


def test_ctrl_c_stops_an_answer_and_keeps_the_conversation(tiny_dir, tiny):
    master, p = chat_in_a_pty(tiny_dir)
    try:
        read_until(master, b"commands.")
        for cmd in (b"max_new_tokens=4096", b"steps=4096"):  # an answer long enough to interrupt
            os.write(master, b"/set " + cmd + b"\n")
            read_until(master, cmd)
        os.write(master, b"hello\n")
        read_until(master, "░".encode() * 100)  # the blank canvas: the answer has started
        p.send_signal(signal.SIGINT)  # what Ctrl-C sends
        read_until(master, b"(answer stopped)")
        for cmd in (b"max_new_tokens=16", b"steps=8"):
            os.write(master, b"/set " + cmd + b"\n")
            read_until(master, cmd)
        # the stopped turn left no trace: this answer is the one to a first "hello"
        os.write(master, b"hello\n")
        out = read_until(master, b"\x1b[0m\r\n> ")
        assert flat(expected_answers(tiny, ["hello"])[0]) in flat(out)
        p.send_signal(signal.SIGINT)  # at the prompt: quit
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
