"""
Offline lm-eval tasks: datasets read from local files instead of the Hub.

Where the files live, first match wins:
  --metadata data_dir=PATH       (lm-eval passes --metadata and --model_args here)
  NANOA2D_DATA=PATH              (environment)
  ../shared/data                 (next to the repo)
  data/                          (python data/prepare.py fetches the files there, once, online)
A relative PATH is taken relative to the repo root, never the current directory,
so `cd elsewhere && python /path/to/eval.py ...` reads the same files.

Layout under the data dir: gsm8k/{train,test}.jsonl (question, answer ending in
"#### N") and tinyshakespeare/input.txt.
"""

import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data_dir(**metadata):
    given = metadata.get("data_dir") or os.environ.get("NANOA2D_DATA")
    for d in [given] if given else [os.path.join("..", "shared", "data"), "data"]:
        d = os.path.normpath(os.path.join(REPO, os.path.expanduser(str(d))))
        if os.path.isdir(os.path.join(d, "gsm8k")) or os.path.isdir(os.path.join(d, "tinyshakespeare")):
            return d
    raise FileNotFoundError(f"no data dir {'at ' + given if given else 'in ../shared/data or data/'}: fetch the files "
                            f"once with python data/prepare.py (online), or point NANOA2D_DATA (or --metadata "
                            f"data_dir=...) at a folder holding gsm8k/{{train,test}}.jsonl and tinyshakespeare/input.txt")


def _read_jsonl(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing (see tasks/utils.py for where the data is looked up)")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def gsm8k(**metadata):
    import datasets
    d = os.path.join(data_dir(**metadata), "gsm8k")
    return datasets.DatasetDict({split: datasets.Dataset.from_list(_read_jsonl(os.path.join(d, f"{split}.jsonl")))
                                 for split in ("train", "test")})


def gsm8k_cot_exemplars():
    """The 8 chain-of-thought exemplars of lm-eval's own gsm8k_cot task, read from the installed package."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml
    path = os.path.join(os.path.dirname(lm_eval.tasks.__file__), "gsm8k", "gsm8k-cot.yaml")
    return load_yaml(path, resolve_func=False)["fewshot_config"]["samples"]


def gsm8k_number(answer):
    return answer.split("####")[-1].strip().replace(",", "")


def gsm8k_mc(**metadata):
    """GSM8K as 4-way multiple choice: the gold final number among the final numbers of the next
    test problems (distinct from it and each other). The gold's slot is doc index mod 4:
    deterministic, balanced over A-D, no RNG."""
    import datasets
    test = _read_jsonl(os.path.join(data_dir(**metadata), "gsm8k", "test.jsonl"))
    nums = [gsm8k_number(d["answer"]) for d in test]
    docs = []
    for i, d in enumerate(test):
        distractors, j = [], i
        while len(distractors) < 3:
            j = (j + 1) % len(nums)
            if nums[j] != nums[i] and nums[j] not in distractors:
                distractors.append(nums[j])
        label = i % 4
        choices = distractors[:label] + [nums[i]] + distractors[label:]
        docs.append({"question": d["question"], "choices": choices, "label": label})
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def tinyshakespeare(**metadata):
    """Docs are the speeches (blank-line separated) of the last 10% of the text: nanoGPT's val split."""
    import datasets
    path = os.path.join(data_dir(**metadata), "tinyshakespeare", "input.txt")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing (see tasks/utils.py for where the data is looked up)")
    with open(path) as f:
        text = f.read()
    n = len(text)
    splits = {"train": text[:int(0.9 * n)], "test": text[int(0.9 * n):]}
    return datasets.DatasetDict({k: datasets.Dataset.from_list([{"text": s.strip()} for s in v.split("\n\n") if s.strip()])
                                 for k, v in splits.items()})


# -----------------------------------------------------------------------------
# Hub tasks of the reference's suite that stock lm-eval lacks (its lm-eval fork has them)


def _hellaswag_clean(text):
    import re
    # WikiHow items carry "[title]"-style markup; drop it and the double spaces it leaves
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def hellaswag_gen_docs(dataset):
    """HellaSwag as a lettered question: ctx plus endings A-D, gold letter from `label`."""
    def one(doc):
        ctx = _hellaswag_clean(f"{doc['activity_label']}: {doc['ctx_a']} {doc['ctx_b'].capitalize()}")
        endings = [_hellaswag_clean(e) for e in doc["endings"]]
        return {"ctx": ctx, **dict(zip("ABCD", endings)), "label": int(doc["label"])}
    return dataset.map(one)
