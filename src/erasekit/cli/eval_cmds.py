"""`erasekit eval`, `erasekit report` and `erasekit bench`: the evaluation harness on the command line.

`eval` writes results.json + samples.jsonl (`erasekit.evaluation.evaluate`) and then the report through the same
function `erasekit report RUN_DIR` calls (`erasekit.report.eval_report.write_report`, from the files alone); the
terminal summary and every table use the metric names and arrows of the results' own `metrics_info`."""

from __future__ import annotations

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
@click.option("--concepts", default=None,
              help="comma-separated target concepts (default: the edit's, else the suite's)")
@click.option("--name", default="edited", show_default=True, help="name of the edited variant in the results")
@click.option("--limit", default=None, type=int, help="cap every prompt set at this many images (quick runs)")
@click.option("--clip", default=None, type=click.Path(exists=True, file_okay=False),
              help="local CLIP checkpoint folder: adds clip_score metrics (default: the suite's alignment.clip)")
@click.option("--device", default="cpu", show_default=True, help="torch device of the model (e.g. cuda)")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "bfloat16"]),
              help="model dtype (float16 on GPUs for full-size SD)")
@click.option("--out", default="runs/eval", show_default=True, type=click.Path(file_okay=False))
@click.option("--verify-key", default=None, type=click.Path(exists=True, dir_okay=False), help="refuse --edit files not signed with this key file (HMAC-SHA256)")
@click.option("--evaluator", default=None, help='judge replacing the suite\'s, with options, e.g. "toyworld-judge2" or '
              '"toyworld-oracle-v2:abstain=true" (see `erasekit ls evaluators`)')
@click.option("--images-from", default=None, type=click.Path(exists=True, file_okay=False),
              help="reuse the generated images of a finished run (content-keyed: only identical units are reused), "
                   "e.g. to judge the same images with a second --evaluator, then `erasekit agree RUN RUN2`")
@friendly_errors
def eval_cmd(model, edits, shield, attack, suite, concepts, name, limit, clip, device, dtype, out, verify_key,
             evaluator, images_from) -> None:
    """Evaluate the base model (and an edited/shielded one) on a suite: results.json, samples.jsonl, report.html."""
    from ..edits import Edit
    from ..evaluation import BASE, Variant, evaluate, evaluator_for
    from ..report.eval_report import write_report
    from ..suite import load_suite

    s = load_suite(suite).limited(limit)
    loaded = [Edit.load(e, verify_key=verify_key) for e in edits]  # integrity (+ signature) before any work
    if name == BASE:
        raise click.UsageError("--name base is reserved for the unedited model every evaluation measures; choose "
                               "another name (default: edited)")
    variants = [Variant(BASE, attack=attack)] if attack else []
    if edits or shield:
        variants.append(Variant(name, edits=tuple(edits), shield=shield, attack=attack))
    targets, judge = None, None
    if evaluator is not None:
        from ..evaluators import get_evaluator, parse_evaluator_spec

        judge_name, judge_options = parse_evaluator_spec(evaluator)
        judge = get_evaluator(judge_name, **judge_options)
    if concepts is not None:
        targets = [c.strip() for c in concepts.split(",") if c.strip()]
        if not targets:
            raise click.UsageError(f"--concepts {concepts!r} names no concept; give names separated by commas")
    elif edits:
        judge = judge or evaluator_for(s)  # built once, handed to evaluate
        world = s.world_for(judge)
        erased = [c for e in loaded for c in e.manifest.get("erase", [])]
        targets = []
        for c in erased:
            if world.knows(c):
                targets.append(world.concept(c).name)
            else:
                console.print(f"[yellow]{c!r} (erased by the edit) is not a concept of the suite's world; not "
                              "evaluated as a target[/]")
        targets = list(dict.fromkeys(targets)) or None
    from ..io import RunLock, check_writable_dir

    check_writable_dir(out)
    if images_from is not None:
        from ..evaluation.generate import reuse_images

        n = reuse_images(images_from, out)
        console.print(f"reusing {n} cached image file(s) of {images_from}")
    pipe = _load_for(model or s.model, device, dtype) if (device != "cpu" or dtype != "float32") else None
    with RunLock(out), progress_bar("evaluating", None) as adv:
        res = evaluate(s, variants, out, model=model, targets=targets, progress=_progress(adv), clip=clip, pipe=pipe,
                       evaluator=judge)
    report = write_report(out)
    print_summary(res)
    console.print(f"[bold green]report:[/] {report}")


def _judge_name(run_dir: str) -> str:
    """The evaluator a run was judged by (its results.json provenance), else the folder's name."""
    import json
    from pathlib import Path

    try:
        return json.loads((Path(run_dir) / "results.json").read_text())["provenance"]["evaluator"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return Path(run_dir).name


@click.command("agree")
@click.argument("run_a", type=click.Path(exists=True, file_okay=False))
@click.argument("run_b", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False),
              help="also write the table as JSON to this file (refuses an existing file)")
