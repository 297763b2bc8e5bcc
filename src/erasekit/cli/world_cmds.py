"""`erasekit world ...`: render scenes, build the dataset manifest, train the toy model, inspect the shipped one."""

from __future__ import annotations

import json
import time

import click
from pathlib import Path

from ._util import console, friendly_errors, progress_bar


@click.group("world")
def world() -> None:
    """The toy world: render, dataset, train, info."""


@world.command("render")
@click.option("--object", "obj", default="none", help="object name (with --colour), or use --character")
@click.option("--colour", default="none")
@click.option("--artist", default="none")
@click.option("--character", default="none")
@click.option("--unsafe", default="none")
@click.option("--seed", default=0, type=int, show_default=True)
@click.option("-n", "--num", default=1, type=int, show_default=True, help="how many (seeds seed..seed+n-1)")
@click.option("--out", default="runs/render.png", show_default=True, type=click.Path(dir_okay=False))
@click.option("--overwrite", is_flag=True, help="replace an existing output file")
@friendly_errors
def render_cmd(obj, colour, artist, character, unsafe, seed, num, out, overwrite) -> None:
    """Render ground-truth scenes to a PNG grid."""
    import numpy as np

    from ..io import check_writable

    if num < 1:
        raise click.UsageError(f"-n/--num must be >= 1, got {num}")
    if seed < 0:
        raise click.UsageError(f"--seed must be >= 0, got {seed}")
    check_writable(out, overwrite, "image grid")

    from ..report import save_grid
    from ..toyworld import Scene, render

    imgs = np.stack([render(Scene(object=obj, colour=colour, artist=artist, character=character, unsafe=unsafe,
                                  seed=seed + i)) for i in range(num)])
    save_grid(imgs, out, ncol=min(num, 8))
    console.print(f"wrote {out}")


@world.command("dataset")
@click.option("--seed", default=0, type=int, show_default=True)
@click.option("--scale", default=1.0, type=float, show_default=True, help="multiplies every concept count")
@click.option("--out", default="runs/dataset-manifest.json", show_default=True, type=click.Path(dir_okay=False))
@friendly_errors
def dataset_cmd(seed, scale, out) -> None:
    """Build the training set and write its manifest (counts per concept, seed, content hash)."""
    from ..io import atomic_write_text
    from ..toyworld.dataset import build_dataset

    t = time.time()
    data = build_dataset(seed, scale)
    atomic_write_text(out, json.dumps(data.manifest, indent=1))
    console.print(f"{len(data)} images in {time.time() - t:.1f} s; sha256 {data.manifest['content_sha256'][:16]}...; wrote {out}")


# what a training folder of `erasekit world train` holds (a rerun resumes from it)
TRAIN_FOLDER_ENTRIES = ("checkpoints", "pipeline", "oracle.safetensors", "oracle.json", "manifest.json")


def check_train_options(options: dict) -> None:
    """Bad numbers fail before any work, naming the option: steps and seeds >= 0, a finite scale > 0."""
    import math

    from ..errors import InvalidValueError

    for k, v in options.items():
        flag = "--" + k.replace("_", "-")
        if k == "scale":
            if not math.isfinite(v) or v <= 0:
                raise InvalidValueError(f"{flag} must be a finite number > 0 (dataset size multiplier), got {v}")
        elif v < 0:
            raise InvalidValueError(f"{flag} must be >= 0, got {v}")


def check_train_folder(out: Path) -> None:
    """`out` must be new, empty, or a previous training run (resumed); anything else is refused, so a typo never
    mixes checkpoints into someone's folder."""
    from ..errors import InvalidValueError
    from ..io import check_writable_dir

    if out.exists() and not out.is_dir():
        raise InvalidValueError(f"--out {str(out)!r} is a file; give a training folder")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        foreign = [e for e in entries if e not in TRAIN_FOLDER_ENTRIES]
        if foreign and not any(e in TRAIN_FOLDER_ENTRIES for e in entries):
            raise InvalidValueError(f"--out {str(out)!r} is not empty and is not a previous training run (it holds "
                                    f"{foreign[0]!r}); choose a new or empty folder, or the folder of the run to resume")
    check_writable_dir(out)


@world.command("train")
@click.option("--out", default="runs/toyworld", show_default=True, type=click.Path(file_okay=False),
              help="training folder (checkpoints live here; rerun the same command to resume)")
