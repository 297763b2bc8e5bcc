"""Unlearning methods for any transformers causal LM (MUSE's baselines). Each returns a reversible, hashed `Edit`.

    ga / ga_gdr / ga_klr      gradient ascent (+ retain descent / KL), ga.py
    npo / npo_gdr / npo_klr   Negative Preference Optimization (+ retain terms), npo.py
    task_vector               task-vector negation (Ilharco et al., ICLR 2023), task_vector.py
    whp                       Who's Harry Potter (Eldan & Russinovich, 2023), whp.py

`unlearn(model, tokenizer, "npo_gdr", forget=[...], retain=[...], steps=20)` -> Edit; the model is not modified.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from ...edits import Edit
from ...errors import InvalidValueError
from ...registry import Registry

# name -> ("module:function", "module:ConfigClass", fixed config values)
METHODS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "ga": ("erasekit.text.unlearn.ga:ga", "erasekit.text.unlearn.ga:GAConfig", {"retain": "none"}),
    "ga_gdr": ("erasekit.text.unlearn.ga:ga", "erasekit.text.unlearn.ga:GAConfig", {"retain": "gdr"}),
    "ga_klr": ("erasekit.text.unlearn.ga:ga", "erasekit.text.unlearn.ga:GAConfig", {"retain": "klr"}),
    "npo": ("erasekit.text.unlearn.npo:npo", "erasekit.text.unlearn.npo:NPOConfig", {"retain": "none"}),
    "npo_gdr": ("erasekit.text.unlearn.npo:npo", "erasekit.text.unlearn.npo:NPOConfig", {"retain": "gdr"}),
    "npo_klr": ("erasekit.text.unlearn.npo:npo", "erasekit.text.unlearn.npo:NPOConfig", {"retain": "klr"}),
    "task_vector": ("erasekit.text.unlearn.task_vector:task_vector",
                    "erasekit.text.unlearn.task_vector:TaskVectorConfig", {}),
    "whp": ("erasekit.text.unlearn.whp:whp", "erasekit.text.unlearn.whp:WHPConfig", {}),
}
HELP = {"ga": "gradient ascent on forget (Jang et al. 2023)", "ga_gdr": "GA + gradient descent on retain (MUSE)",
        "ga_klr": "GA + KL to the original model on retain (MUSE)", "npo": "Negative Preference Optimization "
        "(Zhang et al. 2024)", "npo_gdr": "NPO + gradient descent on retain", "npo_klr": "NPO + KL on retain",
        "task_vector": "negated task vector (Ilharco et al. 2023)", "whp": "Who's Harry Potter (Eldan & Russinovich "
        "2023), generic-target fine-tuning"}

text_unlearners: Registry[Any] = Registry("text unlearning method")
for _name, (_fn, _cfg, _fixed) in METHODS.items():
    text_unlearners.add(_name, _fn, help=HELP[_name])


def _resolve(spec: str) -> Any:
    import importlib

    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def make_config(method: str, **options: Any) -> Any:
    """The config dataclass of `method` with `options` (unknown option names raise, listing the valid ones)."""
    text_unlearners.get(method)  # unknown method -> UnknownNameError with suggestions
    _, cfg_spec, fixed = METHODS[method]
    cls = _resolve(cfg_spec)
    names = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(options) - names)
    if bad:
        raise InvalidValueError(f"{method} has no option {', '.join(map(repr, bad))}; its options: "
                                f"{', '.join(sorted(names - set(fixed)))}")
    for k, v in fixed.items():
        if k in options and options[k] != v:
            raise InvalidValueError(f"{method} fixes {k}={v!r}; use the method named for {k}={options[k]!r}")
    return cls(**{**options, **fixed})


def unlearn(model: Any, tokenizer: Any, method: str, forget: Sequence[str], retain: Sequence[str] = (),
            forget_names: Sequence[str] = (), progress: Callable[[int, int, float], None] | None = None,
            **options: Any) -> Edit:
    """Run text unlearning `method` on `model` (left unchanged) and return its Edit."""
    cfg = make_config(method, **options)
    fn = text_unlearners.get(method)
    return fn(model, tokenizer, list(forget), list(retain), cfg, forget_names=forget_names, progress=progress)
