"""Negative prompting and prompt rewriting, as studied by CopyCat (He et al., "Fantastic Copyrighted Beasts and How
(Not) to Generate Them", ICLR 2025; princeton-nlp/CopyCat, main.py).

`negative_prompt`: the unconditional slot of classifier-free guidance gets "{name}, {keyword 1}, ..., {keyword k}",
so eps = eps(neg) + w (eps(c) - eps(neg)). CopyCat's best mitigation is "keyword-5": the character's name and five
trigger keywords. `rewrite`: the prompt loses every whole-word mention of a protected name (CopyCat's stand-in for
DALL-E's LLM prompt rewriting); the paper's finding is that rewriting alone is not enough because keywords still
trigger the character, and that it must be combined with negative prompts ("rewrite+negative_prompt").

Deviations from the official code: keywords come from the concept (toy-world catalogue, user list, or a keyword
finder) instead of CopyCat's CSV files of GPT-4 / embedding / co-occurrence keywords; CopyCat strips ", cartoon" from
its keyword strings, which is specific to its data and not done here; the rewrite is deterministic name removal
(optionally keyword removal) instead of an LLM; CopyCat samples with guidance 3 and 50 steps, erasekit uses the model's
own defaults unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from diffusers import StableDiffusionPipeline

from ..errors import InvalidValueError
from . import Plan, ProtectedConcept, Shield
from .detector import drop_terms, find_terms


@dataclass(frozen=True)
class NegativePromptConfig:
    max_keywords: int = field(default=5, metadata={"help": "trigger keywords per concept (CopyCat's keyword-5)"})
    include_name: bool = field(default=True, metadata={"help": "put the concept's name first (False = 'noname')"})
    text: str = field(default="", metadata={"help": "explicit negative prompt; replaces the concept-derived one"})

    def __post_init__(self) -> None:
        if self.max_keywords < 0:
            raise InvalidValueError(f"max_keywords must be >= 0, got {self.max_keywords}")


def negative_text(concepts: Sequence[ProtectedConcept], max_keywords: int = 5, include_name: bool = True) -> str:
    """CopyCat's negative prompt "{name}, {keywords}" for each concept, joined by ", "."""
    parts = []
    for c in concepts:
        parts += ([c.name] if include_name else []) + list(c.keywords[:max_keywords])
    return ", ".join(p for p in parts if p.strip())


class NegativePrompt(Shield):
    """CopyCat negative prompt: the concept's name plus its trigger keywords in the unconditional slot."""

    name = "negative_prompt"
    config_cls = NegativePromptConfig

    def __init__(self, config: NegativePromptConfig | None = None, concepts: Sequence[str | ProtectedConcept] = ()):
        super().__init__(config, concepts)
        self.text = self.config.text or negative_text(self.concepts, self.config.max_keywords, self.config.include_name)
        if not self.text:
            raise InvalidValueError("negative_prompt needs protected concepts (with a name or keywords) or text=...; "
                                    f"got concepts={[c.name for c in self.concepts]}, text={self.config.text!r}")

    def condition(self, pipe: StableDiffusionPipeline, plan: Plan) -> tuple[Plan, dict[str, list]]:
        plan.negative = [f"{n}, {self.text}" if n else self.text for n in plan.negative]
        return plan, {}

    def identity(self) -> dict:
        return {**super().identity(), "negative_prompt": self.text}


@dataclass(frozen=True)
class RewriteConfig:
    keywords: bool = field(default=False, metadata={
        "help": "also drop trigger keywords (default: names only, as CopyCat's name-dropping rewrite)"})


class PromptRewrite(Shield):
    """Prompt rewriting that drops the names of protected concepts (replaced by each concept's anchor, default none)."""

    name = "rewrite"
    config_cls = RewriteConfig

    def __init__(self, config: RewriteConfig | None = None, concepts: Sequence[str | ProtectedConcept] = ()):
        super().__init__(config, concepts)
        if not self.concepts:
            raise InvalidValueError("rewrite needs at least one protected concept; got none")

    def prepare(self, prompts: list[str]) -> tuple[list[str], np.ndarray, dict[str, list]]:
        out, changed = [], []
        for p in prompts:
            q = p
            for c in self.concepts:
                terms = c.terms if self.config.keywords else (c.name,)
                if find_terms(q, terms):
                    q = drop_terms(q, terms, anchor=c.anchor)
            out.append(q)
            changed.append(q != p)
        return out, np.zeros(len(prompts), dtype=bool), {"rewritten": changed}


__all__ = ["NegativePrompt", "NegativePromptConfig", "PromptRewrite", "RewriteConfig", "negative_text"]
