"""`erasekit imitation score|threshold`: imitation scores per concept and the imitation threshold (FIT)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import click

from ._util import console, friendly_errors


@click.group("imitation")
def imitation() -> None:
    """Imitation score vs training frequency, and the imitation threshold (FIT / MIMETIC-2)."""


def toy_model_dir(model: str) -> Path:
    """Folder holding a toy-world model's manifest.json ("toyworld", a training folder or its pipeline/ folder)."""
    from ..errors import ErasekitError
    from ..toyworld.plugin import assets_dir as toyworld_dir

    if model == "toyworld":
        return toyworld_dir()
    p = Path(model)
    for d in (p, p.parent):
        if (d / "manifest.json").exists() and "dataset" in json.loads((d / "manifest.json").read_text()):
            return d
    raise ErasekitError(f"{model!r} is not a toy-world model (no manifest.json with a dataset next to it); for other "
                        f"models use --generated/--training/--embedder")


def toy_dataset(model_dir: Path):
    """Rebuild the training set a toy-world model was trained on, from its manifest (seed, scale, count overrides)."""
    from ..toyworld.dataset import build_dataset

    ds = json.loads((model_dir / "manifest.json").read_text())["dataset"]
    return build_dataset(ds["seed"], ds["scale"], counts=ds.get("counts_override") or None)


def toy_oracle(model_dir: Path):
    from ..toyworld.oracle import ToyOracle

    if (model_dir / "oracle.json").exists():
        return ToyOracle.load(model_dir)
    init = json.loads((model_dir / "manifest.json").read_text()).get("config", {}).get("init_from", "")
    if init and (Path(init) / "oracle.json").exists():
        return ToyOracle.load(init)
    from ..toyworld import load_oracle

    return load_oracle()


def load_embedder(spec: str):
    """'module:attr' -> an embedder; attr may be the callable itself or a zero-argument factory returning one."""
    from ..errors import InvalidValueError

    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise InvalidValueError(f"--embedder must look like 'package.module:callable'; got {spec!r}")
    obj = getattr(importlib.import_module(module), attr)
    if isinstance(obj, type) or getattr(obj, "__erasekit_factory__", False):
        obj = obj()
    return obj


def load_images(folder: str):
    """(N, H, W, 3) uint8 array of the PNG/JPEG images in `folder` (sorted by name; all must share one size)."""
    import numpy as np
    from PIL import Image

    from ..errors import InvalidValueError

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if not files:
        raise InvalidValueError(f"no images (.png/.jpg/.jpeg/.webp) in {folder!r}")
    arrs = [np.asarray(Image.open(p).convert("RGB")) for p in files]
    if len({a.shape for a in arrs}) != 1:
        raise InvalidValueError(f"images in {folder!r} have different sizes: {sorted({a.shape for a in arrs})[:4]}")
    return np.stack(arrs)


@imitation.command("score")
@click.option("--model", default="toyworld", show_default=True, help="toy-world model: 'toyworld' or a training folder")
@click.option("--family", default="artist", show_default=True, type=click.Choice(["artist", "character"]))
@click.option("--concept", "concepts", multiple=True, help="concept(s) to score (repeatable; default: the family)")
@click.option("-n", "--num", default=16, show_default=True, type=int, help="generated images per concept")
@click.option("--k", default=10, show_default=True, type=int, help="training images kept (top-k, published: 10)")
@click.option("--steps", default=None, type=int, help="denoising steps (default: the model's)")
@click.option("--guidance", default=None, type=float, help="default: the model's evaluation guidance")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--generated", default=None, type=click.Path(file_okay=False, exists=True),
              help="any model: folder of generated images of one concept (with --training and --embedder)")
@click.option("--training", default=None, type=click.Path(file_okay=False, exists=True),
              help="any model: folder of the concept's training images")
