"""Geom-Erasing's inference step as a shield (Liu et al., "Implicit Concept Removal of Diffusion Models", ECCV 2024;
the training step is `erasers/geom_erasing.py`): the learned geometric tokens -- the implicit concept's existence
token and the location tokens where it was found -- are the negative prompt of classifier-free guidance,

    eps = eps(neg) + w (eps(c) - eps(neg)),    neg = [the plan's negative text] + existence token + location tokens.

Use it on the model the Geom-Erasing edit was applied to (the tokens were trained with that UNet):

    edit = erasekit.erase(pipe, "geom_erasing", erase=["mark"], detector="toyworld-mark"); edit.apply(pipe)
    images, info = shielded_generate(pipe, prompts, seeds, shields=get_shield("geom_negative", edit=edit))
    # or from a file: "geom_negative:edit=edits/mark.safetensors"

The tokens are pseudo-words (not in the tokenizer), so the negative conditioning is encoded from token embeddings and
enters as a guidance term with its own conditioning: the loop evaluates eps_u (the plan's text negative, "" by
default), eps_c and eps_neg, and the term subtracts (w - 1) / w (eps_neg - eps_u) from eps_c - eps_u, which gives the
formula above exactly (one UNet evaluation more per step than plain CFG). With guidance w <= 1 there is no negative
prompt (as in diffusers) and the shield does nothing. Any text negative of an earlier shield in the chain is kept in
front of the tokens (behind them when the edit trained its tokens before the caption, `token_position="before"`).
An edit that also trained the text encoder (`text_encoder_lr > 0`) must be applied to the pipeline, so that the
negative is encoded by the same text encoder as in training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import StableDiffusionPipeline

from ..config import check_choice
from ..errors import InvalidValueError
from ..io import file_sha256
from . import GuidanceTerm, Plan, ProtectedConcept, Shield

CELLS = ("learned", "all", "none")  # = erasers.geom_erasing.CELL_MODES (not imported: `erasekit ls` stays light)


@dataclass(frozen=True)
class GeomNegativeConfig:
    edit: str = field(default="", metadata={
        "help": "the Geom-Erasing edit file holding the tokens ('' = pass edit=<Edit> from Python)"})
    cells: str = field(default="learned", metadata={
        "help": "location tokens of the negative prompt: learned (where the detector found the concept), all, none"})

    def __post_init__(self) -> None:
        check_choice("cells", self.cells, CELLS)


class _GeomTerm(GuidanceTerm):
    """Swaps the unconditional prediction for the geometric negative's: returns (w - 1) / w (eps_neg - eps_u)."""

    def __init__(self, neg: torch.Tensor, guidance: float):
        self.conds = [neg]
        self.factor = (guidance - 1.0) / guidance

    def __call__(self, i: int, t: torch.Tensor, eps_u: torch.Tensor, eps_c: torch.Tensor,
                 eps_extra: list[torch.Tensor]) -> torch.Tensor:
        return self.factor * (eps_extra[0] - eps_u)


def _file_sha256(path: str) -> str:
    return file_sha256(path, "edit file", who="geom_negative")


class GeomNegative(Shield):
    """Geom-Erasing's negative prompt of geometric tokens (from a Geom-Erasing edit)."""

    name = "geom_negative"
    config_cls = GeomNegativeConfig

    def __init__(self, config: GeomNegativeConfig | None = None, concepts: Sequence[str | ProtectedConcept] = (),
                 edit: Any = None, tokens: Any = None):
        super().__init__(config, concepts)
        from ..erasers.geom_erasing import GeomTokenSet

        given = [x for x in (self.config.edit or None, edit, tokens) if x is not None]
        if len(given) != 1:
            raise InvalidValueError("geom_negative needs exactly one source of tokens: geom_negative:edit=FILE, "
                                    f"edit=<Edit> or tokens=<GeomTokenSet>; got {len(given)}")
        if tokens is not None:
            if not isinstance(tokens, GeomTokenSet):
                raise InvalidValueError(f"tokens must be a GeomTokenSet, got {type(tokens).__name__}")
            self.tokens = tokens
        else:
            self.tokens = GeomTokenSet.from_edit(given[0])
        self.rows = self.tokens.rows(self.config.cells)
        self.text = " ".join(self.tokens.names[r] for r in self.rows)

    @classmethod
    def content_identity(cls, config: GeomNegativeConfig) -> dict:
        return {"edit_sha256": _file_sha256(config.edit)} if config.edit else {}

    def condition(self, pipe: StableDiffusionPipeline, plan: Plan) -> tuple[Plan, dict[str, list]]:
        from ..erasers.geom_erasing import encode_with_tokens

        if plan.guidance <= 1.0:
            return plan, {}
        dim = int(plan.cond.shape[-1])
        if self.tokens.vectors.shape[1] != dim:
            raise InvalidValueError(f"geom_negative: the tokens are {self.tokens.vectors.shape[1]}-dimensional, this "
                                    f"model's text encoder is {dim}-dimensional (the edit was made on another model)")
        with torch.no_grad():
            neg = encode_with_tokens(pipe, plan.negative, [self.rows] * len(plan.negative), self.tokens.vectors,
                                     self.tokens.position)
        plan.terms.append(_GeomTerm(neg.to(plan.cond.dtype), plan.guidance))
        return plan, {"negative": [f"{n} {self.text}".strip() for n in plan.negative]}

    def identity(self) -> dict:
        v = self.tokens.vectors.contiguous().numpy()
        return {**super().identity(), "negative_prompt": self.text, "concept": self.tokens.concept,
                "vectors_sha256": hashlib.sha256(v.tobytes()).hexdigest()}


__all__ = ["GeomNegative", "GeomNegativeConfig"]
