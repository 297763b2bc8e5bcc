"""The toy world's oracle: a small classifier that knows the truth of every rendered concept.

One head per family (object, colour, artist, character, unsafe), each with "none" as class 0. Trained on fresh renders
with blur/noise/shift/colour augmentations so that it also reads generated images; its penultimate features
(`embed`, 256-d) serve as the toy world's image embedding (e.g. for imitation scores).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..errors import InvalidValueError
from ..io import atomic_write_bytes, atomic_write_text
from .catalogue import CATALOGUE, FAMILIES, NONE, Catalogue
from .model import Oracle
from .render import Scene, render

ORACLE_NAME = "toyworld-oracle"
UNSURE = "unsure"  # what a calibrated head says below its confidence threshold, when asked to abstain
ECE_BINS = 15  # equal-width confidence bins of the expected calibration error


def random_scenes(n: int, seed: int, catalogue: Catalogue = CATALOGUE) -> list[Scene]:
    """`n` scenes with every concept equally likely (tail artists included): the oracle's training/eval distribution."""
    rng = np.random.default_rng(seed)
    objects = [o.name for o in catalogue.objects]
    colours = [c.name for c in catalogue.colours]
    artists = [NONE] * 3 + [a.name for a in catalogue.artists]
    chars = [c.name for c in catalogue.characters]
    unsafe = [u.name for u in catalogue.unsafe]
    out = []
    for i in range(n):
        artist = artists[rng.integers(len(artists))]
        u = unsafe[rng.integers(len(unsafe))] if rng.random() < 0.25 else NONE
        s = int(rng.integers(0, 2**31 - 1))
        if rng.random() < 0.3:
            out.append(Scene(character=chars[rng.integers(len(chars))], artist=artist, unsafe=u, seed=s))
        else:
            out.append(Scene(object=objects[rng.integers(len(objects))], colour=colours[rng.integers(len(colours))],
                             artist=artist, unsafe=u, seed=s))
    return out


