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

from sample import check_settings, encode, generate, load, override

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


def main():
    from configurator import parse_value
    if not model_name_or_path:
        raise SystemExit("error: --model_name_or_path is required (a checkpoint dir written by convert.py or train.py)")
    try:
        model, tok, d = load(model_name_or_path, dtype=dtype or None, device=device or None)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    if chat_template and not tok.chat_template:
        raise SystemExit("error: this tokenizer has no chat template; pass --chat_template=False")
    settings = dict(override(d, method, block_size, mask_token_id, right_shift_logits),
                    max_new_tokens=max_new_tokens, steps=steps, temperature=temperature, remasking=remasking,
                    cfg_scale=cfg_scale, threshold=threshold, factor=factor, cache=cache, stop_at_eos=True,
                    eos_suppress_steps=eos_suppress_steps)
    tty = sys.stdout.isatty()
    info = sys.stdout if tty else sys.stderr  # on a pipe, stdout carries answers only
    if tty and sys.stdin.isatty():
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    live = tty if visualize == "auto" else parse_value("visualize", visualize, True)
    gen = torch.Generator(device=model.lm_head.weight.device).manual_seed(seed)
    limit = model.config.max_position_embeddings
    messages = []
    mode = "chat" if chat_template else "raw continuation (Enter alone: generate from scratch)"
    print(f"{model_name_or_path}: {settings['method']}, block {settings['block_size']}, "
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
                print("\n".join(f"  {k}={v!r}" for k, v in sorted(settings.items()) if k != "stop_at_eos"), file=info)
            elif name == "/set":
                key, eq, raw = arg.strip().partition("=")
                key = key.strip()
                if not eq or key not in settings:
                    print(f"usage: /set key=value with key one of {', '.join(sorted(settings))}", file=info)
                    continue
                try:  # refused here, not at the next answer
                    value = parse_value(key, raw.strip(), settings[key])
                    check_settings(**{**settings, key: value})
                except (SystemExit, ValueError) as e:  # parse_value reports bad values as SystemExit(message)
                    print(e if isinstance(e, SystemExit) else f"error: {e}", file=info)
                    continue
                settings[key] = value
                print(f"{key}={settings[key]!r}", file=info)
            else:
                print(f"unknown command {name}; /help lists them", file=info)
            continue
        if chat_template:
            messages.append({"role": "user", "content": line})
        ids = encode(tok, messages if chat_template else line, chat_template)
        budget = limit - settings["max_new_tokens"]
        if len(ids) > budget:
            print(f"(the conversation is longer than the context: keeping its last {budget} tokens; /reset to start "
                  f"over)", file=info)
            ids = ids[-max(budget, 0):]
        show = live_view(sys.stdout) if live else None
        on_step = (lambda s, region: show(render(tok, region[0].tolist(), settings["mask_token_id"],
                                                                  settings["eos_token_id"]))
                   ) if live else None
        try:
            if live:
                show("░" * settings["max_new_tokens"])  # the blank canvas, before the first step
            out = generate(model, [ids], generator=gen, on_step=on_step, **settings)
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
    # -------------------------------------------------------------------------
    model_name_or_path = ""
    chat_template = True  # False: raw continuation, no history
    visualize = "auto"  # auto (on when stdout is a terminal) | true | false
    seed = 42
    dtype = ""  # bfloat16 | float16 | float32; default bfloat16 on CUDA and on CPUs with native bf16, else float32
    device = ""
    # sampler (changeable with /set); method, block_size, mask and right-shift default to the checkpoint's
    method = ""
    block_size = 0
    mask_token_id = -1
    right_shift_logits = ""  # true | false
    max_new_tokens = 128
    steps = 128
    temperature = 0.0
    remasking = "low_confidence"
    cfg_scale = 0.0
    threshold = None
    factor = None
    cache = "none"
    eos_suppress_steps = 0
    # -------------------------------------------------------------------------
    configure(globals())
    try:
        main()
    except KeyboardInterrupt:
        print()
    sys.exit(0)
