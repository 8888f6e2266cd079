"""
Chat with an A2D diffusion LM and watch the answer denoise.

    python chat.py --model_name_or_path=DIR                         # multi-turn, with the chat template
    python chat.py --model_name_or_path=DIR --chat_template=False   # raw continuation; Enter alone: from scratch

On a terminal the answer is drawn live, its masks filling in step by step; a pipe gets only the answers (for scripts).

commands:
  /reset            forget the conversation
  /set key=value    change a sampler setting, e.g. /set steps=64 (/set alone lists them)
  /help             this text
  /exit             quit (so do EOF and Ctrl-C at the prompt; Ctrl-C during an answer stops it)
"""

import importlib.util
import itertools
import shutil
import sys
from dataclasses import asdict, replace

from configurator import configure, parse_value
from sample import SETTINGS, cli_load, encode, generate, trim

# -----------------------------------------------------------------------------
# command-line options (--key=value); every sample.Settings field is one too, and /set changes it
model_name_or_path = ""
chat_template = True  # False: raw continuation, no history
visualize = "auto"  # auto (on when stdout is a terminal) | true | false
seed = 42
dtype = ""  # bfloat16 | float16 | float32; default bfloat16 on CUDA and on CPUs with native bf16, else float32
device = ""
globals().update(SETTINGS, stop_at_eos=True)  # method, block_size, the token ids, right shift: the checkpoint's
# -----------------------------------------------------------------------------


def render(tok, ids, mask_token_id, eos_token_id, placeholder="░"):
    """One canvas row -> text: masks as placeholders, cut at the first EOS; runs decoded together (whole characters)."""
    eos = eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]
    return "".join(placeholder * len(list(run)) if masked else tok.decode(list(run), skip_special_tokens=True)
                   for masked, run in itertools.groupby(trim(ids, eos), key=lambda t: t == mask_token_id))


def render_frames(tok, history, mask_token_id, eos_token_id, row=0, placeholder="░"):
    """GenerateOutput.history -> one text frame per denoising step (the first: all masks)."""
    return [render(tok, h[row].tolist(), mask_token_id, eos_token_id, placeholder) for h in history]


def live_view(stream):
    """-> show(text): redraw text over the previous frame (ANSI: cursor up, clear below)."""
    drawn = 0  # lines of the frame on screen

    def show(text):
        nonlocal drawn
        cols, rows = shutil.get_terminal_size((80, 24))
        lines = [line[i:i + cols] for line in text.split("\n") for i in range(0, max(len(line), 1), cols)]
        lines = lines[-(rows - 2):]  # a frame taller than the screen cannot be redrawn in place
        stream.write((f"\x1b[{drawn}F" if drawn else "") + "\x1b[J" + "\n".join(lines) + "\n")
        stream.flush()
        drawn = len(lines)
    return show


def command(line, s, messages):
    """Run a /command -> (the settings from now on, the reply). /reset empties messages in place."""
    name, _, arg = line.partition(" ")
    key, eq, raw = (part.strip() for part in arg.partition("="))
    if name in ("/exit", "/quit"):
        sys.exit()
    if name == "/help":
        return s, __doc__[__doc__.index("commands:"):].rstrip()
    if name == "/reset":
        messages.clear()
        return s, "(conversation cleared)"
    if name != "/set":
        return s, f"unknown command {name}; /help lists them"
    if not arg:
        return s, "\n".join(f"  {k}={v!r}" for k, v in asdict(s).items())
    if not eq or key not in SETTINGS:
        unknown = f"unknown setting {key!r}; " if eq else ""
        return s, f"{unknown}usage: /set key=value with key one of {', '.join(SETTINGS)}"
    try:  # refused here, not at the next answer
        s = replace(s, **{key: parse_value(key, raw, getattr(s, key))}).check()
    except ValueError as e:
        return s, f"error: {e}"
    return s, f"{key}={getattr(s, key)!r}"


def main(given):
    try:
        live = sys.stdout.isatty() if visualize == "auto" else parse_value("visualize", visualize, True)
        model, tok, s, gen = cli_load(globals(), given)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    except KeyboardInterrupt:  # while the model loads
        raise SystemExit(1)
    if chat_template and not tok.chat_template:
        raise SystemExit("error: this tokenizer has no chat template; pass --chat_template=False")
    info = sys.stdout if (tty := sys.stdout.isatty()) else sys.stderr  # on a pipe, stdout carries answers only
    if tty and sys.stdin.isatty() and importlib.util.find_spec("readline"):  # not on every platform
        import readline  # noqa: F401  (line editing and history for input())
    messages = []
    print(f"{model_name_or_path}: {s.method}, block {s.block_size}, {str(model.lm_head.weight.dtype)[6:]},",
          "chat." if chat_template else "raw continuation (Enter alone: from scratch).", "/help for commands.", file=info)
    while True:
        try:
            line = input("> " if tty else "")
        except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C at the prompt: quit
            print(file=info)
            return
        if line.strip().startswith("/"):
            s, reply = command(line.strip(), s, messages)
            print(reply, file=info)
            continue
        question = {"role": "user", "content": line}
        ids = encode(tok, messages + [question] if chat_template else line, chat_template)
        budget = model.config.max_position_embeddings - s.max_new_tokens
        if len(ids) > budget:
            print(f"(longer than the context: keeping the last {budget} tokens; /reset starts over)", file=info)
            ids = ids[-max(budget, 0):]
        show = live_view(sys.stdout) if live else lambda text: print(text, flush=True)  # a pipe: the answer only
        on_step = (lambda _, answers: show(render(tok, answers[0].tolist(), s.mask_token_id, s.eos))) if live else None
        try:
            if live:
                show("░" * s.max_new_tokens)  # the blank canvas, before the first step
            out = generate(model, [ids], s, generator=gen, on_step=on_step)
        except (ValueError, KeyboardInterrupt) as e:  # Ctrl-C ends this answer only ("\n": a frame may end mid-line)
            print("\n" * live + "(answer stopped)" if isinstance(e, KeyboardInterrupt) else f"error: {e}", file=info)
            continue
        n, text = len(out.sequences[0]), tok.decode(out.sequences[0], skip_special_tokens=True)
        show(text)
        if live:
            print(f"\x1b[2m[{n} tokens, {out.nfe} forward passes, {out.seconds:.1f}s, "
                  f"{n / max(out.seconds, 1e-9):.1f} tokens/s]\x1b[0m", flush=True)
        if chat_template:
            messages += [question, {"role": "assistant", "content": text}]


if __name__ == "__main__":
    main(configure(globals()))
