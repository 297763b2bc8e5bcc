"""Dataset provenance for causal LMs: was my data trained on? Marks a data owner puts into documents before
publishing them, and the membership tests that find them in a suspect model.

    from erasekit.text.provenance import get_provenance
    traps = get_provenance("traps")          # Provenance(name, paper, config_cls, module)
    traps.module.make_traps(...), traps.module.inject_traps(...), traps.module.detect_traps(...)

Registered lazily in `text_provenance` ("module:attr" of each method's `Provenance` record, so listing imports
nothing heavy):
    traps      copyright traps (Meeus et al., ICML 2024): unique sequences injected at controlled repetitions,
               detected by the target/reference perplexity ratio (`traps.py`)
    leximark   LexiMark (German et al., 2025): keyed synonym substitution of the highest-entropy words, detected by
               membership inference and a key-permutation test (`leximark.py`)
Trap files and LexiMark keys are user files (JSON); the CLI is `erasekit text provenance ...`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from ...registry import Registry


@dataclass(frozen=True)
class Provenance:
    """A registered dataset-provenance method: name, paper, its config dataclass and the module with its functions."""

    name: str
    paper: str
    config_cls: type
    module: ModuleType


text_provenance: Registry[Provenance] = Registry("text provenance method")
text_provenance.add("traps", "erasekit.text.provenance.traps:PROVENANCE",
                    help="copyright traps (Meeus et al. ICML 2024): inject unique sequences at controlled "
                         "repetitions; perplexity-ratio membership test vs a reference model")
text_provenance.add("leximark", "erasekit.text.provenance.leximark:PROVENANCE",
                    help="LexiMark (German et al. 2025): keyed synonym substitution of high-entropy words; Min-K%++ "
                         "membership AUC and a key-permutation p-value")
text_provenance.add("amuse", "erasekit.text.provenance.amuse:PROVENANCE",
                    help="AMUSE (Ranjbar Alvar et al. ICME 2025): adaptive multi-segment sub-messages of an owner "
                         "message in keyed synonym choices; decoded from a suspect model's likelihoods")


def get_provenance(name: str) -> Provenance:
    """The registered provenance method `name` (unknown names raise with close matches)."""
    return text_provenance.get(name)


__all__ = ["Provenance", "get_provenance", "text_provenance"]
