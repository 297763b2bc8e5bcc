"""`erasekit attack`: run a red-team attack against a model (base, or with edit files applied) and write the result
JSON plus a PNG grid (row 1: the original prompts, row 2: the attack) on the target."""

from __future__ import annotations

from pathlib import Path

import click

from ._util import console, friendly_errors, print_options, progress_bar


def _print_options(name: str) -> None:
    from ..attacks import get_attack

    print_options(name, get_attack(name))


def parse_attack_options(name: str, pairs: tuple[str, ...]) -> dict:
    """CLI "key=value" strings -> typed options of attack `name` (tuples: comma-separated)."""
    from ..attacks import get_attack
    from ..config import parse_options

    return parse_options(name, get_attack(name).config_cls, pairs)


@click.command("attack")
@click.option("--model", default="toyworld", show_default=True, help="registered name, local diffusers folder or hub id")
@click.option("--edit", "edits", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="edit file to apply to the target (repeat to apply several, in order); the base stays unedited")
@click.option("--attack", "attack", required=True, help="attack name (see `erasekit ls attacks`)")
@click.option("--concept", default=None, help="concept to revive (toy world: a catalogue name)")
@click.option("--prompt", "prompts", multiple=True, help="prompt to attack (repeat; default: the concept's prompts)")
@click.option("-n", "--num-prompts", default=4, show_default=True, type=int, help="default prompts to attack")
@click.option("--steps", default=None, type=int, help="budget: optimisation steps per prompt (default: the attack's)")
@click.option("--max-seconds", default=None, type=float, help="budget: wall seconds per prompt")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE", help="attack option, e.g. -o k=3")
@click.option("--show-config", is_flag=True, help="list the attack's options and exit")
@click.option("--shield", default=None, help='shield spec protecting the concept on the target, e.g. "sld:strong"')
@click.option("--out", default="runs/attack", show_default=True, type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="replace an earlier attack result in --out")
@click.option("--verify-key", default=None, type=click.Path(exists=True, dir_okay=False), help="refuse --edit files not signed with this key file (HMAC-SHA256)")
@friendly_errors
def attack_cmd(model, edits, attack, concept, prompts, num_prompts, steps, max_seconds, seed, options, show_config,
               shield, out, overwrite, verify_key) -> None:
    """Attack a model to revive an erased concept; writes OUT/result.json and OUT/grid.png."""
    import copy

    import numpy as np

    from .. import load_pipeline
    from ..attacks import get_attack, run_attack
    from ..edits import Edit
    from ..errors import InvalidValueError
    from ..report.images import save_grid

    method = get_attack(attack)  # unknown names fail here, with suggestions
    if show_config:
        _print_options(attack)
        return
    if not concept:
        raise InvalidValueError("give --concept NAME (the model's world lists its concepts: `erasekit ls concepts`)")
    from ..io import check_writable

    check_writable(Path(out) / "result.json", overwrite, "attack result")  # before any work
    config = parse_attack_options(attack, options)
    if steps is not None:
        config["steps"] = steps
    if max_seconds is not None:
        config["max_seconds"] = max_seconds
    config["seed"] = seed
    from ..worlds import world_of_model

    world = world_of_model(model)  # the model card names its world; its evaluator is the success check
    evaluator = world.evaluator or None
    with progress_bar(f"attack {attack}", None) as adv:
        adv(info="loading model")
        base = load_pipeline(model)
        target = copy.deepcopy(base) if edits else base
        for path in edits:
            Edit.load(path, verify_key=verify_key).apply(target)  # refuses edits made for other base weights
        adv(info="attacking", total=len(prompts) or num_prompts)
        shield_obj = None
        if shield:
            from ..shields import get_shield

            shield_obj = get_shield(shield, concepts=[concept] if concept else (), pipe=target)
        result = run_attack(attack, target, concept, base_pipe=base if method.needs_base else None,
                            evaluator=evaluator, world=world,
                            prompts=list(prompts) or None, n_prompts=num_prompts, progress=adv, shield=shield_obj,
                            **config)
    out = Path(out)
    result.config["model"], result.config["edits"], result.config["shield"] = model, list(edits), shield
    path = result.save(out)
    from ..attacks import AttackContext

    ctx = AttackContext(target, None, result.concept, None, None, None, int(result.config["sample_steps_used"]),
                        float(result.config["guidance_used"]))
    before = ctx.render_prompts(result.prompts, result.seeds)
    after = result.generate(target)
    save_grid(np.concatenate([before, after]), out / "grid.png", ncol=len(result.prompts))
    console.print(f"{attack} on {model}{' + ' + ', '.join(edits) if edits else ''}, concept {result.concept!r}: "
                  f"pre-attack {result.asr_pre:.0%} -> ASR {result.asr:.0%} over {len(result.prompts)} prompts "
                  f"({result.seconds:.1f} s)")
    for lg in result.logs:
        console.print(f"  {'broken' if lg.success else 'held '} {lg.best_prompt!r} ({lg.steps} steps, {lg.seconds:.1f} s)")
    console.print(f"wrote {path} and {out / 'grid.png'}")


COMMANDS = [attack_cmd]
