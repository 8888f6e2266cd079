"""eval.py: the lm-eval models a2d_mdlm / a2d_bd3lm through lm-eval's real evaluate path,
the ELBO estimators against hand computations, a memorising oracle, multi-process eval
(torchrun, gloo) against one process, and the offline tasks in tasks/."""

import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
sys.path.insert(0, ROOT)

import lm_eval  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import eval as ev  # noqa: E402
import sample  # noqa: E402
from model import Config, Model, forward_mask, sample_t  # noqa: E402

pytestmark = [pytest.mark.skipif(not os.path.exists(os.path.join(DATA, "gsm8k", "test.jsonl")),
                                 reason="shared data ../shared/data/gsm8k is missing"),
              pytest.mark.usefixtures("one_thread")]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
# the models here load in float32: the exact comparisons below are fp32 ones (the default is bf16 on CPUs with
# native bf16, where batched and single rows round apart)


@pytest.fixture(scope="module")
def tm():
    return TaskManager(include_path=ev.TASKS_DIR)


def gsm8k_docs(n):
    with open(os.path.join(DATA, "gsm8k", "test.jsonl")) as f:
        return [json.loads(next(f)) for _ in range(n)]


def req(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def evaluate(tm, model, pretrained, tasks, limit, batch_size=2, **model_args):
    r = lm_eval.simple_evaluate(model=model, model_args={"pretrained": pretrained, "dtype": "float32", **model_args},
                                tasks=tasks,
                                limit=limit, num_fewshot=0, batch_size=batch_size, task_manager=tm,
                                log_samples=True, bootstrap_iters=0)
    return r["results"], r["samples"]


# -----------------------------------------------------------------------------
# a model that has memorised 4 GSM8K test answers: " 18<eos>...", " 3<eos>...", ...

N_ANS = 6  # answer tokens, EOS-padded


@pytest.fixture(scope="module")
def memorised(tiny_dir, tmp_path_factory):
    tok = sample.load(tiny_dir)[1]
    rows = []
    for d in gsm8k_docs(4):
        ctx = f"Question: {d['question']}\nAnswer:"
        c = tok(ctx)["input_ids"]
        a = tok(ctx + " " + d["answer"].split("####")[-1].strip())["input_ids"][len(c):]
        rows.append((c, (a + [2] * N_ANS)[:N_ANS]))
    B, L = len(rows), max(len(c) for c, _ in rows) + N_ANS
    x0, labels = torch.full((B, L), 2), torch.full((B, L), -100)
    am = torch.zeros(B, L, dtype=torch.bool)
    for i, (c, a) in enumerate(rows):
        x0[i, :len(c) + N_ANS] = torch.tensor(c + a)
        labels[i, len(c):len(c) + N_ANS] = torch.tensor(a)
        am[i, :len(c) + N_ANS] = True
    ans = torch.tensor([[len(c) + j for j in range(N_ANS)] for c, _ in rows])  # (B, N)
    target = x0.gather(1, ans)
    cfg = Config(model_type="a2d-qwen3", vocab_size=49153, hidden_size=64, intermediate_size=128,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 tie_word_embeddings=False, rope_theta=10000.0, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                 mask_token_id=49152, torch_dtype="float32")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = Model(cfg).init_weights(seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)  # fused: 4x faster steps on CPU
    g = torch.Generator().manual_seed(0)
    with torch.enable_grad():
        for step in range(400):
            # the MDLM loss, with the LM head run on the answer rows only (the 49k vocab dominates)
            t = sample_t(B, antithetic=True, generator=g)
            xt, masked = forward_mask(x0, labels, t, 49152, generator=g)
            h = model(xt, attention_mask=am, causal=False, return_hidden=True)
            logits = model.lm_head(h.gather(1, ans[..., None].expand(-1, -1, h.shape[-1])))
            ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
            loss = (ce * masked.gather(1, ans) / t[:, None]).sum() / (B * N_ANS)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step >= 100 and step % 20 == 0:  # stop once every answer comes out of an all-mask canvas
                with torch.no_grad():
                    pred = model(torch.where(labels != -100, 49152, x0), attention_mask=am, causal=False)
                if (pred.argmax(-1).gather(1, ans) == target).all():
                    break
    torch.set_num_threads(threads)
    out = str(tmp_path_factory.mktemp("memorised") / "ckpt")
    model.save_pretrained(out)
    for fn in os.listdir(tiny_dir):
        if fn.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(os.path.join(tiny_dir, fn), out)
    return out


@pytest.mark.parametrize("method", ["mdlm", "bd3lm"])
def test_oracle_memorised_scores_one(memorised, tm, method):
    # generation: " 18" etc. is found by flexible-extract (strict-match wants "#### 18", never produced);
    # multiple choice: the memorised number must have the highest ELBO among the 4 choices
    res, samples = evaluate(tm, f"a2d_{method}", memorised, ["gsm8k_local", "gsm8k_mc_local"], 4,
                            max_new_tokens=N_ANS, steps=N_ANS, block_size=N_ANS if method == "mdlm" else 4,
                            mc_num=8, batch_size=4)
    resps = [s["resps"][0][0] for s in samples["gsm8k_local"] if s["filter"] == "strict-match"]
    assert resps == [" 18", " 3", " 70000", " 540"]
    assert res["gsm8k_local"]["exact_match,flexible-extract"] == 1.0
    assert res["gsm8k_local"]["exact_match,strict-match"] == 0.0
    assert res["gsm8k_mc_local"]["acc,none"] == 1.0


def test_mdlm_loglikelihood_seeded_ranks_memorised_and_greedy(memorised):
    lm = ev.A2DMDLM(pretrained=memorised, dtype="float32", batch_size=4, mc_num=16, is_check_greedy=True)
    ctx = f"Question: {gsm8k_docs(1)[0]['question']}\nAnswer:"
    reqs = [req("loglikelihood", ctx, " 18"), req("loglikelihood", ctx, " 74"), req("loglikelihood", ctx, " 0")]
    a = lm.loglikelihood(reqs)
    assert lm.loglikelihood(reqs) == a  # bit-identical on a rerun
    assert lm.loglikelihood(reqs[::-1]) == a[::-1]  # and independent of order
    assert [g for _, g in a] == [True, False, False]  # greedy decoding gives " 18", nothing else
    assert a[0][0] > -1.0 and a[0][0] > a[1][0] + 5 and a[0][0] > a[2][0] + 5
    lm.seed = 7
    assert lm.loglikelihood(reqs[1:2])[0][0] != a[1][0]  # the seed is what fixes the draws


# -----------------------------------------------------------------------------
# lm-eval's simple_evaluate on the tiny random checkpoint, both samplers


@pytest.mark.parametrize("method,chat", [("mdlm", False), ("bd3lm", True)])
def test_gsm8k_local_limit4(tiny_dir, tm, method, chat):
    r = lm_eval.simple_evaluate(model=f"a2d_{method}", model_args=dict(pretrained=tiny_dir, max_new_tokens=8,
                                steps=8, block_size=4, dtype="float32"), tasks=["gsm8k_local"], limit=4, num_fewshot=0,
                                batch_size=3, task_manager=tm, log_samples=True, apply_chat_template=chat,
                                bootstrap_iters=0)
    res = r["results"]["gsm8k_local"]
    samples = [s for s in r["samples"]["gsm8k_local"] if s["filter"] == "strict-match"]  # one per doc
    assert len(samples) == 4 and res["sample_len"] == 4
    assert res["exact_match,strict-match"] == 0.0 and res["exact_match,flexible-extract"] == 0.0
    model, tok, defaults = sample.load(tiny_dir, dtype="float32")
    for s, d in zip(samples, gsm8k_docs(4)):
        prompt, gen_kwargs = s["arguments"][0]
        user = f"Question: {d['question']}\nAnswer:"
        want = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                       add_generation_prompt=True) if chat else user
        assert prompt == want
        # the response is what the sampler gives for this prompt alone, cut at EOS and at `until`
        kw = {**defaults, "method": method, "max_new_tokens": 8, "steps": 8, "block_size": 4}
        out = sample.generate(model, [tok(prompt)["input_ids"]], **kw).sequences[0]
        text = tok.decode(sample.trim(out, defaults["eos_token_id"]), skip_special_tokens=True)
        for stop in gen_kwargs["until"]:
            text = text.split(stop)[0]
        assert s["resps"][0][0] == text


