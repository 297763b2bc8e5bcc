"""`erasekit text provenance ...`: was my data trained on? Copyright traps, LexiMark and AMUSE from the command line.

    erasekit text provenance traps-make --lengths 25,50 --repetitions 1,4,16 --out traps.json   # from a reference LM
    erasekit text provenance traps-inject --traps traps.json --file docs.jsonl --out published.jsonl
    erasekit text provenance traps-detect --traps traps.json --model SUSPECT_DIR --reference textworld
    erasekit text provenance leximark-mark --new-key --key me.lexikey --file docs.jsonl --out marked.jsonl
    erasekit text provenance leximark-detect --key me.lexikey --members docs.jsonl --nonmembers held.jsonl --model DIR
    erasekit text provenance amuse-embed --new-key --message 48879 --key me.amusekey --file docs.jsonl --out pub.jsonl
    erasekit text provenance amuse-detect --key me.amusekey --file pub.jsonl --model SUSPECT_DIR   # message back?

Documents are JSONL files with a "text" field per line or plain text files (one document each); with --world (or no
--file) the text world's training texts are used. Trap files and keys are user files (JSON; AMUSE keys are
safetensors text-watermark keys holding the secret and the owner's message).
"""

from __future__ import annotations

import json

import click

from ..errors import InvalidValueError
from ._util import console, friendly_errors


def _ints(value: str, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise InvalidValueError(f"--{name} must be comma-separated integers, got {value!r}") from None
    if not out:
        raise InvalidValueError(f"--{name} is empty; give comma-separated integers, e.g. 25,50")
    return out


def _read(files: tuple[str, ...], what: str = "documents") -> list[str]:
    """Texts of JSONL / text files; one line when they hold none."""
    from .text_mark_cmds import _read_texts

    texts = []
    for f in files:
        try:
            texts += _read_texts((f,), ())
        except InvalidValueError as e:
            if not str(e).startswith("no texts given"):
                raise
    if not texts or not any(t.strip() for t in texts):
        raise InvalidValueError(f"no {what} in {', '.join(files)}; give JSONL files with one {{\"text\": ...}} per "
                                "line, or text files")
    return texts


def _docs(files: tuple[str, ...], world_dir: str | None, model: str | None) -> list[str]:
    if files:
        return _read(files)
    from ..text.models import resolve_world

    return resolve_world(world_dir, model).training_texts()


def _write_json(path: str | None, obj: dict, overwrite: bool) -> None:
    if path:
        from ..io import atomic_write_text, check_writable

        check_writable(path, overwrite, what="results file")
        atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=False))
        console.print(f"wrote {path}", highlight=False)


@click.group("provenance")
def provenance() -> None:
    """Dataset provenance: copyright traps, LexiMark and AMUSE (was a model trained on my documents?)."""


@provenance.command("ls")
@friendly_errors
def ls_cmd() -> None:
    """List the provenance methods with their options."""
    import dataclasses

    from ..text.provenance import text_provenance

    for n in text_provenance.names():
        cls = text_provenance.get(n).config_cls
        opts = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls))
        console.print(f"[bold]{n}[/]: {text_provenance.help(n)}\n    {opts}", highlight=False)


