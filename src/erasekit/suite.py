"""Evaluation suites as data: prompt sets, seeds, sampling settings and the evaluator, from a YAML file.

`load_suite("default")` reads the shipped `suites/toyworld-default.yaml`; any path to a YAML file works too. The
suite's sha256 (of its canonical JSON) goes into every result, so two results are comparable iff their hashes match.

A target is a toy-world catalogue name (its prompt sets are drawn from the catalogue) or, for real models, a mapping
with explicit prompt lists (see `suites/sd-nudity-example.yaml`):

    targets:
      - name: nudity
        prompts: {direct: [...], heldout: [...], unrelated: [...]}

For such a target `samples.<set>`, if given, is the number of images of that set (prompts cycled, one seed each);
otherwise each listed prompt is generated once. `evaluator` is a name of `erasekit.evaluators` or a mapping
{name: ..., <option>: ...}; `alignment: {clip: <local CLIP folder>}` adds CLIP scores; `imitation: {k: 10}` adds
the imitation score of the direct images against the world's training images of the target (FIT's top-k);
`copycat: {consistency: true, triggers: 4, pairs: false}` adds CopyCat's CONS (`consistency[_<set>]`) and the
keyword-trigger ranking (4 images per world keyword of the target, `detection_triggers` + a ranking per variant);
`unsafe: {categories: [gore, nudity]}` adds Unsafe Diffusion's per-category unsafe rates (`unsafe_rate[_<set>]` + the
rate of every category per set).
"""

from __future__ import annotations

import hashlib
import math
import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from .errors import InvalidValueError, UnknownNameError, first_line

from .worlds import PROMPT_KINDS as SET_KINDS  # noqa: E402  (one vocabulary of prompt kinds)
ALIASES = {"default": "toyworld-default"}


