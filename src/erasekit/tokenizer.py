"""The Stable Diffusion 1.x CLIP tokenizer, built offline from the BPE vocabulary shipped in the package.

The conversion mirrors OpenAI CLIP's `SimpleTokenizer`: 256 byte tokens, the same with an end-of-word mark, the first
48,894 merges, then `<|startoftext|>` (49406) and `<|endoftext|>` (49407). The result reproduces the ids of
`openai/clip-vit-large-patch14` (pad = eos = 49407, max length 77).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
from importlib import resources

from transformers import CLIPTokenizer

from .errors import IntegrityError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
MAX_LENGTH = 77


def _bytes_to_unicode() -> list[str]:
    """CLIP's reversible byte -> printable-unicode table, in CLIP's order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


@functools.lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    raw = resources.files("erasekit.assets").joinpath(BPE_FILE).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != BPE_SHA256:
        raise IntegrityError(f"{BPE_FILE} has sha256 {digest}, expected {BPE_SHA256}; the package is damaged")
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    byte_tokens = _bytes_to_unicode()
    words = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m) for m in merges]
    words += ["<|startoftext|>", "<|endoftext|>"]
    return {w: i for i, w in enumerate(words)}, merges  # type: ignore[return-value]


def clip_tokenizer() -> CLIPTokenizer:
    """A fresh `CLIPTokenizer` identical in ids to `openai/clip-vit-large-patch14`'s, built without network."""
    vocab, merges = _vocab_and_merges()
    tok = CLIPTokenizer(vocab=dict(vocab), merges=list(merges))
    tok.model_max_length = MAX_LENGTH
    return tok