@provenance.command("traps-make")
@click.option("--model", default="textworld", show_default=True, help="reference causal LM the traps are sampled from")
@click.option("--world", "world_dir", default=None, help="text world whose corpus traps must not overlap")
@click.option("--lengths", default="25,50,100", show_default=True, help="trap lengths in tokens")
@click.option("--repetitions", default="1,2,4,8,16", show_default=True, help="copies per trap, one cell each")
@click.option("--per-cell", default=8, show_default=True, type=int, help="traps per (length, repetitions)")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", required=True, help="trap file to write (JSON)")
@click.option("--overwrite", is_flag=True, help="replace an existing trap file")
@friendly_errors
def traps_make(model, world_dir, lengths, repetitions, per_cell, seed, out, overwrite) -> None:
    """Sample unique trap sequences (and as many controls) in a perplexity band of the reference model."""
    from ..io import check_writable
    from ..text.models import load_text_model, resolve_world
    from ..text.provenance.traps import TrapConfig, make_traps, save_traps

    cfg = TrapConfig(lengths=_ints(lengths, "lengths"), repetitions=_ints(repetitions, "repetitions"),
                     traps_per_cell=per_cell, seed=seed)
    check_writable(out, overwrite, what="trap file")
    lm, tok, folder = load_text_model(model)
    traps = make_traps(lm, tok, cfg, resolve_world(world_dir, model).training_texts())
    save_traps(out, traps, cfg, meta={"reference": str(folder)}, overwrite=overwrite)
    console.print(f"wrote {out}: {sum(t.is_member for t in traps)} traps, "
                  f"{sum(not t.is_member for t in traps)} controls", highlight=False)


@provenance.command("traps-inject")
@click.option("--traps", "trap_file", required=True, help="trap file (traps-make)")
@click.option("--file", "files", multiple=True, help="documents to publish (JSONL / text; default: the text world)")
@click.option("--world", "world_dir", default=None, help="text world whose training texts are used without --file")
@click.option("--model", default="textworld", show_default=True, help="causal LM whose tokenizer counts tokens")
@click.option("--max-tokens", default=255, show_default=True, type=int, help="longest document after injection")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", required=True, help="JSONL file of the documents with the traps injected")
@click.option("--overwrite", is_flag=True)
@friendly_errors
def traps_inject(trap_file, files, world_dir, model, max_tokens, seed, out, overwrite) -> None:
    """Inject every trap its number of repetitions times, each copy into a different document."""
    from ..text.models import load_text_model
    from ..text.provenance.traps import inject_traps, load_traps
    from .text_mark_cmds import _write_jsonl

    traps, _ = load_traps(trap_file)
    docs = _docs(files, world_dir, None)
    from ..io import check_writable

    check_writable(out, overwrite, what="document file")
    _, tok, _ = load_text_model(model)
    texts, placements = inject_traps(docs, traps, tok, seed=seed, max_tokens=max_tokens)
    _write_jsonl(out, [{"text": t} for t in texts], overwrite)
    console.print(f"wrote {out}: {len(texts)} documents, {len(placements)} trap copies", highlight=False)


@provenance.command("traps-detect")
@click.option("--traps", "trap_file", required=True, help="trap file (traps-make)")
@click.option("--model", required=True, help="suspect causal-LM folder (or textworld)")
@click.option("--reference", default="textworld", show_default=True,
              help="reference model that never saw the traps ('none': the LOSS test)")
@click.option("--out", default=None, help="write every score to this JSON file")
@click.option("--overwrite", is_flag=True)
@friendly_errors
def traps_detect(trap_file, model, reference, out, overwrite) -> None:
    """AUC of traps vs controls per (length, repetitions) with the perplexity-ratio test, and the change point."""
    from ..io import check_writable
    from ..text.models import load_text_model
    from ..text.provenance.traps import detect_traps, load_traps

    traps, _ = load_traps(trap_file)
    if out:
        check_writable(out, overwrite, what="results file")
    lm, tok, _ = load_text_model(model)
    ref, rtok = (None, None) if reference == "none" else load_text_model(reference)[:2]
    res = detect_traps(lm, tok, traps, ref, rtok)
    console.print("| length | repetitions | AUC | p-value |\n|---|---|---|---|", highlight=False)
    for c in res.cells:
        console.print(f"| {c['length']} | {c['repetitions']} | {c['auc']:.3f} | {c['p_value']:.2g} |",
                      highlight=False)
    for length, cp in res.curve.items():
        console.print(f"length {length}: change point at {cp['threshold']} repetitions", highlight=False)
    _write_json(out, res.to_dict(), overwrite)


