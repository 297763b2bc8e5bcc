"""`erasekit sae train` and `erasekit sae check`: the sparse autoencoder of the `sae` shield (ItD).

    erasekit sae train --out saes/toy.safetensors                  # once per model (writes saes/toy.json too)
    erasekit sae check --sae saes/toy.safetensors --protect Zorbo --prompt "a picture of Zorbo" --prompt "a red ring"
    erasekit eval --shield "sae:file=saes/toy.safetensors" --concepts Zorbo --out runs/eval-sae
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._util import console, friendly_errors


@click.group("sae")
def sae() -> None:
    """Sparse autoencoder on the text encoder (ItD): train it once, check prompts with its zero-shot classifier."""


@sae.command("train")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="SAE file (.safetensors; a .json "
              "record is written beside it); required unless --show-config")
@click.option("--model", default="toyworld", show_default=True, help="pipeline whose text encoder the SAE reads")
@click.option("--prompts-file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="training prompts, one a line (default: the model's world's calibration corpus)")
@click.option("--option", "options", multiple=True, help="SAE training option key=value (repeatable), e.g. "
              "steps=500, k=16, layer=1; see --show-config")
@click.option("--show-config", is_flag=True, help="list the training options and their defaults, then exit")
@click.option("--overwrite", is_flag=True, help="replace an existing SAE file")
@friendly_errors
def train_cmd(out: str | None, model: str, prompts_file: str | None, options: tuple[str, ...], show_config: bool,
              overwrite: bool) -> None:
    """Train the SAE once on unlabelled prompts; every concept is then found in it without training."""
    from ..config import config_options, parse_options
    from ..shields._sae import SAETrainConfig

    if show_config:
        for name, default, help_ in config_options(SAETrainConfig):
            click.echo(f"{name} = {default}    {help_}")
        return
    config = SAETrainConfig(**parse_options("sae train", SAETrainConfig, list(options)))
    from ..errors import InvalidValueError
    from ..io import check_writable
    from ..shields._sae import record_path

    if not out:
        raise InvalidValueError("erasekit sae train needs --out FILE.safetensors")
    if not out.endswith(".safetensors"):
        raise InvalidValueError(f"--out {out!r} must end in .safetensors (its record goes to the .json beside it)")
    check_writable(out, overwrite, "SAE file")
    check_writable(record_path(out), overwrite, "SAE record")
    from .. import load_pipeline
    from ..shields._sae import corpus, save_sae, train_sae
    from ..worlds import world_of_model

    pipe = load_pipeline(model)
    if prompts_file:
        prompts = [p.strip() for p in Path(prompts_file).read_text().splitlines() if p.strip()]
    else:
        prompts = corpus(world_of_model(pipe), config.prompts, config.seed)
    sae_, record = train_sae(pipe, prompts, config,
                             log=lambda s, loss: console.print(f"step {s}/{config.steps} loss {loss:.4f}"))
    save_sae(sae_, out, {**record, "model": model})
    click.echo(f"{out}: {sae_.n_features} features (k={sae_.k}) on text-encoder layer {sae_.layer}, "
               f"{record['tokens']} tokens of {record['prompts']} prompts, {record['train_seconds']:.1f} s, "
               f"FVU {record['fvu_train']:.4f}, dead {record['dead_fraction']:.3f}")


@sae.command("check")
@click.option("--sae", "sae_file", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--protect", "protect", multiple=True, required=True, help="protected concept (repeatable)")
@click.option("--prompt", "prompts", multiple=True, required=True, help="prompt to classify (repeatable)")
@click.option("--model", default="toyworld", show_default=True)
@click.option("--options", default="", help='sae shield options, e.g. "top=64,neutral=100" (erasekit shield ls sae)')
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of lines")
@friendly_errors
def check_cmd(sae_file: str, protect: tuple[str, ...], prompts: tuple[str, ...], model: str, options: str,
              as_json: bool) -> None:
    """The SAE's zero-shot classifier on prompts: score, threshold, and whether the shield would deactivate."""
    from .. import load_pipeline
    from ..shields import get_shield

    pipe = load_pipeline(model)
    shield = get_shield(f"sae:file={sae_file}" + (f",{options}" if options.strip() else ""), concepts=list(protect),
                        pipe=pipe)
    scores = shield.scores(pipe, list(prompts))
    rows = [{"prompt": p, "score": round(float(s), 6), "deactivated": bool(s >= shield.threshold)}
            for p, s in zip(prompts, scores)]
    if as_json:
        click.echo(json.dumps({"threshold": shield.threshold, "features": shield.features, "results": rows}))
        return
    click.echo(f"threshold {shield.threshold:.6f}; features " +
               ", ".join(f"{k}: {len(v)}" for k, v in shield.features.items()))
    for r in rows:
        click.echo(f"{'DEACTIVATE' if r['deactivated'] else 'keep      '} {r['score']:.6f}  {r['prompt']}")


COMMANDS = [sae]
