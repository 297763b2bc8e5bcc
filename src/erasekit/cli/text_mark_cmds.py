"""`erasekit text mark keygen | embed | detect | attack | zeroshot`: text watermarks from the command line.

    erasekit text mark keygen --method greenlist --out me.key            # a secret key file you keep
    erasekit text mark keygen --method majority_bits --message 37 --out user37.key
    erasekit text mark embed --key me.key --prompt "" -n 4 --out marked.jsonl
    erasekit text mark embed --key bb.key --file plain.jsonl --out marked.jsonl   # post-hoc (blackbox_lexical)
    erasekit text mark detect --key me.key --file marked.jsonl          # z / p-value (bits), decision, rule
    erasekit text mark attack --attack "substitute:rate=0.2" --file marked.jsonl --out attacked.jsonl
    erasekit text mark zeroshot --file marked.jsonl                     # no key: was it sampled from the model?

Texts are JSONL files with a "text" field per line (what `embed` and `attack` write) or plain text files (one text
each); --text gives one inline (repeatable).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import InvalidValueError
from ._util import console, friendly_errors


def _read_texts(files: tuple[str, ...], texts: tuple[str, ...]) -> list[str]:
    out = list(texts)
    for f in files:
        p = Path(f)
        if not p.is_file():
            raise InvalidValueError(f"text file {f} does not exist")
        raw = p.read_text(encoding="utf-8")
        if p.suffix == ".jsonl":
            for n, line in enumerate(raw.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    out.append(row["text"] if isinstance(row, dict) else row)
                except (json.JSONDecodeError, KeyError):
                    raise InvalidValueError(f"{f} line {n} is not a JSON object with a \"text\" field") from None
        else:
            out.append(raw)
    if not out:
        raise InvalidValueError("no texts given; pass --file FILE or --text TEXT")
    return out


def _write_jsonl(path: str, rows: list[dict], overwrite: bool) -> None:
    from ..io import atomic_write_text, check_writable

    check_writable(path, overwrite, what="text output")
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


@click.group("mark")
def mark() -> None:
    """Text watermarks: keys, embed in generation, detect, attack; and a key-free zero-shot test."""


@mark.command("ls")
@friendly_errors
def ls_cmd() -> None:
    """List text watermark methods and attacks with their options."""
    import dataclasses

    from ..text.marks import text_marks
    from ..text.marks.attacks import text_mark_attacks

    for n in text_marks.names():
        cls = text_marks.get(n)
        opts = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.config_cls))
        console.print(f"[bold]{n}[/]: {text_marks.help(n)}\n    {opts}", highlight=False)
    for n in text_mark_attacks.names():
        a = text_mark_attacks.get(n)
        opts = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(a.config_cls))
        console.print(f"[bold]attack {n}[/]: {a.help}" + (f"\n    {opts}" if opts else ""), highlight=False)


@mark.command("keygen")
@click.option("--method", required=True, help="greenlist, exp_edit, majority_bits, blackbox_lexical (options: "
                                                "greenlist:delta=1.5)")
@click.option("--model", default="textworld", show_default=True, help="causal-LM folder (or textworld) whose "
                                                                     "tokenizer and vocabulary the key fits")
@click.option("--message", default=None, type=int, help="majority_bits: the user id to embed")
@click.option("--out", required=True, help="key file to write (safetensors)")
@click.option("--overwrite", is_flag=True, help="replace an existing key file")
@friendly_errors
def keygen_cmd(method: str, model: str, message: int | None, out: str, overwrite: bool) -> None:
    """Make a fresh secret key (from the OS's random source) for METHOD and the model's tokenizer."""
    from ..io import check_writable
    from ..text.marks import get_text_mark
    from ..text.models import load_text_model

    wm = get_text_mark(method)
    check_writable(out, overwrite, what="key file")
    lm, tok, _ = load_text_model(model)
    key = wm.keygen(tok, vocab_size=lm.get_output_embeddings().weight.shape[0], message=message)
    key.save(out, overwrite=overwrite)
    extra = f", message {int(''.join(map(str, key.message)), 2)}" if key.message is not None else ""
    console.print(f"wrote {out}: {key.method} key {key.fingerprint()} for tokenizer {key.tokenizer}{extra}",
                  highlight=False)


def _load(key_path: str, model: str):
    from ..text.marks import TextKey, mark_for_key
    from ..text.models import load_text_model

    key = TextKey.load(key_path)
    wm = mark_for_key(key)
    lm, tok, _ = load_text_model(model)
    if not getattr(wm, "posthoc", False):  # post-hoc methods read words, not token ids
        key.check_tokenizer(tok)
    return wm, key, lm, tok


@mark.command("embed")
@click.option("--key", "key_path", required=True, help="key file (erasekit text mark keygen)")
@click.option("--prompt", "prompts", multiple=True, help="prompt to continue (repeatable; \"\" starts from BOS)")
@click.option("-n", "n", default=1, show_default=True, type=int, help="texts per prompt")
@click.option("--max-new-tokens", default=128, show_default=True, type=int, help="tokens per text")
@click.option("--seed", default=0, show_default=True, type=int, help="sampling seed")
@click.option("--window", default=None, type=int, help="texts longer than the model's context: sliding window of "
                                                       "this many context tokens (e.g. 128 for the text world)")
@click.option("--model", default="textworld", show_default=True, help="causal-LM folder, or textworld")
@click.option("--file", "files", multiple=True, help="post-hoc methods (blackbox_lexical): JSONL or text file(s) "
                                                     "to mark instead of generating")
@click.option("--text", "texts", multiple=True, help="post-hoc methods: a text to mark (repeatable)")
@click.option("--out", required=True, help="output JSONL (prompt, text, method, key)")
@click.option("--overwrite", is_flag=True, help="replace an existing output")
@friendly_errors
def embed_cmd(key_path, prompts, n, max_new_tokens, seed, window, model, files, texts, out, overwrite) -> None:
    """Generate marked text by sampling the model through the key's LogitsProcessor (post-hoc methods: mark --file /
    --text, or the model's plain samples of --prompt)."""
    from ..io import check_writable
    from ..text.marks import decode

    check_writable(out, overwrite, what="text output")
    if files or texts:
        wm, key, lm, tok = _load(key_path, model)
        if not getattr(wm, "posthoc", False):
            raise InvalidValueError(f"{wm.name} marks in generation; --file/--text are for post-hoc methods "
                                    "(blackbox_lexical); use --prompt")
        items = _read_texts(files, texts)
        rows = [{"text": t, "method": wm.name, "key": key.fingerprint()}
                for t in wm.embed_texts(key, items, model=lm, tokenizer=tok)]
        _write_jsonl(out, rows, overwrite=True)
        console.print(f"wrote {out}: {len(rows)} text(s) marked post hoc with {wm.name} key {key.fingerprint()}",
                      highlight=False)
        return
    if not prompts:
        raise InvalidValueError("pass --prompt TEXT (repeatable; --prompt \"\" starts from BOS)")
    if n < 1:
        raise InvalidValueError(f"-n must be >= 1, got {n}")
    wm, key, lm, tok = _load(key_path, model)
    ps = [p for p in prompts for _ in range(n)]
    ids = wm.generate(lm, tok, key, ps, max_new_tokens=max_new_tokens, seed=seed, window=window)
    rows = [{"prompt": p, "text": t, "method": wm.name, "key": key.fingerprint()}
            for p, t in zip(ps, decode(tok, ids))]
    _write_jsonl(out, rows, overwrite=True)
    console.print(f"wrote {out}: {len(rows)} text(s) of {max_new_tokens} tokens marked with {wm.name} key "
                  f"{key.fingerprint()}", highlight=False)


@mark.command("detect")
@click.option("--key", "key_path", required=True, help="key file")
@click.option("--file", "files", multiple=True, help="JSONL (\"text\" per line) or plain text file (repeatable)")
@click.option("--text", "texts", multiple=True, help="a text to test (repeatable)")
@click.option("--model", default="textworld", show_default=True, help="the model whose tokenizer made the texts")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly_errors
def detect_cmd(key_path, files, texts, model, as_json) -> None:
    """Detect KEY's mark: score, p-value (decoded message), and the decision under the recorded rule."""
    wm, key, lm, tok = _load(key_path, model)
    items = _read_texts(files, texts)
    det = wm.detect(key, items, tok)
    if as_json:
        click.echo(json.dumps({"key": key.fingerprint(), **det.to_dict(), "extra": det.extra}, indent=1))
        return
    console.print(f"{wm.name} key {key.fingerprint()}; rule: {det.rule['marked_if']} ({det.rule['source']})",
                  highlight=False)
    for i in range(len(items)):
        extra = f" p={det.p_value[i]:.3g}" if det.p_value is not None else ""
        if det.bit_acc is not None:
            extra += f" decoded={det.extra['decoded'][i]} bits={det.bit_acc[i]:.3f}"
        console.print(f"text {i}: score {det.score[i]:.3f}{extra} -> {'MARKED' if det.decision[i] else 'not marked'}",
                      highlight=False)


@mark.command("attack")
@click.option("--attack", "spec", required=True, help='attack spec, e.g. "substitute:rate=0.2+delete:rate=0.1"')
@click.option("--file", "files", multiple=True, help="JSONL or text file(s)")
@click.option("--text", "texts", multiple=True, help="a text (repeatable)")
@click.option("--model", default="textworld", show_default=True, help="tokenizer; model of synonym / paraphrase")
@click.option("--human", "human_file", default=None, help="mix: plain text file of human text (default: the text "
                                                          "world's held-out documents)")
@click.option("--seed", default=0, show_default=True, type=int, help="seed of random attacks")
@click.option("--out", required=True, help="output JSONL")
@click.option("--overwrite", is_flag=True, help="replace an existing output")
@friendly_errors
def attack_cmd(spec, files, texts, model, human_file, seed, out, overwrite) -> None:
    """Apply an attack chain to texts (tokenized with the model's tokenizer)."""
    from ..io import check_writable
    from ..text.marks import decode, encode_texts
    from ..text.marks.attacks import apply_text_attack, parse_text_attack
    from ..text.models import load_text_model

    check_writable(out, overwrite, what="text output")
    chain = parse_text_attack(spec)
    items = _read_texts(files, texts)
    lm, tok, folder = load_text_model(model)
    ids = encode_texts(items, tok, min_tokens=1)
    human = None
    if any("human" in a.needs for a, _ in chain):
        if human_file:
            raw = Path(human_file).read_text(encoding="utf-8")
        else:
            from ..text.models import resolve_world

            raw = " ".join(d.text for d in resolve_world(None, folder).docs("holdout"))
        human = tok(raw, add_special_tokens=False)["input_ids"]
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    new = apply_text_attack(chain, ids, lm.get_output_embeddings().weight.shape[0], seed=seed, model=lm,
                            human=human, bos=bos)
    _write_jsonl(out, [{"text": t, "attack": spec} for t in decode(tok, new)], overwrite=True)
    console.print(f"wrote {out}: {len(new)} text(s) after {spec}", highlight=False)


@mark.command("zeroshot")
@click.option("--file", "files", multiple=True, help="JSONL or text file(s)")
@click.option("--text", "texts", multiple=True, help="a text (repeatable)")
@click.option("--model", default="textworld", show_default=True, help="the model the texts may come from")
@click.option("--clip", default=None, type=float, help="surprisal clip L in nats (default 8)")
@click.option("--delta", default=None, type=float, help="guaranteed error on the model's own samples (default 0.01)")
@click.option("--bound", default=None, help="hoeffding (default, the paper's kind) or bennett (variance-adaptive)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly_errors
def zeroshot_cmd(files, texts, model, clip, delta, bound, as_json) -> None:
    """Key-free test: was each text sampled from the model? (finite-sample guarantee for its own samples)"""
    from ..config import make_config
    from ..text.marks.zeroshot import ZeroShotConfig, zero_shot_test
    from ..text.models import load_text_model

    opts = {k: v for k, v in (("clip", clip), ("delta", delta), ("bound", bound)) if v is not None}
    cfg = make_config("zeroshot", ZeroShotConfig, opts)
    items = _read_texts(files, texts)
    lm, tok, _ = load_text_model(model)
    det = zero_shot_test(lm, tok, items, cfg)
    if as_json:
        click.echo(json.dumps({**det.to_dict(), "extra": det.extra}, indent=1))
        return
    console.print(f"rule: {det.rule['marked_if']} ({det.rule['source']})", highlight=False)
    for i in range(len(items)):
        verdict = "NOT from the model" if det.decision[i] else "consistent with the model"
        console.print(f"text {i}: {det.extra['tokens'][i]} tokens, excess surprisal {-det.score[i]:.3f} nats/token "
                      f"(eps {det.extra['epsilon'][i]:.3f}) p<={det.p_value[i]:.3g} -> {verdict}", highlight=False)


COMMANDS: list = []  # `mark` is a subgroup of `erasekit text` (added in text_cmds.py)
