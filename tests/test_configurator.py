"""configurator.py: flag and config-file parsing, typed values, helpful errors, --help."""

import os
import subprocess
import sys
import textwrap

import pytest

from configurator import configure, parse_value


def defaults():
    return dict(__doc__="Train a thing.\n\nLonger story.", batch_size=8, learning_rate=3e-4, compile=True,
                out_dir="out", init_from=None, betas=(0.9, 0.95), schedule=[1, 2], _private=1,
                helper=lambda: None, DTYPES=("a", "b"))


def test_key_equals_value_and_key_space_value():
    g = defaults()
    got = configure(g, ["--batch_size=16", "--out_dir", "runs/a", "--learning_rate", "1e-3"])
    assert got == {"batch_size": 16, "out_dir": "runs/a", "learning_rate": 1e-3}
    assert g["batch_size"] == 16 and g["out_dir"] == "runs/a" and g["learning_rate"] == 1e-3
    assert g["compile"] is True and g["init_from"] is None  # untouched


def test_value_containing_equals_splits_once():
    g = defaults()
    configure(g, ["--out_dir=a=b=c", "--init_from=--x=1"])
    assert g["out_dir"] == "a=b=c" and g["init_from"] == "--x=1"


def test_numbers():
    g = defaults()
    configure(g, ["--learning_rate=1", "--batch_size=1e2"])
    assert g["learning_rate"] == 1.0 and isinstance(g["learning_rate"], float)
    assert g["batch_size"] == 100 and isinstance(g["batch_size"], int)
    with pytest.raises(SystemExit, match=r"--batch_size='2.5': expected an int \(default is 8\)"):
        configure(defaults(), ["--batch_size=2.5"])
    with pytest.raises(SystemExit, match=r"--learning_rate='fast': expected a float"):
        configure(defaults(), ["--learning_rate", "fast"])


@pytest.mark.parametrize("raw,want", [("true", True), ("True", True), ("1", True), ("false", False),
                                      ("FALSE", False), ("0", False)])
def test_bools(raw, want):
    g = defaults()
    configure(g, [f"--compile={raw}"])
    assert g["compile"] is want
    g = defaults()
    configure(g, ["--compile", raw, "--batch_size=2"])
    assert g["compile"] is want and g["batch_size"] == 2


def test_bare_bool_flag_and_bad_bool():
    g = defaults()
    configure(g, ["--compile", "--batch_size=2"])  # a bare bool flag means true
    assert g["compile"] is True and g["batch_size"] == 2
    g["compile"] = False
    configure(g, ["--compile"])
    assert g["compile"] is True
    with pytest.raises(SystemExit, match=r"--compile='maybe': expected a bool \(true/false\)"):
        configure(defaults(), ["--compile=maybe"])
    g = dict(defaults(), init_from_scratch=False)
    configure(g, ["--init-from-scratch", "--batch-size=2"])  # hyphens, bare bool included
    assert g["init_from_scratch"] is True and g["batch_size"] == 2


def test_none_default_and_literals():
    g = defaults()
    configure(g, ["--init_from=ckpt/best", "--betas=(0.8, 0.99)", "--schedule=[3]"])
    assert g["init_from"] == "ckpt/best" and g["betas"] == (0.8, 0.99) and g["schedule"] == [3]
    g = defaults()
    configure(g, ["--init_from=3"])
    assert g["init_from"] == 3  # a None default takes any literal
    configure(g, ["--betas=[0.5, 0.6]"])
    assert g["betas"] == (0.5, 0.6) and isinstance(g["betas"], tuple)
    with pytest.raises(SystemExit, match=r"--schedule='7': expected a list"):
        configure(defaults(), ["--schedule=7"])


def test_unknown_key_suggests_closest():
    with pytest.raises(SystemExit, match=r"unknown option 'batchsize'.*Did you mean --batch_size\?"):
        configure(defaults(), ["--batchsize=4"])
    with pytest.raises(SystemExit, match=r"unknown option 'lerning_rate'.*--learning_rate"):
        configure(defaults(), ["--lerning_rate", "4"])
    for private in ("--_private=2", "--helper=2", "--DTYPES=x"):  # not options
        with pytest.raises(SystemExit, match="unknown option"):
            configure(defaults(), [private])
    with pytest.raises(SystemExit, match="--batch_size needs a value"):
        configure(defaults(), ["--batch_size"])


def test_config_file_then_flags(tmp_path):
    cfg = tmp_path / "cfg.py"
    cfg.write_text("import math\nbatch_size = 32\nlearning_rate = math.sqrt(4) * 1e-4\n_tmp = 5\n")
    g = defaults()
    configure(g, [str(cfg), "--batch_size=64"])  # flags after the file win
    assert g["batch_size"] == 64 and g["learning_rate"] == pytest.approx(2e-4) and "_tmp" not in g
    bad = tmp_path / "bad.py"
    bad.write_text("batch_size = 32\nout_dri = 'x'\n")
    g = defaults()
    with pytest.raises(SystemExit, match=r"unknown option 'out_dri' in config file .*bad.py.*--out_dir"):
        configure(g, [str(bad)])
    assert g["batch_size"] == 8  # nothing applied from a rejected file
    with pytest.raises(SystemExit, match="cannot read config file"):
        configure(defaults(), [str(tmp_path / "missing.py")])


def test_parse_value_directly():
    assert parse_value("k", "7", 1.5) == 7.0
    assert parse_value("k", "none", None) == "none" and parse_value("k", "None", None) is None
    assert parse_value("k", "{'a': 1}", {}) == {"a": 1}
    # a bad value is a ValueError for callers (chat's /set, eval's model_args); configure exits with it
    with pytest.raises(ValueError, match=r"--k='x': expected an int \(default is 1\)"):
        parse_value("k", "x", 1)


def test_help_prints_doc_and_every_default(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent('''\
        """Prog: does a thing.

        Usage: python prog.py --steps=3
        """
        steps = 10
        lr = 0.5  # the learning rate
        name = "run#1"  # a '#' in a value is not a comment
        mode = "fast"  # how to go
        resume = False
        init = None
        CHOICES = ("a", "b")  # a constant, not an option
        _CHOICES = dict(mode=("fast", "slow"), resume=(True, False))
        import sys
        sys.path.insert(0, sys.argv.pop(1))
        from configurator import configure
        configure(globals())
        print("ran", steps)
        '''))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, str(script), root, "--steps=3", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "ran" not in r.stdout
    assert r.stdout.startswith("Prog: does a thing.\n\nUsage: python prog.py --steps=3")
    # each key with its default, its comment, and its choices where the comment lacks them
    for line in ("--steps=10\n", "--lr=0.5  # the learning rate\n",
                 "--name='run#1'  # a '#' in a value is not a comment\n",
                 "--mode='fast'  # how to go (fast | slow)\n", "--resume=False  # True | False\n", "--init=None\n"):
        assert line in r.stdout
    assert "CHOICES" not in r.stdout and "--sys" not in r.stdout
    r = subprocess.run([sys.executable, str(script), root, "--steps", "3"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout == "ran 3\n"
    r = subprocess.run([sys.executable, str(script), root, "--step=3"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Did you mean --steps?" in r.stderr
