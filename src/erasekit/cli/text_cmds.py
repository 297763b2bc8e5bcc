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
    from ..text.muse import evaluate_lm, mink_auc, privleak_texts, text_results, write_results
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
    label = "+".join(e.method for e in loaded) or "base"
    edit_info = [{"path": p, "method": e.method, "edited_sha256": e.manifest["edited_sha256"]}
                 for p, e in zip(edits, loaded)]
    results = text_results({label: {"seeds": {"-": metrics}}}, model=str(folder), world_sha256=w.content_sha256(),
                           extra={"edits": edit_info, "retrained": retrained})
    results.update({"edits": edit_info, "auc_retrained": auc_ret, "metrics": metrics,
                    "eval_seconds": round(time.perf_counter() - t0, 1)})
    samples = [{"variant": label, "metric": k, **r} for k, rs in rows.items() for r in rs]
    write_results(out, results, samples)
    _write_report(out)
    for k, v in metrics.items():
        console.print(f"{k:14s} {v:.4f}", highlight=False)


def _write_report(out: str) -> None:
    """report.html of a text run folder, rebuilt from its results.json as `erasekit report OUT` does."""
    from ..report.eval_report import write_report

    console.print(f"[bold green]report:[/] {write_report(out)}")


def _specs(methods: tuple[str, ...]) -> list[tuple[str, str, dict]]:
    """"method" or "method:key=value,key=value" -> (label, method, typed options); unknown names/options raise."""
    out = []
    for spec in methods:
        method, _, opts = spec.partition(":")
        pairs = tuple(p for p in opts.split(",") if p.strip())
        out.append((spec, method.strip(), _options(method.strip(), pairs)))
    labels = [s[0] for s in out]
    if len(set(labels)) != len(labels):
        from ..errors import InvalidValueError

        raise InvalidValueError(f"--method given twice with the same spec: {labels}")
    return out


def _ints(value: str, flag: str) -> tuple[int, ...]:
    from ..errors import InvalidValueError

    try:
        out = tuple(int(b) for b in value.split(",") if b.strip())
    except ValueError:
        raise InvalidValueError(f"{flag} must be comma-separated integers, got {value!r}") from None
    if not out:
        raise InvalidValueError(f"{flag} {value!r} names no number; e.g. {flag} 0,1,2")
    return out


@text.command("bench")
@click.option("--method", "methods", multiple=True, required=True,
              help='method or "method:key=value,..." (repeatable), e.g. --method npo_gdr --method ga:lr=5e-5')
@click.option("--seeds", default="0,1,2", show_default=True, help="unlearning seeds (batch order); the table "
              "reports the median and min-max over them")
@click.option("--model", default="textworld", show_default=True, help="a causal-LM folder, or textworld")
@click.option("--retrained", default="textworld-retrained", show_default=True,
              help="the retrained reference for PrivLeak and the ref_* distances (a folder, or none)")
@click.option("--world", "world_dir", default=None, help="world folder (default: the model's world)")
@click.option("--relearn", "relearn_budgets", default=None, help="also run the relearning attack on every "
              "unlearned model at these fine-tuning steps, e.g. 0,5,10,20")
@click.option("--attack", "attacks", multiple=True, type=click.Choice(["in-context", "step-by-step"]),
              help="also run this attack on every model (repeatable)")
@click.option("--scalability", "sizes", default=None, help="MUSE scalability per method (first seed): forget-set "
              "sizes in entities, e.g. 1,2,4")
@click.option("--sustainability", is_flag=True, help="MUSE sustainability per method (first seed): one request per "
              "forget entity, in sequence")
@click.option("--threads", default=1, type=int, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="run folder (results.json, "
              "samples.jsonl, report.html)")
