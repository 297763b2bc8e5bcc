"""`erasekit eval` and `erasekit bench`: the evaluation harness on the command line."""

from __future__ import annotations

from pathlib import Path

import click

from ._util import console, friendly_errors, progress_bar


def _progress(adv):
    def cb(n: int = 0, info: str = "", description: str | None = None, total: int | None = None) -> None:
        adv(n, info=info, description=description, total=total)

    return cb


@click.command("eval")
@click.option("--model", default=None, help="registered name, local diffusers folder or hub id (default: the suite's)")
@click.option("--edit", "edits", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="edit file(s) applied in order (repeat)")
@click.option("--shield", default=None, help='shield spec protecting each target, e.g. "sld:strong" or "detector+sld"')
@click.option("--attack", default=None, help='attack every variant (base included) on the suite\'s attack prompts for '
              'the robustness metrics, e.g. "copycat" or "unlearndiffatk:steps=20" (see `erasekit ls attacks`)')
@click.option("--suite", default="default", show_default=True, help="shipped suite name or a YAML file")
@click.option("--concepts", default=None, help="comma-separated target concepts (default: the edit's, else the suite's)")
@click.option("--name", default="edited", show_default=True, help="name of the edited variant in the results")
@click.option("--limit", default=None, type=int, help="cap every prompt set at this many images (quick runs)")
@click.option("--clip", default=None, type=click.Path(exists=True, file_okay=False),
              help="local CLIP checkpoint folder: adds clip_score metrics (default: the suite's alignment.clip)")
@click.option("--device", default="cpu", show_default=True, help="torch device of the model (e.g. cuda)")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "bfloat16"]),
              help="model dtype (float16 on GPUs for full-size SD)")
@click.option("--out", default="runs/eval", show_default=True, type=click.Path(file_okay=False))
@friendly_errors
def eval_cmd(model, edits, shield, attack, suite, concepts, name, limit, clip, device, dtype, out) -> None:
    """Evaluate the base model (and an edited one) on a suite: results.json, samples.jsonl, report.html."""
    from ..edits import Edit
    from ..evaluation import Variant, evaluate
    from ..report.eval_report import write_eval_report
    from ..suite import load_suite
    from ..world import CATALOGUE

    s = load_suite(suite).limited(limit)
    if shield:
        from ..shields import parse_spec as parse_shield

        parse_shield(shield)  # a bad spec fails here, with suggestions, before any generation
    if attack:
        from ..attacks import parse_spec

        parse_spec(attack)  # likewise
    variants = [Variant("base", attack=attack)] if attack else []
    if edits or shield:
        variants.append(Variant(name, edits=tuple(edits), shield=shield, attack=attack))
    targets = None
    if concepts:
        targets = [c.strip() for c in concepts.split(",") if c.strip()]
    elif edits:
        erased = [c for e in edits for c in Edit.load(e).manifest.get("erase", [])]
        targets = []
        for c in erased:
            if s.is_custom(c):
                targets.append(c)
                continue
            try:
                targets.append(CATALOGUE.find(c)[1].name)
            except KeyError:
                console.print(f"[yellow]{c!r} is neither a target of the suite nor a toy-world concept; "
                              "not evaluated as a target[/]")
        targets = targets or None
    pipe = _load_for(model or s.model, device, dtype) if (device != "cpu" or dtype != "float32") else None
    with progress_bar("evaluating", None) as adv:
        res = evaluate(s, variants, out, model=model, targets=targets, progress=_progress(adv), clip=clip, pipe=pipe)
    report = write_eval_report(res, Path(out) / "report.html", oracle=res["_evaluator"])
    _print_summary(res)
    console.print(f"[bold green]report:[/] {report}")


@click.group("bench", invoke_without_command=True)
@click.option("--methods", default=None, help="comma-separated eraser names, e.g. uce,rece,mace")
@click.option("--concepts", default=None, help="comma-separated concepts (default: the suite's targets)")
@click.option("--suite", default="default", show_default=True)
@click.option("--model", default=None)
@click.option("--limit", default=None, type=int, help="cap every prompt set at this many images")
@click.option("--clip", default=None, type=click.Path(exists=True, file_okay=False),
              help="local CLIP checkpoint folder: adds clip_score metrics (default: the suite's alignment.clip)")
@click.option("--device", default="cpu", show_default=True, help="torch device of the model (e.g. cuda)")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "bfloat16"]))
@click.option("--out", default="runs/bench-methods", show_default=True, type=click.Path(file_okay=False))
@friendly_errors
@click.pass_context
def bench_cmd(ctx, methods, concepts, suite, model, limit, clip, device, dtype, out) -> None:
    """Erase each concept with each method and put them all on one leaderboard (results.json + report.html).

    Subcommands run the other benchmarks (e.g. `erasekit bench closed-form`)."""
    if ctx.invoked_subcommand is not None:
        return
    if not methods:
        raise click.UsageError("give --methods (e.g. --methods uce,rece) or a subcommand: "
                               + ", ".join(sorted(ctx.command.commands)))
    from ..evaluation import bench_methods
    from ..report.eval_report import write_eval_report
    from ..suite import load_suite

    s = load_suite(suite).limited(limit)
    ms = [m.strip() for m in methods.split(",") if m.strip()]
    cs = [c.strip() for c in concepts.split(",")] if concepts else list(s.targets)
    pipe = _load_for(model or s.model, device, dtype) if (device != "cpu" or dtype != "float32") else None
    with progress_bar("benchmarking", None) as adv:
        res = bench_methods(s, ms, cs, out, model=model, progress=_progress(adv), pipe=pipe, clip=clip)
    report = write_eval_report(res, Path(out) / "report.html", oracle=res["_evaluator"])
    _print_summary(res)
    console.print(f"[bold green]report:[/] {report}")


def _load_for(model: str | None, device: str, dtype: str):
    """The pipeline on `device` in `dtype` (the runner loads CPU float32 itself otherwise)."""
    import torch

    from ..models import load_pipeline

    if not model:
        raise click.UsageError("the suite names no model: pass --model")
    return load_pipeline(model, dtype=getattr(torch, dtype), device=device)


def _print_summary(res: dict) -> None:
    from rich.table import Table

    wanted = ["efficacy", "generality", "specificity_neighbours", "specificity_unrelated", "image_drift", "asr_pre",
              "asr", "clip_score_direct", "clip_score_unrelated"]
    cols = [c for c in wanted if any(c in v["mean"] for v in res["variants"].values())]  # only what was measured
    table = Table(title="mean over target concepts")
    table.add_column("variant")
    for c in cols:
        table.add_column(c)
    for name, v in res["variants"].items():
        table.add_row(name, *[f"{v['mean'][c]:.3f}" if c in v["mean"] else "" for c in cols])
    console.print(table)


from .erase_cmds import bench_closed_form_cmd  # noqa: E402

bench_cmd.add_command(bench_closed_form_cmd)
COMMANDS = [eval_cmd, bench_cmd]