def test_generate_until_order_until_and_max_gen_toks(tiny_dir):
    prompts = ["The cat", "Once upon a time, in a land far away, there", "1 2 3 4", "Hello world, this is"]
    one = ev.A2DMDLM(pretrained=tiny_dir, dtype="float32", batch_size=1, max_new_tokens=6, steps=6)
    three = ev.A2DMDLM(pretrained=tiny_dir, dtype="float32", batch_size=3, max_new_tokens=6, steps=6)
    reqs = [req("generate_until", p, {"until": []}) for p in prompts]
    want = one.generate_until(reqs, disable_tqdm=True)
    assert three.generate_until(reqs, disable_tqdm=True) == want  # batched, sorted, back in request order
    stop = want[1][2:5]
    cut = three.generate_until([req("generate_until", prompts[1], {"until": ["@@", stop]})], disable_tqdm=True)
    assert cut == [want[1].split(stop)[0]] and len(cut[0]) <= 2
    # the task's max_gen_toks applies unless max_new_tokens was given in model_args
    free = ev.A2DMDLM(pretrained=tiny_dir, dtype="float32", batch_size=1)
    assert (free.gen_settings({"max_gen_toks": 5})["max_new_tokens"], free.gen_settings({})["max_new_tokens"]) == (5, 128)
    assert free.gen_settings({"max_gen_toks": 5})["steps"] == 5
    assert one.gen_settings({"max_gen_toks": 5})["max_new_tokens"] == 6