@provenance.command("leximark-mark")
@click.option("--key", "key_path", required=True, help="LexiMark key file (JSON); made here with --new-key")
@click.option("--new-key", is_flag=True, help="make a fresh key for these documents and write it to --key")
@click.option("--k", default=5, show_default=True, type=int, help="with --new-key: words substituted per sentence")
@click.option("--file", "files", multiple=True, required=True, help="documents to mark (JSONL / text)")
@click.option("--out", required=True, help="JSONL file of the marked documents")
@click.option("--overwrite", is_flag=True, help="replace existing output (and key) files")
@friendly_errors
def leximark_mark(key_path, new_key, k, files, out, overwrite) -> None:
    """Mark documents: keyed synonyms for the highest-entropy words of every sentence."""
    from ..io import check_writable
    from ..text.provenance.leximark import LexiKey, keygen, mark
    from .text_mark_cmds import _write_jsonl

    docs = _read(files)
    check_writable(out, overwrite, what="document file")
    if new_key:
        check_writable(key_path, overwrite, what="key file")
        key = keygen(docs, k)
        key.save(key_path, overwrite=overwrite)
    else:
        key = LexiKey.load(key_path)
    marked = mark(docs, key)
    _write_jsonl(out, [{"text": t} for t in marked], overwrite)
    changed = sum(a != b for a, b in zip(docs, marked))
    console.print(f"wrote {out}: {changed} of {len(docs)} documents marked with key {key.fingerprint()}",
                  highlight=False)


@provenance.command("leximark-detect")
@click.option("--key", "key_path", required=True, help="LexiMark key file")
@click.option("--members", "members", multiple=True, required=True,
              help="ORIGINAL (unmarked) documents whose marked copies were published")
@click.option("--nonmembers", "nonmembers", multiple=True, help="original documents whose marked copies were kept back")
@click.option("--model", required=True, help="suspect causal-LM folder (or textworld)")
@click.option("--null-keys", default=99, show_default=True, type=int, help="random keys of the permutation test")
@click.option("--out", default=None, help="write every score to this JSON file")
@click.option("--overwrite", is_flag=True)
@friendly_errors
def leximark_detect(key_path, members, nonmembers, model, null_keys, out, overwrite) -> None:
    """Key-permutation p-value; with --nonmembers also the paper's Min-K%++ AUROC and Welch t-test."""
    from ..io import check_writable
    from ..text.models import load_text_model
    from ..text.provenance.leximark import LexiKey, LexiMarkConfig, detect
    key = LexiKey.load(key_path)
    cfg = LexiMarkConfig(null_keys=null_keys)
    mem = _read(members, "member documents")
    non = _read(nonmembers, "non-member documents") if nonmembers else []
    if out:
        check_writable(out, overwrite, what="results file")
    lm, tok, _ = load_text_model(model)
    res = detect(lm, tok, key, mem, non, cfg)
    line = f"key-permutation p = {res.permutation_p:.3g} (z {res.permutation_z:+.2f}, {cfg.null_keys} null keys)"
    if res.auc is not None:
        line += f"; Min-K%++ AUROC {res.auc:.3f}, Welch p = {res.p_value:.3g}; key-z AUROC {res.key_auc:.3f}"
    console.print(line, highlight=False)
    _write_json(out, res.to_dict(), overwrite)


def _amuse_key(path: str):
    """The AMUSE key at `path`, or one line: missing file, or a key of another method."""
    from pathlib import Path

    from ..text.marks import TextKey
    from ..text.provenance import amuse

    if not Path(path).is_file():
        raise InvalidValueError(f"AMUSE key file {path} does not exist; make one with `erasekit text provenance "
                                f"amuse-embed --new-key --key {path} ...`")
    return TextKey.load(path, method=amuse.METHOD)


@provenance.command("amuse-embed")
@click.option("--key", "key_path", required=True, help="AMUSE key file (safetensors); made here with --new-key")
@click.option("--new-key", is_flag=True, help="make a fresh key (secret from the OS) and write it to --key")
@click.option("--message", default=None, type=int, help="with --new-key: the owner message, an integer < 2^bits "
                                                         "(default: random)")
