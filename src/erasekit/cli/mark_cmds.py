"""`erasekit mark keygen | embed | detect | attack | bench`: provenance watermarks from the command line.

    erasekit mark keygen --method gaussian_shading --out me.key
    erasekit mark embed --key me.key --prompt "a red ring" -n 8 --out marked.png     # in-generation (latent methods)
    erasekit mark embed --key px.key --images photo.png --out marked.png             # post-hoc (pixel methods)
    erasekit mark detect --key me.key --images marked.png                           # score, p-value / bits, decision
    erasekit mark attack --attack "jpeg:quality=50+blur:sigma=1" --images marked.png --out attacked.png
    erasekit mark bench --out runs/marks                                            # methods x attacks table
    erasekit mark bench --edit e.safetensors --shield sld:strong --protect Zorbo --out runs/m   # composed (+ grids)

Images are PNG/JPEG files; a grid PNG written by `embed` is read back as its tiles (`--tile` pixels, default the
key's image size).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from ..errors import InvalidValueError
from ._util import console, friendly_errors


GRID_COLUMNS = 8  # images per row of an output grid (no padding, so `--tile` reads it back)


def _read_images(paths: tuple[str, ...], tile: int | None) -> np.ndarray:
    """(N, H, W, 3) uint8 from image files; an image larger than `tile` is split into tile x tile cells."""
    from PIL import Image, UnidentifiedImageError

    out = []
    for p in paths:
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise InvalidValueError(f"{p} is not an image file ({str(e).splitlines()[0][:80]}); give PNG or JPEG "
                                    "files") from None
        h, w = arr.shape[:2]
        if tile and (h > tile or w > tile):
            if h % tile or w % tile:
                raise InvalidValueError(f"{p} is {w}x{h}, not a grid of {tile}x{tile} images; pass --tile")
            out += [arr[r:r + tile, c:c + tile] for r in range(0, h, tile) for c in range(0, w, tile)]
        else:
            out.append(arr)
    if not out:
        raise InvalidValueError("no images given; pass --images FILE (repeatable)")
    sizes = {a.shape for a in out}
    if len(sizes) > 1:
        raise InvalidValueError(f"images differ in size: {sorted(sizes)}; detect images of one size per call")
    return np.stack(out)


def _write_grid(images: np.ndarray, out: str, overwrite: bool) -> None:
    from ..io import atomic_write_bytes, check_writable
    from ..report.images import grid, png_bytes

    check_writable(out, overwrite, what="image output")
    ncol = min(len(images), GRID_COLUMNS)
    atomic_write_bytes(out, png_bytes(grid(images, ncol, pad=0) if len(images) > 1 else images[0]))


@click.group("mark")
def mark() -> None:
    """Provenance watermarks: make keys, embed, detect, attack, and benchmark them."""


@mark.command("ls")
@friendly_errors
def ls_cmd() -> None:
    """List watermark methods and attacks with their options."""
    import dataclasses

    from ..marks import marks
    from ..marks.attacks import mark_attacks

    for n in marks.names():
        cls = marks.get(n)
        opts = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.config_cls))
        console.print(f"[bold]{n}[/] ({cls.kind}): {marks.help(n)}\n    {opts}", highlight=False)
    for n in mark_attacks.names():
        a = mark_attacks.get(n)
        opts = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(a.config_cls))
        console.print(f"[bold]attack {n}[/]: {a.help}" + (f"\n    {opts}" if opts else ""), highlight=False)


@mark.command("keygen")
@click.option("--method", required=True, help="watermark method, optionally with options: gaussian_shading, "
                                               "tree_ring:radius=3, dwtdct")
@click.option("--model", default="toyworld", show_default=True, help="pipeline whose latent / image size the key "
                                                                     "fits")
@click.option("--out", required=True, help="key file to write (safetensors)")
@click.option("--overwrite", is_flag=True, help="replace an existing key file")
@friendly_errors
def keygen_cmd(method: str, model: str, out: str, overwrite: bool) -> None:
    """Make a fresh secret key (from the OS's random source) for METHOD and the model's size."""
    from .. import load_pipeline
    from ..io import check_writable
    from ..marks import get_mark

    wm = get_mark(method)
    check_writable(out, overwrite, what="key file")
    key = wm.keygen(load_pipeline(model))
    key.save(out, overwrite=overwrite)
    console.print(f"wrote {out}: {key.method} key {key.fingerprint()} for shape {list(key.shape)}")


def _mark_for(key_path: str):
    from ..marks import Key, get_mark

    key = Key.load(key_path)
    from ..marks import marks

    cls = marks.get(key.method)
    wm = get_mark(key.method, **{k: v for k, v in key.config.items() if k in _field_names(cls.config_cls)})
    return wm, key


def _field_names(cls: type) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(cls)}


@mark.command("embed")
@click.option("--key", "key_path", required=True, help="key file (erasekit mark keygen)")
@click.option("--prompt", "prompts", multiple=True, help="prompt to generate marked images of (repeatable)")
@click.option("-n", "n", default=1, show_default=True, type=int, help="images per prompt")
@click.option("--seed", default=0, show_default=True, type=int, help="base seed (image i: seed + i)")
@click.option("--images", "images", multiple=True, help="post-hoc methods: image files to mark instead")
@click.option("--model", default="toyworld", show_default=True, help="pipeline that generates")
@click.option("--out", required=True, help="output PNG (a grid when several images)")
@click.option("--overwrite", is_flag=True, help="replace an existing output")
@friendly_errors
def embed_cmd(key_path, prompts, n, seed, images, model, out, overwrite) -> None:
    """Generate marked images (in-generation methods), or mark existing images (post-hoc methods)."""
    from ..io import check_writable

    check_writable(out, overwrite, what="image output")
    wm, key = _mark_for(key_path)
    if images:
        if wm.kind != "pixel":
            raise InvalidValueError(f"{wm.name} marks images while they are generated; pass --prompt, not --images")
        marked = wm.embed_images(key, _read_images(images, key.shape[0]))
    else:
        if not prompts:
            raise InvalidValueError("pass --prompt TEXT (repeatable) to generate marked images")
        if n < 1:
            raise InvalidValueError(f"-n must be >= 1, got {n}")
        unmarked = [p for p in prompts if not wm.marks_prompt(key, p)]
        if len(unmarked) == len(prompts):  # trigger-switched methods (safe_sd): nothing would be marked
            trigger = key.meta.get("trigger", "")
            raise InvalidValueError(f"no --prompt contains the key's trigger word {trigger!r}, so nothing would be "
                                    f"marked; add it, e.g. --prompt \"{prompts[0]} {trigger}\"")
        from .. import load_pipeline

        pipe = load_pipeline(model)
        ps = [p for p in prompts for _ in range(n)]
        marked = wm.generate(pipe, key, ps, [seed + i for i in range(len(ps))])
    _write_grid(marked, out, overwrite=True)
    done = len(marked) if images else n * (len(prompts) - len(unmarked))
    console.print(f"wrote {out}: {len(marked)} image(s), {done} marked with {wm.name} key {key.fingerprint()}"
                  + (f" ({len(unmarked) * n} without the trigger word are not)" if not images and unmarked else ""))


@mark.command("detect")
@click.option("--key", "key_path", required=True, help="key file")
@click.option("--images", "images", multiple=True, required=True, help="image files (a grid is split into tiles)")
@click.option("--tile", default=None, type=int, help="tile side of grid images (default: the key's image size)")
@click.option("--model", default="toyworld", show_default=True, help="pipeline to invert with (latent methods)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@friendly_errors
def detect_cmd(key_path, images, tile, model, as_json) -> None:
    """Detect KEY's mark in images: score, p-value or bit accuracy, and the decision under the recorded rule."""
    wm, key = _mark_for(key_path)
    pipe = None
    if wm.kind == "latent":
        from .. import load_pipeline
        from ..marks._latent import image_side

        pipe = load_pipeline(model)
        side = image_side(pipe)
    else:
        side = key.shape[0]
    arr = _read_images(images, tile or side)
    det = wm.detect(key, arr, pipe=pipe)
    if as_json:
        click.echo(json.dumps({"key": key.fingerprint(), **det.to_dict()}, indent=1))
        return
    console.print(f"{wm.name} key {key.fingerprint()}; rule: {det.rule['marked_if']} ({det.rule['source']})")
    for i in range(len(arr)):
        extra = (f" p={det.p_value[i]:.3g}" if det.p_value is not None else "") + \
                (f" bits={det.bit_acc[i]:.3f}" if det.bit_acc is not None else "")
        console.print(f"image {i}: score {det.score[i]:.4f}{extra} -> {'MARKED' if det.decision[i] else 'not marked'}")


@mark.command("attack")
@click.option("--attack", "spec", required=True, help='attack spec, e.g. "jpeg:quality=50+blur:sigma=1"')
@click.option("--images", "images", multiple=True, required=True, help="image files")
@click.option("--tile", default=None, type=int, help="tile side of grid images")
@click.option("--model", default="toyworld", show_default=True, help="pipeline for vae / img2img attacks")
@click.option("--seed", default=0, show_default=True, type=int, help="seed of random attacks")
@click.option("--out", required=True, help="output PNG")
@click.option("--overwrite", is_flag=True, help="replace an existing output")
@friendly_errors
def attack_cmd(spec, images, tile, model, seed, out, overwrite) -> None:
    """Apply an attack chain to images (the same to clean and marked images)."""
    from ..io import check_writable
    from ..marks.attacks import apply_attack, parse_attack

    check_writable(out, overwrite, what="image output")
    chain = parse_attack(spec)
    arr = _read_images(images, tile)
    pipe = None
    if any(a.needs_pipe for a, _ in chain):
        from .. import load_pipeline

        pipe = load_pipeline(model)
    _write_grid(apply_attack(chain, arr, pipe=pipe, seed=seed), out, overwrite=True)
    console.print(f"wrote {out}: {len(arr)} image(s) after {spec}")


@mark.command("bench")
@click.option("--method", "methods", multiple=True,
              help="method spec (repeatable), e.g. --method gaussian_shading:decoder_steps=50,statistic=correlation "
                   "(default: tree_ring, gaussian_shading, dwtdct)")
@click.option("--attack", "attacks", multiple=True,
              help='attack spec (repeatable; chain with +), e.g. --attack none --attack "jpeg:quality=50" (default: '
                   "none, jpeg:quality=50, blur:sigma=1, noise:std=0.05, crop:scale=0.75, vae, img2img:strength=0.3)")
@click.option("-n", "n", default=32, show_default=True, type=int, help="images per method")
@click.option("--keys", "n_keys", default=4, show_default=True, type=int, help="keys per method (identification)")
@click.option("--seed", default=0, show_default=True, type=int, help="base seed of prompts and images")
@click.option("--model", default="toyworld", show_default=True, help="pipeline")
@click.option("--guidance", default=None, type=float,
              help="generation guidance of clean and marked images (default: the model's)")
@click.option("--forgery", "forgeries", multiple=True,
              help='forgery attack spec (repeatable), e.g. --forgery "reprompt:prompt=Zorbo" --forgery imprint:steps=50')
@click.option("--edit", "edit", default=None, type=click.Path(dir_okay=False),
              help="edit file applied while generating (an erased model); latent marks are detected with the edited "
                   "and the base model, and compared with a reference without the edit")
@click.option("--verify-key", default=None, type=click.Path(exists=True, dir_okay=False),
              help="refuse an --edit file not signed with this key file (HMAC-SHA256)")
@click.option("--shield", default=None, help='inference-time shield generating with the marks, e.g. "sld:strong" '
                                             "(needs --protect)")
@click.option("--protect", "protect", multiple=True, help="concept the --shield protects (repeatable)")
@click.option("--detector", "detectors", multiple=True, type=click.Choice(["edited", "base"]),
              help="model latent marks are inverted with (repeatable; default with --edit: both)")
@click.option("--grid-images", default=8, show_default=True, type=int,
              help="columns of the same-seed grid PNG per method (clean, marked, attacked, residual); 0: none")
@click.option("--out", required=True, help="output folder: results.json + table.md (+ grid_<method>.png)")
@click.option("--overwrite", is_flag=True, help="replace existing results")
@friendly_errors
def bench_cmd(methods, attacks, n, n_keys, seed, model, guidance, forgeries, edit, verify_key, shield, protect,
              detectors, grid_images, out, overwrite) -> None:
    """Methods x attacks: TPR@1%/0.1% FPR, AUC, bit accuracy, identification, forgery, quality cost; with --edit /
    --shield, on an erased / shielded model, with a warning when the composition strips a mark."""
    from .. import load_pipeline
    from ..evaluators import get_evaluator
    from ..io import RunLock, check_writable
    from ..marks.bench import DEFAULT_ATTACKS, DEFAULT_METHODS, run_bench, write_results
    from ..worlds import world_of_model

    out_dir = Path(out)
    check_writable(out_dir / "results.json", overwrite, what="results")
    check_writable(out_dir / "table.md", overwrite, what="table")
    if grid_images < 0:
        raise InvalidValueError(f"--grid-images must be >= 0, got {grid_images}")
    if shield is not None:
        from ..shields import parse_spec

        parse_spec(shield)  # a bad spec fails here, before the model is loaded
        if not protect:
            raise InvalidValueError(f"--shield {shield!r} needs --protect CONCEPT (what it protects); without it the "
                                    "shield would protect nothing")
    elif protect:
        raise InvalidValueError("--protect is for --shield; pass --shield SPEC too")
    if edit is not None:
        from ..edits import Edit

        Edit.load(edit, verify_key=verify_key)  # integrity (+ signature) before any work; run_bench records the file
    with RunLock(out_dir):
        pipe = load_pipeline(model)
        world = world_of_model(pipe)
        evaluator = get_evaluator(world.evaluator) if getattr(world, "evaluator", "") else None
        res = run_bench(pipe, list(methods) or list(DEFAULT_METHODS), list(attacks) or list(DEFAULT_ATTACKS), n=n,
                        n_keys=n_keys, seed=seed, guidance=guidance, forgeries=list(forgeries),
                        evaluator=evaluator, world=world, log=lambda s: console.print(s, highlight=False),
                        edit=edit, shield=shield, protect=list(protect),
                        detectors=list(detectors) or None, grid_dir=out_dir if grid_images else None,
                        grid_images=grid_images, overwrite=overwrite)
        js, md = write_results(res, out_dir)
    click.echo(md.read_text())
    for w in (res.get("compose") or {}).get("warnings") or []:
        console.print(f"[bold red]WARNING[/] {w}", highlight=False)
    console.print(f"wrote {js} and {md}" + (f" and {len(res['grids'])} grid(s)" if res.get("grids") else ""))


COMMANDS = [mark]
