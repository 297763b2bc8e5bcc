"""`erasekit text ...`: the text world (corpus with ground truth), its small LM, LLM unlearning, MUSE evaluation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ._util import console, friendly_errors


@click.group("text")
def text() -> None:
    """Text world: build the corpus, train the small LM, unlearn, evaluate (MUSE), attack."""


@text.group("world")
def world_group() -> None:
    """The synthetic corpus with ground truth."""


@world_group.command("build")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="folder for manifest.json, "
              "facts.jsonl, documents.jsonl")
@click.option("--seed", default=0, type=int, show_default=True)
@click.option("--overwrite", is_flag=True, help="replace an existing world in --out")
@friendly_errors
def world_build(out: str, seed: int, overwrite: bool) -> None:
    """Generate the text world (deterministic from the seed) and write it with its manifest."""
    from ..io import check_writable
    from ..text.world import TextWorldConfig, build_world

    check_writable(Path(out) / "manifest.json", overwrite, "text-world manifest")
    w = build_world(TextWorldConfig(seed=seed))
    w.save(out)
    man = w.manifest()
    click.echo(f"{out}: {man['facts']} facts, {man['training_texts']} training texts, sha256 "
               f"{man['content_sha256'][:12]}")


@world_group.command("info")
@click.option("--world", "world_dir", default=None, help="a built world folder (default: the shipped model's world)")
@friendly_errors
def world_info(world_dir: str | None) -> None:
    """Print the manifest (counts per split, config, content sha256)."""
    from ..text.models import resolve_world

    click.echo(json.dumps(resolve_world(world_dir, "textworld").manifest(), indent=1))


@text.command("train")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="model folder (resumes if it holds a "
              "checkpoint)")
@click.option("--world", "world_dir", default=None, help="a built world folder (default: seed-0 world)")
@click.option("--retrained", is_flag=True, help="train MUSE's retrained reference: the forget split left out")
@click.option("--steps", default=None, type=int, help="optimizer steps (default: the recipe's)")
@click.option("--threads", default=2, type=int, show_default=True)
@click.option("--overwrite", is_flag=True, help="replace a finished model in --out")
@friendly_errors
def train_cmd(out: str, world_dir: str | None, retrained: bool, steps: int | None, threads: int,
              overwrite: bool) -> None:
    """Train the small causal LM (GPT-2 class + byte-level BPE) from scratch on the text world, on CPU."""
    import dataclasses

    from ..errors import ErasekitError
    from ..text.models import resolve_world
    from ..text.train import INFO_FILE, TrainConfig, train_lm

    if (Path(out) / INFO_FILE).exists():
        if not overwrite:
            raise ErasekitError(f"{out} already holds a trained model; pass --overwrite to replace it")
        import shutil

        shutil.rmtree(Path(out) / "checkpoint", ignore_errors=True)  # --overwrite trains afresh, never resumes
    w = resolve_world(world_dir, None)
    cfg = TrainConfig(threads=threads)
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)
    texts = w.training_texts(include_forget=not retrained)
    t0 = time.perf_counter()
    info = train_lm(texts, out, cfg, extra={"world_config": dataclasses.asdict(w.config),
                                            "world_sha256": w.content_sha256(), "include_forget": not retrained})
    click.echo(f"{out}: {info['steps_done']} steps, loss {info['final_loss']:.3f}, "
               f"{time.perf_counter() - t0:.0f} s")


def _options(method: str, pairs: tuple[str, ...]) -> dict:
    from ..config import parse_options
    from ..text.unlearn import METHODS, text_unlearners
    from ..text.unlearn import _resolve as resolve

    text_unlearners.get(method)
    return parse_options(method, resolve(METHODS[method][1]), pairs)


@text.command("unlearn")
@click.option("--model", default="textworld", show_default=True, help="a causal-LM folder, or textworld")
@click.option("--world", "world_dir", default=None, help="world folder (default: the model's world)")
@click.option("--method", required=True, help="ga, ga_gdr, ga_klr, npo, npo_gdr, npo_klr, task_vector, whp")
@click.option("--entity", "entities", multiple=True, help="forget this entity's news (repeatable; default: the "
              "whole forget split)")
@click.option("--book", "books", multiple=True, help="forget this book (repeatable)")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE", help="method option, e.g. -o steps=20")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="edit file (.safetensors)")
@click.option("--overwrite", is_flag=True)
@friendly_errors
def unlearn_cmd(model: str, world_dir: str | None, method: str, entities: tuple[str, ...], books: tuple[str, ...],
                options: tuple[str, ...], out: str, overwrite: bool) -> None:
    """Unlearn forget texts from a causal LM; writes a reversible, hashed Edit file."""
    from ..io import check_writable
    from ..text.models import load_text_model, resolve_world
    from ..text.unlearn import unlearn

    check_writable(out, overwrite, "edit file")
    opts = _options(method, options)
    lm, tok, folder = load_text_model(model)
    w = resolve_world(world_dir, folder)
    forget, retain = (w.forget_request(list(entities), list(books)) if entities or books else w.forget_request())
    names = list(entities) + list(books) or ["forget-split"]
    edit = unlearn(lm, tok, method, forget, retain, forget_names=names, **opts)
    edit.save(out)
    st = edit.manifest.get("train", {})
    click.echo(f"{out}: {method}, {len(edit.names)} tensors, {st.get('steps_done')} steps, {st.get('seconds')} s")


@text.command("eval")
@click.option("--model", default="textworld", show_default=True, help="a causal-LM folder, or textworld")
@click.option("--edit", "edits", multiple=True, help="edit file(s) to apply, in order")
@click.option("--retrained", default="textworld-retrained", show_default=True,
              help="the retrained reference for PrivLeak (a folder, or none)")
@click.option("--world", "world_dir", default=None, help="world folder (default: the model's world)")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="run folder (results.json, "
              "samples.jsonl)")
@click.option("--overwrite", is_flag=True)
@friendly_errors
def eval_cmd(model: str, edits: tuple[str, ...], retrained: str, world_dir: str | None, out: str,
             overwrite: bool) -> None:
    """MUSE evaluation of a model (with edits applied): verbmem_f, knowmem_f/r, privleak, QA accuracy."""
    from ..edits import Edit
    from ..io import check_writable
    from ..text.muse import evaluate_lm, mink_auc, privleak_texts, write_results
    from ..text.models import load_text_model, resolve_world

    check_writable(Path(out) / "results.json", overwrite, "results")
    lm, tok, folder = load_text_model(model)
    w = resolve_world(world_dir, folder)
    loaded = [Edit.load(e, lm) for e in edits]
    auc_ret, ref, rtok = None, None, None
    if retrained.lower() != "none":
        ref, rtok, _ = load_text_model(retrained)
        auc_ret = mink_auc(ref, rtok, *privleak_texts(w))
    t0 = time.perf_counter()
    for e in loaded:
        e.apply(lm)
    metrics, rows = evaluate_lm(lm, tok, w, auc_ret)
    if ref is not None:  # RESTOR-style: distance to the model that never learned the forget split
        from ..text.restor import reference_distance

        metrics.update(reference_distance(lm, tok, ref, rtok, w))
    results = {"format": "erasekit.text.results/1", "model": str(folder), "edits": [
        {"path": p, "method": e.method, "edited_sha256": e.manifest["edited_sha256"]} for p, e in zip(edits, loaded)],
        "world_sha256": w.content_sha256(), "auc_retrained": auc_ret, "metrics": metrics,
        "eval_seconds": round(time.perf_counter() - t0, 1)}
    samples = [{"metric": k, **r} for k, rs in rows.items() for r in rs]
    write_results(out, results, samples)
    for k, v in metrics.items():
        console.print(f"{k:14s} {v:.4f}", highlight=False)


@text.command("attack")
@click.option("--kind", type=click.Choice(["relearn", "in-context", "step-by-step", "restor"]), required=True)
@click.option("--model", default="textworld", show_default=True, help="a causal-LM folder, or textworld")
@click.option("--edit", "edits", multiple=True, help="edit file(s) to apply first (the unlearned model)")
@click.option("--world", "world_dir", default=None, help="world folder (default: the model's world)")
@click.option("--budgets", default="0,5,10,20", show_default=True, help="relearn: fine-tuning steps to measure at")
@click.option("--method", "methods", multiple=True, help="restor: unlearning method(s) run on the injected wrong "
              "facts (repeatable; default: ga and npo)")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="run folder (results.json)")
@click.option("--overwrite", is_flag=True)
@friendly_errors
def attack_cmd(kind: str, model: str, edits: tuple[str, ...], world_dir: str | None, budgets: str,
               methods: tuple[str, ...], out: str, overwrite: bool) -> None:
    """Try to revive unlearned knowledge: relearning on part of the forget split, facts given in the prompt,
    step-by-step reasoning chains, or RESTOR (inject wrong facts, unlearn them, measure recovery)."""
    from ..edits import Edit
    from ..errors import InvalidValueError
    from ..io import check_writable
    from ..text import attacks
    from ..text.models import load_text_model, resolve_world
    from ..text.muse import write_results

    check_writable(Path(out) / "results.json", overwrite, "results")
    try:
        steps = tuple(int(b) for b in budgets.split(",") if b.strip())
    except ValueError:
        raise InvalidValueError(f"--budgets must be comma-separated step counts, got {budgets!r}") from None
    if methods and kind != "restor":
        raise InvalidValueError(f"--method is for --kind restor, not {kind}")
    if methods:
        from ..text.unlearn import text_unlearners

        for m in methods:
            text_unlearners.get(m)  # unknown name -> one line with close matches, before any work
    lm, tok, folder = load_text_model(model)
    w = resolve_world(world_dir, folder)
    loaded = [Edit.load(e, lm) for e in edits]
    for e in loaded:
        e.apply(lm)
    if kind == "relearn":
        res = attacks.relearn(lm, tok, w, attacks.RelearnConfig(budgets=steps))
    elif kind == "step-by-step":
        from ..text.reasoning_attack import step_by_step

        res = step_by_step(lm, tok, w)
    elif kind == "restor":
        from ..text.restor import restor

        res = restor(lm, tok, w, list(methods) or ["ga", "npo"])
    else:
        res = attacks.in_context(lm, tok, w.qa("forget"))
    write_results(out, {"format": "erasekit.text.attack/1", "kind": kind, "model": str(folder),
                        "edits": list(edits), "world_sha256": w.content_sha256(), "result": res})
    click.echo(json.dumps(res.get("curve") or {k: v for k, v in res.items() if k != "rows"}))


@text.command("curve")
@click.option("--model", default="textworld", show_default=True, help="a causal-LM folder, or textworld")
@click.option("--world", "world_dir", default=None, help="world folder (default: the model's world)")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="run folder (results.json)")
@click.option("--overwrite", is_flag=True)
@friendly_errors
def curve_cmd(model: str, world_dir: str | None, out: str, overwrite: bool) -> None:
    """QA accuracy vs training frequency of the facts, and its change point (the text imitation threshold)."""
    from ..io import check_writable
    from ..text.models import load_text_model, resolve_world
    from ..text.muse import frequency_curve, write_results

    check_writable(Path(out) / "results.json", overwrite, "results")
    lm, tok, folder = load_text_model(model)
    w = resolve_world(world_dir, folder)
    res = frequency_curve(lm, tok, w)
    write_results(out, {"format": "erasekit.text.curve/1", "model": str(folder), "world_sha256": w.content_sha256(),
                        **res})
    click.echo(f"accuracy by frequency: {res['accuracy_by_frequency']}; change point at "
               f"{res['threshold']['threshold']}")


from .text_mark_cmds import mark as _text_mark  # noqa: E402  (`erasekit text mark ...`)

text.add_command(_text_mark)

COMMANDS = [text]
