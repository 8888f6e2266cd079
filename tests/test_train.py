"""train.py end to end, run as a subprocess (nothing imports train.py): data and tokenizer parity,
SFT prompt masking, learning on tiny-shakespeare, exact resume, failure modes, option errors."""

import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, data_path
from model import default_dtype

SHAKESPEARE = ("tinyshakespeare", "input.txt")
GSM8K = ("gsm8k", "train.jsonl")


def run_train(out, *args, ok=True, timeout=600, env=None):
    cmd = [sys.executable, "train.py", f"--output_dir={out}", *args]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    if ok:
        assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def tok(tiny_dir):
    import transformers
    return transformers.AutoTokenizer.from_pretrained(tiny_dir)


def test_pt_tokens_equal_hf_tokenizer_on_shakespeare(tiny_dir, tok, tmp_path):
    # the uint32 cache train.py writes holds the HF tokenizer's ids, each document followed by EOS. A
    # second document holds characters whose bytes SmolLM2's vocabulary lacks (HF gives <unk>) and a
    # special token, which must stay one id
    src = data_path(*SHAKESPEARE)
    odd = tmp_path / "odd.txt"
    odd.write_text("bell\x07 \x04ctrl " + chr(0x50000) * 2 + " plane-5 <|im_end|> fine", encoding="utf-8")
    r = run_train(tmp_path, f"--model_name_or_path={tiny_dir}", f"--dataset_args={src}+{odd}", "--insert_eos=True",
                  "--prepare_data_only=True")
    assert "tokenized " in r.stdout
    (fn,) = glob.glob(str(tmp_path / "data" / "pt-*-train.bin"))
    got = np.fromfile(fn, dtype=np.uint32).tolist()
    with open(src, encoding="utf-8") as f:
        want = [ids + [tok.eos_token_id] for ids in tok([f.read(), odd.read_text(encoding="utf-8")],
                                                       add_special_tokens=False)["input_ids"]]
    assert tok.unk_token_id in want[1] and tok.convert_tokens_to_ids("<|im_end|>") in want[1]
    assert len(got) == len(want[0]) + len(want[1]) > 300_000
    assert got == want[0] + want[1]


def sft_cache(out, split):
    (ids,) = glob.glob(str(out / "data" / f"sft-*-{split}-ids.npy"))
    base = ids[:-len("-ids.npy")]
    ids, off, plen = np.load(ids), np.load(base + "-off.npy"), np.load(base + "-plen.npy")
    return [(ids[off[i]:off[i + 1]].tolist(), int(plen[i])) for i in range(len(plen))]


def test_sft_gsm8k_prompt_masked_and_ids_equal_hf(tiny_dir, tok, tmp_path):
    src = data_path(*GSM8K)
    r = run_train(tmp_path, f"--model_name_or_path={tiny_dir}", "--task=sft", f"--dataset_args={src}",
                  "--max_length=1024", "--prepare_data_only=True")
    with open(src) as f:
        rows = [json.loads(line) for line in f]
    with open(tmp_path / "heldout.jsonl") as f:
        held = [json.loads(line) for line in f]
    held_q = {h["prompt"] for h in held}
    assert len(held) == round(0.05 * len(rows)) and len(held_q) == len(held)
    train_rows = [r for r in rows if r["question"] not in held_q]
    cache = sft_cache(tmp_path, "train")
    assert len(cache) == len(train_rows) == len(rows) - len(held)
    for i in range(0, len(cache), 37):  # ~190 rows against HF's own chat-template tokenization
        msgs = [{"role": "user", "content": train_rows[i]["question"]},
                {"role": "assistant", "content": train_rows[i]["answer"]}]
        full = tok.apply_chat_template(msgs, tokenize=True)
        prompt = tok.apply_chat_template(msgs[:1], tokenize=True, add_generation_prompt=True)
        ids, plen = cache[i]
        assert ids == full
        # label -100 goes on exactly the prompt: the system + user turns and the assistant header
        assert plen == len(prompt) and ids[:plen] == prompt
        answer = tok.decode(ids[plen:], clean_up_tokenization_spaces=False)
        assert answer.startswith(train_rows[i]["answer"]) and answer.endswith("<|im_end|>\n")


