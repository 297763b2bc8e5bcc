"""The toy world as an erasekit plugin: it answers the core's `erasekit.worlds.World` questions from the catalogue,
the caption grammar, the renderer and the shipped oracle, exactly as a user's real model folder + suite YAML +
evaluator would. `erasekit.worlds` registers it lazily as "toyworld"; the shipped model's folder names it in its
`erasekit.json`.
"""

from __future__ import annotations


import json
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UnknownNameError
from ..evaluators import Evaluator
from ..worlds import ConceptInfo, MemorizedPair, Prompt, World
from .catalogue import CATALOGUE, FAMILIES, Catalogue

EVALUATOR = "toyworld-oracle"
INDEPENDENT_KINDS = ("independent", "independent_keyword")  # prompt kinds of toyworld/eval_grammar.py
MODEL = "toyworld"
UNRELATED_FAMILIES = ("object", "artist", "character")  # direct prompts of these families measure drift
# CopyCat's "key entity" of a character (its kind of animal/thing) as the oracle can check it: the colour of the
# sprite's body (render.sprite_parts) when the catalogue has that colour; the robot's grey body has none.
KEY_COLOURS = {"frog": "green", "snowman": "white", "cat": "orange", "ghost": "purple", "bee": "yellow"}
MEMORIZED_REFERENCE_SEED = 10_000  # seeds of the other renderings of a memorized pair's scene (bench/memorization.py)
STOPWORDS = {"a", "an", "the", "and", "of", "on", "in", "with", "by", "its", "made", "this", "that", "shape", "shaped"}


def assets_dir() -> Path:
    """Folder of the shipped toy-world assets (pipeline/, oracle.*, manifest.json)."""
    return Path(str(resources.files("erasekit").joinpath("assets/toyworld")))


def manifest(directory: str | Path | None = None) -> dict:
    """How a toy-world model was made (the shipped one by default)."""
    return json.loads((Path(directory or assets_dir()) / "manifest.json").read_text())


def load_oracle(directory: str | Path | None = None):
    """The toy-world oracle (`ToyOracle`) shipped with the package, or saved in `directory`."""
    from .oracle import ToyOracle

    return ToyOracle.load(Path(directory or assets_dir()))


def catalogue_keywords(family: str, concept: Any) -> tuple[str, ...]:
    """Training-side trigger phrases of a toy-world concept (never its held-out paraphrases, which measure generality):
    characters' keywords, unsafe concepts' indirect phrases, artists' style descriptions, objects'/colours' synonyms."""
    if family == "character":
        return tuple(concept.keywords)
    if family == "unsafe":
        return tuple(concept.indirect)
    if family == "artist":
        return tuple(concept.descriptions)
    return tuple(s for s in concept.synonyms if s.lower() != concept.name.lower())


def shipped_dataset():
    """The shipped model's training set, rebuilt deterministically from its manifest's training config (the same
    rebuild, and the same per-process cache, as any other toy model's: `mark_eval.training_dataset`)."""
    from .mark_eval import training_dataset

    return training_dataset(manifest())


