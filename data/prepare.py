"""
The local data that configs, tests and the offline eval tasks read: tiny-shakespeare and GSM8K.

    python data/prepare.py     # once, online: fetch both from the Hugging Face Hub into data/

They are looked for, first match wins, in $NANOA2D_DATA, in ../shared/data beside the repo, then in
data/. Layout: tinyshakespeare/input.txt (the whole text) and gsm8k/{train,test}.jsonl (question,
answer ending in "#### N"), as nanoGPT's data/*/prepare.py leaves its files beside the script.
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def data_dirs():
    return [d for d in (os.environ.get("NANOA2D_DATA"), os.path.join(os.path.dirname(ROOT), "shared", "data"), HERE)
            if d]


def find(rel):
    """The path of data file rel (e.g. "tinyshakespeare/input.txt") in the first data dir that has it."""
    for d in data_dirs():
        if os.path.exists(os.path.join(d, rel)):
            return os.path.join(d, rel)
    raise SystemExit(f"error: no {rel} in $NANOA2D_DATA, ../shared/data or data/: fetch it once with "
                     f"python data/prepare.py (online), or point NANOA2D_DATA at a folder that holds it")


def main():
    import datasets
    os.makedirs(os.path.join(HERE, "tinyshakespeare"), exist_ok=True)
    ds = datasets.load_dataset("Trelis/tiny-shakespeare")
    text = "\n".join(row["Text"] for split in ("train", "test") for row in ds[split])
    with open(os.path.join(HERE, "tinyshakespeare", "input.txt"), "w") as f:
        f.write(text)
    os.makedirs(os.path.join(HERE, "gsm8k"), exist_ok=True)
    for split, rows in datasets.load_dataset("openai/gsm8k", "main").items():
        with open(os.path.join(HERE, "gsm8k", f"{split}.jsonl"), "w") as f:
            f.writelines(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n" for r in rows)
    print(f"wrote {HERE}/tinyshakespeare/input.txt ({len(text):,} characters) and {HERE}/gsm8k/{{train,test}}.jsonl")


if __name__ == "__main__":
    main()