@click.option("--overwrite", is_flag=True)
@friendly_errors
def bench_cmd(methods: tuple[str, ...], seeds: str, model: str, retrained: str, world_dir: str | None,
              relearn_budgets: str | None, attacks: tuple[str, ...], sizes: str | None, sustainability: bool,
              threads: int, out: str, overwrite: bool) -> None:
    """The MUSE table over several seeds: unlearn the whole forget split with every --method and seed, evaluate
    the six-way metrics (and optionally the relearning attack); results.json in the evaluation report's format and
    report.html (`erasekit report OUT` rebuilds it)."""
    import torch

    from ..errors import InvalidValueError
    from ..io import RunLock, check_writable
    from ..text.models import load_text_model, resolve_world
    from ..text.muse import run_methods, text_results, write_results

    check_writable(Path(out) / "results.json", overwrite, "results")
    if threads < 1:
        raise InvalidValueError(f"--threads must be >= 1, got {threads}")
    specs = _specs(methods)
    seed_list = _ints(seeds, "--seeds")
    budgets = _ints(relearn_budgets, "--relearn") if relearn_budgets is not None else ()
    size_list = _ints(sizes, "--scalability") if sizes is not None else ()
    torch.set_num_threads(threads)
    lm, tok, folder = load_text_model(model)
    w = resolve_world(world_dir, folder)
    ref = None
    if retrained.lower() != "none":
        ref_lm, ref_tok, _ = load_text_model(retrained)
        ref = (ref_lm, ref_tok)
    t0 = time.perf_counter()
    with RunLock(out):
        variants, samples = run_methods(lm, tok, w, specs, seed_list, reference=ref, relearn_budgets=budgets,
                                        attacks=attacks, scalability=size_list, sustainability=sustainability,
                                        threads=threads,
                                        log=lambda s: console.print(s, highlight=False))
        results = text_results(variants, model=str(folder), world_sha256=w.content_sha256(),
                               extra={"retrained": retrained, "seeds": list(seed_list), "methods": list(methods),
                                      "relearn_budgets": list(budgets), "attacks": list(attacks),
                                      "scalability": list(size_list), "sustainability": sustainability,
                                      "seconds": round(time.perf_counter() - t0, 1)})
        write_results(out, results, samples)
    from ..report.markdown import results_table
    from ..report.text_report import LEADERBOARD

    present = {k for v in results["variants"].values() for k in v["mean"]}
    click.echo(results_table(results, [c for c in LEADERBOARD if c in present] + ["edit_seconds"]))
    _write_report(out)


@text.command("attack")
@click.option("--kind", type=click.Choice(["relearn", "in-context", "step-by-step", "restor"]), required=True)
@click.option("--model", default="textworld", show_default=True, help="a causal-LM folder, or textworld")
@click.option("--edit", "edits", multiple=True, help="edit file(s) to apply first (the unlearned model)")
@click.option("--world", "world_dir", default=None, help="world folder (default: the model's world)")
@click.option("--budgets", default=None, help="relearn: fine-tuning steps to measure at (default 0,5,10,20); "
              "restor: unlearning steps of a budget curve per method (default: none, the methods' own steps)")
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
    if budgets is not None and kind not in ("relearn", "restor"):
        raise InvalidValueError(f"--budgets is for --kind relearn or restor, not {kind}")
    steps = _ints(budgets, "--budgets") if budgets is not None else ((0, 5, 10, 20) if kind == "relearn" else ())
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

        res = restor(lm, tok, w, list(methods) or ["ga", "npo"], budgets=steps)
    else:
        res = attacks.in_context(lm, tok, w.qa("forget"))
    write_results(out, {"format": "erasekit.text.attack/1", "kind": kind, "model": str(folder),
                        "edits": list(edits), "world_sha256": w.content_sha256(), "result": res})
    click.echo(json.dumps(res.get("curve") or {k: v for k, v in res.items() if k != "rows"}))
    _write_report(out)


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
    _write_report(out)


from .text_mark_cmds import mark as _text_mark  # noqa: E402  (`erasekit text mark ...`)

text.add_command(_text_mark)
from .text_provenance_cmds import provenance as _text_provenance  # noqa: E402  (`erasekit text provenance ...`)

text.add_command(_text_provenance)

COMMANDS = [text]