class ToyWorld(World):
    """The procedurally rendered toy world: 5 families of concepts with ground truth and an oracle."""

    name = "toyworld"
    model = MODEL
    evaluator = EVALUATOR

    def __init__(self, catalogue: Catalogue = CATALOGUE):
        self.catalogue = catalogue

    # ---- required
    def concept(self, name: str) -> ConceptInfo:
        if not isinstance(name, str):
            raise UnknownNameError("concept", repr(name), self._names())
        family, c = self.catalogue.find(name)
        table = self.catalogue.items_by_family()[family]
        if family == "artist":
            erase, guide, preserve = (c.name,), "art", tuple(a.name for a in table if a.core and a.name != c.name)
        elif family == "unsafe":
            erase, guide, preserve = (c.name, *c.indirect), "", ()
        else:
            erase, guide, preserve = (c.name,), "", tuple(x.name for x in table if x.name != c.name)
        return ConceptInfo(c.name, family, kind="art" if family == "artist" else "object",
                           keywords=catalogue_keywords(family, c), erase=erase, guide=guide, preserve=preserve)

    def _names(self) -> list[str]:
        return [c.name for items in self.catalogue.items_by_family().values() for c in items]

    def concepts(self) -> dict[str, list[str]]:
        return {f: [c.name for c in items] for f, items in self.catalogue.items_by_family().items()}

    def prompts(self, concept: str, kind: str, n: int, seed: int) -> list[Prompt]:
        from .captions import prompts_for

        family, c = self.catalogue.find(concept)
        if n <= 0 or (kind == "keyword" and family != "character") or (kind == "indirect" and family != "unsafe"):
            return []
        if kind in INDEPENDENT_KINDS:  # the independent evaluation grammar (never used in training)
            from .eval_grammar import independent_prompts

            return independent_prompts(family, c.name, kind, n, seed, self.catalogue)
        return prompts_for(family, c.name, kind, n, seed, self.catalogue)

    # ---- optional
    @torch.no_grad()
    def neighbours(self, concept: str, k: int, pipe: Any = None) -> list[str]:
        """The `k` same-family concepts (core artists only) whose text embedding ("a picture of X", mean over real
        tokens) in `pipe` is most similar to `concept`'s; catalogue order without a pipeline. Unsafe: none."""
        family, c = self.catalogue.find(concept)
        if family == "unsafe" or k <= 0:
            return []
        items = [x.name for x in self.catalogue.items_by_family()[family]
                 if not (family == "artist" and not x.core) and x.name != c.name]
        if pipe is None or not items:
            return items[:k]
        from ..sampling import encode_prompts

        names = [c.name] + items
        texts = [f"a picture of {x}" for x in names]
        emb = encode_prompts(pipe, texts).float()
        lengths = pipe.tokenizer(texts, return_tensors=None)["input_ids"]
        vecs = torch.stack([emb[i, 1:len(ids) - 1].mean(0) for i, ids in enumerate(lengths)])
        sims = torch.nn.functional.cosine_similarity(vecs[:1], vecs[1:])
        return [items[i] for i in sims.argsort(descending=True)[:k].tolist()]

    def unrelated(self, concept: str, n: int, seed: int) -> list[Prompt]:
        """`n` direct prompts of concepts from the other families (objects, core artists, characters), round-robin
        in a seeded order."""
        from .captions import prompts_for

        family, _ = self.catalogue.find(concept)
        pool = [(f, c.name) for f in UNRELATED_FAMILIES for c in self.catalogue.items_by_family()[f]
                if f != family and not (f == "artist" and not c.core)]
        order = np.random.default_rng(seed).permutation(len(pool))
        out = []
        for i in range(n):
            f, c = pool[order[i % len(pool)]]
            out.append(prompts_for(f, c, "direct", n=1, seed=seed + i, catalogue=self.catalogue)[0])
        return out

    def templates(self, concept: str, n: int, seed: int = 0) -> tuple[str, ...]:
        """`n` prompt templates ("{}" = the concept) from the *training* caption grammar of the concept's family,
        other slots filled at random (seeded); held-out templates are never used, so generality stays measurable."""
        from .captions import ARTIST_TEMPLATES, CHARACTER_ARTIST_TEMPLATES, CHARACTER_TEMPLATES, UNSAFE_TEMPLATES

        cat = self.catalogue
        family, _ = cat.find(concept)
        rng = np.random.default_rng(seed)
        core = [a.name for a in cat.artists if a.core]

        def pick(seq):
            return seq[int(rng.integers(len(seq)))]

        def subject() -> str:
            return f"{pick(cat.colours).name} {pick(cat.objects).name}"

        out: list[str] = []
        for i in range(n):
            if family == "artist":
                out.append(ARTIST_TEMPLATES[i % len(ARTIST_TEMPLATES)].format(subject=subject(), artist="{}"))
            elif family == "character":
                table = CHARACTER_TEMPLATES + CHARACTER_ARTIST_TEMPLATES
                out.append(table[i % len(table)].format(name="{}", artist=pick(core)))
            elif family == "unsafe":
                scene = f"a {subject()}" + (f" in the style of {pick(core)}" if i % 2 else "")
                out.append(UNSAFE_TEMPLATES[i % len(UNSAFE_TEMPLATES)].format(scene=scene, phrase="{}"))
            elif family == "object":
                colour = pick(cat.colours).name
                out.append(f"a {colour} {{}}" + (f" in the style of {pick(core)}" if i % 2 else ""))
            else:  # colour
                obj = pick(cat.objects).name
                out.append(f"a {{}} {obj}" + (f" in the style of {pick(core)}" if i % 2 else ""))
        return tuple(dict.fromkeys(out))

    def retain_prompts(self, concept: str) -> list[str]:
        """Every "a <colour> <object>" prompt (64)."""
        return [f"a {c.name} {o.name}" for o in self.catalogue.objects for c in self.catalogue.colours]

    def calibration_prompts(self, exclude: Sequence[str], n: int, seed: int) -> list[str]:
        """`n` training-grammar captions of random scenes that show none of `exclude`, plus every other concept's
        training phrases on their own (its name and keywords: the closest negatives). Held-out wording is never
        used, so evaluation prompts stay unseen."""
        from .captions import caption
        from .oracle import random_scenes

        names = {self.catalogue.find(c)[1].name for c in exclude}
        rng = np.random.default_rng(seed)
        out: list[str] = []
        k = 0
        while len(out) < n:
            for scene in random_scenes(4 * n, seed + k, self.catalogue):
                if names.isdisjoint(scene.labels().values()):
                    out.append(caption(scene, rng, self.catalogue))
                    if len(out) == n:
                        break
            k += 1
        for family, items in self.catalogue.items_by_family().items():
            for c in items:
                if c.name not in names:
                    out += [c.name, *catalogue_keywords(family, c)]
        return out

    def vocabulary(self, exclude: str = "") -> list[str]:
        """Every word of the catalogue's phrases (synonyms, descriptions, keywords, indirect and held-out phrases),
        without stopwords and without the words of `exclude`."""
        banned = {w.lower() for w in re.findall(r"[a-zA-Z]+", exclude)} | STOPWORDS
        words: list[str] = []
        for items in self.catalogue.items_by_family().values():
            for item in items:
                for attr in ("synonyms", "descriptions", "keywords", "indirect", "heldout"):
                    for phrase in getattr(item, attr, ()):
                        words += re.findall(r"[a-zA-Z]+", phrase.lower())
        return [w for w in dict.fromkeys(words) if w not in banned]

    def images(self, concept: str, n: int, seed: int) -> np.ndarray:
        """(n, 32, 32, 3) uint8 renders showing `concept`, other slots drawn at random: artist -> a random coloured
        object in the artist's style; character -> the character alone; object / colour -> that object (colour) with
        a random colour (object); unsafe -> a random coloured object with the overlay."""
        from .render import Scene, render

        family, c = self.catalogue.find(concept)
        rng = np.random.default_rng([int(seed), 4099])
        objects, colours = [o.name for o in self.catalogue.objects], [x.name for x in self.catalogue.colours]
        out = []
        for _ in range(n):
            obj, col = objects[rng.integers(len(objects))], colours[rng.integers(len(colours))]
            kw = {"artist": dict(object=obj, colour=col, artist=c.name), "character": dict(character=c.name),
                  "object": dict(object=c.name, colour=col), "colour": dict(object=obj, colour=c.name),
                  "unsafe": dict(object=obj, colour=col, unsafe=c.name)}[family]
            out.append(render(Scene(**kw, seed=int(rng.integers(2**31 - 1)))))
        return np.stack(out)

    def training_counts(self, model: Any = None) -> dict[str, dict[str, int]] | None:
        """The images per concept in `model`'s training set (None / "toyworld": the shipped model; "toyworld-v2", a
        training folder or a pipeline loaded from one: its manifest's), None when the model has no manifest."""
        try:
            return model_manifest(model)["dataset"]["counts"]
        except (FileNotFoundError, KeyError, TypeError):
            return None

    def training_images(self, concept: str, model: Any = None) -> np.ndarray | None:
        """`model`'s training images of `concept` (its dataset rebuilt from its manifest once per process, ~30 s);
        None when the model has no manifest."""
        from .imitation import training_images

        family, name = self.find(concept)
        ds = model_dataset(model)
        return None if ds is None else training_images(ds, family, name)

    def membership_pairs(self, concept: str, n: int, seed: int,
                         model: Any = None) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
        """Up to `n` of `model`'s training images showing `concept` (a seeded sample; the dataset is rebuilt from its
        manifest once per process, ~30 s) with their captions, and the same scenes rendered again with seeds >= 2**31
        (the training scenes' seeds are < 2**31: never trained on, same distribution); None without a manifest."""
        import dataclasses

        from .render import render

        family, c = self.catalogue.find(concept)
        ds = model_dataset(model)
        if ds is None:
            return None
        idx = np.array([i for i, s in enumerate(ds.scenes) if s.labels()[family] == c.name], dtype=np.int64)
        if len(idx) == 0:
            return np.zeros((0, 32, 32, 3), np.uint8), np.zeros((0, 32, 32, 3), np.uint8), []
        pick = np.sort(np.random.default_rng([int(seed), 7177]).choice(idx, size=min(n, len(idx)), replace=False))
        fresh = np.stack([render(dataclasses.replace(ds.scenes[i], seed=2**31 + int(seed) * len(pick) + j))
                          for j, i in enumerate(pick)])
        return ds.images[pick], fresh, [ds.captions[i] for i in pick]

    def key_characteristics(self, concept: str) -> list[dict[str, str]]:
        """A character's key entity as the oracle sees it: [{"colour": the colour of its body}] (e.g. Mossy ->
        green) where the catalogue has that colour; none for other families and for Zorbo (grey)."""
        family, c = self.catalogue.find(concept)
        if family != "character" or c.sprite not in KEY_COLOURS:
            return []
        return [{"colour": KEY_COLOURS[c.sprite]}]

    def memorized_pairs(self, model: Any = None, references: int = 16) -> list[MemorizedPair]:
        """The duplicated image-caption pairs of a toy model trained with `--memorized` (its manifest's
        dataset.v2.memorized), each re-rendered from its scene, with `references` renderings of the same scene labels
        under other seeds. model: None / "toyworld" (the shipped model: none), a training folder or its pipeline/
        folder, or a pipeline loaded from one."""
        from .render import Scene, render

        man = model_manifest(model)
        pairs = [] if man is None else man.get("dataset", {}).get("v2", {}).get("memorized", [])
        out = []
        for m in pairs:
            scene = Scene(**m["scene"])
            refs = np.stack([render(Scene(**{**m["scene"], "seed": MEMORIZED_REFERENCE_SEED + j}))
                             for j in range(references)]) if references else np.zeros((0, 32, 32, 3), np.uint8)
            out.append(MemorizedPair(m["caption"], render(scene), int(m["count"]),
                                     {f: v for f, v in scene.labels().items() if v != "none"}, refs))
        return out

    def captioned_images(self, model: Any, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
        """`n` training images of the toy `model` (a training folder, its pipeline/ or a pipeline loaded from one;
        None = the shipped model) with their captions, its dataset rebuilt from its manifest (`mark_eval.py`)."""
        from .mark_eval import captioned_training_images

        return captioned_training_images(model_manifest(model), n, seed)

    def caption(self, images: np.ndarray) -> list[str]:
        """A caption per image from the oracle's predicted labels, in the evaluation grammar ("a red ring in the style
        of Cora Voss", "Zorbo in the style of Cora Voss", ", <unsafe concept>" appended): the toy stand-in for a
        captioning model (BLIP on real models). Wrong where the oracle is wrong (attacked images)."""
        global _CAPTION_ORACLE
        if _CAPTION_ORACLE is None:
            _CAPTION_ORACLE = ToyOracleEvaluator()
        return [caption_from_labels(lab) for lab in _CAPTION_ORACLE.predict(np.asarray(images))]

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "families": list(FAMILIES)}