@click.option("--embedder", default=None, help="any model: 'module:callable' mapping images -> (N, D) tensor")
@click.option("--out", default="runs/imitation/score", show_default=True, type=click.Path(file_okay=False))
@friendly_errors
def score_cmd(model, family, concepts, num, k, steps, guidance, seed, generated, training, embedder, out) -> None:
    """Imitation score per concept (top-k cosine to its training images); JSON + PNG + HTML."""
    from ..errors import InvalidValueError
    from ..imitation import score_images
    from ..io import atomic_write_text
    from ..report import HtmlReport, png_data_uri, save_grid
    from ..report.images import grid

    out = Path(out)
    if generated or training or embedder:
        if not (generated and training and embedder):
            raise InvalidValueError("--generated, --training and --embedder go together (all three are needed)")
        gen, train = load_images(generated), load_images(training)
        res = score_images(load_embedder(embedder), gen, train, k)
        data = {"mode": "folders", "generated": generated, "training": training, "embedder": embedder,
                "scores": {Path(generated).name: res.to_dict()}}
        atomic_write_text(out / "imitation_scores.json", json.dumps(data, indent=1))
        console.print(f"imitation score {res.score:.4f} (k={res.k}, {res.n_generated} generated, "
                      f"{res.n_training} training); wrote {out / 'imitation_scores.json'}")
        return
    for c in concepts:
        if not c.strip():
            raise InvalidValueError(f"empty concept name in --concept {list(concepts)!r}")
    from ..toyworld.imitation import toy_frequencies
    from ..toyworld.imitation import toy_imitation
    from ..models import load_pipeline
    from ..sampling import resolve_sampling

    mdir = toy_model_dir(model)
    pipe = load_pipeline(str(mdir / "pipeline"))
    steps, g = resolve_sampling(pipe, steps, guidance)
    data_set = toy_dataset(mdir)
    oracle = toy_oracle(mdir)
    images: dict = {}
    scores = toy_imitation(pipe, oracle.embed, data_set, family, list(concepts) or None, num, seed, steps, g, k, images)
    freqs = toy_frequencies(data_set, family, list(scores))
    rows = [{"concept": c, "score": s.score, "k": s.k, "n_generated": s.n_generated, "frequency_true": freqs[c].true,
             "frequency_caption": freqs[c].caption} for c, s in scores.items()]
    result = {"mode": "toyworld", "model": model, "family": family, "embedding": "toy oracle penultimate (256-d)",
              "oracle": oracle.identity() | {"classes": None}, "n": num, "k": k, "steps": steps, "guidance": g,
              "seed": seed, "concepts": rows}
    atomic_write_text(out / "imitation_scores.json", json.dumps(result, indent=1))
    import numpy as np

    strip = np.concatenate([images[c][:8] for c in scores])
    save_grid(strip, out / "imitation_grid.png", ncol=min(8, num))
    rep = HtmlReport(f"Imitation scores: {model}")
    rep.paragraph(f"family {family}; {num} generations per concept; top-{k} cosine in the oracle's embedding")
    rep.table(["concept", "imitation score", "true count", "caption count"],
              [[r["concept"], r["score"], r["frequency_true"], r["frequency_caption"]] for r in rows], id="scores")
    rep.heading("Generations (first 8 per concept, one row each)")
    rep.image(png_data_uri(grid(strip, min(8, num)), scale=3), "generations")
    rep.write(out / "imitation_report.html")
    for r in rows:
        console.print(f"{r['concept']:>14}  score {r['score']:.4f}  true {r['frequency_true']:>5}  "
                      f"caption {r['frequency_caption']:>5}")
    console.print(f"wrote {out}/imitation_scores.json, imitation_grid.png, imitation_report.html")


