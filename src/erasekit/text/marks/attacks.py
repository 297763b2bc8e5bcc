"""Attacks on watermarked text, one registry, composable specs ("substitute:rate=0.1+delete:rate=0.05").

    from erasekit.text.marks.attacks import apply_text_attack
    out = apply_text_attack("substitute:rate=0.2", ids, vocab_size=768, seed=0)     # list of token-id lists
    out = apply_text_attack("synonym:rate=0.2", ids, vocab_size=768, model=lm)     # model-proposed substitutions
    out = apply_text_attack("mix:keep=0.5", ids, vocab_size=768, human=corpus_ids) # copy-paste into human text

Every attack maps token-id lists to token-id lists; randomness comes from `seed` (+ text index), so clean and marked
texts attacked with the same seed are treated alike. Rates are fractions of the text's tokens (the official
robust-watermark attacks, watermarking/attacks.py of github.com/jthickstun/watermark, pick int(rate * m) positions).

    substitute   replace int(rate m) random positions by uniform random tokens (official substitution_attack)
    insert       insert int(rate m) uniform random tokens (official insertion_attack)
    delete       delete int(rate m) random positions (official deletion_attack)
    synonym      replace int(rate m) random positions by the model's most likely other token given the (attacked)
                 left context: a fluent substitution (the text world has no thesaurus; needs model=)
    mix          copy-paste: keep a contiguous `keep` share of the marked text inside human text of the same total
                 length (Kirchenbauer et al.'s copy-paste attack; needs human=)
    paraphrase   keep the first `keep` share of the text, regenerate the rest with the unmarked model by sampling
                 (a small model's paraphrase is a resample of the continuation; needs model=)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...config import parse_spec_options
from ...errors import InvalidValueError
from ...registry import Registry


@dataclass(frozen=True)
class TextAttack:
    """A registered attack: `name`, `config_cls`, `fn(ids, config, rng, ctx) -> ids`, `needs` (context names)."""

    name: str
    config_cls: type
    fn: Callable[..., list[int]]
    needs: tuple[str, ...] = ()
    help: str = ""


text_mark_attacks: Registry[TextAttack] = Registry("text watermark attack")


def _register(name: str, config_cls: type, needs: tuple[str, ...] = (), help: str = ""):
    def deco(fn: Callable[..., list[int]]) -> Callable[..., list[int]]:
        text_mark_attacks.add(name, TextAttack(name, config_cls, fn, needs, help), help=help)
        return fn

    return deco


def _fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise InvalidValueError(f"{name} must be in [0, 1], got {value!r}")


@dataclass(frozen=True)
class RateConfig:
    rate: float = field(default=0.1, metadata={"help": "fraction of the text's tokens attacked"})

    def __post_init__(self) -> None:
        _fraction("rate", self.rate)


@dataclass(frozen=True)
class KeepConfig:
    keep: float = field(default=0.5, metadata={"help": "fraction of the marked text kept"})

    def __post_init__(self) -> None:
        _fraction("keep", self.keep)


@dataclass(frozen=True)
class NoConfig:
    pass


def _positions(m: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(m)[: int(rate * m)]


@_register("none", NoConfig, help="no attack")
def _none(ids: list[int], cfg: NoConfig, rng: np.random.Generator, ctx: dict) -> list[int]:
    return list(ids)


@_register("substitute", RateConfig, help="uniform random token substitutions at `rate`")
def _substitute(ids: list[int], cfg: RateConfig, rng: np.random.Generator, ctx: dict) -> list[int]:
    out = list(ids)
    for i in _positions(len(out), cfg.rate, rng):
        out[i] = int(rng.integers(ctx["vocab_size"]))
    return out


@_register("insert", RateConfig, help="uniform random token insertions at `rate`")
def _insert(ids: list[int], cfg: RateConfig, rng: np.random.Generator, ctx: dict) -> list[int]:
    out = list(ids)
    for i in sorted(_positions(len(out), cfg.rate, rng), reverse=True):
        out.insert(int(i), int(rng.integers(ctx["vocab_size"])))
    return out


@_register("delete", RateConfig, help="random token deletions at `rate`")
def _delete(ids: list[int], cfg: RateConfig, rng: np.random.Generator, ctx: dict) -> list[int]:
    drop = set(_positions(len(ids), cfg.rate, rng).tolist())
    out = [t for i, t in enumerate(ids) if i not in drop]
    return out or list(ids[:1])


@_register("synonym", RateConfig, needs=("model",), help="model-proposed substitutions (most likely other token)")
def _synonym(ids: list[int], cfg: RateConfig, rng: np.random.Generator, ctx: dict) -> list[int]:
    model, bos = ctx["model"], ctx.get("bos", 0)
    out = list(ids)
    pos = set(_positions(len(out), cfg.rate, rng).tolist())
    if not pos:
        return out
    with torch.no_grad():
        logits = model(torch.tensor([[bos] + out])).logits[0, :-1]  # (m, V): prediction of token i
    for i in sorted(pos):
        order = logits[i].argsort(descending=True)[:2].tolist()
        out[i] = order[1] if order[0] == out[i] else order[0]
    return out


@_register("mix", KeepConfig, needs=("human",), help="copy-paste: a `keep` share of the marked text in human text")
def _mix(ids: list[int], cfg: KeepConfig, rng: np.random.Generator, ctx: dict) -> list[int]:
    human = list(ctx["human"])
    m = len(ids)
    k = int(round(cfg.keep * m))
    if len(human) < m - k:
        raise InvalidValueError(f"mix needs {m - k} human tokens, got {len(human)}; give longer human text")
    span_at = int(rng.integers(m - k + 1))
    piece = list(ids[span_at:span_at + k])
    h0 = int(rng.integers(len(human) - (m - k) + 1))
    h = human[h0:h0 + m - k]
    cut = int(rng.integers(len(h) + 1))
    return h[:cut] + piece + h[cut:]


@_register("paraphrase", KeepConfig, needs=("model",), help="keep the first `keep` share, resample the rest "
                                                             "with the unmarked model")
def _paraphrase(ids: list[int], cfg: KeepConfig, rng: np.random.Generator, ctx: dict) -> list[int]:
    model, bos = ctx["model"], ctx.get("bos", 0)
    k = int(round(cfg.keep * len(ids)))
    if k >= len(ids):
        return list(ids)
    prefix = torch.tensor([[bos] + list(ids[:k])])
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(int(rng.integers(1 << 31)))
        out = model.generate(input_ids=prefix, attention_mask=torch.ones_like(prefix), do_sample=True, top_k=0,
                             top_p=1.0, temperature=1.0, max_new_tokens=len(ids) - k,
                             min_new_tokens=len(ids) - k, pad_token_id=bos, eos_token_id=bos)
    return out[0, 1:].tolist()


def parse_text_attack(spec: str) -> list[tuple[TextAttack, Any]]:
    """"name:opt=v,...+name2" -> [(attack, config), ...]; unknown names and options fail in one line."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidValueError("attack spec is empty; e.g. substitute:rate=0.1 or none")
    chain = []
    for part in spec.split("+"):
        name, _, opts = part.strip().partition(":")
        att = text_mark_attacks.get(name.strip())
        chain.append((att, att.config_cls(**parse_spec_options(att.name, att.config_cls, opts))))
    return chain


def apply_text_attack(spec: str | list, ids: Sequence[Sequence[int]], vocab_size: int, seed: int = 0,
                      model: Any = None, human: Sequence[int] | None = None, bos: int = 0) -> list[list[int]]:
    """Attack each token-id list; text i uses the generator seeded (seed, i)."""
    chain = parse_text_attack(spec) if isinstance(spec, str) else spec
    ctx = {"vocab_size": int(vocab_size), "model": model, "human": human, "bos": bos}
    for att, _ in chain:
        for need in att.needs:
            if ctx.get(need) is None:
                raise InvalidValueError(f"attack {att.name} needs {need}= (" +
                                        ("the unmarked model" if need == "model" else "human text token ids") + ")")
    out = []
    for i, x in enumerate(ids):
        rng = np.random.default_rng([int(seed), i])
        y = list(x)
        for att, cfg in chain:
            y = att.fn(y, cfg, rng, ctx)
        out.append(y)
    return out
