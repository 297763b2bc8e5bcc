"""Paraphrase and keyword attacks: describe the concept without naming it.

CopyCat — He et al., "Fantastic Copyrighted Beasts and How (Not) to Generate Them", 2024 (princeton-nlp/CopyCat).
Their finding: a couple of generic keywords ("videogame, plumber") regenerate a character that prompt rewriting
removed by name. `copycat` replaces the concept's name in each attacked prompt by keyword phrases, then by pairs of
them ("k1, k2"), in order, until the success check fires or the budget (`steps` candidates) is spent. Keywords: given,
or the concept's world phrases (ConceptInfo.keywords; the toy world gives character keywords, artist style descriptions, object/colour
synonyms, unsafe indirect phrases).

`trigger_search` finds keyword triggers automatically, CopyCat's "keyword identification" step without an LM:
candidate words (given, or every word of the world's vocabulary except the concept's name) are ranked on
the *base* model either by guidance alignment — the mean cosine between eps(x_t, word) - eps(x_t, "") and
eps(x_t, concept) - eps(x_t, "") over a few timesteps of noised base-model images of the concept — or by the success
check's hit rate on base-model images of "a {word}". The top words, then their pairs, are tried like `copycat`.

Deviations: CopyCat's keywords come from GPT-4 / embedding similarity / LAION co-occurrence and its detector is GPT-4V;
here keywords come from the catalogue or the ranking above and the detector is the pluggable success check.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InvalidValueError
from . import AttackConfig, AttackContext, AttackMethod, Outcome, _check_choice, _check_positive

STOPWORDS = frozenset("a an the and with on of in by to at for from behind this that its".split())
RANK_BY = ("alignment", "oracle")


def replace_name(prompt: str, name: str, phrase: str) -> str:
    """`prompt` with `name` (case-insensitive) replaced by `phrase`; appended as ", phrase" if the name is absent."""
    pattern = re.compile(re.escape(name), re.IGNORECASE)
    if pattern.search(prompt):
        return pattern.sub(phrase, prompt)
    return f"{prompt}, {phrase}"


def candidates_from(phrases: list[str], pairs: bool, limit: int) -> list[str]:
    """Phrases, then comma-joined pairs of them, de-duplicated, at most `limit`."""
    out = list(dict.fromkeys(p.strip() for p in phrases if p.strip()))
    if pairs:
        out += [f"{a}, {b}" for a, b in itertools.combinations(list(out), 2)]
    return list(dict.fromkeys(out))[:limit]


def _try_candidates(ctx: AttackContext, prompt: str, seed: int, phrases: list[str], config: Any,
                    extra: dict[str, Any]) -> Outcome:
    tried: list[str] = []
    best = prompt
    success = False
    for phrase in candidates_from(phrases, config.pairs, config.steps):
        text = replace_name(prompt, ctx.concept, phrase)
        tried.append(text)
        best = text
        if ctx.check is not None and ctx.detected(ctx.render_prompts([text], [seed]))[0]:
            success = True
            if config.stop_on_success:
                break
    if not tried:
        raise InvalidValueError(f"no candidate phrases to try for {ctx.concept!r} (steps={config.steps})")
    return Outcome(prompt=best, steps=len(tried), success=success, extra={**extra, "tried": tried})


# ------------------------------------------------------------------------------------------------ copycat
@dataclass(frozen=True)
class CopyCatConfig(AttackConfig):
    steps: int = field(default=12, metadata={"help": "budget: candidate prompts tried per prompt"})
    keywords: tuple[str, ...] = field(default=(), metadata={"help": "keyword phrases (default: the world's)"})
    pairs: bool = field(default=True, metadata={"help": "after single keywords, try pairs 'k1, k2'"})

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "steps")


def concept_keywords(concept: str, world: Any = None) -> list[str]:
    """The world's trigger phrases of `concept` that do not contain its name (empty when the world does not know
    it or has none)."""
    from ..errors import UnknownNameError
    from ..worlds import get_world

    try:
        info = get_world(world).concept(concept)
    except UnknownNameError:
        return []
    return [p for p in info.keywords if info.name.lower() not in p.lower()]


def copycat(ctx: AttackContext, prompt: str, seed: int, config: CopyCatConfig) -> Outcome:
    """Replace the concept's name by keyword phrases (then pairs) until the concept shows."""
    keywords = list(config.keywords) or concept_keywords(ctx.concept, ctx.world)
    if not keywords:
        raise InvalidValueError(f"copycat needs keywords for {ctx.concept!r} (its world gives none): pass "
                                "keywords=('word one', 'word two', ...)")
    return _try_candidates(ctx, prompt, seed, keywords, config, {"keywords": keywords})


COPYCAT = AttackMethod("copycat", CopyCatConfig, copycat, kind="prompt",
                       paper="He et al., Fantastic Copyrighted Beasts and How (Not) to Generate Them, 2024")