# -----------------------------------------------------------------------------
# the estimators


def block_causal_logits(model, seq, block_size, context_causal=False):
    # a plain forward where a token sees its own block and earlier ones: (L, V). context_causal: all but the
    # last block (the clean past) attend causally
    blk, i = torch.arange(len(seq)) // block_size, torch.arange(len(seq))
    mask = blk[:, None] >= blk[None, :]
    if context_causal:
        mask &= (blk[:, None] == blk[-1]) | (i[:, None] >= i[None, :])
    return model(seq[None], attention_mask=mask[None, None], causal=False)[0]


@pytest.mark.parametrize("context_causal", [False, True])
def test_bd3lm_loglikelihood_equals_hand_computation(tiny_dir, tmp_path, context_causal):
    """With the draw fixed, loglikelihood = mean over rows of -sum_{masked} CE / p_mask, where
    block b's logits come from the clean blocks before it followed by its own noisy copy. A context_causal,
    right-shifted checkpoint (config.json) is scored so: a causal clean past, token i from row i - 1."""
    bs, ckpt = 4, tiny_dir
    if context_causal:
        ckpt = tmp_path / "cc"
        shutil.copytree(tiny_dir, ckpt)
        cfg = json.loads((ckpt / "config.json").read_text())
        (ckpt / "config.json").write_text(json.dumps({**cfg, "context_causal": True, "right_shift_logits": True}))
    lm = ev.A2DBD3LM(pretrained=str(ckpt), dtype="float32", batch_size=2, mc_num=2, block_size=bs)
    assert lm.sampler["context_causal"] == lm.sampler["right_shift_logits"] == context_causal
    ctx, cont = "The quick brown", " fox jumps over the lazy dog, and then the dog wakes up and chases the fox home"
    c, x = lm.encode_pair(ctx, cont)
    P, L = len(c), len(c) + len(x)
    assert L >= 3 * bs and P % bs  # the continuation starts inside a block and spans several
    x0 = torch.tensor(c + x)
    masks = [[P, P + 2, 2 * bs, L - 1], [P + 1, 2 * bs - 1, 2 * bs + 1]]  # across block boundaries
    p_mask = torch.tensor([[0.3], [0.7]])
    xt = x0.repeat(2, 1)
    for row, m in enumerate(masks):
        xt[row, m] = lm.mask_id
    lm.draw = lambda x0_, P_, g: (xt, p_mask)
    got = lm.loglikelihood([req("loglikelihood", ctx, cont)])[0][0]
    rows = []
    with torch.no_grad():
        for row, m in enumerate(masks):
            nll = 0.0
            for b in sorted({i // bs for i in m}):
                seq = torch.cat([x0[:b * bs], xt[row, b * bs:(b + 1) * bs]])
                logp = block_causal_logits(lm.model, seq, bs, context_causal).log_softmax(-1)
                shift = int(context_causal)  # the row before: for a block's first token the clean past's last
                nll -= sum(logp[i - shift, x0[i]].item() for i in m if i // bs == b) / p_mask[row].item()
            rows.append(nll)
    assert got == pytest.approx(-sum(rows) / 2, abs=1e-4)


@pytest.mark.parametrize("right_shift", [False, True])
def test_mdlm_loglikelihood_equals_hand_computation(tiny_dir, right_shift):
    """With the draw fixed, loglikelihood = mean over rows of sum_{masked i} log p(x0_i | x_t) / p_mask,
    from one bidirectional forward over each row's x_t; with right_shift the logit at i-1 is token i's."""
    lm = ev.A2DMDLM(pretrained=tiny_dir, dtype="float32", batch_size=2, mc_num=2)
    lm.sampler["right_shift_logits"] = right_shift
    ctx, cont = "The quick brown", " fox jumps over the lazy dog"
    c, x = lm.encode_pair(ctx, cont)
    P, L = len(c), len(c) + len(x)
    x0 = torch.tensor(c + x)
    masks = [[P, P + 2, L - 1], list(range(P + 1, L))]  # the first continuation token, the last, all but one
    p_mask = torch.tensor([[3 / (L - P)], [(L - P - 1) / (L - P)]])
    xt = x0.repeat(2, 1)
    for row, m in enumerate(masks):
        xt[row, m] = lm.mask_id
    lm.draw = lambda x0_, P_, g: (xt, p_mask)
    got = lm.loglikelihood([req("loglikelihood", ctx, cont)])[0][0]
    want = 0.0
    with torch.no_grad():
        for row, m in enumerate(masks):
            logp = lm.model(xt[row][None], causal=False)[0].log_softmax(-1)
            want += sum(logp[i - 1 if right_shift else i, x0[i]].item() for i in m) / p_mask[row].item()
    assert got == pytest.approx(want / 2, abs=1e-4)


def test_draws_mask_only_the_continuation(tiny_dir):
    g = torch.Generator().manual_seed(0)
    x0 = torch.arange(100, 111)[None].expand(4, -1)  # P = 3 context + T = 8 continuation
    mdlm = ev.A2DMDLM(pretrained=tiny_dir, dtype="float32", batch_size=4)
    for _ in range(5):
        xt, p = mdlm.draw(x0, 3, g)
        masked = xt == mdlm.mask_id
        assert not masked[:, :3].any()
        counts = masked.sum(1)
        # LLaDA's stratification: 4 counts spaced T/B = 2 apart (mod T), so one of two sets
        assert sorted(counts.tolist()) in ([1, 3, 5, 7], [2, 4, 6, 8])
        assert torch.equal(p[:, 0], counts / 8)
    bd3 = ev.A2DBD3LM(pretrained=tiny_dir, dtype="float32", batch_size=4)
    xt, t = bd3.draw(x0, 3, g)
    assert not (xt[:, :3] == bd3.mask_id).any()
    gaps = t[:, 0].sort().values.diff()  # antithetic: evenly spread over [eps, 1)
    assert torch.allclose(gaps, torch.full_like(gaps, (1 - 1e-3) / 4), atol=1e-6)


def test_rolling_is_the_sum_over_disjoint_windows(tiny_dir):
    lm = ev.A2DMDLM(pretrained=tiny_dir, dtype="float32", batch_size=2, mc_num=2, max_length=16)
    text = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
            "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.")
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 52  # 4 windows, the last one short
    prefix = lm.tokenizer.bos_token_id
    want = lm.elbo([prefix], ids[:15])  # each window: 15 new tokens given the one before,
    for s in range(15, len(ids), 15):  # the last, shorter one given as many as fit
        n = len(ids[s:s + 15])
        want += lm.elbo(ids[s - 16 + n:s], ids[s:s + 15])
    assert lm.loglikelihood_rolling([req("loglikelihood_rolling", text)], disable_tqdm=True) == [pytest.approx(want)]


def test_long_context_cut_from_the_left_and_empty_context(tiny_dir, caplog):
    lm = ev.A2DMDLM(pretrained=tiny_dir, dtype="float32", batch_size=2, mc_num=4, max_length=16)
    ctx = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
    c, x = lm.encode_pair(ctx, " end")
    assert len(c) + len(x) > 16
    got = lm.loglikelihood([req("loglikelihood", ctx, " end")], disable_tqdm=True)[0][0]
    assert got == lm.elbo(c[-(16 - len(x)):], x)
    assert "truncated from the left" in caplog.text
    # an empty context: the continuation scored on its own, no BOS needed
    assert lm.encode_pair("", " end") == ([], lm.tokenizer(" end")["input_ids"])
    (ll, _), = lm.loglikelihood([req("loglikelihood", "", " end")], disable_tqdm=True)
    assert ll < 0 and ll == lm.elbo([], x)


def test_bad_model_args_are_clear_errors(tiny_dir):
    lm = ev.A2DMDLM(pretrained=tiny_dir, dtype="float32", batch_size=2, mc_num=3)
    with pytest.raises(ValueError, match="mc_num=3 must be a positive multiple of batch_size=2"):
        lm.loglikelihood([req("loglikelihood", "a", " b")])
    with pytest.raises(ValueError, match="unknown model_args \\['stepz'\\]; valid: .*steps"):
        ev.A2DMDLM(pretrained=tiny_dir, stepz=4)
    with pytest.raises(ValueError, match="fixed by the model name"):
        ev.A2DBD3LM(pretrained=tiny_dir, method="mdlm")
    # model_args arrive as strings or lm-eval's guesses; they end up as the sampler's types
    lm = ev.A2DBD3LM(pretrained=tiny_dir, dtype="float32", temperature=0, threshold="0.9", suppress_tokens="[5;7]",
                     stop_at_eos="false", max_length="64")
    assert (lm.sampler["temperature"], lm.sampler["threshold"], lm.sampler["suppress_tokens"]) == (0.0, 0.9, [5, 7])
    assert lm.sampler["stop_at_eos"] is False and lm.max_length == 64


# -----------------------------------------------------------------------------
# the CLI: mistakes, help, one process, and two under torchrun (gloo on CPU)


def test_cli_mistakes_are_one_line_each(tiny_dir, tmp_path):
    # a stand-in lm_eval that dies on import: what the CLI can check without lm-eval must never get that far
    fake = tmp_path / "fake" / "lm_eval"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise SystemExit('lm_eval was imported')\n")
    gsm = ["--tasks", "gsm8k_local"]
    cases = [  # (args, message, checked before lm-eval)
        (["--model", "a2d_mdlm", "--model_args", f"pretrained={tiny_dir},stepz=4", *gsm],
         "unknown model_args ['stepz']", True),
        (["--model", "a2d_bd3lm", "--model_args=pretrained=out/no/such_dir", *gsm],
         "model directory 'out/no/such_dir' does not exist", True),
        (["--model", "a2d_bd3lm", "--model_args", f"pretrained={tiny_dir},steps=abc", *gsm],
         "model_args steps='abc': expected an int", True),
        (["--model=a2d_bdlm", "--model_args", f"pretrained={tiny_dir}", *gsm],
         "unknown --model a2d_bdlm; ours are a2d_mdlm and a2d_bd3lm", True),
        (["--model", "a2d_bd3lm", "--model_args", "pretrained=out/sft_typo", *gsm],
         "no local directory 'out/sft_typo', and fetching it from the Hugging Face Hub failed", False),
        (["--model", "a2d_bd3lm", "--model_args", f"pretrained={tiny_dir}", "--tasks", "nosuchtask"],
         "Tasks not found: nosuchtask. `python eval.py ls tasks` lists lm-eval's tasks; offline ones: gsm8k_cot_local, "
         "gsm8k_local", False),
        (["--model", "a2d_bd3lm", "--model_args", f"pretrained={tiny_dir},max_new_tokens=4,steps=4", "--tasks",
          "gsm8k_cot", "--limit", "1"],
         "Offline, use a task from tasks/ (local files, see data/prepare.py): gsm8k_cot_local, gsm8k_local", False),
    ]
    offline = {**ENV, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "eval.py", *args], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env={**offline, "PYTHONPATH": str(fake.parent)} if early
                              else offline) for args, _, early in cases]
    for p, (args, message, _) in zip(procs, cases):
        _, err = p.communicate(timeout=600)
        last = err.strip().splitlines()[-1]
        assert p.returncode == 1 and last.startswith("error: ") and message in last and "Traceback" not in err, \
            (args, err[-2000:])