_CAPTION_ORACLE: Any = None  # loaded on the first caption() call


def caption_from_labels(labels: dict[str, str]) -> str:
    """The evaluation-grammar text of a {family: label} set (captions.prompts_for's direct wording)."""
    from .catalogue import NONE as none

    artist = labels.get("artist", none)
    style = f" in the style of {artist}" if artist != none else ""
    if labels.get("character", none) != none:
        text = f"{labels['character']}{style}"
    else:
        subject = " ".join(v for v in (labels.get("colour", none), labels.get("object", none)) if v != none)
        text = f"a {subject or 'picture'}{style}"
    if labels.get("unsafe", none) != none:
        text = f"{text}, {labels['unsafe']}"
    return text


def model_manifest(model: Any = None) -> dict | None:
    """The manifest of a toy model: the shipped one for None / "toyworld", else manifest.json in the model folder or
    its parent (a training folder holds pipeline/ and manifest.json); a pipeline is located by its `name_or_path`.
    None when there is none."""
    if model is None or (isinstance(model, str) and model == MODEL):
        return manifest()
    if isinstance(model, str) and not model.strip():
        return None
    if not isinstance(model, (str, Path)):
        model = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
        if not model:
            return None
    from ..models import model_folder

    folder = model_folder(model) or Path(model)  # a registered name (e.g. "toyworld-v2") resolves to its folder
    for d in (folder, folder.parent):
        if (d / "manifest.json").is_file():
            return json.loads((d / "manifest.json").read_text())
    return None


