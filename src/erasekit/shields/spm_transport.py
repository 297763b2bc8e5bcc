"""SPM facilitated transport as a shield: the SPM adapters of one or more edit files, scaled per prompt at inference.

Lyu et al., One-dimensional Adapter to Rule Them All: Concepts, Diffusion Models and Erasing Applications, CVPR 2024
(official `infer_spm.py`). The adapters are not merged into the weights: every prompt gets its own weight gamma_k(p)
per SPM (its similarity to the SPM's erased concepts), so unrelated prompts run the original model. The mechanics
(gamma, the per-row hooks, the deviations from the official code: EOS-state similarity, gamma instead of gamma^2)
are `erasekit.erasers.spm.Transport`; this file only makes it a `Shield`, so that `erasekit eval --shield
"spm_transport:edits=edits/zorbo-spm.safetensors"` measures transport with the same prompts, seeds and metrics as
every other protection (with several files: `edits=a.safetensors;b.safetensors`).

The pipeline must hold the SPM edits' base weights (the model they were trained on, without them applied); the edit
files' sha256s are part of the shield's identity, so the evaluation cache follows their content, not their paths.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from diffusers import StableDiffusionPipeline

from ..config import check_choice
from ..errors import InvalidValueError
from ..io import file_sha256
from . import Plan, ProtectedConcept, Shield

SIMILARITIES = ("eos", "flat")
SCALINGS = ("gamma", "official")


@dataclass(frozen=True)
class SPMTransportConfig:
    edits: tuple[str, ...] = field(default=(), metadata={"help": "SPM edit files (made with --method spm)"})
    similarity: str = field(default="eos", metadata={
        "help": "prompt similarity: 'eos' (EOS state, default) or 'flat' (official: whole 77 x D output)"})
    scaling: str = field(default="gamma", metadata={"help": "'gamma' (paper) or 'official' (gamma^2)"})

    def __post_init__(self) -> None:
        if isinstance(self.edits, str):
            object.__setattr__(self, "edits", (self.edits,))
        if not self.edits or not all(isinstance(e, str) and e.strip() for e in self.edits):
            raise InvalidValueError("spm_transport needs SPM edit files: spm_transport:edits=edits/zorbo-spm.safetensors "
                                    f"(several separated by ';'); got edits={self.edits!r}")
        check_choice("similarity", self.similarity, SIMILARITIES)
        check_choice("scaling", self.scaling, SCALINGS)


def _file_sha256(path: str) -> str:
    return file_sha256(path, "edit file", who="spm_transport")


class SPMTransport(Shield):
    """SPM adapters applied per prompt with facilitated transport (no weight change)."""

    name = "spm_transport"
    config_cls = SPMTransportConfig
    primary = "edits"

    def __init__(self, config: SPMTransportConfig | None = None, concepts: Sequence[str | ProtectedConcept] = (),
                 pipe: StableDiffusionPipeline | None = None):
        if config is None:
            raise InvalidValueError("spm_transport needs edits=FILE (an SPM edit made with --method spm)")
        super().__init__(config, concepts)
        from ..edits import Edit

        self.edits = [Edit.load(p) for p in self.config.edits]
        self.sha256 = [_file_sha256(p) for p in self.config.edits]
        self._transports: dict[int, object] = {}
        if pipe is not None:
            self._transport(pipe)  # check the base weights now, before any generation

    def _transport(self, pipe: StableDiffusionPipeline):
        from ..erasers.spm import Transport

        key = id(pipe)
        if key not in self._transports:
            self._transports[key] = Transport(pipe, self.edits, similarity=self.config.similarity,
                                              scaling=self.config.scaling)
        return self._transports[key]

    def condition(self, pipe: StableDiffusionPipeline, plan: Plan) -> tuple[Plan, dict[str, list]]:
        transport = self._transport(pipe)
        gammas = transport.gammas(plan.prompts)  # (B, K)

        @contextlib.contextmanager
        def active(p: StableDiffusionPipeline) -> Iterator[None]:
            if p is not pipe:
                raise InvalidValueError("spm_transport: the plan was conditioned on another pipeline")
            with transport.active(plan.prompts, gammas):
                yield

        plan.wraps = [*plan.wraps, active]
        return plan, {"gamma": [float(g) for g in gammas.max(axis=1)]}

    def identity(self) -> dict:
        return {**super().identity(), "edit_sha256": self.sha256,
                "erase": [list(e.manifest.get("erase", [])) for e in self.edits]}

    @classmethod
    def content_identity(cls, config: SPMTransportConfig) -> dict:
        """The edit files' sha256s: the evaluation cache follows their content."""
        return {"edit_sha256": [_file_sha256(p) for p in config.edits]}


__all__ = ["SPMTransport", "SPMTransportConfig"]