def test_help_lists_our_models_and_their_args_first():
    r = subprocess.run([sys.executable, "eval.py", "--help"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0
    ours, _, theirs = r.stdout.partition("usage: lm-eval")
    assert theirs and "a2d_mdlm" in ours and "a2d_bd3lm" in ours
    assert all(f"{k}=" in ours for k in [*ev.EVAL_ARGS, *ev.SAMPLER_ARGS])


def run_cli(launcher, out, tiny_dir):
    cmd = launcher + ["eval.py", "--model", "a2d_mdlm", "--tasks", "gsm8k_local,gsm8k_mc_local", "--limit", "5",
                      "--num_fewshot", "0", "--batch_size", "2", "--log_samples", "--output_path", str(out),
                      "--model_args",
                      f"pretrained={tiny_dir},max_new_tokens=4,steps=4,block_size=4,mc_num=2,dtype=float32"]
    p = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.load(open(glob.glob(f"{out}/**/results_*.json", recursive=True)[0]))["results"]
    samples = {}
    for task in ("gsm8k_local", "gsm8k_mc_local"):
        fn, = glob.glob(f"{out}/**/samples_{task}_*.jsonl", recursive=True)
        rows = [json.loads(line) for line in open(fn)]
        # resps[0]: lm-eval pads a short rank with copies of its last request, whose extra answers it ignores
        samples[task] = sorted((r["doc_id"], [x[0] for x in r["resps"]]) for r in rows
                               if r["filter"] in ("strict-match", "none"))
    return res, samples


def test_torchrun_two_processes_equal_one(tiny_dir, tmp_path):
    res1, s1 = run_cli([sys.executable], tmp_path / "one", tiny_dir)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    res2, s2 = run_cli([torchrun, "--standalone", "--nproc_per_node=2"], tmp_path / "two", tiny_dir)
    for task in ("gsm8k_local", "gsm8k_mc_local"):
        assert [d for d, _ in s2[task]] == [0, 1, 2, 3, 4]  # every doc, from both ranks, once
        assert s2[task] == s1[task]  # seeded per request: the same numbers whichever rank ran them
    assert res2["gsm8k_local"]["sample_len"] == res1["gsm8k_local"]["sample_len"] == 5
    assert res2["gsm8k_mc_local"]["acc,none"] == res1["gsm8k_mc_local"]["acc,none"]
    assert res2["gsm8k_mc_local"]["acc_norm,none"] == res1["gsm8k_mc_local"]["acc_norm,none"]
    assert res2["gsm8k_local"]["exact_match,flexible-extract"] == res1["gsm8k_local"]["exact_match,flexible-extract"]


# -----------------------------------------------------------------------------
# the offline tasks


def load_task_utils():
    spec = importlib.util.spec_from_file_location("nanoa2d_task_utils", os.path.join(ev.TASKS_DIR, "utils.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_task_data_paths_resolve_against_the_repo(monkeypatch, tmp_path):
    u = load_task_utils()
    monkeypatch.chdir(tmp_path)  # the current directory must not matter
    monkeypatch.delenv("NANOA2D_DATA", raising=False)
    assert u.data_dir() == os.path.normpath(DATA)
    monkeypatch.setenv("NANOA2D_DATA", "../shared/data/")
    assert u.data_dir() == os.path.normpath(DATA)
    os.makedirs(tmp_path / "gsm8k")
    assert u.data_dir(data_dir=str(tmp_path)) == str(tmp_path)  # --metadata wins over the environment
    with pytest.raises(FileNotFoundError, match="python data/prepare.py"):  # the command that fetches it
        u.data_dir(data_dir="no/such/dir")


def test_local_tasks_content(tm):
    tasks = tm.load(["gsm8k_cot_local", "gsm8k_mc_local", "tinyshakespeare_local"])["tasks"]
    cot = tasks["gsm8k_cot_local"]
    docs = list(cot.test_docs())
    assert len(docs) == 1319 and cot.doc_to_target(docs[0]) == "18"
    assert len(cot.fewshot_docs()) == 8  # lm-eval's own exemplars
    mc = list(tasks["gsm8k_mc_local"].test_docs())
    assert all(len(set(d["choices"])) == 4 and d["label"] == i % 4 for i, d in enumerate(mc))
    assert [d["choices"][d["label"]] for d in mc[:4]] == ["18", "3", "70000", "540"]
    shake = list(tasks["tinyshakespeare_local"].test_docs())
    with open(os.path.join(DATA, "tinyshakespeare", "input.txt")) as f:
        text = f.read()
    val = text[int(0.9 * len(text)):]
    assert "".join("".join(d["text"].split()) for d in shake) == "".join(val.split())  # all of val, in order


def test_hellaswag_gen_docs():
    import datasets
    doc = {"activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow.",
           "ctx_b": "then", "endings": [", the man [header] drives.", " b", " c", " d"], "label": "2"}
    d = load_task_utils().hellaswag_gen_docs(datasets.Dataset.from_list([doc]))[0]
    assert d["ctx"] == "Removing ice from car: Then, the man writes over the snow. Then"
    assert (d["A"], d["D"], d["label"]) == (", the man drives.", "d", 2)