def read_table(path: str, counts: str, variant: str = "base") -> dict[str, tuple[float, float]]:
    """{concept: (frequency, score)} from an evaluation/benchmark results.json whose suite scores imitation (the
    harness's `imitation` metric and the world's `training_counts`), `score` output, or a list of {concept,
    frequency, score} records."""
    from ..errors import InvalidValueError, UnknownNameError

    raw = json.loads(Path(path).read_text())
    if isinstance(raw, dict) and "variants" in raw:
        if variant not in raw["variants"]:
            raise UnknownNameError(f"variant of {path!r}", variant, list(raw["variants"]))
        per = raw["variants"][variant]["metrics"]
        freq = raw.get("training_counts") or {}
        table = {t: (float(freq[t]), float(m["imitation"])) for t, m in per.items() if "imitation" in m and t in freq}
        if not table:
            raise InvalidValueError(f"{path!r} has no imitation scores with training counts; run a suite with "
                                    "`imitation: {k: 10}` on a world that knows its training set (e.g. "
                                    "`erasekit bench --spec imitation-toy`)")
        return table
    records = raw.get("concepts") if isinstance(raw, dict) else raw
    if not isinstance(records, list) or not records:
        raise InvalidValueError(f"{path!r} holds no concept records (expected a list of {{concept, frequency, score}} "
                                f"or the output of `erasekit imitation score`)")
    key = "frequency" if "frequency" in records[0] else f"frequency_{counts}"
    table: dict[str, tuple[float, float]] = {}
    for r in records:
        if key not in r or "score" not in r or "concept" not in r:
            raise InvalidValueError(f"record {r!r} in {path!r} lacks 'concept', 'score' or {key!r}")
        if not str(r["concept"]).strip():
            raise InvalidValueError(f"empty concept name in {path!r}")
        table[str(r["concept"])] = (float(r[key]), float(r["score"]))
    return table


@imitation.command("threshold")
@click.option("--table", "table_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="JSON: a results.json with imitation scores (e.g. `erasekit bench --spec imitation-toy`), the "
                   "output of `imitation score`, or a list of {concept, frequency, score}")
@click.option("--counts", default="true", show_default=True, type=click.Choice(["true", "caption"]),
              help="which toy-world frequency to use when the table comes from `imitation score`")
@click.option("--variant", default="base", show_default=True, help="which variant of a results.json table")
@click.option("--penalty", default=0.9, show_default=True, type=float, help="PELT penalty (published: 0.9)")
@click.option("--standardize", is_flag=True, help="z-score the imitation scores before PELT (not in the paper)")
@click.option("--bootstrap", default=1000, show_default=True, type=int, help="bootstrap draws over concepts")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default="runs/imitation/threshold", show_default=True, type=click.Path(file_okay=False))
@friendly_errors
def threshold_cmd(table_path, counts, variant, penalty, standardize, bootstrap, seed, out) -> None:
    """Imitation threshold: first PELT change point of imitation vs frequency; JSON + PNG + HTML."""
    from ..imitation import find_threshold, plot_threshold
    from ..io import atomic_write_bytes, atomic_write_text
    from ..report import HtmlReport

    out = Path(out)
    table = read_table(table_path, counts, variant)
    res = find_threshold(table, penalty=penalty, standardize=standardize, n_bootstrap=bootstrap, seed=seed)
    data = res.to_dict() | {"table": table_path, "counts": counts}
    atomic_write_text(out / "threshold.json", json.dumps(data, indent=1))
    png = plot_threshold(res, xlabel=f"training images ({counts} counts)")
    atomic_write_bytes(out / "threshold.png", png)
    rep = HtmlReport("Imitation threshold")
    thr = "none found" if res.threshold is None else f"{res.threshold:g}"
    ci = "n/a" if res.interval is None else f"[{res.interval[0]:g}, {res.interval[1]:g}]"
    rep.paragraph(f"threshold {thr}; {int(100 * res.confidence)}% bootstrap interval {ci} "
                  f"({res.n_bootstrap} draws, change found in {100 * res.bootstrap_found:.0f}%)")
    import base64

    rep.image("data:image/png;base64," + base64.b64encode(png).decode("ascii"), "imitation vs frequency")
    rep.table(["concept", "frequency", "imitation score"], list(zip(res.concepts, res.frequencies, res.scores)),
              id="curve")
    rep.pre(res.settings)
    rep.write(out / "threshold.html")
    console.print(f"threshold {thr}, interval {ci}; wrote {out}/threshold.json, threshold.png, threshold.html")


COMMANDS = [imitation]