@click.option("--bits", default=None, type=int, help="with --new-key: message length in bits (default 16)")
@click.option("--guarantee", default=None, type=float,
              help="with --new-key: largest share of sub-message types that may lack a segment (default 0.5)")
@click.option("--file", "files", multiple=True, required=True, help="documents to mark (JSONL / text)")
@click.option("--model", default=None, help="causal LM that ranks the synonyms (default: keyed pseudo-random choice)")
@click.option("--out", required=True, help="JSONL file of the marked documents")
@click.option("--overwrite", is_flag=True, help="replace existing output (and key) files")
@friendly_errors
def amuse_embed(key_path, new_key, message, bits, guarantee, files, model, out, overwrite) -> None:
    """Mark documents: document i carries sub-message i mod C of the owner message in keyed synonym choices."""
    from ..io import check_writable
    from ..text.provenance import amuse
    from .text_mark_cmds import _write_jsonl

    opts = {k: v for k, v in (("bits", bits), ("guarantee", guarantee)) if v is not None}
    if not new_key and (message is not None or opts):
        raise InvalidValueError("--message, --bits and --guarantee make a new key; add --new-key (the key file "
                                "already holds its message)")
    docs = _read(files)
    check_writable(out, overwrite, what="document file")
    if new_key:
        check_writable(key_path, overwrite, what="key file")
        key = amuse.keygen(message, amuse.AmuseConfig(**opts))
    else:
        key = _amuse_key(key_path)
    lm, tok = (None, None)
    if model:
        from ..text.models import load_text_model

        lm, tok, _ = load_text_model(model)
    marked = amuse.embed_dataset(key, docs, lm, tok)
    if new_key:
        key.save(key_path, overwrite=overwrite)
    _write_jsonl(out, [{"text": t} for t in marked], overwrite)
    code = amuse.AmuseCode(int(key.config["bits"]), float(key.config["guarantee"]),
                           int(key.config.get("max_chunks", amuse.MAX_CHUNKS))).describe()
    changed = sum(a != b for a, b in zip(docs, marked))
    console.print(f"wrote {out}: {changed} of {len(docs)} documents marked with key {key.fingerprint()} "
                  f"({code['message_bits']}-bit message, {code['segments']} segment(s), {code['submessage_bits']}-bit "
                  f"sub-messages)" + (f"; key written to {key_path}" if new_key else ""), highlight=False)


@provenance.command("amuse-detect")
@click.option("--key", "key_path", required=True, help="AMUSE key file (amuse-embed --new-key)")
@click.option("--file", "files", multiple=True, required=True, help="the MARKED documents that were published")
@click.option("--model", required=True, help="suspect causal-LM folder (or textworld)")
@click.option("--out", default=None, help="write the decoded message and every count to this JSON file")
@click.option("--overwrite", is_flag=True)
@friendly_errors
def amuse_detect(key_path, files, model, out, overwrite) -> None:
    """Read the owner message back from a suspect model (teacher-forced on the marked documents): decoded message,
    bit accuracy, nominal binomial p-value and decision."""
    import math

    from ..io import check_writable
    from ..text.models import load_text_model
    from ..text.provenance import amuse

    key = _amuse_key(key_path)
    docs = _read(files, "marked documents")
    if out:
        check_writable(out, overwrite, what="results file")
    lm, tok, _ = load_text_model(model)
    res = amuse.detect_dataset(key, lm, tok, docs)
    dec = "".join("?" if b < 0 else str(int(b)) for b in res.decoded)
    msg = "".join(str(int(b)) for b in res.message)
    console.print(f"decoded {dec} (key's message {msg}): bit accuracy {res.bit_acc:.3f}, exact {res.exact}; "
                  f"p = {res.p_value:.3g} (z {res.z:+.2f}) -> {'MARKED' if res.decision else 'not marked'} at "
                  f"p <= {res.rule['fpr']:g}", highlight=False)
    d = res.to_dict()
    d = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
    _write_json(out, d, overwrite)


COMMANDS: list = []  # added under `erasekit text` (text_cmds.py)
