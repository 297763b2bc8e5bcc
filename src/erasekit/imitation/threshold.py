"""The imitation threshold (FIT): the training frequency beyond which a model imitates a concept.

Concepts are sorted by training frequency; their imitation scores form a signal in which PELT (ruptures, l2 cost,
min_size=1, jump=1, penalty 0.9 as published by MIMETIC-2) looks for change points. The threshold is the frequency of
the first concept after the first change point. A bootstrap over concepts gives a percentile interval.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidValueError

PENALTY = 0.9  # published PELT penalty
MIN_CONCEPTS = 3  # fewer concepts cannot show a change point with a segment on each side worth the name


@dataclass(frozen=True)
class ChangePoint:
    """The first change point of imitation vs frequency (None fields when PELT finds no change)."""

    threshold: float | None  # frequency of the first concept after the change
    index: int | None  # position of that concept in frequency order
    breakpoints: tuple[int, ...]  # all PELT segment ends (the last is the number of concepts)


@dataclass(frozen=True)
class ThresholdResult:
    """A threshold estimate with its inputs (in frequency order) and a bootstrap percentile interval."""

    threshold: float | None
    index: int | None
    breakpoints: tuple[int, ...]
    concepts: tuple[str, ...]
    frequencies: tuple[float, ...]
    scores: tuple[float, ...]
    penalty: float
    standardize: bool
    interval: tuple[float, float] | None = None  # (lo, hi) percentile interval of bootstrap thresholds
    confidence: float = 0.95
    n_bootstrap: int = 0
    bootstrap_found: float = 0.0  # fraction of bootstrap draws in which PELT found a change point
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "index": self.index, "breakpoints": list(self.breakpoints),
                "interval": list(self.interval) if self.interval is not None else None,
                "confidence": self.confidence, "n_bootstrap": self.n_bootstrap,
                "bootstrap_found": self.bootstrap_found, "penalty": self.penalty, "standardize": self.standardize,
                "settings": dict(self.settings),
                "concepts": [{"concept": c, "frequency": f, "score": s}
                             for c, f, s in zip(self.concepts, self.frequencies, self.scores)]}


def _check(frequencies: Sequence[float], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(frequencies, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if f.ndim != 1 or s.ndim != 1 or len(f) != len(s):
        raise InvalidValueError(f"frequencies and scores must be 1-D of equal length; got shapes {f.shape} and {s.shape}")
    if len(f) < MIN_CONCEPTS:
        raise InvalidValueError(f"too few concepts for a change point: got {len(f)}, need at least {MIN_CONCEPTS}")
    if not (np.isfinite(f).all() and np.isfinite(s).all()):
        raise InvalidValueError("frequencies and scores must be finite numbers (found NaN or inf)")
    if (f < 0).any():
        raise InvalidValueError(f"frequencies must be >= 0; got {f[f < 0][:5].tolist()}")
    return f, s


def first_change_point(frequencies: Sequence[float], scores: Sequence[float], penalty: float = PENALTY,
                       standardize: bool = False) -> ChangePoint:
    """PELT (l2, min_size=1, jump=1) on scores sorted by frequency; the threshold is the first change point's frequency.

    frequencies, scores: (C,) one value per concept, in any order. standardize: z-score the signal first (not in the
    published method; makes the penalty independent of the score's scale).
    """
    import ruptures

    f, s = _check(frequencies, scores)
    if penalty <= 0:
        raise InvalidValueError(f"penalty must be > 0; got {penalty!r} (published: {PENALTY})")
    order = np.argsort(f, kind="stable")
    f, s = f[order], s[order]
    signal = s
    if standardize:
        sd = s.std()
        signal = (s - s.mean()) / sd if sd > 0 else s - s.mean()
    bkps = tuple(int(b) for b in ruptures.Pelt(model="l2", min_size=1, jump=1).fit(signal.reshape(-1, 1)).predict(
        pen=penalty))
    if len(bkps) < 2:
        return ChangePoint(None, None, bkps)
    return ChangePoint(float(f[bkps[0]]), bkps[0], bkps)


def find_threshold(table: Mapping[str, tuple[float, float]], penalty: float = PENALTY, standardize: bool = False,
                   n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> ThresholdResult:
    """The imitation threshold of `table` {concept: (frequency, imitation score)} and a bootstrap interval.

    The bootstrap resamples concepts with replacement `n_bootstrap` times and reruns `first_change_point`; the interval
    is the (1 - confidence)/2 and (1 + confidence)/2 percentiles of the thresholds of draws that found a change point.
    """
    if not table:
        raise InvalidValueError("no concepts given: the imitation threshold needs {concept: (frequency, score)}")
    for name in table:
        if not str(name).strip():
            raise InvalidValueError(f"empty concept name in the table (concepts: {list(table)[:10]})")
    if not 0 < confidence < 1:
        raise InvalidValueError(f"confidence must be in (0, 1); got {confidence!r}")
    if n_bootstrap < 0:
        raise InvalidValueError(f"n_bootstrap must be >= 0; got {n_bootstrap!r}")
    names = list(table)
    f, s = _check([table[n][0] for n in names], [table[n][1] for n in names])
    cp = first_change_point(f, s, penalty, standardize)
    order = np.argsort(f, kind="stable")
    rng = np.random.default_rng(seed)
    found: list[float] = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(f), len(f))
        if np.unique(idx).size < MIN_CONCEPTS:
            continue
        b = first_change_point(f[idx], s[idx], penalty, standardize)
        if b.threshold is not None:
            found.append(b.threshold)
    interval = None
    if found:
        lo, hi = np.percentile(found, [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2])
        interval = (float(lo), float(hi))
    return ThresholdResult(
        threshold=cp.threshold, index=cp.index, breakpoints=cp.breakpoints,
        concepts=tuple(names[i] for i in order), frequencies=tuple(float(x) for x in f[order]),
        scores=tuple(float(x) for x in s[order]), penalty=penalty, standardize=standardize, interval=interval,
        confidence=confidence, n_bootstrap=n_bootstrap, bootstrap_found=len(found) / n_bootstrap if n_bootstrap else 0.0,
        settings={"algorithm": "ruptures.Pelt", "model": "l2", "min_size": 1, "jump": 1, "pen": penalty,
                  "bootstrap_seed": seed})


def plot_threshold(result: ThresholdResult, title: str = "imitation vs training frequency",
                   xlabel: str = "training images of the concept", log_x: bool = True) -> bytes:
    """PNG bytes of imitation score vs frequency, the threshold as a dashed line and its interval shaded."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    f = np.asarray(result.frequencies)
    s = np.asarray(result.scores)
    x = np.maximum(f, 0.5) if log_x else f
    ax.plot(x, s, "-", color="#bbbbbb", zorder=1)
    ax.scatter(x, s, color="#1f77b4", zorder=2)
    for xi, si, name in zip(x, s, result.concepts):
        ax.annotate(name, (xi, si), fontsize=6, xytext=(3, 3), textcoords="offset points", color="#555555")
    if result.interval is not None:
        lo, hi = result.interval
        ax.axvspan(max(lo, 0.5) if log_x else lo, max(hi, 0.5) if log_x else hi, color="#ff7f0e", alpha=0.15,
                   label=f"{int(round(100 * result.confidence))}% bootstrap interval [{lo:g}, {hi:g}]")
    if result.threshold is not None:
        ax.axvline(max(result.threshold, 0.5) if log_x else result.threshold, color="#d62728", linestyle="--",
                   label=f"threshold {result.threshold:g}")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("imitation score (top-k cosine)")
    ax.set_title(title + ("" if result.threshold is not None else " (no change point found)"), fontsize=10)
    if result.threshold is not None or result.interval is not None:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
