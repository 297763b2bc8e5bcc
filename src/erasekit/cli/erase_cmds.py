"""`erasekit erase` (write an edit file) and `erasekit bench closed-form` (real-scale timing of the closed forms)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from ._util import console, friendly_errors, print_options, progress_bar


def _print_options(name: str) -> None:
    from ..erasers import get_eraser

    print_options(name, get_eraser(name))


@click.command("erase")
@click.option("--model", default="toyworld", show_default=True,
              help="registered name, local diffusers folder or hub id")
@click.option("--method", default="uce", show_default=True, help="eraser (see `erasekit ls erasers`)")
@click.option("--erase", "erase", multiple=True, help="concept prompt to erase (repeat for several)")
@click.option("--preserve", multiple=True, help="concept prompt to preserve (repeat for several)")
@click.option("--guide", multiple=True, help="guide concept: one for all, or one per --erase (default: method's)")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="method option, e.g. -o lamb=0.1 -o token=span (tuples: comma-separated)")
@click.option("--on", "on_edits", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="edit file(s) to apply first; the output then contains them too (erase one concept after another)")
@click.option("--world-defaults", "--catalogue-defaults", "world_defaults", is_flag=True,
              help="fill missing --guide/--preserve (and e.g. unsafe trigger phrases) from the model's world "
                   "(World.concept(c).request()), and 8 training-style templates for methods that take them")
@click.option("--show-config", is_flag=True, help="list the method's options and exit")
@click.option("--check", default="none", show_default=True,
              help="fine-tuning methods: early stop when an evaluator no longer sees the first --erase concept on "
                   "the world's direct prompts: 'world' (the model's world's evaluator; 'oracle' is an alias) or a "
                   "registered evaluator name; checked every -o check_every=N steps (25 when the method's is 0)")
@click.option("--progress", is_flag=True, help="fine-tuning methods: show a training progress bar")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="edit file to write (.safetensors)")
@click.option("--overwrite", is_flag=True, help="replace an existing output file")
@click.option("--sign-key", default=None, type=click.Path(exists=True, dir_okay=False),
              help="sign the edit's manifest with this secret key file (HMAC-SHA256; verified with --verify-key)")
@friendly_errors
def erase_cmd(model, method, erase, preserve, guide, options, on_edits, world_defaults, show_config, check,
              progress, out, overwrite, sign_key) -> None:
    """Erase concepts (closed-form or fine-tuning method) and write a reversible edit file."""
    from ..edits import Edit, compose
    from ..erasers import erase as run_erase
    from ..erasers import get_eraser, parse_options
    from ..errors import InvalidValueError

    get_eraser(method)  # unknown methods fail here, with suggestions
    if show_config:
        _print_options(method)
        return
    if not erase:
        raise InvalidValueError("give at least one --erase concept")
    if out is None:
        raise InvalidValueError("give --out PATH for the edit file (e.g. edits/x.safetensors)")
    config = parse_options(method, options)
    from ..io import check_writable

    check_writable(out, overwrite, "edit file")  # before any work: a finished edit must never be lost
    erase, preserve, guide = list(erase), list(preserve), list(guide) or None
    from ..worlds import world_of_model

    world = world_of_model(model)
    if world_defaults:
        reqs = [world.concept(c).request() for c in erase]
        erase = [p for r in reqs for p in r["erase"]]
        if guide is None:
            guide = [r["guide"] for r in reqs for _ in r["erase"]]
        if not preserve:
            preserve = list(dict.fromkeys(p for r in reqs for p in r["preserve"] if p not in erase))
        fields = {f[0]: f[1] for f in get_eraser(method).options()}
        if "templates" in fields and "templates" not in config and (method != "uce" or config.get("expand_prompts")):
            # training-style templates of the concept (the benchmarks' "+tpl" variants; held-out wording never)
            config["templates"] = world.templates(erase[0], 8)
    if check != "none" and "check_every" not in config and \
            dict((f[0], f[1]) for f in get_eraser(method).options()).get("check_every") == "0":
        config["check_every"] = 25  # a check that never runs would not stop anything
    from .. import load_pipeline

    hooks = None
    if get_eraser(method).trains:
        from ..erasers._training import TrainHooks

        if check != "none":
            from ..erasers._training import concept_hooks

            evaluator = world.evaluator if check in ("world", "oracle") else check
            if not evaluator:
                raise InvalidValueError(f"--check {check}: the model's world {world.name!r} has no evaluator; name "
                                        "one (erasekit ls evaluators)")
            hooks = concept_hooks(world, evaluator, erase[0], progress=progress)
        else:
            hooks = TrainHooks(progress=progress)
    elif check != "none" or progress:
        raise InvalidValueError(f"--check/--progress are for fine-tuning methods; {method!r} is closed-form")
    with progress_bar(f"{method}", None) as adv:
        adv(info="loading model")
        pipe = load_pipeline(model)
        base = [Edit.load(p) for p in on_edits]
        for e in base:
            e.apply(pipe)
        adv(info="erasing")
        edit = run_erase(pipe, method, erase=erase, preserve=preserve, guide=guide, hooks=hooks, **config)
        if base:
            edit = compose(base + [edit])
        path = edit.save(out, sign_key=sign_key)
    secs = edit.manifest.get("edit_seconds")
    low = f" ({len(edit.factors)} as low-rank factors)" if edit.factors else ""
    console.print(f"wrote {path} ({len(edit.names)} tensors{low}, {edit.num_bytes() / 2**20:.2f} MiB"
                  + (f", edit {secs:.2f} s" if secs is not None else "") + f"): erase={erase}")


@click.command("closed-form")
@click.option("--concepts", "counts", multiple=True, type=int, default=(1, 100), show_default=True,
              help="number of concepts erased at once (repeatable)")
@click.option("--methods", default="uce,realera,leace", show_default=True,
              help="comma-separated erasers (rece/mace encode 77 rows of many prompts per concept: 100 concepts "
                   "take minutes on 2 cores; try --methods rece,mace --concepts 1 --concepts 10)")
@click.option("--repeats", default=3, show_default=True, type=int)
@click.option("--json-out", default=None, type=click.Path(dir_okay=False), help="also write the results as JSON")
@friendly_errors
def bench_closed_form_cmd(counts, methods, repeats, json_out) -> None:
    """Edit time of each closed form on an SD1.5-sized UNet + CLIP ViT-L/14 text encoder (random weights, CPU)."""
    from ..erasers.bench import real_scale_benchmark

    names = [m.strip() for m in methods.split(",") if m.strip()]
    with progress_bar("closed-form bench", len(names) * len(counts)) as adv:
        result = real_scale_benchmark(names, list(counts), repeats=repeats, progress=adv)
    table = Table(title=f"closed-form edit time (median of {repeats}), {result['machine']}", header_style="bold")
    for col in ("method", "concepts", "median s", "min s", "peak Δ MiB", "process peak GiB"):
        table.add_column(col)
    for r in result["rows"]:
        table.add_row(r["method"], str(r["concepts"]), f"{r['median_s']:.3f}", f"{r['min_s']:.3f}",
                      f"{r['peak_delta_gib'] * 1024:.0f}", f"{r['peak_rss_gib']:.2f}")
    console.print(table)
    console.print(f"model load {result['load_s']:.1f} s (excluded); "
                  f"RSS after load {result['rss_after_load_gib']:.2f} GiB")
    if json_out:
        from ..io import atomic_write_text

        atomic_write_text(Path(json_out), json.dumps(result, indent=2))


COMMANDS = [erase_cmd]  # `bench closed-form` is added to the `bench` group in eval_cmds