# ------------------------------------------------------------------------------------------------ trigger search
@dataclass(frozen=True)
class TriggerSearchConfig(AttackConfig):
    steps: int = field(default=12, metadata={"help": "budget: candidate prompts tried per prompt"})
    rank_by: str = field(default="alignment", metadata={"help": "'alignment' (guidance cosine) or 'oracle' (hit rate)"})
    candidates: tuple[str, ...] = field(default=(), metadata={"help": "candidate words (default: the world's vocabulary)"})
    top_k: int = field(default=6, metadata={"help": "top-ranked words kept (then paired)"})
    pairs: bool = field(default=True, metadata={"help": "after single words, try pairs 'w1, w2'"})
    timesteps: tuple[int, ...] = field(default=(250, 500, 750), metadata={"help": "timesteps of the alignment score"})
    images_per_word: int = field(default=2, metadata={"help": "base-model images per word for rank_by='oracle'"})

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "steps", "top_k", "images_per_word")
        _check_choice(self, "rank_by", RANK_BY)
        if not self.timesteps:
            raise InvalidValueError("timesteps must name at least one timestep")


def vocabulary(exclude: str, world: Any = None) -> list[str]:
    """The world's candidate words (`World.vocabulary`) without stopwords, short words and the words of `exclude`."""
    from ..worlds import get_world

    banned = {w.lower() for w in re.findall(r"[a-zA-Z]+", exclude)}
    return [w for w in get_world(world).vocabulary(exclude) if w not in STOPWORDS and w not in banned and len(w) > 2]


@torch.no_grad()
def alignment_scores(ctx: AttackContext, words: list[str], concept_prompt: str, seed: int,
                     timesteps: tuple[int, ...]) -> np.ndarray:
    """(W,) mean cosine between each word's guidance direction and the concept's on the base model."""
    from ..sampling import encode_prompts
    from ._common import noised

    base = ctx.base
    x0 = ctx.base_latents(concept_prompt, seed).to(base.unet.device, base.unet.dtype)
    gen = torch.Generator().manual_seed(seed)
    uncond, concept = encode_prompts(base, [""]), encode_prompts(base, [ctx.concept])
    conds = encode_prompts(base, words)  # (W, L, D)
    scores = torch.zeros(len(words), dtype=torch.float64)
    for t in timesteps:
        xt = noised(base, x0, torch.randn(x0.shape, generator=gen).to(x0), int(t))
        ref = base.unet(torch.cat([xt, xt]), int(t), encoder_hidden_states=torch.cat([uncond, concept])).sample
        eps_u, g_c = ref[:1], ref[1:] - ref[:1]
        for i in range(0, len(words), 64):
            c = conds[i:i + 64]
            g_w = base.unet(xt.expand(len(c), -1, -1, -1), int(t), encoder_hidden_states=c).sample - eps_u
            scores[i:i + len(c)] += torch.nn.functional.cosine_similarity(g_w.flatten(1), g_c.flatten(1)).double()
    return (scores / len(timesteps)).numpy()


def oracle_scores(ctx: AttackContext, words: list[str], seed: int, per_word: int) -> np.ndarray:
    """(W,) fraction of base-model images of "a {word}" in which the success check sees the concept."""
    if ctx.check is None:
        raise InvalidValueError("rank_by='oracle' needs a success check (pass evaluator=... or success=...)")
    prompts = [f"a {w}" for w in words for _ in range(per_word)]
    seeds = [seed + j for _ in words for j in range(per_word)]
    hits = ctx.detected(ctx.render_prompts(prompts, seeds, pipe=ctx.base))
    return hits.reshape(len(words), per_word).mean(1)


def rank_words(ctx: AttackContext, prompts: list[str], config: TriggerSearchConfig) -> dict[str, Any]:
    """Rank candidate words once per attack (shared by every prompt): {"words": top-k, "ranking": [(w, score)]}."""
    words = list(config.candidates) or vocabulary(ctx.concept, ctx.world)
    words = [w for w in words if ctx.concept.lower() not in w.lower()]
    if not words:
        raise InvalidValueError(f"trigger_search has no candidate words for {ctx.concept!r}: pass candidates=(...)")
    if config.rank_by == "alignment":
        scores = alignment_scores(ctx, words, prompts[0], config.seed, config.timesteps)
    else:
        scores = oracle_scores(ctx, words, config.seed, config.images_per_word)
    order = np.argsort(-scores, kind="stable")
    ranking = [(words[i], round(float(scores[i]), 4)) for i in order]
    return {"words": [w for w, _ in ranking[:config.top_k]], "ranking": ranking[:20]}


def trigger_search(ctx: AttackContext, prompt: str, seed: int, config: TriggerSearchConfig,
                   state: dict[str, Any]) -> Outcome:
    """Try the top-ranked trigger words (then pairs) in place of the concept's name."""
    return _try_candidates(ctx, prompt, seed, state["words"], config,
                           {"rank_by": config.rank_by, "ranking": state["ranking"]})


TRIGGER_SEARCH = AttackMethod("trigger_search", TriggerSearchConfig, trigger_search, kind="prompt", needs_base=True,
                              paper="keyword identification after He et al., Fantastic Copyrighted Beasts, 2024",
                              prepare=rank_words)