@friendly_errors
def agree_cmd(run_a, run_b, json_out) -> None:
    """Agreement of two judges on the same images: two runs of one suite differing only in --evaluator (make the
    second with --images-from RUN_A); per set and family, as a markdown table."""
    import json
    from pathlib import Path

    from ..errors import InvalidValueError
    from ..evaluation.agreement import agreement, agreement_table
    from ..io import atomic_write_text

    if json_out is not None and Path(json_out).exists():
        raise InvalidValueError(f"--json {json_out!r} exists; choose another file name")
    table = agreement(run_a, run_b)
    click.echo(agreement_table(table, _judge_name(run_a), _judge_name(run_b)))
    if json_out is not None:
        atomic_write_text(Path(json_out), json.dumps({"run_a": str(run_a), "run_b": str(run_b), "table": table},
                                                     indent=1))


@click.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="HTML file (default: RUN_DIR/report.html)")
@click.option("--markdown", is_flag=True, help="also print the leaderboard as a markdown table")
@friendly_errors
def report_cmd(run_dir, out, markdown) -> None:
    """Rebuild the HTML report of an evaluation, benchmark or mark bench run from its files alone."""
    from ..report.eval_report import read_run, write_report
    from ..report.markdown import results_table

    path = write_report(run_dir, out)
    if markdown:
        from ..report.mark_report import is_mark_run, read_mark_run

        if is_mark_run(run_dir):
            from ..marks.bench import markdown as mark_table

            click.echo(mark_table(read_mark_run(run_dir)))
        else:
            click.echo(results_table(read_run(run_dir)[0]))
    console.print(f"[bold green]report:[/] {path}")


@click.group("bench", invoke_without_command=True)
@click.option("--spec", default=None, help="a benchmark spec: shipped name (erasekit ls benchmarks) or YAML file")
@click.option("--methods", default=None, help="comma-separated eraser names, e.g. uce,rece,mace (without --spec)")
@click.option("--variants", default=None, help="with --spec: run only these of its variants (comma-separated names)")
@click.option("--concepts", default=None, help="comma-separated concepts (default: the spec's, else the suite's)")
@click.option("--suite", default=None, help="suite name or YAML (default: the spec's, else 'default')")
@click.option("--model", default=None)
@click.option("--limit", default=None, type=int, help="cap every prompt set at this many images")
@click.option("--clip", default=None, type=click.Path(exists=True, file_okay=False),
              help="local CLIP checkpoint folder: adds clip_score metrics (default: the suite's alignment.clip)")
@click.option("--device", default="cpu", show_default=True, help="torch device of the model (e.g. cuda)")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(["float32", "float16", "bfloat16"]))
@click.option("--markdown", default=None, type=click.Path(dir_okay=False),
              help="also write the table (the spec's columns) as markdown to this file")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1),
              help="concepts evaluated at once, each in its own process with torch's threads divided among them "
                   "(CPU machines: a small model keeps about one core busy per process)")
