"""`erasekit ls`, `erasekit generate`, `erasekit demo`."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.table import Table

from ._util import console, friendly_errors, progress_bar


def registries() -> dict:
    """Every registry `erasekit ls` shows, by plural name."""
    from ..models import models

    from ..worlds import load_plugins, worlds

    load_plugins()
    out = {"models": models, "worlds": worlds}
    for mod, attr in (("erasekit.erasers", "erasers"), ("erasekit.guards", "guards"), ("erasekit.shields", "shields"),
                      ("erasekit.attacks", "attacks"), ("erasekit.metrics", "metrics"),
                      ("erasekit.evaluators", "evaluators"), ("erasekit.marks", "marks"),
                      ("erasekit.marks.attacks", "mark_attacks"), ("erasekit.text.unlearn", "text_unlearners")):
        try:
            import importlib

            out[attr] = getattr(importlib.import_module(mod), attr)
        except ModuleNotFoundError:
            continue
    return out


@click.command("ls")
@click.argument("kind", required=False)
@friendly_errors
def ls_cmd(kind: str | None) -> None:
    """List what erasekit knows: models, erasers, shields, attacks, metrics, evaluators, concepts."""
    from ..errors import UnknownNameError
    from ..worlds import get_world, worlds

    regs = registries()
    kinds = list(regs) + ["concepts", "benchmarks"]
    if kind is not None and kind not in kinds:
        raise UnknownNameError("listing", kind, kinds)
    for name in [kind] if kind else kinds:
        table = Table(title=name, show_header=True, header_style="bold")
        if name == "benchmarks":
            from ..benchmark import load_bench_spec, shipped_specs

            table.add_column("spec"), table.add_column("description")
            for n in shipped_specs():
                table.add_row(n, load_bench_spec(n).description.split(". ")[0])
        elif name == "concepts":
            table.add_column("world"), table.add_column("family"), table.add_column("concept")
            table.add_column("training images")
            for wname in worlds.names():
                w = get_world(wname)
                counts = w.training_counts() or {}
                for family, items in w.concepts().items():
                    for c in items:
                        table.add_row(wname, family, c, str(counts.get(family, {}).get(c, "")))
        else:
            table.add_column("name"), table.add_column("description")
            for n in regs[name].names():
                table.add_row(n, regs[name].help(n))
        console.print(table)


@click.command("generate")
@click.option("--model", default="toyworld", show_default=True, help="registered name, local diffusers folder or hub id")
@click.option("--prompt", "prompts", multiple=True, required=True, help="prompt (repeat for several)")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("-n", "--num", default=4, show_default=True, type=int, help="images per prompt")
@click.option("--steps", default=None, type=int, help="denoising steps (default: the model's)")
@click.option("--guidance", default=None, type=float, help="classifier-free guidance (default: the model's)")
@click.option("--negative-prompt", default=None)
@click.option("--edit", "edits", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="edit file to apply first (repeat to apply several, in order)")
@click.option("--shield", default=None, help='shield spec, e.g. "negative_prompt+sld:strong" (needs --protect)')
@click.option("--protect", "protect", multiple=True, help="concept the shield protects (repeat)")
@click.option("--transport", is_flag=True,
              help="SPM facilitated transport: scale each SPM --edit per prompt by its similarity to the erased "
                   "concepts instead of applying it fully (other edits are applied as usual)")
@click.option("--out", default="runs/generate.png", show_default=True, type=click.Path(dir_okay=False))
@click.option("--overwrite", is_flag=True, help="replace an existing output file")
@click.option("--verify-key", default=None, type=click.Path(exists=True, dir_okay=False), help="refuse --edit files not signed with this key file (HMAC-SHA256)")
@friendly_errors
def generate_cmd(model, prompts, seed, num, steps, guidance, negative_prompt, edits, shield, protect, transport,
                 out, overwrite, verify_key) -> None:
    """Generate a PNG grid (one row per prompt) with any SD1.x pipeline, optionally with edits applied."""
    from .. import generate, load_pipeline
    from ..edits import Edit
    from ..report.images import save_grid
    from ..io import check_writable
    from ..sampling import check_sampling, resolve_sampling

    check_writable(out, overwrite, "image grid")  # before any work
    check_sampling(steps, guidance)
    if num < 1:
        raise click.UsageError(f"-n/--num must be >= 1, got {num}")
    if seed < 0:
        raise click.UsageError(f"--seed must be >= 0, got {seed}")
    if shield and not protect:
        raise click.UsageError(f"--shield {shield!r} needs --protect CONCEPT (what it protects); without it the "
                               "shield would protect nothing")
    pipe = load_pipeline(model)
    loaded = [Edit.load(path, verify_key=verify_key) for path in edits]
    spms = [e for e in loaded if transport and e.method == "spm"]
    for e in loaded:
        if not any(e is s for s in spms):
            e.apply(pipe)  # refuses edits made for other base weights
    if transport and not spms:
        raise click.UsageError("--transport needs at least one --edit made with --method spm")
    if transport and shield:
        raise click.UsageError("--transport cannot be combined with --shield")
    steps, guidance = resolve_sampling(pipe, steps, guidance)
    flat = [p for p in prompts for _ in range(num)]
    seeds = [seed + j for _ in prompts for j in range(num)]
    t = time.time()
    with progress_bar("generating", len(flat)) as adv:
        if spms:
            from ..erasers.spm import Transport

            imgs = Transport(pipe, spms).generate(flat, seeds, steps=steps, guidance=guidance,
                                                  negative_prompt=negative_prompt, progress=adv)
        elif shield:
            from ..shields import get_shield, shielded_generate

            chain = get_shield(shield, concepts=list(protect), pipe=pipe)
            imgs, _ = shielded_generate(pipe, flat, seeds, shields=chain, steps=steps, guidance=guidance, progress=adv)
        else:
            imgs = generate(pipe, flat, seeds, steps=steps, guidance=guidance, negative_prompt=negative_prompt,
                            progress=adv)
    save_grid(imgs, out, ncol=num)
    console.print(f"wrote {out} ({len(flat)} images in {time.time() - t:.1f} s)")


@click.command("demo")
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--model", default=None, help="registered name or folder (default: the demo suites' model, the toy world)")
@click.option("--erase", default=None, help="concept erased in the demo (default: the erasure-quick spec's; '' skips)")
@click.option("--methods", default=None, help="comma-separated erasers compared (default: the spec's)")
@click.option("--suite", default=None, help="suite the erasure is evaluated on (default: the spec's)")
@click.option("--limit", default=None, type=int, help="cap every prompt set (quick runs)")
@friendly_errors
def demo_cmd(out, model, erase, methods, suite, limit) -> None:
    """The main job on the built-in default: judge the toy model's fidelity per concept family, erase one concept
    with the closed forms and few-shot fine-tuning, evaluate base vs edited through the harness, and write an HTML
    report and PNG grid; the erasure leaderboard is printed at the end."""
    from ..demo import run_demo
    from .eval_cmds import print_summary

    ms = tuple(m.strip() for m in methods.split(",") if m.strip()) if methods is not None else ()
    if methods is not None and not ms:
        raise click.UsageError(f"--methods {methods!r} names no eraser")
    from ..io import RunLock, check_writable_dir

    check_writable_dir(out)
    with RunLock(out), progress_bar("demo", None) as adv:
        report, bench = run_demo(Path(out), model=model, erase=erase, methods=ms, suite=suite, limit=limit,
                                 progress=adv)
    if bench is not None:
        print_summary(bench, ("detection", "detection_generality", "accuracy_neighbours", "accuracy_unrelated",
                              "image_drift", "edit_seconds"))
    console.print(f"[bold green]report:[/] {report}")


COMMANDS = [ls_cmd, generate_cmd, demo_cmd]