def scene_labels(scenes: list[Scene], catalogue: Catalogue = CATALOGUE) -> dict[str, torch.Tensor]:
    out = {}
    for f in FAMILIES:
        idx = {c: i for i, c in enumerate(catalogue.classes(f))}
        out[f] = torch.tensor([idx[s.labels()[f]] for s in scenes])
    return out


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, 32, 32, 3) uint8 -> (N, 3, 32, 32) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur, noise, +-1 px shift and colour jitter, so the oracle reads decoded/generated images too. (B,3,H,W)->same."""
    b = x.shape[0]
    sigma = torch.rand(b, generator=gen) * 1.2
    k = torch.arange(-2, 3, dtype=torch.float32)
    w = torch.exp(-(k[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    w = w / w.sum(1, keepdim=True)  # (B, 5)
    pad = F.pad(x, (2, 2, 2, 2), mode="replicate")
    kernels = (w[:, :, None] * w[:, None, :])  # (B, 5, 5)
    x = F.conv2d(pad.reshape(1, b * 3, *pad.shape[2:]), kernels.repeat_interleave(3, 0)[:, None], groups=b * 3)
    x = x.reshape(b, 3, *x.shape[2:])
    shift = torch.randint(-1, 2, (2,), generator=gen)
    x = torch.roll(x, (int(shift[0]), int(shift[1])), dims=(2, 3))
    gain = 1 + (torch.rand(b, 3, 1, 1, generator=gen) - 0.5) * 0.16
    bias = (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.1
    x = x * gain + bias + torch.randn(x.shape, generator=gen) * torch.rand(b, 1, 1, 1, generator=gen) * 0.05
    return x.clamp(0, 1)


@dataclass(frozen=True)
class OracleTrainConfig:
    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    pool: int = 24000  # pre-rendered training scenes (re-augmented every step)
    seed: int = 0


class ToyOracle:
    """Wraps the trained `Oracle` network with its class lists and a pinned identity (name, version, sha256)."""

    def __init__(self, net: Oracle, catalogue: Catalogue = CATALOGUE, sha256: str = "", version: str = "",
                 temperatures: dict[str, float] | None = None, unsure_below: float = 0.0, name: str = ORACLE_NAME):
        self.net = net.eval()
        self.catalogue = catalogue
        self.classes = {f: catalogue.classes(f) for f in FAMILIES}
        self.sha256 = sha256
        self.version = version
        self.temperatures = dict(temperatures) if temperatures else None  # per-head calibration (robust oracle)
        self.unsure_below = float(unsure_below)
        self.name = name

    # -------------------------------------------------------------------------------------------------- identity
    def identity(self) -> dict:
        """What a result must record to be reproducible: evaluator name, version, weights hash, classes, rule."""
        if self.temperatures is None:
            return {"name": self.name, "version": self.version, "weights_sha256": self.sha256,
                    "decision": "argmax per head", "classes": self.classes}
        return {"name": self.name, "version": self.version, "weights_sha256": self.sha256,
                "decision": f"argmax per head of temperature-scaled softmax; 'unsure' (on request) where the top "
                            f"probability < {self.unsure_below}",
                "temperatures": self.temperatures, "classes": self.classes}

    # ------------------------------------------------------------------------------------------------- inference
    @staticmethod
    def as_tensor(images) -> torch.Tensor:
        """Accept PIL images, (N,32,32,3) uint8 arrays or (N,3,32,32) float tensors in [0,1]."""
        if isinstance(images, torch.Tensor):
            x = images.float()
        else:
            if isinstance(images, (list, tuple)):
                images = np.stack([np.asarray(im.convert("RGB") if hasattr(im, "convert") else im) for im in images])
            x = to_tensor(np.asarray(images))
        if x.ndim != 4 or x.shape[1:] != (3, 32, 32):
            raise InvalidValueError(f"the toy-world oracle reads (N, 3, 32, 32) images; got shape {tuple(x.shape)}")
        return x

    @torch.no_grad()
    def probs(self, images, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """{family: (N, n_classes) softmax probabilities}."""
        x = self.as_tensor(images)
        outs = [self.net(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        temps = self.temperatures or {}
        return {f: (torch.cat([o[f] for o in outs]) / temps.get(f, 1.0)).softmax(-1) for f in FAMILIES}

    def predict(self, images, abstain: bool = False) -> list[dict[str, str]]:
        """One {family: class name} dict per image; with `abstain`, a head whose top probability is below
        `unsure_below` says "unsure"."""
        p = self.probs(images)
        conf = {f: p[f].max(-1) for f in FAMILIES}
        idx = {f: conf[f].indices.tolist() for f in FAMILIES}
        low = {f: (conf[f].values < self.unsure_below).tolist() for f in FAMILIES}
        return [{f: UNSURE if abstain and low[f][i] else self.classes[f][idx[f][i]] for f in FAMILIES}
                for i in range(len(idx["object"]))]

    @torch.no_grad()
    def embed(self, images, batch_size: int = 256) -> torch.Tensor:
        """(N, 256) penultimate features."""
        x = self.as_tensor(images)
        return torch.cat([self.net.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])

    def accuracy(self, images, scenes: list[Scene]) -> dict[str, float]:
        """Per-head accuracy against the scenes' true labels."""
        preds = self.predict(images)
        return {f: float(np.mean([p[f] == s.labels()[f] for p, s in zip(preds, scenes)])) for f in FAMILIES}

    # ----------------------------------------------------------------------------------------------------- files
    def save(self, directory: str | Path, extra: dict | None = None, stem: str = "oracle") -> None:
        """Write `<stem>.safetensors` and `<stem>.json` (name, hash, classes, temperatures if any, `extra`)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        path = directory / f"{stem}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file(state, str(tmp))
        tmp.replace(path)
        self.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        meta = {"name": self.name, "version": self.version, "weights_sha256": self.sha256,
                "head_sizes": self.net.head_sizes, "classes": self.classes}
        if self.temperatures is not None:
            meta.update(temperatures=self.temperatures, unsure_below=self.unsure_below)
        atomic_write_text(directory / f"{stem}.json", json.dumps({**meta, **(extra or {})}, indent=1))

    @classmethod
    def load(cls, directory: str | Path, catalogue: Catalogue = CATALOGUE, stem: str = "oracle") -> "ToyOracle":
        directory = Path(directory)
        meta = json.loads((directory / f"{stem}.json").read_text())
        path = directory / f"{stem}.safetensors"
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        if sha != meta["weights_sha256"]:
            from ..errors import IntegrityError

            raise IntegrityError(f"{path} has sha256 {sha}, oracle.json records {meta['weights_sha256']}")
        net = Oracle(meta["head_sizes"])
        net.load_state_dict(load_file(str(path)))
        return cls(net, catalogue, sha256=sha, version=meta.get("version", ""), temperatures=meta.get("temperatures"),
                   unsure_below=meta.get("unsure_below", 0.0), name=meta.get("name", ORACLE_NAME))


def train_heads(net: torch.nn.Module, x: torch.Tensor, y: dict[str, torch.Tensor], steps: int, batch_size: int,
                lr: float, gen: torch.Generator, augment_fn, progress=None, label_smoothing: float = 0.0) -> None:
    """The training loop of every toy-world judge (oracle, robust oracle, judge2): AdamW (weight decay 1e-4), 100
    warm-up steps then cosine decay, a batch of `batch_size` drawn from x (N, 3, 32, 32) with `gen`, augmented by
    `augment_fn(batch, gen)`, summed cross-entropy over the family heads of `net` against y {family: (N,)}. Leaves
    `net` in eval mode; `progress(step, loss)` after each step."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    net.train()
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        logits = net(augment_fn(x[idx], gen))
        loss = sum(F.cross_entropy(logits[f], y[f][idx], label_smoothing=label_smoothing) for f in FAMILIES)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress(step + 1, float(loss.detach()))
    net.eval()


def ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Expected calibration error of (N, C) probabilities against (N,) labels (equal-width confidence bins)."""
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += float(m.float().mean() * (conf[m].mean() - correct[m].mean()).abs())
    return total


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) (1-d search over log T)."""
    grid = torch.linspace(math.log(0.25), math.log(8.0), 141)
    nll = torch.stack([F.cross_entropy(logits / t.exp(), labels) for t in grid])
    return float(grid[int(nll.argmin())].exp())


def heldout_metrics(judge, images, scenes: list[Scene], catalogue: Catalogue = CATALOGUE) -> dict[str, dict[str, float]]:
    """{family: {accuracy, ece, unsure}} of a judge with `probs(images)` and `unsure_below` on labelled images."""
    y = scene_labels(scenes, catalogue)
    p = judge.probs(images)
    return {f: {"accuracy": round(float((p[f].argmax(1) == y[f]).float().mean()), 4),
                "ece": round(ece(p[f], y[f]), 4),
                "unsure": round(float((p[f].max(1).values < judge.unsure_below).float().mean()), 4)}
            for f in FAMILIES}


def train_oracle(config: OracleTrainConfig = OracleTrainConfig(), catalogue: Catalogue = CATALOGUE,
                 progress=None, version: str = "") -> tuple[ToyOracle, dict]:
    """Train the oracle on augmented renders; returns it and its held-out accuracy on fresh renders."""
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    scenes = random_scenes(config.pool, config.seed, catalogue)
    x = to_tensor(np.stack([render(s, catalogue) for s in scenes]))
    y = scene_labels(scenes, catalogue)
    net = Oracle({f: len(catalogue.classes(f)) for f in FAMILIES})
    train_heads(net, x, y, config.steps, config.batch_size, config.lr, gen, augment, progress, label_smoothing=0.05)
    oracle = ToyOracle(net, catalogue, version=version)
    test = random_scenes(2000, config.seed + 10_000, catalogue)
    acc = oracle.accuracy(np.stack([render(s, catalogue) for s in test]), test)
    return oracle, {"heldout_render_accuracy": acc, "config": asdict(config)}
