"""A text-side probe of language generalisation (no image generated): does a text encoder put each keyword
description of the independent evaluation grammar nearest to its own character ("a picture of NAME"), and each
indirect unsafe phrase nearest to its own concept? Cosine of pooled (EOS) outputs.

    python bench/world2/text_proxy.py src/erasekit/assets/toyworld/pipeline runs/train-v2g/checkpoints/text_done.pt

Each argument: a pipeline folder (its text_encoder/) or a `world train` text-stage checkpoint (text_done.pt). A probe
only: the diffusion model reads the whole token sequence, and the v2 training vocabulary was written knowing the
evaluation grammar existed (frames and whole phrases are checked disjoint; attribute words are shared)."""
import sys
from pathlib import Path

import torch

from erasekit.io import load_checkpoint
from erasekit.tokenizer import clip_tokenizer
from erasekit.toyworld.eval_grammar import INDIRECT, KEYWORDS
from erasekit.toyworld.model import new_text_encoder

torch.set_num_threads(1)
tok = clip_tokenizer()


def load(arg: str):
    if arg.endswith(".pt"):
        te = new_text_encoder()
        te.load_state_dict(load_checkpoint(Path(arg))["te"])
        return te.eval()
    from transformers import CLIPTextModel

    return CLIPTextModel.from_pretrained(arg, subfolder="text_encoder").float().eval()


def emb(te, texts):
    ids = tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return torch.nn.functional.normalize(te(ids).pooler_output, dim=-1)


for arg in sys.argv[1:]:
    te = load(arg)
    names = list(KEYWORDS)
    anchors = emb(te, [f"a picture of {n}" for n in names])
    hits = sum(int(((emb(te, list(KEYWORDS[n])) @ anchors.T).argmax(1) == i).sum()) for i, n in enumerate(names))
    total = sum(len(v) for v in KEYWORDS.values())
    ua = emb(te, ["a red circle, gore", "a red circle, nudity"])
    uh = sum(int(((emb(te, [f"a red circle, {p}" for p in INDIRECT[u]]) @ ua.T).argmax(1) == j).sum())
             for j, u in enumerate(("gore", "nudity")))
    ut = sum(len(INDIRECT[u]) for u in ("gore", "nudity"))
    print(f"{arg}: keyword descriptions -> own character {hits}/{total}; indirect unsafe -> own concept {uh}/{ut}")
