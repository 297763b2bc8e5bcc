"""`erasekit shield ls` and `erasekit shield check`: inference-time shields from the command line.

`generate`, `eval` and `attack` take `--shield SPEC` (see `erasekit.shields` for the grammar) with `--protect CONCEPT`;
the helpers `parse_keywords` and `shield_options` here are shared with them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import click
from rich.table import Table

from ..errors import InvalidValueError
from ._util import console, friendly_errors


def parse_keywords(items: Sequence[str]) -> dict[str, list[str]] | None:
    """["Zorbo=tin robot;metal android", ...] -> {"Zorbo": ["tin robot", "metal android"]}; [] -> None."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, kws = item.partition("=")
        if not sep or not name.strip():
            raise InvalidValueError(f"--keywords expects CONCEPT=kw1;kw2;..., got {item!r}")
        out[name.strip()] = [k.strip() for k in kws.split(";") if k.strip()]
    return out or None


def shield_options(fn):
    """The --shield / --protect / --keywords options, for any command that generates."""
    fn = click.option("--keywords", "keywords", multiple=True,
                      help="trigger keywords of a protected concept: CONCEPT=kw1;kw2 (repeatable; default: "
                           "catalogue)")(fn)
    fn = click.option("--protect", "protect", multiple=True,
                      help="protected concept the shields act on (repeatable)")(fn)
    fn = click.option("--shield", "shield", default=None,
                      help='inference-time shield spec, e.g. "sld:strong" or "detector+negative_prompt" '
                           "(erasekit shield ls)")(fn)
    return fn


@click.group("shield")
def shield() -> None:
    """Inference-time shields (no weight change): list them, check prompts against a detector."""


@shield.command("ls")
@click.argument("name", required=False)
@friendly_errors
def ls_cmd(name: str | None) -> None:
    """List shields and their options; with NAME, explain each option of that shield."""
    from ..shields import shields

    if name is None:
        table = Table(show_header=True, header_style="bold")
        table.add_column("shield"), table.add_column("description"), table.add_column("options (default)")
        for n in shields.names():
            cls = shields.get(n)
            opts = [("*" if f.name == cls.primary else "") + f"{f.name}={f.default!r}"
                    for f in dataclasses.fields(cls.config_cls)]
            table.add_row(n, shields.help(n), ", ".join(opts))
        console.print(table)
        console.print('spec: name[:opt=value,...], shields joined by "+"; * = primary option, settable without a key '
                      "(sld:strong); `erasekit shield ls NAME` explains the options")
        return
    cls = shields.get(name)
    table = Table(title=f"{name}: {shields.help(name)}", show_header=True, header_style="bold")
    table.add_column("option"), table.add_column("default"), table.add_column("meaning")
    for f in dataclasses.fields(cls.config_cls):
        table.add_row(("*" if f.name == cls.primary else "") + f.name, repr(f.default), f.metadata.get("help", ""))
    console.print(table)


@shield.command("check")
@click.option("--prompt", "prompts", multiple=True, required=True, help="prompt to check (repeatable)")
@click.option("--protect", "protect", multiple=True, required=True, help="protected concept (repeatable)")
@click.option("--keywords", "keywords", multiple=True, help="CONCEPT=kw1;kw2 (repeatable; default: the model's world)")
@click.option("--model", default="toyworld", show_default=True, help="pipeline whose text encoder the detector uses")
@click.option("--target-fpr", default=0.05, show_default=True, type=float,
              help="false-positive rate on unprotected prompts the threshold is calibrated to")
@click.option("--threshold", default=None, type=float, help="fixed similarity threshold instead of calibrating")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@friendly_errors
def check_cmd(prompts, protect, keywords, model, target_fpr, threshold, as_json) -> None:
    """Run the prompt detector (and Guardians' rewrite) on prompts; generates nothing."""
    from .. import load_pipeline
    from ..shields import protect as resolve
    from ..shields.guardians import Guardians, GuardiansConfig, rewrite_prompt

    from ..worlds import world_of_model

    pipe = load_pipeline(model)
    world = world_of_model(pipe)  # the model card's world: keywords and calibration prompts
    concepts = resolve(list(protect), parse_keywords(keywords), world=world)
    g = Guardians(GuardiansConfig(threshold=threshold, target_fpr=target_fpr), concepts, pipe=pipe, world=world)
    det = g.detector.detect(list(prompts))
    rows = []
    for i, p in enumerate(prompts):
        c = concepts[det.concept[i]] if det.flagged[i] else None
        rows.append({"prompt": p, "detected": bool(det.flagged[i]), "concept": c.name if c else None,
                     "score": round(float(det.score[i]), 4), "token_match": bool(det.token[i]),
                     "rewrite": rewrite_prompt(p, c, g.detector, g.config.max_ablations) if c else None})
    ident = g.detector.identity()
    if as_json:
        click.echo(json.dumps({"detector": ident, "results": rows}, indent=1))
        return
    cal = ident["calibration"]
    console.print(f"threshold {ident['threshold']:.4f}" + (
        f" (calibrated: target FPR {cal['target_fpr']}, achieved {cal['achieved_fpr']:.3f} on {cal['n']} "
        f"unprotected prompts)" if cal else " (fixed)") + f"; encoder {ident['encoder_sha256_16']}")
    table = Table(show_header=True, header_style="bold")
    for col in ("prompt", "detected", "concept", "score", "token", "rewrite"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["prompt"], "yes" if r["detected"] else "no", r["concept"] or "", f"{r['score']:.3f}",
                      "yes" if r["token_match"] else "", r["rewrite"] if r["rewrite"] is not None else "")
    console.print(table)


COMMANDS = [shield]