@click.option("--seed", default=0, type=int, show_default=True)
@click.option("--scale", default=1.0, type=float, show_default=True, help="dataset size multiplier")
@click.option("--vae-steps", default=None, type=int)
@click.option("--oracle-steps", default=None, type=int)
@click.option("--text-steps", default=None, type=int, help="contrastive text-encoder pretraining steps (0 = none)")
@click.option("--joint-steps", default=None, type=int, help="text encoder + UNet steps")
@click.option("--unet-steps", default=None, type=int, help="UNet-only steps on cached text features")
@click.option("--threads", default=0, type=int, help="torch threads (0 = default)")
@click.option("--grammar", default="v1", type=click.Choice(["v1", "v2"]), show_default=True,
              help="caption grammar: v1 (captions.py) or v2 (richer, decontaminated against the independent set)")
@click.option("--mark-share", default=0.0, type=float, show_default=True,
              help="share of object images stamped with the implicit (never captioned) mark")
@click.option("--memorized", default="", help="duplicate counts of memorized image-caption pairs, e.g. 1,10,100,1000")
@click.option("--nameless-artist", default="", help="an artist whose captions never name or describe it (a style "
              "only images can evoke)")
@click.option("--init-from", default="", help="a finished toy-world training folder, or 'toyworld' for the shipped "
              "model: reuse its oracle and VAE and start from its text encoder (skips those stages)")
@click.option("--install", is_flag=True, help="copy the result into the package as the shipped 'toyworld' model")
@friendly_errors
def train_cmd(out, seed, scale, vae_steps, oracle_steps, text_steps, joint_steps, unet_steps, threads, grammar,
              mark_share, memorized, nameless_artist, init_from, install) -> None:
    """Train oracle, VAE, text encoder + UNet (tens of minutes on 2 CPU cores: the stage times are written to the
    manifest; BENCHMARKS.md has the measured ones). Resumable."""
    import dataclasses
    import sys

    from ..toyworld.train import TrainConfig, export_assets, train_world

    overrides = {k: v for k, v in dict(seed=seed, scale=scale, vae_steps=vae_steps, oracle_steps=oracle_steps,
                                       text_steps=text_steps, joint_steps=joint_steps, unet_steps=unet_steps, threads=threads).items()
                 if v is not None}
    check_train_options(overrides)
    from ..errors import InvalidValueError

    if init_from == "toyworld":
        from ..toyworld.plugin import assets_dir

        init_from = str(assets_dir())
    elif init_from and not (Path(init_from) / "oracle.json").is_file():
        raise InvalidValueError(f"--init-from {init_from!r} is not a finished toy-world folder (no oracle.json); give "
                                "a folder that `erasekit world train` completed, or 'toyworld' for the shipped model")
    check_train_folder(Path(out))
    from ..toyworld.dataset_v2 import WorldV2Options

    try:
        counts = tuple(int(c) for c in memorized.split(",") if c.strip())
    except ValueError:
        raise InvalidValueError(f"--memorized takes comma-separated integers such as 1,10,100,1000, got {memorized!r}") from None
    WorldV2Options(mark_share=mark_share, memorized=counts, nameless_artist=nameless_artist)  # checks, naming the value
    cfg = dataclasses.replace(TrainConfig(), **overrides, grammar=grammar, mark_share=mark_share, memorized=counts,
                              nameless_artist=nameless_artist, init_from=init_from)
    with progress_bar("training", None) as adv:
        state = {"stage": None}

        def progress(stage: str, step: int, total: int, info: dict) -> None:
            if stage != state["stage"]:
                state["stage"] = stage
                adv(0, description=stage, total=total)
            adv(1, info=" ".join(f"{k} {v:.4f}" for k, v in info.items()))

        train_world(out, cfg, progress=progress, command="erasekit " + " ".join(sys.argv[1:]))
    console.print(f"trained model in {out}")
    if install:
        console.print(f"installed into {export_assets(out)}")


@world.command("info")
@friendly_errors
def info_cmd() -> None:
    """Print the shipped toy model's manifest (training command, config, data hash, timings, quality)."""
    from ..toyworld.plugin import manifest as toyworld_manifest

    click.echo(json.dumps(toyworld_manifest(), indent=1))


COMMANDS = [world]
