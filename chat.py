"""
Chat with an A2D diffusion LM and watch the answer denoise.

    python chat.py --model_name_or_path=DIR                 # multi-turn, with the chat template
    python chat.py --model_name_or_path=DIR --chat_template=False --remasking=random --temperature=0.7
                                                           # raw continuation; Enter alone = from scratch

On a terminal the answer is drawn live: every masked position is a placeholder that
fills in step by step, then the final text stays. Without a terminal (a pipe) only the
answers are printed, one after the other, so the script can be driven by other programs.

Commands: /reset (forget the conversation), /set key=value (a sampler setting, e.g.
/set steps=64, /set method=mdlm, /set threshold=0.9), /help, /exit. Ctrl-C during an answer
stops it (the conversation stays as it was before the question); at the prompt, it or EOF quits.
"""

import shutil
import sys

import torch

from dataclasses import asdict, replace

from sample import SETTINGS, Settings, encode, generate, load

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

# -----------------------------------------------------------------------------
# drawing the denoising canvas


def render(tok, ids, mask_token_id, eos_token_id, placeholder="░"):
    """One canvas row -> text: masks drawn as placeholders, nothing after the first EOS."""
    eos = set(eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id])
    parts, run = [], []
    for t in ids:
        if t in eos:
            break
        if t == mask_token_id:
            if run:  # decode runs of tokens together, so multi-token characters come out whole
                parts.append(tok.decode(run, skip_special_tokens=True))
                run = []
            parts.append(placeholder)
        else:
            run.append(t)
    if run:
        parts.append(tok.decode(run, skip_special_tokens=True))
    return "".join(parts)


def render_frames(tok, history, mask_token_id, eos_token_id, row=0, placeholder="░"):
    """GenerateOutput.history -> one text frame per denoising step (the first: all masks)."""
    return [render(tok, h[row].tolist(), mask_token_id, eos_token_id, placeholder) for h in history]


def live_view(stream):
    """-> show(text): redraw text over the previous frame (ANSI: cursor up, clear below)."""
    drawn = [0]  # lines of the frame on screen

    def show(text):
        cols, rows = shutil.get_terminal_size((80, 24))
        lines = []
        for line in text.split("\n"):
            lines += [line[i:i + cols] for i in range(0, max(len(line), 1), cols)]
        lines = lines[-(rows - 2):]  # a frame taller than the screen cannot be redrawn in place
        if drawn[0]:
            stream.write(f"\x1b[{drawn[0]}F")
        stream.write("\x1b[J" + "\n".join(lines) + "\n")
        stream.flush()
        drawn[0] = len(lines)
    return show


# -----------------------------------------------------------------------------
# the loop

HELP = """commands:
  /reset            forget the conversation
  /set key=value    change a sampler setting (/set alone lists them)
  /help             this text
  /exit             quit (EOF and Ctrl-C at the prompt quit too; Ctrl-C during an answer stops it)"""


def main(given):
    """given: the options set on the command line; those settings win over the checkpoint's."""
    from configurator import parse_value
    if not model_name_or_path:
        raise SystemExit("error: --model_name_or_path is required (a checkpoint dir written by convert.py or train.py)")
    try:
        s = Settings(**{k: globals()[k] for k in SETTINGS}).check()  # before the model loads
        show = None if visualize == "auto" else parse_value("visualize", visualize, True)
        model, tok, d = load(model_name_or_path, dtype=dtype or None, device=device or None)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    if chat_template and not tok.chat_template:
        raise SystemExit("error: this tokenizer has no chat template; pass --chat_template=False")
    s = replace(s, **{k: v for k, v in d.items() if k not in given})
    tty = sys.stdout.isatty()
    info = sys.stdout if tty else sys.stderr  # on a pipe, stdout carries answers only
    if tty and sys.stdin.isatty():
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    live = tty if show is None else show
    gen = torch.Generator(device=model.lm_head.weight.device).manual_seed(seed)
    limit = model.config.max_position_embeddings
    messages = []
    mode = "chat" if chat_template else "raw continuation (Enter alone: generate from scratch)"
    print(f"{model_name_or_path}: {s.method}, block {s.block_size}, "
          f"{str(model.lm_head.weight.dtype)[6:]}, {mode}. /help for commands.", file=info)
    while True:
        try:
            line = input("> " if tty else "")
        except EOFError:
            print(file=info)
            return
        cmd = line.strip()
        if cmd.startswith("/"):
            name, _, arg = cmd.partition(" ")
            if name in ("/exit", "/quit"):
                return
            elif name == "/help":
                print(HELP, file=info)
            elif name == "/reset":
                messages = []
                print("(conversation cleared)", file=info)
            elif name == "/set" and not arg:
                print("\n".join(f"  {k}={v!r}" for k, v in asdict(s).items() if k != "stop_at_eos"), file=info)
            elif name == "/set":
                key, eq, raw = arg.strip().partition("=")
                key = key.strip()
                if not eq or key not in SETTINGS:
                    print(f"usage: /set key=value with key one of {', '.join(SETTINGS)}", file=info)
                    continue
                try:  # refused here, not at the next answer
                    s = replace(s, **{key: parse_value(key, raw.strip(), getattr(s, key))}).check()
                except ValueError as e:
                    print(f"error: {e}", file=info)
                    continue
                print(f"{key}={getattr(s, key)!r}", file=info)
            else:
                print(f"unknown command {name}; /help lists them", file=info)
            continue
        if chat_template:
            messages.append({"role": "user", "content": line})
        ids = encode(tok, messages if chat_template else line, chat_template)
        budget = limit - s.max_new_tokens
        if len(ids) > budget:
            print(f"(the conversation is longer than the context: keeping its last {budget} tokens; /reset to start "
                  f"over)", file=info)
            ids = ids[-max(budget, 0):]
        show = live_view(sys.stdout) if live else None
        on_step = (lambda _, region: show(render(tok, region[0].tolist(), s.mask_token_id, s.eos))) if live else None
        try:
            if live:
                show("░" * s.max_new_tokens)  # the blank canvas, before the first step
            out = generate(model, [ids], s, generator=gen, on_step=on_step)
        except (ValueError, KeyboardInterrupt) as e:  # Ctrl-C: this answer stops, the conversation stays
            stopped = "\n" * live + "(answer stopped)"  # live: after the frame, which may end mid-line
            print(stopped if isinstance(e, KeyboardInterrupt) else f"error: {e}", file=info)
            if chat_template:
                messages.pop()
            continue
        text = tok.decode(out.sequences[0], skip_special_tokens=True)
        if live:
            show(text)
            n = len(out.sequences[0])
            print(f"\x1b[2m[{n} tokens, {out.nfe} forward passes, {out.seconds:.1f}s, "
                  f"{n / max(out.seconds, 1e-9):.1f} tokens/s]\x1b[0m", flush=True)
        else:
            print(text, flush=True)
        if chat_template:
            messages.append({"role": "assistant", "content": text})


if __name__ == "__main__":
    from configurator import configure
    given = configure(globals())
    try:
        main(given)
    except KeyboardInterrupt:
        print()
    sys.exit(0)