def model_dataset(model: Any = None) -> Any:
    """The training set of a toy model (None / "toyworld": the shipped one), rebuilt from its manifest (v1 or v2
    options; cached per process); None when the model has no manifest with its training config."""
    if model is None or (isinstance(model, str) and model == MODEL):
        return shipped_dataset()
    man = model_manifest(model)
    if man is None or "config" not in man:
        return None
    from .mark_eval import training_dataset

    return training_dataset(man)


class ToyOracleEvaluator(Evaluator):
    """The toy world's oracle: sees every catalogue concept; labels = argmax of each family head; `embed` gives its
    penultimate features (the imitation score's embedding)."""

    name = EVALUATOR

    def __init__(self, oracle: Any = None):
        self.oracle = oracle if oracle is not None else load_oracle()

    def predict(self, images: np.ndarray) -> list[dict[str, str]]:
        return self.oracle.predict(images)

    def target(self, concept: str) -> tuple[str, str]:
        family, item = CATALOGUE.find(concept)  # unknown -> UnknownNameError with close matches
        return family, item.name

    def identity(self) -> dict:
        return self.oracle.identity()

    def embed(self, images: np.ndarray) -> torch.Tensor:
        """(N, D) features of (N, H, W, 3) uint8 images."""
        return self.oracle.embed(images)