# Qwen3-style: thinking unless the caller says enable_thinking=False (a dllm-hub checkpoint's template)
THINKING_TEMPLATE = ("{% set off = enable_thinking is defined and enable_thinking is false %}"
                     "{% for m in messages %}<|im_start|>{{ m.role }}\n"
                     "{% if m.role == 'assistant' and off %}<think>\n\n</think>\n\n{% endif %}"
                     "{{ m.content }}<|im_end|>\n{% endfor %}"
                     "{% if add_generation_prompt %}<|im_start|>assistant\n"
                     "{% if off %}<think>\n\n</think>\n\n{% endif %}{% endif %}")


def test_sft_thinking_off_lang_filter_and_length_rule(tiny_dir, tok, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    with open(model / "tokenizer_config.json") as f:
        tc = json.load(f)
    with open(model / "tokenizer_config.json", "w") as f:
        json.dump({**tc, "chat_template": THINKING_TEMPLATE}, f)
    for fn in glob.glob(str(model / "chat_template.*")):
        os.remove(fn)
    chat = lambda q, a: {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
    rows = [chat("Print one.", "```python\nprint(1)\n```"), chat("In python, please.", "```js\nlog(1)\n```"),
            chat("Add them.", "```python\nprint(1 + 2)\n```")]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = [f"--model_name_or_path={model}", "--task=sft", "--prepare_data_only=True", "--eval_fraction=0",
              "--per_device_train_batch_size=1"]

    # [lang:python] tests the assistant reply, not the whole row: the js reply asked for in python is out
    r = run_train(tmp_path / "a", *common, f"--dataset_args={data}[lang:python]", "--max_length=512")
    assert "sft train: 2 rows, 0 over max_length=512 dropped" in r.stdout
    (ids, plen), _ = sft_cache(tmp_path / "a", "train")
    text = tok.decode(ids)
    # thinking off although the template's default is on: the prompt ends in the empty think block
    assert text.startswith("<|im_start|>user\nPrint one.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert "</think>" in tok.decode(ids[:plen]) and "print(1)" in tok.decode(ids[plen:])

    # truncation=right drops a row whose masked prompt is longer than max_length, keeps one whose
    # prompt is exactly max_length (the reference's <=), and filters on the prompt only when it is masked
    import transformers
    t2 = transformers.AutoTokenizer.from_pretrained(model)
    plens = [len(t2(t2.apply_chat_template(r["messages"][:1], tokenize=False, add_generation_prompt=True,
                                          enable_thinking=False), add_special_tokens=False).input_ids) for r in rows]
    assert plens[0] == plen
    r = run_train(tmp_path / "b", *common, f"--dataset_args={data}", f"--max_length={plen}")
    assert f"sft train: 3 rows, {sum(p > plen for p in plens)} over max_length" in r.stdout, (plens, r.stdout)
    r = run_train(tmp_path / "c", *common, f"--dataset_args={data}", f"--max_length={plen - 1}",
                  "--mask_prompt_loss=False")
    assert "sft train: 3 rows, 0 over max_length" in r.stdout and "3 clipped" in r.stdout, r.stdout


def test_synthetic_addition_heldout_is_fixed_disjoint_and_correct(tiny_dir, tok, tmp_path):
    # two runs at once, different seeds: the held-out split must not depend on the training seed
    procs = [subprocess.Popen([sys.executable, "train.py", f"--output_dir={tmp_path / f'run{seed}'}", f"--seed={seed}",
                               f"--model_name_or_path={tiny_dir}", "--task=sft", "--prepare_data_only=True",
                               "--dataset_args=synthetic:addition[train:3000,test:100]"], cwd=ROOT) for seed in (0, 1)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    outs = []
    for seed in (0, 1):
        with open(tmp_path / f"run{seed}" / "heldout.jsonl") as f:
            outs.append([json.loads(line) for line in f])
    assert outs[0] == outs[1] and len(outs[0]) == 100
    held = {h["prompt"] for h in outs[0]}
    for h in outs[0]:
        a, b = map(int, re.fullmatch(r"What is (\d+) \+ (\d+)\?", h["prompt"]).groups())
        assert h["answer"] == str(a + b)
    train_q = [re.search(r"What is \d+ \+ \d+\?", tok.decode(ids)).group(0) for ids, _ in
               sft_cache(tmp_path / "run0", "train")]
    assert len(train_q) == 3000 and not held & set(train_q)
    assert max(len(ids) - p for ids, p in sft_cache(tmp_path / "run0", "train")) <= 8  # short answers


def test_shakespeare_val_loss_drops(tiny_dir, tmp_path):
    # a 6M-param model (2 layers, vocab 49k) from random init: the held-out MDLM ELBO falls from
    # ~ln(49153) = 10.8 nats by at least 3 nats within 40 steps of 8 x 32 tokens (measured: 10.58 -> 6.60)
    r = run_train(tmp_path, f"--model_name_or_path={tiny_dir}", f"--dataset_args={data_path(*SHAKESPEARE)}",
                  "--max_length=32", "--per_device_train_batch_size=8", "--per_device_eval_batch_size=16",
                  "--max_steps=40", "--learning_rate=6e-3", "--warmup_steps=5", "--eval_steps=0",
                  "--eval_iters=4", "--eval_on_start=True", "--save_steps=0", "--log_steps=20")
    ev = [m for m in metrics(tmp_path) if "eval_loss" in m]
    assert [m["step"] for m in ev] == [0, 40]
    first, last = ev[0]["eval_loss"], ev[1]["eval_loss"]
    assert first > 10.0 and last < first - 3.0, (first, last)
    assert abs(ev[1]["eval_ppl"] - np.exp(last)) < 1e-6 * ev[1]["eval_ppl"]
    steps = [m for m in metrics(tmp_path) if "loss" in m]
    assert [m["step"] for m in steps] == [1, 20, 40]  # the first step at once, then every log_steps
    assert all(k in steps[0] for k in ("lr", "grad_norm", "dt", "tok_per_s"))
    assert re.search(r"step 20/40 \| loss [\d.]+ \| lr [\d.e+-]+ \| gnorm [\d.]+ \| dt \d+ms \| tok/s [\d,]+ \| eta",
                     r.stdout)
    with open(tmp_path / "checkpoint-final" / "config.json") as f:
        cfg = json.load(f)
    assert (cfg["model_type"], cfg["objective"], cfg["block_size"], cfg["mask_token_id"],
            cfg["right_shift_logits"]) == ("a2d-qwen3", "mdlm", 32, 49152, False)


def bd3lm_sft_args(tiny_dir, cache):
    return [f"--model_name_or_path={tiny_dir}", "--task=sft", "--objective=bd3lm", "--block_size=8",
            "--max_length=64", "--dataset_args=synthetic:addition[train:400,test:16]", f"--cache_dir={cache}",
            "--t_per_block=True", "--antithetic=True", "--per_device_train_batch_size=4",
            "--gradient_accumulation_steps=2", "--per_device_eval_batch_size=8", "--eval_iters=1",
            "--eval_steps=2", "--max_steps=4", "--save_steps=2", "--warmup_steps=1", "--learning_rate=2e-3",
            "--dtype=float32"]


def streaming_mdlm_args(tiny_dir, cache):
    # a local jsonl read as a stream: the resume has to skip exactly the chunks already consumed
    return [f"--model_name_or_path={tiny_dir}", f"--dataset_args={data_path(*GSM8K)}", "--text_field=question",
            "--streaming=True", "--max_length=32", "--per_device_train_batch_size=4", "--per_device_eval_batch_size=4",
            "--eval_iters=1", "--eval_steps=2", "--max_steps=4", "--save_steps=2", "--warmup_steps=1",
            "--learning_rate=2e-3", f"--cache_dir={cache}", "--dtype=float32"]


def read_until(stream, start):
    while not (line := stream.readline()).startswith(start):
        assert line, f"the stream ended before a line starting {start!r}"


@pytest.mark.parametrize("make_args", [bd3lm_sft_args, streaming_mdlm_args])
def test_exact_resume_and_killed_save(tiny_dir, tmp_path, make_args):
    # one thread: threaded MKL kernels may round differently from run to run (Intel's notes on
    # conditional numerical reproducibility). One full-suite run failed the bit-exact check
    # below, ~50 isolated runs never did. This tests the resume (data, noise, optimizer, lr).
    args = make_args(tiny_dir, tmp_path / "cache")
    one = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    run_train(straight, *args, env=one)
    # the newest checkpoint alone (save_total_limit=1), resumable, and checkpoint-final without training state
    assert {d for d in os.listdir(straight) if "checkpoint" in d} == {"checkpoint-4", "checkpoint-final"}
    assert os.path.exists(straight / "checkpoint-4" / "trainer_state.pt")
    assert not os.path.exists(straight / "checkpoint-final" / "trainer_state.pt")

    # a run killed after its checkpoint-2, as if while saving step 3: a tmp-checkpoint-3 is half
    # written, and a checkpoint-3 without training state was copied in
    resumed = tmp_path / "resumed"
    p = subprocess.Popen([sys.executable, "train.py", f"--output_dir={resumed}", *args], cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1", **one})
    read_until(p.stdout, f"saved {resumed}/checkpoint-2 (")
    p.kill()
    p.wait()
    assert os.path.exists(resumed / "checkpoint-2" / "trainer_state.pt")
    os.makedirs(resumed / "tmp-checkpoint-3")
    with open(resumed / "tmp-checkpoint-3" / "model.safetensors", "wb") as f:
        f.write(b"\0" * 100)
    shutil.copytree(resumed / "checkpoint-2", resumed / "checkpoint-3", ignore=shutil.ignore_patterns("trainer_*"))
    r = run_train(resumed, *args, "--resume=True", env=one)
    assert f"resumed from {resumed}/checkpoint-2 at step 2" in r.stdout

    a = load_file(straight / "checkpoint-final" / "model.safetensors")
    b = load_file(resumed / "checkpoint-final" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit-identical, not merely close
    init = load_file(os.path.join(tiny_dir, "model.safetensors"))
    assert not torch.equal(a["model.layers.0.mlp.up_proj.weight"], init["model.layers.0.mlp.up_proj.weight"])
    tail = lambda out: [(m["step"], m.get("loss"), m.get("eval_loss")) for m in metrics(out) if m["step"] > 2]
    assert tail(straight) == tail(resumed) and len(tail(straight)) == 3  # steps 3, 4 + the final eval
    assert not os.path.exists(resumed / "tmp-checkpoint-3")  # half-written saves are cleared at start


def tiny_pt_args(tiny_dir, cache, *more):
    return [f"--model_name_or_path={tiny_dir}", f"--dataset_args={data_path(*SHAKESPEARE)}", "--max_length=32",
            "--per_device_train_batch_size=4", "--eval_steps=0", "--warmup_steps=1", "--learning_rate=2e-3",
            f"--cache_dir={cache}", *more]


def test_a_previous_run_is_never_overwritten_silently(tiny_dir, tmp_path):
    out = tmp_path / "out"
    r = run_train(out, *tiny_pt_args(tiny_dir, tmp_path / "cache", "--max_steps=3", "--save_steps=1",
                                     "--dtype=float32"))
    assert "dtype float32 (--dtype)" in r.stdout  # an explicit flag wins over the machine's default
    # disk stays bounded: the newest resumable checkpoint (the last step's state) and checkpoint-final, in the
    # source's dtype (float32 here); each save says how big it is
    assert sorted(os.listdir(out)) == ["checkpoint-3", "checkpoint-final", "metrics.jsonl"]
    assert re.search(rf"saved {out}/checkpoint-3 \([\d.,]+ MB, resumable, [\d.]+ s\)", r.stdout)
    assert re.search(rf"saved {out}/checkpoint-final \([\d.,]+ MB, float32, [\d.]+ s\)", r.stdout)
    before = {f: os.path.getmtime(out / f) for f in os.listdir(out)}
    r = run_train(out, *tiny_pt_args(tiny_dir, tmp_path / "cache", "--max_steps=1"), ok=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"error: output_dir {out} holds a previous run (checkpoint-3, checkpoint-final, metrics.jsonl); pass " \
           f"--resume=True to continue it, --overwrite=True to replace it" in r.stderr
    # a resume with nothing left to train says so and writes nothing
    r = run_train(out, *tiny_pt_args(tiny_dir, tmp_path / "cache", "--max_steps=3", "--resume=True"))
    assert "already at step 3 of 3: nothing to train" in r.stdout
    assert {f: os.path.getmtime(out / f) for f in os.listdir(out)} == before  # untouched
    # a larger max_steps continues on the longer schedule: the lr at step 3 of 5 is not the old final 0
    r = run_train(out, *tiny_pt_args(tiny_dir, tmp_path / "cache", "--max_steps=5", "--resume=True", "--log_steps=1"))
    assert "the run was planned for 3 steps, now 5: the learning rate follows the 5-step schedule" in r.stdout
    steps = [m for m in metrics(out) if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2, 3, 4, 5]
    assert abs(steps[3]["lr"] - 1e-3) < 1e-9  # warm-up 1, then the cosine at (3 - 1) / (5 - 1): 2e-3 * 0.5
    r = run_train(out, *tiny_pt_args(tiny_dir, tmp_path / "cache", "--max_steps=1", "--overwrite=True",
                                     "--final_dtype=bfloat16"))
    assert f"dtype {str(default_dtype('cpu')[0]).removeprefix('torch.')} ({default_dtype('cpu')[1]})" in r.stdout
    assert sorted(os.listdir(out)) == ["checkpoint-1", "checkpoint-final", "metrics.jsonl"]  # nothing of the old run
    assert [m["step"] for m in metrics(out) if "loss" in m] == [1]
    assert {t.dtype for t in load_file(out / "checkpoint-final" / "model.safetensors").values()} == {torch.bfloat16}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C; kill, timeout, Slurm, Kubernetes
def test_ctrl_c_and_sigterm_save_and_print_the_exact_resume_command(tiny_dir, tmp_path, sig):
    args = tiny_pt_args(tiny_dir, tmp_path / "cache", "--max_steps=30", "--save_steps=0")  # the CPU configs' 0
    one = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    run_train(tmp_path / "straight", *args, env=one)
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "train.py", f"--output_dir={out}", *args], cwd=ROOT, text=True, env={
        **os.environ, "PYTHONUNBUFFERED": "1", **one}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    read_until(p.stdout, "step 1/30")
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=300)
    name = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    assert p.returncode == 128 + sig and "Traceback" not in stderr and f"{name}: finishing this step" in stderr
    m = re.search(r"interrupted at step (\d+); continue with: (.*)\n", stdout)
    step = int(m.group(1))
    assert step < 30 and f"saved {out}/checkpoint-{step} (" in stdout and not os.path.exists(out / "checkpoint-final")
    cmd = shlex.split(m.group(2))
    assert cmd == [sys.executable, "train.py", f"--output_dir={out}", *args, "--resume=True"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, **one})
    assert r.returncode == 0 and f"resumed from {out}/checkpoint-{step} at step {step}" in r.stdout, r.stderr
    a = load_file(tmp_path / "straight" / "checkpoint-final" / "model.safetensors")
    b = load_file(out / "checkpoint-final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # as if never interrupted


def test_second_ctrl_c_quits_at_once(tiny_dir, tmp_path):
    # long steps (many micro-batches), so the second Ctrl-C lands inside the step the first one lets finish
    args = tiny_pt_args(tiny_dir, tmp_path / "cache", "--max_steps=3", "--gradient_accumulation_steps=60")
    p = subprocess.Popen([sys.executable, "train.py", f"--output_dir={tmp_path / 'out'}", *args],
                         cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    read_until(p.stdout, "step 1/3")
    p.send_signal(signal.SIGINT)
    read_until(p.stderr, "Ctrl-C: finishing this step")
    p.send_signal(signal.SIGINT)
    _, stderr = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGINT and "Traceback" not in stderr
    assert not glob.glob(str(tmp_path / "out" / "checkpoint-*"))
    # it says what survives (nothing yet) and how to go on
    assert "Ctrl-C again: quitting without saving. No checkpoint survives; continue with: " in stderr
    assert "--resume=True" in stderr.splitlines()[-1]


def test_nonfinite_loss_stops_without_checkpoint(tiny_dir, tmp_path):
    bad = tmp_path / "nan-model"
    shutil.copytree(tiny_dir, bad)
    sd = load_file(bad / "model.safetensors")
    sd["model.norm.weight"][0] = float("nan")
    from safetensors.torch import save_file
    save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "out"
    r = run_train(out, f"--model_name_or_path={bad}", f"--dataset_args={data_path(*SHAKESPEARE)}",
                  "--max_length=32", "--per_device_train_batch_size=2", "--max_steps=5", "--save_steps=1", ok=False)
    assert r.returncode != 0
    assert "non-finite loss (nan)" in r.stderr and "at step 1" in r.stderr
    assert not glob.glob(str(out / "*checkpoint*"))


def test_ar_objective_saves_plain_family(tiny_dir, tmp_path):
    run_train(tmp_path, f"--model_name_or_path={tiny_dir}", "--objective=ar", "--init_from_scratch=True",
              f"--dataset_args={data_path(*SHAKESPEARE)}", "--max_length=32", "--per_device_train_batch_size=4",
              "--max_steps=2", "--eval_steps=0", "--eval_iters=2", "--per_device_eval_batch_size=4")
    with open(tmp_path / "checkpoint-final" / "config.json") as f:
        cfg = json.load(f)
    assert cfg["model_type"] == "qwen3" and cfg["objective"] == "ar"
    # warmup as HF's schedules: from 0 (1 warmup step of 2), then the cosine from the full rate
    assert [m["lr"] for m in metrics(tmp_path) if "lr" in m] == [0.0, 1e-4]
    # random init, normal(0, 0.02) weights: next-token CE starts at ~ln(vocab) = ln(49153) = 10.80
    first = metrics(tmp_path)[0]
    assert first["step"] == 1 and abs(first["loss"] - np.log(49153)) < 0.1, first


def test_recipe_schedules_hit_their_endpoints_and_context_causal_is_saved(tiny_dir, tmp_path):
    # 8 steps: the block curriculum over the first half (1 at step 1, block_size from the middle on),
    # attention annealing for MDLM over the first half (causal at step 1, bidirectional from the middle)
    common = [f"--model_name_or_path={tiny_dir}", "--task=sft", "--dataset_args=synthetic:sort[train:64,test:8]",
              "--max_length=96", "--max_steps=8", "--per_device_train_batch_size=2", "--eval_steps=0",
              "--save_steps=0", "--dtype=float32", f"--cache_dir={tmp_path / 'data'}", "--right_shift_logits=True",
              "--complementary_masks=True"]
    run_train(tmp_path / "bd3lm", *common, "--objective=bd3lm", "--block_size=8", "--block_curriculum=0.5",
              "--context_causal=True", "--ar_loss_weight=1.0")
    run_train(tmp_path / "mdlm", *common, "--objective=mdlm", "--attention_anneal=0.5")
    blocks = [m["block"] for m in metrics(tmp_path / "bd3lm") if "loss" in m]
    ratios = [m["attn"] for m in metrics(tmp_path / "mdlm") if "loss" in m]
    assert blocks == [1, 1, 2, 4, 8, 8, 8, 8]  # progress 0, 1/8, ...: 2 ** int(3 * progress / 0.5) before the half
    assert ratios == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]
    with open(tmp_path / "bd3lm" / "checkpoint-final" / "config.json") as f:
        cfg = json.load(f)
    assert (cfg["objective"], cfg["block_size"], cfg["context_causal"], cfg["right_shift_logits"]) == \
        ("bd3lm", 8, True, True)
    import sample
    assert sample.load(str(tmp_path / "bd3lm" / "checkpoint-final"), "float32", "cpu")[2]["context_causal"] is True


BAD_OPTIONS = [
    (["--objective=diffusion"], "--objective='diffusion'; choose one of: mdlm, bd3lm, ar"),
    (["--objective=bd3lm", "--block_size=24", "--max_length=64"], "multiple of block_size"),
    (["--time_epsilon=0"], "--time_epsilon=0.0 must be in (0, 1)"),
    (["--streaming=True"], "needs --max_steps > 0"),
    (["--lerning_rate=1e-4"], "Did you mean --learning_rate?"),
    (["--model_name_or_path="], "--model_name_or_path is required"),
    (["--task=sft", "--dataset_args=synthetic:division"], "choose synthetic:addition, synthetic:sort or synthetic:reverse"),
    (["--dataset_args=data.jsonl[lang]"], "must be key:value"),
    (["--resume=True", "--overwrite=True"], "--overwrite=True deletes it: pick one"),
    (["--max_steps=-5"], "--max_steps=-5: set it > 0"),
    (["--objective=mdlm", "--context_causal=True"], "--context_causal only applies to --objective=bd3lm"),
    (["--objective=bd3lm", "--ar_loss_weight=1"], "--ar_loss_weight needs --context_causal=True"),
    (["--objective=bd3lm", "--block_size=12", "--max_length=48", "--block_curriculum=0.5"], "power-of-two"),
    (["--complementary_masks=True", "--schedule=cosine"], "under the linear schedule"),
]


def test_bad_options_fail_clearly(tiny_dir, tmp_path):
    # all at once: each process dies in its option check, so the cost is interpreter start-up
    procs = [subprocess.Popen([sys.executable, "train.py", f"--output_dir={tmp_path / str(i)}",
                               f"--model_name_or_path={tiny_dir}", *args], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i, (args, _) in enumerate(BAD_OPTIONS)]
    for p, (args, message) in zip(procs, BAD_OPTIONS):
        _, err = p.communicate(timeout=300)
        assert p.returncode != 0 and message in err and "Traceback" not in err, (args, err[-2000:])


def test_configs_set_only_known_options_with_valid_values():
    # the defaults and the choice lists are read from train.py's source (nothing imports train.py)
    import ast
    tree = ast.parse(open(os.path.join(ROOT, "train.py")).read())
    defaults, choices = {}, {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name == "_CHOICES":
                choices = {kw.arg: ast.literal_eval(kw.value) for kw in node.value.keywords}
            elif not name.startswith("_"):
                try:
                    defaults[name] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    assert len(defaults) > 50 and "objective" in choices
    configs = sorted(glob.glob(os.path.join(ROOT, "config", "*.py")))
    assert len(configs) >= 10
    for fn in configs:
        scope = {}
        exec(open(fn).read(), scope)
        for k, v in scope.items():
            if k.startswith("__") or callable(v):  # data.prepare's find, imported to locate the data
                continue
            assert k in defaults, f"{fn}: unknown option {k}"
            assert isinstance(v, type(defaults[k])) or (type(defaults[k]) is float and type(v) is int), (fn, k, v)
            assert k not in choices or v in choices[k], (fn, k, v)
        if scope.get("objective") == "bd3lm":
            assert scope.get("max_length", defaults["max_length"]) % scope["block_size"] == 0, fn
        if os.path.basename(fn).startswith("cpu_"):  # bf16 is ~20x slower than fp32 on an AVX2-only CPU
            assert "dtype" not in scope, f"{fn}: leave dtype to the machine (auto)"
    demo = {n.targets[0].id: n.value for n in ast.parse(open(os.path.join(ROOT, "bench", "demo.py")).read()).body
            if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)}
    assert ast.literal_eval(demo["dtype"]) == "auto"