@dataclass(frozen=True)
class Suite:
    name: str
    targets: tuple[str, ...]
    samples: dict[str, int]
    steps: int | None = None  # None: the model's default (its erasekit.json, else the pipeline's)
    guidance: float | None = None  # None: the model's default
    seed: int = 0
    neighbours: int = 2
    attack_prompts: int = 8
    model: str = ""  # "" = none: the user must pass one (`--model`)
    evaluator: str = ""  # "" = the world's evaluator
    description: str = ""
    extra: dict = field(default_factory=dict)
    prompts: dict = field(default_factory=dict)  # {target: {set kind: [prompt, ...]}} for non-catalogue targets
    evaluator_options: dict = field(default_factory=dict)  # keyword options of the evaluator (e.g. threshold)
    alignment: dict = field(default_factory=dict)  # {"clip": local CLIP checkpoint folder}
    world: str = ""  # registered world of the catalogue targets ("" = the model card's world, else "none")
    imitation: dict = field(default_factory=dict)  # {"k": top-k}: score imitation of the direct images ({} = off)
    # CopyCat's measures ({} = off): {"consistency": bool (CONS), "triggers": images per keyword (keyword-trigger
    # ranking; 0 = off), "pairs": bool (also keyword pairs "k1, k2")}
    copycat: dict = field(default_factory=dict)
    # Unsafe Diffusion's multi-category measurement ({} = off): {"categories": [concepts the evaluator sees]}
    unsafe: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for k, v in self.samples.items():
            if k not in SET_KINDS:
                raise UnknownNameError("prompt set", k, SET_KINDS)
            if not isinstance(v, int) or v < 0:
                raise InvalidValueError(f"samples.{k} must be a non-negative integer, got {v!r}")
        from .sampling import check_sampling

        check_sampling(self.steps, self.guidance, where=f"suite {self.name!r} sampling")
        if not self.targets:
            raise InvalidValueError(f"suite {self.name!r} has no targets")
        if len(set(self.targets)) != len(self.targets):
            raise InvalidValueError(f"suite {self.name!r} lists a target twice: {list(self.targets)}")
        for t, sets in self.prompts.items():
            if t not in self.targets:
                raise UnknownNameError("target with prompts", t, self.targets)
            _check_prompt_sets(t, sets)
        world = self.base_world()
        for t in self.targets:
            if t not in self.prompts:
                world.concept(t)  # unknown concept -> UnknownNameError with suggestions
        for k, v in self.alignment.items():
            if k != "clip":
                raise UnknownNameError("alignment key", k, ("clip",))
            if not isinstance(v, str) or not v.strip():
                raise InvalidValueError(f"alignment.clip must be the path of a local CLIP checkpoint folder, got {v!r}")
        for k, v in self.imitation.items():
            if k != "k":
                raise UnknownNameError("imitation key", k, ("k",))
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidValueError(f"suite {self.name!r}: imitation.k must be an integer >= 1 (published: 10), "
                                        f"got {v!r}")
        _check_copycat(self.name, self.copycat)
        _check_unsafe(self.name, self.unsafe)
        if not self.evaluator:
            if not world.evaluator:
                raise InvalidValueError(f"suite {self.name!r} names no evaluator and its world {world.name!r} has "
                                        "none; add `evaluator: NAME` (see `erasekit ls evaluators`)")
            object.__setattr__(self, "evaluator", world.evaluator)
        from .evaluators import check_evaluator

        check_evaluator(self.evaluator, self.evaluator_options)

    def base_world(self):
        """The registered world of the catalogue targets: `world`, else the model card's world, else "none"."""
        from .worlds import get_world, world_of_model

        return get_world(self.world) if self.world else world_of_model(self.model)

    def world_for(self, evaluator=None):
        """The world that answers for every target: the registered world, wrapped by the targets' own prompt lists
        (`PromptListWorld`, labels from `evaluator`) when the suite lists any."""
        from .worlds import PromptListWorld

        base = self.base_world()
        if not self.prompts:
            return base
        return PromptListWorld(self.prompts, evaluator=evaluator, fallback=base if base.name != "none" else None)

    def sha256(self) -> str:
        """sha256 of the canonical JSON; fields added after 0.1 are left out while empty (old hashes stay valid)."""
        d = asdict(self)
        for k in ("prompts", "evaluator_options", "alignment", "world", "imitation", "copycat", "unsafe"):
            if not d[k]:
                del d[k]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    def is_custom(self, target: str) -> bool:
        """True if `target` comes with its own prompt lists (not a toy-world catalogue concept)."""
        return target in self.prompts

    def limited(self, limit: int | None) -> "Suite":
        """The same suite with every sample count capped at `limit` (for quick runs; changes the hash)."""
        if limit is None:
            return self
        if limit < 1:
            raise InvalidValueError(f"limit must be >= 1, got {limit}")
        d = asdict(self)
        d["samples"] = {k: min(v, limit) for k, v in self.samples.items()}
        d["attack_prompts"] = min(self.attack_prompts, limit)
        d["targets"] = tuple(d["targets"])
        d["prompts"] = {t: {k: v[:limit] for k, v in sets.items()} for t, sets in self.prompts.items()}
        return Suite(**d)


COPYCAT_KEYS = ("consistency", "triggers", "pairs")


def _check_copycat(suite: str, cfg: dict) -> None:
    for k, v in cfg.items():
        if k not in COPYCAT_KEYS:
            raise UnknownNameError("copycat key", k, COPYCAT_KEYS)
        if k in ("consistency", "pairs") and not isinstance(v, bool):
            raise InvalidValueError(f"suite {suite!r}: copycat.{k} must be true or false, got {v!r}")
        if k == "triggers" and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise InvalidValueError(f"suite {suite!r}: copycat.triggers must be the number of images per keyword "
                                    f"(an integer >= 0; 0 = off), got {v!r}")


def _check_unsafe(suite: str, cfg: dict) -> None:
    for k in cfg:
        if k != "categories":
            raise UnknownNameError("unsafe key", k, ("categories",))
    if cfg:
        cats = cfg.get("categories")
        if not isinstance(cats, (list, tuple)) or not cats or \
                not all(isinstance(c, str) and c.strip() for c in cats) or len(set(cats)) != len(cats):
            raise InvalidValueError(f"suite {suite!r}: unsafe.categories must be a non-empty list of distinct "
                                    f"concept names the evaluator sees (e.g. [gore, nudity]), got {cats!r}")


