"""Zero-shot test of "was this text sampled from model A?" from A's log-probabilities, with a finite-sample guarantee,
after "Zero-Shot Statistical Tests for LLM-Generated Text Detection using Finite Sample Concentration Inequalities"
(2025): for a text sampled from A, its log-perplexity under A concentrates around its average entropy under A,
except with probability exponentially small in the length; text from another source (a human, another model) sits
near the cross-entropy instead, above the entropy.

Test (H0: x_1..x_n was sampled from A by plain ancestral sampling, given `prompt`): with the clipped surprisal
s_t = min(-log p_A(x_t | x_<t), L) and its exact conditional mean h_t = E_{v ~ p_A(.|x_<t)} min(-log p_A(v), L),
the increments D_t = s_t - h_t are martingale differences under H0, each in an interval of width L known before
x_t. Azuma-Hoeffding: P(sum D_t >= n eps) <= exp(-2 n eps^2 / L^2). So p = exp(-2 n max(mean D, 0)^2 / L^2) is a valid
(conservative) p-value and "reject H0 (not from A) iff p <= delta" wrongly rejects A's own samples with probability
at most delta, for every length n — the guaranteed error. Detection.decision is that rejection; Detection.score is
-mean D (higher = more like A's samples), the statistic ROC curves use.

Deviations (and why): the paper's bounds assume bounded log-probabilities; clipping at L with the clipped entropy
makes the increments bounded and exactly centred for any model (no assumption on A). One-sided (text from another
source has larger surprisal), so the bound has no factor 2. The guarantee holds for sampling at temperature 1 with no
top-k / top-p (erasekit.text.marks.sample); the false-positive rate on human text (human text taken for A's) has no
guarantee: it is measured in bench/textmarks/text_marks.py.
Option bound="bennett" (not in the paper): the conditional variances v_t of the increments are known before x_t, so
exp(lam S_n - psi(lam) sum v_t), psi(lam) = (e^(lam L) - 1 - lam L) / L^2, is a supermartingale for each fixed lam
(Bennett's lemma: increments <= L); a union over a fixed grid of lam gives a valid p-value that is far tighter than
Hoeffding's when most tokens are nearly deterministic, as in the text world.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...errors import InvalidValueError
from . import Detection, check_fpr, encode_texts

DEFAULT_CLIP = 8.0  # nats
DEFAULT_DELTA = 0.01
BOUNDS = ("hoeffding", "bennett")
BENNETT_LAMBDAS = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5)  # fixed in advance; union bound over them


@dataclass(frozen=True)
class ZeroShotConfig:
    clip: float = field(default=DEFAULT_CLIP, metadata={"help": "L: surprisal clip in nats (the bound's range)"})
    delta: float = field(default=DEFAULT_DELTA, metadata={
        "help": "guaranteed bound on rejecting a text the model did sample (p <= delta rejects)"})
    exclude_eos: bool = field(default=True, metadata={
        "help": "score under the model with EOS removed and renormalised: the distribution erasekit's `sample` "
                "draws from (EOS suppressed until the length is reached) and right for text with no EOS inside"})
    bound: str = field(default="hoeffding", metadata={
        "help": "hoeffding: Azuma-Hoeffding (range L); bennett: variance-adaptive supermartingale bound with the "
                "exact conditional variances (tighter on low-entropy text; not in the paper)"})

    def __post_init__(self) -> None:
        from ...config import check_choice

        check_choice("bound", self.bound, BOUNDS)
        if not isinstance(self.exclude_eos, bool):
            raise InvalidValueError(f"exclude_eos must be true or false, got {self.exclude_eos!r}")
        if isinstance(self.clip, bool) or not isinstance(self.clip, (int, float)) or not 0.0 < self.clip < 1e3:
            raise InvalidValueError(f"clip must be a positive number of nats, got {self.clip!r}")
        check_fpr("delta", self.delta)


def surprisal_terms(model: Any, tokenizer: Any, ids: list[int], clip: float, prompt: str = "",
                    exclude_eos: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(n,) increments D_t = min(-log p(x_t), L) - E_p min(-log p, L) of one text after BOS + prompt, and (n,) their
    conditional variances Var_p min(-log p, L) (known before x_t)."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ctx = [bos] + tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else [bos]
    x = torch.tensor([ctx + list(ids)])
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if limit is not None and x.shape[1] > limit:
        raise InvalidValueError(f"text of {len(ids)} tokens (+{len(ctx)} context) exceeds the model's context of "
                                f"{limit}; test a shorter text")
    with torch.no_grad():
        logits = model(x).logits[0, len(ctx) - 1:-1].double()  # (n, V): prediction of each text token
    eos = tokenizer.eos_token_id
    if exclude_eos and eos is not None:
        if eos in ids:
            raise InvalidValueError(f"the text holds the end-of-text token (id {eos}); test it with exclude_eos=False "
                                    "or split it at that token")
        logits[:, eos] = -float("inf")
    logp = torch.log_softmax(logits, dim=-1)
    s_all = (-logp).clamp(max=clip)  # EOS (p = 0): s = L, weight 0
    probs = logp.exp()
    h = (probs * s_all).sum(dim=-1)
    var = (probs * (s_all - h[:, None]) ** 2).sum(dim=-1)
    s = s_all[torch.arange(len(ids)), torch.tensor(ids)]
    return (s - h).numpy(), var.numpy()


def zero_shot_test(model: Any, tokenizer: Any, texts: Sequence[str] | Sequence[Sequence[int]],
                   config: ZeroShotConfig | None = None, prompt: str = "") -> Detection:
    """Test each text (strings, or token-id lists) against H0 "sampled from `model` after `prompt`"."""
    cfg = config or ZeroShotConfig()
    if len(texts) == 0:
        raise InvalidValueError("no texts given; pass at least one non-empty text")
    if isinstance(texts[0], str) or isinstance(texts, str):
        seqs = encode_texts(texts, tokenizer, min_tokens=1)
    else:
        from . import check_ids

        seqs = [check_ids(t, 1, i) for i, t in enumerate(texts)]
    means, ns, variances = [], [], []
    for s in seqs:
        d, v = surprisal_terms(model, tokenizer, s, float(cfg.clip), prompt, cfg.exclude_eos)
        means.append(float(d.mean()))
        ns.append(len(d))
        variances.append(float(v.sum()))
    mean, n, W = np.array(means), np.array(ns, dtype=np.float64), np.array(variances)
    eps = cfg.clip * np.sqrt(math.log(1.0 / cfg.delta) / (2.0 * n))
    if cfg.bound == "hoeffding":
        p = np.exp(-2.0 * n * np.maximum(mean, 0.0) ** 2 / cfg.clip ** 2)
    else:  # exp(lam S - psi(lam) W) is a supermartingale for increments <= b = L (Bennett); union over lambdas
        b, S = float(cfg.clip), mean * n
        lam = np.array(BENNETT_LAMBDAS)[:, None]
        psi = (np.exp(lam * b) - 1.0 - lam * b) / b ** 2
        p = np.minimum(1.0, len(BENNETT_LAMBDAS) * np.exp(-(lam * S[None] - psi * W[None])).min(axis=0))
    how = ("Azuma-Hoeffding, mean >= L sqrt(ln(1/delta) / 2n)" if cfg.bound == "hoeffding" else
           f"Bennett supermartingale, union over lambda in {BENNETT_LAMBDAS}")
    rule = {"statistic": f"mean of min(-log p, {cfg.clip:g}) - clipped entropy (nats/token)",
            "marked_if": f"rejected as not sampled from the model iff p <= {cfg.delta:g} ({how})",
            "threshold": cfg.delta, "fpr": cfg.delta,
            "source": f"{cfg.bound} bound under the model's own sampling (guaranteed for its samples; "
                      "no guarantee for human text)"}
    return Detection("zeroshot", score=-mean, decision=p <= cfg.delta, rule=rule, p_value=p,
                     extra={"tokens": ns, "epsilon": eps.tolist(), "variance_sum": W.tolist()})
