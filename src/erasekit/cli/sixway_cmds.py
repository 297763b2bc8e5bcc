"""`erasekit sixway`: MUSE's six ways adapted to images (`erasekit.sixway`), one table per erasure method."""

from __future__ import annotations

import click

from ._util import console, friendly_errors, progress_bar


@click.command("sixway")
@click.option("--method", "methods", multiple=True, required=True, help="an eraser (repeat for several), e.g. uce")
@click.option("--concepts", required=True, help='comma-separated concepts erased together, e.g. "Zorbo,Mossy,Kiko"')
@click.option("--suite", default="default", show_default=True, help="suite name or YAML (world, evaluator, prompts)")
@click.option("--model", default=None, help="model under test (default: the suite's)")
@click.option("--reference", default=None,
              help="a model that never saw the concepts' training images: PrivLeak's reference AUC (default: the "
                   "ideal 0.5, recorded as such)")
@click.option("--memorized-model", default=None,
              help="the model folder whose manifest lists memorized pairs (default: --model)")
@click.option("--sizes", default=None, help='scalability: concepts per request, e.g. "1,2" (the request erasing all '
              'is always measured)')
@click.option("--skip", default=None,
              help='ways not measured, comma-separated: verbatim, privacy, sustainability (e.g. a scalability sweep '
                   'over many concepts: --skip privacy,sustainability)')
@click.option("--limit", default=4, show_default=True, type=int, help="images per prompt set of the harness")
@click.option("--steps", default=None, type=int, help="sampling steps (default: the suite's, else the model's)")
@click.option("--members", default=16, show_default=True, type=int,
              help="privacy: training images per concept (and as many fresh ones)")
@click.option("--seeds", default=4, show_default=True, type=int, help="verbatim: generations per memorized caption")
@click.option("--out", default="runs/sixway", show_default=True, type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="replace an existing sixway.json / sixway.md in --out")
@friendly_errors
def sixway_cmd(methods, concepts, suite, model, reference, memorized_model, sizes, skip, limit, steps, members, seeds,
               out, overwrite) -> None:
    """Verbatim memorization, knowledge, privacy leakage, utility, scalability and sustainability of erasing CONCEPTS
    with each --method, measured through the evaluation harness, `membership` and `memorization`; writes
    OUT/sixway.json, OUT/sixway.md (one table per method) and the harness run OUT/eval."""
    from pathlib import Path

    from ..errors import InvalidValueError
    from ..io import RunLock, check_writable, check_writable_dir
    from ..sixway import SixWayConfig, markdown, run_sixway

    names = [c.strip() for c in concepts.split(",") if c.strip()]
    if not names:
        raise click.UsageError(f"--concepts {concepts!r} names no concept; e.g. --concepts Zorbo,Mossy")
    try:
        size_list = tuple(int(x) for x in sizes.split(",") if x.strip()) if sizes else ()
    except ValueError:
        raise InvalidValueError(f"--sizes {sizes!r} is not a comma-separated list of integers; e.g. --sizes 1,2") \
            from None
    skip_list = tuple(w.strip() for w in skip.split(",") if w.strip()) if skip else ()
    config = SixWayConfig(sizes=size_list, limit=limit, steps=steps, members=members, seeds=seeds, skip=skip_list)
    check_writable_dir(out)
    for f in ("sixway.json", "sixway.md"):
        check_writable(Path(out) / f, overwrite=overwrite, what="six-way result")
    with RunLock(out), progress_bar("six ways", None) as adv:
        res = run_sixway(list(methods), names, out, config, suite=suite, model=model, reference=reference,
                         memorized_model=memorized_model,
                         progress=lambda n=0, info="", description=None, total=None: adv(
                             n, info=info, description=description, total=total))
    console.print(markdown(res))
    console.print(f"[bold green]six ways:[/] {Path(out) / 'sixway.md'} ({res['seconds']} s)")


COMMANDS = [sixway_cmd]