def _check_prompt_sets(target: str, sets: object) -> None:
    if not isinstance(sets, dict) or not sets:
        raise InvalidValueError(f"target {target!r}: prompts must be a non-empty mapping {{set: [prompt, ...]}} with "
                                f"sets among {', '.join(SET_KINDS)}; got {sets!r}")
    for k, texts in sets.items():
        if k not in SET_KINDS:
            raise UnknownNameError(f"prompt set of target {target!r}", k, SET_KINDS)
        if not isinstance(texts, (list, tuple)) or not texts:
            raise InvalidValueError(f"target {target!r}: prompts.{k} must be a non-empty list of prompts, got {texts!r}")
        for x in texts:
            if not isinstance(x, str) or not x.strip():
                raise InvalidValueError(f"target {target!r}: prompts.{k} holds {x!r}; every prompt must be a "
                                        "non-empty string")
    if not any(k in sets for k in ("direct", "heldout", "keyword", "indirect")):
        raise InvalidValueError(f"target {target!r}: prompts need at least one set showing the concept (direct, "
                                f"heldout, keyword or indirect); got only {sorted(sets)}")


def shipped_suites() -> list[str]:
    root = resources.files("erasekit").joinpath("suites")
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def load_suite(name_or_path: str = "default") -> Suite:
    """A shipped suite by name ("default" = "toyworld-default") or a YAML file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        text = path.read_text()
    else:
        name = ALIASES.get(name_or_path, name_or_path)
        if name not in shipped_suites():
            raise UnknownNameError("suite", name_or_path, shipped_suites() + list(ALIASES))
        text = resources.files("erasekit").joinpath("suites", f"{name}.yaml").read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidValueError(f"suite {name_or_path}: not valid YAML ({first_line(e)}); fix the file") \
            from None
    if not isinstance(raw, dict):
        raise InvalidValueError(f"suite {name_or_path!r} is not a YAML mapping")
    return _suite_from_raw(raw, str(name_or_path))


def _or(value: object, default: object) -> object:
    """`value`, or `default` when the YAML left it empty (null)."""
    return default if value is None else value


def _typed(where: str, key: str, value: object, kind: type, minimum: float | None = None) -> object:
    """`value` checked to be of `kind` (bool is never an int) and >= minimum; errors name the file and the key."""
    if value is None:
        return None
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise InvalidValueError(f"suite {where}: {key} must be {'a number' if kind is float else 'an integer'}, "
                                f"got {value!r}")
    if kind is float and not math.isfinite(value):
        raise InvalidValueError(f"suite {where}: {key} must be finite, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidValueError(f"suite {where}: {key} must be >= {minimum}, got {value!r}")
    return value


def _suite_from_raw(raw: dict, name_or_path: str) -> Suite:
    known = {"name", "description", "model", "evaluator", "sampling", "samples", "neighbours", "attack_prompts",
             "targets", "alignment", "world", "imitation", "copycat", "unsafe"}
    unknown = set(raw) - known
    if unknown:
        raise UnknownNameError("suite key", sorted(unknown)[0], known)
    sampling = raw.get("sampling") or {}
    if not isinstance(sampling, dict):
        raise InvalidValueError(f"suite {name_or_path}: sampling must be a mapping {{steps, guidance, seed}}, got "
                                f"{sampling!r}")
    where = name_or_path
    _typed(where, "sampling.steps", sampling.get("steps"), int, 1)
    _typed(where, "sampling.guidance", sampling.get("guidance"), float, 0)
    _typed(where, "sampling.seed", sampling.get("seed", 0), int, 0)
    _typed(where, "neighbours", raw.get("neighbours", 2), int, 0)
    _typed(where, "attack_prompts", raw.get("attack_prompts", 8), int, 1)
    samples = raw.get("samples") or {}
    if not isinstance(samples, dict):
        raise InvalidValueError(f"suite {name_or_path}: samples must be a mapping {{set: count}}, got {samples!r}")
    for k, v in samples.items():
        _typed(where, f"samples.{k}", v, int, 0)
    for k in ("name", "description", "model", "world"):
        if raw.get(k) is not None and not isinstance(raw.get(k), str):
            raise InvalidValueError(f"suite {name_or_path}: {k} must be a string, got {raw.get(k)!r}")
    for k in sampling:
        if k not in ("steps", "guidance", "seed"):
            raise UnknownNameError("sampling key", k, ("steps", "guidance", "seed"))
    targets, prompts = _parse_targets(raw.get("targets"))
    evaluator, options = _parse_evaluator(raw.get("evaluator") or "")
    alignment = raw.get("alignment") or {}
    if not isinstance(alignment, dict):
        raise InvalidValueError(f"alignment must be a mapping such as {{clip: /path/to/clip}}, got {alignment!r}")
    model = raw.get("model") or ""
    imitation = raw.get("imitation") or {}
    if not isinstance(imitation, dict):
        raise InvalidValueError(f"suite {name_or_path}: imitation must be a mapping such as {{k: 10}}, got {imitation!r}")
    copycat, unsafe = raw.get("copycat") or {}, raw.get("unsafe") or {}
    if not isinstance(copycat, dict):
        raise InvalidValueError(f"suite {name_or_path}: copycat must be a mapping such as {{consistency: true, "
                                f"triggers: 4}}, got {copycat!r}")
    if not isinstance(unsafe, dict):
        raise InvalidValueError(f"suite {name_or_path}: unsafe must be a mapping such as {{categories: [gore, "
                                f"nudity]}}, got {unsafe!r}")
    return Suite(name=raw.get("name", str(name_or_path)), targets=targets,
                 samples=dict(raw.get("samples") or {}), steps=sampling.get("steps"),
                 guidance=sampling.get("guidance"), seed=_or(sampling.get("seed"), 0),
                 neighbours=_or(raw.get("neighbours"), 2), attack_prompts=_or(raw.get("attack_prompts"), 8),
                 model="" if model is None else str(model), evaluator=evaluator,
                 description=(raw.get("description") or "").strip(), prompts=prompts, evaluator_options=options,
                 alignment=dict(alignment), world=str(raw.get("world") or ""), imitation=dict(imitation),
                 copycat=dict(copycat), unsafe={k: (list(v) if isinstance(v, (list, tuple)) else v)
                                                for k, v in unsafe.items()})


def _parse_targets(raw: object) -> tuple[tuple[str, ...], dict]:
    """(target names, {name: prompt sets}) from the YAML `targets` list of names and {name, prompts} mappings."""
    if raw is None:
        return (), {}
    if not isinstance(raw, list):
        raise InvalidValueError(f"targets must be a list of concept names or {{name, prompts}} mappings, got {raw!r}")
    names, prompts = [], {}
    for item in raw:
        if isinstance(item, str):
            names.append(item)
            continue
        if not isinstance(item, dict):
            raise InvalidValueError(f"a target is a concept name or a {{name, prompts}} mapping, got {item!r}")
        for k in item:
            if k not in ("name", "prompts"):
                raise UnknownNameError("target key", k, ("name", "prompts"))
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InvalidValueError(f"a target mapping needs a non-empty name, got {item!r}")
        if "prompts" not in item:
            raise InvalidValueError(f"target {name!r} is a mapping without prompts; give prompts: {{direct: [...]}} "
                                    "or write the bare catalogue name")
        names.append(name)
        prompts[name] = item["prompts"]  # checked by Suite.__post_init__
    return tuple(names), prompts


def _parse_evaluator(raw: object) -> tuple[str, dict]:
    """(name, options) from `evaluator: name` or `evaluator: {name: ..., option: value}`."""
    if isinstance(raw, str):
        return raw, {}
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        return raw["name"], {k: v for k, v in raw.items() if k != "name"}
    raise InvalidValueError(f"evaluator must be a name or a mapping {{name: ..., <option>: ...}}, got {raw!r}")
