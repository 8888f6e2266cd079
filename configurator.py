"""
nanoGPT's "poor man's configurator", flaws fixed. A script keeps its options as plain globals and calls
`configure(globals())`: python config files (bare arguments: `train.py config/x.py`), then `--key=value` / `--key value`
flags override them, each parsed to its default's type. An unknown key is an error naming the closest one; `--help`
prints the script's docstring and each option's default, comment and `_CHOICES`. Imports nothing of ours.
"""

import ast
import difflib
import os
import sys
import types

TRUE_WORDS = {"true", "1", "yes", "y", "on"}  # what a bool option reads as True / False
FALSE_WORDS = {"false", "0", "no", "n", "off"}


def _unknown(key, known, where):
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" Did you mean --{close[0]}?" if close else ""
    return SystemExit(f"error: unknown option {key!r} {where}.{hint} Run with --help to list the options.")


def _comments(path):
    """{key: the comment after `key = value`} at the script's top level and in its class bodies (sample.Settings)."""
    try:
        src = open(path).read()
    except (OSError, TypeError):  # TypeError: no __file__ (an interactive session)
        return {}
    tree, lines, out = ast.parse(src), src.splitlines(), {}
    for node in tree.body + [n for c in tree.body if isinstance(c, ast.ClassDef) for n in c.body]:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(target, ast.Name):
            rest = lines[node.end_lineno - 1][node.end_col_offset:].strip()
            if rest.startswith("#"):
                out.setdefault(target.id, rest[1:].strip())
    return out


def parse_value(key, raw, default):
    """`raw` parsed as `default`'s type (bools: TRUE_WORDS / FALSE_WORDS; lists, tuples, dicts: python literals; a None
    default: any literal, else the string). A bad value: ValueError (the command line's error, chat /set's reply)."""
    def fail(expected):
        return ValueError(f"--{key}={raw!r}: expected {expected} (default is {default!r})")
    if isinstance(default, bool):
        if raw.strip().lower() not in TRUE_WORDS | FALSE_WORDS:
            raise fail("a bool (true/false)")
        return raw.strip().lower() in TRUE_WORDS
    if isinstance(default, (int, float)):
        for parse in (type(default), float):  # 1e3 or 1000.0 for an int key is fine when it is integral
            try:
                value = parse(raw)
            except ValueError:
                continue
            if type(value) is type(default) or value.is_integer():
                return type(default)(value)
        raise fail("an int" if isinstance(default, int) else "a float")
    if isinstance(default, str):
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        if default is None:
            return raw  # a None default takes a plain string
        raise fail(f"a python literal of type {type(default).__name__}") from None
    if default is None or isinstance(value, type(default)):
        return value
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    raise fail(f"a {type(default).__name__}")


def _config_file(path, keys):
    """Run a python config file; return the options it assigned (anything else it assigned is an error)."""
    try:
        src = open(path).read()
    except OSError as e:
        raise SystemExit(f"error: cannot read config file {path!r}: {e.strerror}. Options are given as --key=value.")
    scope = {}
    exec(compile(src, path, "exec"), scope)
    assigned = {k: v for k, v in scope.items()
                if not k.startswith("_") and not callable(v) and not isinstance(v, types.ModuleType)}
    if unknown := [k for k in assigned if k not in keys]:
        raise _unknown(unknown[0], keys, f"in config file {path}")
    return assigned


def configure(g, argv=None):
    """Override the options in globals `g` (its plain values; ALL_CAPS names are constants); return the overrides."""
    argv = sys.argv[1:] if argv is None else argv
    keys = {k: v for k, v in g.items() if not k.startswith("_") and not k.isupper()
            and isinstance(v, (int, float, str, bool, list, tuple, dict, type(None)))}
    if "-h" in argv or "--help" in argv:
        print((g.get("__doc__") or "").strip())
        print("\noptions (--key=value or --key value; python config files as bare arguments):")
        # the option comments of the script (first) and of neighbours it took options from (chat.py: sample.Settings)
        here = g.get("__file__") or ""
        files = {getattr(sys.modules.get(getattr(v, "__module__", None)), "__file__", None) for v in g.values()}
        neighbours = sorted(f for f in files - {here} if f and os.path.dirname(f) == os.path.dirname(here))
        notes = {k: v for f in reversed([here, *neighbours]) for k, v in _comments(f).items()}
        choices = g.get("_CHOICES", {})
        for k, v in keys.items():
            note, listed = notes.get(k, ""), " | ".join(map(str, choices.get(k, ())))
            if listed and not all(str(c) in note for c in choices[k]):  # unless the comment lists them
                note = f"{note} ({listed})" if note else listed
            print(f"  --{k}={v!r}" + (f"  # {note}" if note else ""))
        sys.exit(0)
    overrides, i = {}, 0
    while i < len(argv):
        arg, i = argv[i], i + 1
        if not arg.startswith("--"):
            overrides.update(_config_file(arg, keys))
            continue
        key, eq, raw = arg[2:].partition("=")
        key = key.replace("-", "_")  # before the bool lookup: --init-from-scratch is a bare bool too
        if not eq:  # --key value, or a bare --flag for a bool
            nxt = argv[i] if i < len(argv) else None
            if isinstance(keys.get(key), bool) and (nxt is None or nxt.lower() not in TRUE_WORDS | FALSE_WORDS):
                raw = "true"
            elif nxt is None:
                raise SystemExit(f"error: --{key} needs a value (--{key}=VALUE)")
            else:
                raw, i = nxt, i + 1
        if key not in keys:
            raise _unknown(key, keys, "on the command line")
        try:
            overrides[key] = parse_value(key, raw, keys[key])
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    g.update(overrides)
    return overrides
