"""
nanoGPT's "poor man's configurator", with its known flaws fixed.

Each script keeps its defaults as plain globals at the top, then calls

    from configurator import configure
    configure(globals())

which overrides them from, in order:
  - python config files given as bare arguments (`train.py config/x.py`),
  - `--key=value` or `--key value` flags.

Values are parsed with the type of the default: int where a float is expected is
fine, `true/false/1/0/yes/no` for bools, python literals (lists, dicts, None) for
the rest, and strings as they are. Keys whose default is None take any literal,
else the string. Unknown keys are an error that suggests the closest known key;
config files may only set known keys. `--help` prints the script's docstring and
every key with its default, its comment in the script and its choices (a `_CHOICES` dict).

This file imports nothing of ours.
"""

import ast
import difflib
import sys

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def _keys(g):
    # the configurable globals: plain values defined at the top of the script (ALL_CAPS names are
    # constants, often imported, not options)
    return {k: v for k, v in g.items() if not k.startswith("_") and not k.isupper()
            and isinstance(v, (int, float, str, bool, list, tuple, dict, type(None)))}


def _unknown(key, known, where):
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" Did you mean --{close[0]}?" if close else ""
    return SystemExit(f"error: unknown option {key!r} {where}.{hint} Run with --help to list the options.")


def _comments(path):
    """{key: the comment after `key = value`} at the top level of the script, in its top-level
    if-blocks (where sample.py and chat.py keep their options) and classes: what --help shows."""
    try:
        with open(path) as f:
            src = f.read()
    except (OSError, TypeError):
        return {}
    tree, lines, out = ast.parse(src), src.splitlines(), {}
    # class bodies too: sample.py's Settings fields are options of sample.py and chat.py
    for node in tree.body + [n for s in tree.body if isinstance(s, (ast.If, ast.ClassDef)) for n in s.body]:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(target, ast.Name):
            rest = lines[node.end_lineno - 1][node.end_col_offset:].strip()
            if rest.startswith("#"):
                out.setdefault(target.id, rest[1:].strip())
    return out


def parse_value(key, raw, default):
    """Parse the string `raw` into the type of `default`. A bad value raises ValueError naming key,
    value and type: the command line turns it into a one-line error, chat's /set into a message."""
    def fail(expected):
        return ValueError(f"--{key}={raw!r}: expected {expected} (default is {default!r})")

    if isinstance(default, bool):
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise fail("a bool (true/false)")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            try:  # 1e3 or 1000.0 for an int key is fine when it is integral
                f = float(raw)
                if f.is_integer():
                    return int(f)
            except ValueError:
                pass
            raise fail("an int") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise fail("a float") from None
    if isinstance(default, str):
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        if default is None:
            return raw  # a None default takes a plain string
        raise fail(f"a python literal of type {type(default).__name__}") from None
    if default is not None and not isinstance(value, type(default)):
        if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
            return type(default)(value)
        raise fail(f"a {type(default).__name__}")
    return value


def configure(g, argv=None):
    """Override the globals dict `g` in place from config files and flags; return the overrides."""
    argv = sys.argv[1:] if argv is None else argv
    keys = _keys(g)
    if any(a in ("-h", "--help") for a in argv):
        print((g.get("__doc__") or "").strip())
        print("\noptions (--key=value or --key value; python config files as bare arguments):")
        notes, choices = _comments(g.get("__file__")), g.get("_CHOICES", {})
        for k, v in keys.items():
            note = notes.get(k, "")
            listed = " | ".join(map(str, choices.get(k, ())))
            if listed and not all(str(c) in note for c in choices[k]):
                note = f"{note} ({listed})" if note else listed
            print(f"  --{k}={v!r}" + (f"  # {note}" if note else ""))
        sys.exit(0)
    overrides = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            # a python config file: run it, then keep only what it assigned
            try:
                src = open(arg).read()
            except OSError as e:
                raise SystemExit(f"error: cannot read config file {arg!r}: {e.strerror}. "
                                 f"Options are given as --key=value.")
            scope = {}
            exec(compile(src, arg, "exec"), scope)
            for k, v in scope.items():
                if k.startswith("_") or k in ("__builtins__",) or callable(v) or type(v).__name__ == "module":
                    continue
                if k not in keys:
                    raise _unknown(k, keys, f"in config file {arg}")
                overrides[k] = v
            i += 1
            continue
        key, eq, raw = arg[2:].partition("=")
        key = key.replace("-", "_")  # before the bool lookup: --init-from-scratch is a bare bool too
        if not eq:  # --key value (or a bare --flag for a bool)
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if isinstance(keys.get(key), bool) and (nxt is None or nxt.startswith("--")
                                                    or nxt.lower() not in _TRUE | _FALSE):
                raw = "true"
            elif nxt is None:
                raise SystemExit(f"error: --{key} needs a value (--{key}=VALUE)")
            else:
                raw = nxt
                i += 1
        if key not in keys:
            raise _unknown(key, keys, "on the command line")
        try:
            overrides[key] = parse_value(key, raw, keys[key])
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        i += 1
    g.update(overrides)
    return overrides
