"""Imitation measurement and the imitation threshold (FIT / MIMETIC-2, "How Many Van Goghs Does It Take to Van Gogh?").

    from erasekit.imitation import imitation_score, find_threshold, count_by_captions

score.py: top-k imitation score with a pluggable embedding; frequency.py: training frequency from captions (+ image
confirmation); threshold.py: first PELT change point of imitation vs frequency, bootstrap interval, plot;
The toy world's side (true training counts, generation from its prompts) is in the toy-world plugin's own imitation module.
"""

from __future__ import annotations

from .frequency import ConceptCount, caption_matches, count_by_captions, max_f1_threshold
from .score import TOP_K, Embedder, ImitationScore, evaluator_embedder, imitation_score, score_images
from .threshold import PENALTY, ChangePoint, ThresholdResult, find_threshold, first_change_point, plot_threshold

__all__ = ["PENALTY", "TOP_K", "ChangePoint", "ConceptCount", "Embedder", "ImitationScore", "ThresholdResult",
           "caption_matches", "count_by_captions", "find_threshold", "first_change_point", "imitation_score",
           "evaluator_embedder", "max_f1_threshold", "plot_threshold", "score_images"]