@click.option("--out", default="runs/bench-methods", show_default=True, type=click.Path(file_okay=False))
@friendly_errors
@click.pass_context
def bench_cmd(ctx, spec, methods, variants, concepts, suite, model, limit, clip, device, dtype, markdown, jobs,
              out) -> None:
    """Erase each concept with each method (or run a benchmark spec: erasers, shields, attacks) and put them all on
    one leaderboard through the evaluation harness (results.json, samples.jsonl, report.html).

    Subcommands run the other benchmarks (e.g. `erasekit bench closed-form`)."""
    if ctx.invoked_subcommand is not None:
        return
    import dataclasses

    from ..benchmark import BenchSpec, VariantSpec, load_bench_spec, run_bench
    from ..report.eval_report import write_report
    from ..report.markdown import grid_table, results_table
    from ..suite import load_suite

    if spec and methods:
        raise click.UsageError("give --spec or --methods, not both")
    if spec:
        bs = load_bench_spec(spec)
    elif methods:
        ms = [m.strip() for m in methods.split(",") if m.strip()]
        if not ms:
            raise click.UsageError(f"--methods {methods!r} names no eraser; e.g. --methods uce,rece")
        bs = BenchSpec(name="methods", variants=tuple(VariantSpec(m, method=m) for m in ms))
    else:
        raise click.UsageError("give --spec NAME_OR_YAML, --methods (e.g. --methods uce,rece) or a subcommand: "
                               + ", ".join(sorted(ctx.command.commands)))
    if variants is not None:
        if not spec:
            raise click.UsageError("--variants selects variants of a --spec")
        wanted = [v.strip() for v in variants.split(",") if v.strip()]
        known = [v.name for v in bs.variants]
        for w in wanted:
            if w not in known:
                from ..errors import UnknownNameError

                raise UnknownNameError(f"variant of spec {bs.name!r}", w, known)
        if not wanted:
            raise click.UsageError(f"--variants {variants!r} names no variant")
        bs = dataclasses.replace(bs, variants=tuple(v for v in bs.variants if v.name in wanted))
    if concepts is not None:
        cs = tuple(c.strip() for c in concepts.split(",") if c.strip())
        if not cs:
            raise click.UsageError(f"--concepts {concepts!r} names no concept")
        bs = dataclasses.replace(bs, concepts=cs)
    if limit is not None:
        bs = dataclasses.replace(bs, limit=limit)
    s = load_suite(suite or bs.suite)
    from ..io import RunLock, check_writable, check_writable_dir

    check_writable_dir(out)
    if markdown:
        check_writable(markdown, overwrite=True, what="markdown file")
    pipe = _load_for(model or s.model, device, dtype) if (device != "cpu" or dtype != "float32") else None
    with RunLock(out), progress_bar("benchmarking", None) as adv:
        res = run_bench(bs, out, pipe=pipe, model=model, progress=_progress(adv), suite=s, clip=clip, jobs=jobs)
    report = write_report(out, title=f"erasekit benchmark: {bs.name}")
    if bs.grid:  # protections x attacks: the matrix (tens of variants do not fit a per-variant terminal table)
        click.echo(grid_table(res))
    else:
        print_summary(res, bs.table)
    if markdown:
        from ..io import atomic_write_text

        text = results_table(res, bs.table, per_target=bs.rows == "target", per_family=bs.rows == "family")
        if bs.grid:  # the mean matrix, one matrix per concept, then the per-variant table
            per = [f"**{c}**\n\n" + grid_table(res, concept=c) for c in res["targets"]]
            text = "\n\n".join([grid_table(res)] + per + [text])
        atomic_write_text(markdown, text + "\n")
        console.print(f"[bold green]markdown:[/] {markdown}")
    console.print(f"[bold green]report:[/] {report}")


def _load_for(model: str | None, device: str, dtype: str):
    """The pipeline on `device` in `dtype` (the runner loads CPU float32 itself otherwise)."""
    import torch

    from ..models import load_pipeline

    from ._util import check_device

    if not model:
        raise click.UsageError("the suite names no model: pass --model")
    check_device(device)
    return load_pipeline(model, dtype=getattr(torch, dtype), device=device)


def print_summary(res: dict, columns: tuple[str, ...] = ()) -> None:
    """The leaderboard in the terminal: mean over targets of the measured metrics (or `columns`), named and arrowed
    as in the results' own `metrics_info`. One row per variant; one row per metric when that is too wide for the
    terminal (metric names are never cut)."""
    from rich.table import Table

    from ..report.eval_report import LEADERBOARD

    info = res.get("metrics_info") or {}
    wanted = list(columns) or list(LEADERBOARD) + ["clip_score_direct"]
    cols = [c for c in wanted if any(c in v["mean"] or c in v["cost"] for v in res["variants"].values())]

    def head(c: str) -> str:
        h = info.get(c, {}).get("higher_is_better")
        return c + ("" if h is None else " ↑" if h else " ↓")

    def cell(v: dict, c: str) -> str:
        x = v["mean"].get(c, v["cost"].get(c))
        return f"{x:.3f}" if isinstance(x, float) else ("" if x is None else str(x))

    names = list(res["variants"])
    wide = 4 + max(map(len, names), default=7) + sum(len(head(c)) + 3 for c in cols)
    table = Table(title="mean over target concepts")
    if wide <= console.width:
        table.add_column("variant", no_wrap=True)
        for c in cols:
            table.add_column(head(c), no_wrap=True)
        for name, v in res["variants"].items():
            table.add_row(name, *[cell(v, c) for c in cols])
    else:
        table.add_column("metric", no_wrap=True)
        for name in names:
            table.add_column(name)
        for c in cols:
            table.add_row(head(c), *[cell(v, c) for v in res["variants"].values()])
    console.print(table)


from .erase_cmds import bench_closed_form_cmd  # noqa: E402

bench_cmd.add_command(bench_closed_form_cmd)
@click.command("leaderboard")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--concepts", default=None, help="comma-separated concepts to score (default: every run's)")
@friendly_errors
def leaderboard_cmd(run_dirs, concepts) -> None:
    """Which protection is best per concept family on efficacy, specificity and robustness together: benchmark runs
    of the same protections and concepts (e.g. an erasure leaderboard, then its protections x attacks grid; a metric
    is read from the first run holding it), as a markdown table per family, best first."""
    from ..report.eval_report import read_run
    from ..report.markdown import family_leaderboard

    cs = None if concepts is None else [c.strip() for c in concepts.split(",") if c.strip()]
    click.echo(family_leaderboard([read_run(d)[0] for d in run_dirs], concepts=cs))


COMMANDS = [eval_cmd, bench_cmd, report_cmd, agree_cmd, leaderboard_cmd]