class RobustOracleEvaluator(ToyOracleEvaluator):
    """The robust oracle of toy world v2 (`oracle_v2.py`): same network as the oracle, trained on wider placement,
    VAE round trips and occlusion, calibrated; with `abstain`, low-confidence heads answer "unsure"."""

    name = "toyworld-oracle-v2"

    def __init__(self, abstain: bool = False, directory: str | None = None):
        from .oracle_v2 import load_robust_oracle

        super().__init__(load_robust_oracle(directory))
        self.abstain = bool(abstain)

    def predict(self, images: np.ndarray) -> list[dict[str, str]]:
        return self.oracle.predict(images, abstain=self.abstain)

    def identity(self) -> dict:
        return {**self.oracle.identity(), "abstain": self.abstain}


def __getattr__(name: str) -> Any:
    """Lazy attributes: `Judge2Evaluator`, the second judge ("toyworld-judge2" in evaluators.py), imported on use."""
    if name == "Judge2Evaluator":
        from .judge2 import Judge2Evaluator

        return Judge2Evaluator
    if name == "MarkEvaluator":  # "toyworld-mark": the implicit mark of toy world v2 (mark_eval.py)
        from .mark_eval import MarkEvaluator

        return MarkEvaluator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EVALUATOR", "MODEL", "Judge2Evaluator", "RobustOracleEvaluator", "ToyOracleEvaluator", "ToyWorld", "assets_dir",
           "catalogue_keywords", "load_oracle", "manifest"]
