"""Train a small causal LM from scratch on the text world (CPU), and load any causal LM folder.

A byte-level BPE tokenizer (`tokenizers`) and a `GPT2LMHeadModel` with a small config, saved with `save_pretrained`
so `AutoModelForCausalLM.from_pretrained(folder)` and `AutoTokenizer.from_pretrained(folder)` load them. Dropout is
off: the point is memorisation (verbatim books, facts), as in MUSE's target models. Training is resumable from the
checkpoint in `<out>/checkpoint/` (weights as safetensors, optimizer state loaded with weights_only=True).
The same recipe with `include_forget=False` gives MUSE's retrained reference.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ErasekitError, InvalidValueError
from ..io import atomic_write_text, load_checkpoint

EOS = "<|endoftext|>"
INFO_FILE = "erasekit_text.json"


@dataclass(frozen=True)
class TrainConfig:
    """The model, tokenizer and optimisation of the text-world LM."""

    vocab_size: int = field(default=768, metadata={"help": "BPE vocabulary size"})
    n_embd: int = field(default=96, metadata={"help": "hidden size"})
    n_layer: int = field(default=3, metadata={"help": "transformer blocks"})
    n_head: int = field(default=4, metadata={"help": "attention heads (must divide n_embd)"})
    n_positions: int = field(default=256, metadata={"help": "context length; longer documents are truncated"})
    steps: int = field(default=600, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=16, metadata={"help": "documents per step"})
    lr: float = field(default=3e-3, metadata={"help": "peak AdamW learning rate (cosine decay to lr/10)"})
    warmup: int = field(default=50, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (0: memorise)"})
    seed: int = field(default=0, metadata={"help": "initialisation and batch-order seed"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads"})
    save_every: int = field(default=100, metadata={"help": "checkpoint every N steps (resumable)"})
    budget_s: float = field(default=0.0, metadata={"help": "stop after this many seconds (0: no limit); recorded"})

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_embd", "n_layer", "n_head", "n_positions", "steps", "batch_size",
                     "save_every", "threads"):
            if int(getattr(self, name)) < 1:
                raise InvalidValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.n_embd % self.n_head:
            raise InvalidValueError(f"n_head={self.n_head} must divide n_embd={self.n_embd}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InvalidValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if self.vocab_size < 300:
            raise InvalidValueError(f"vocab_size={self.vocab_size} is below the 256 bytes + specials a byte-level "
                                    "BPE needs; use >= 300")


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE `PreTrainedTokenizerFast` trained on `texts` (EOS doubles as BOS and padding)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS,
                                   unk_token=EOS, model_max_length=1 << 20)


def make_model(cfg: TrainConfig, vocab_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(cfg.seed)
    conf = GPT2Config(vocab_size=vocab_size, n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                      n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                      eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(conf)


def batch_tensors(tokenizer: Any, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids (B, T), attention_mask (B, T), labels (B, T)) for `texts` + EOS, right-padded; padding labels
    are -100."""
    eos = tokenizer.eos_token_id
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"][:max_len - 1] + [eos] for t in texts]
    T = max(map(len, rows))
    ids = torch.full((len(rows), T), eos, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def lm_loss(model: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions."""
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def _batches(n: int, cfg: TrainConfig, step: int) -> list[int]:
    """Document indices of optimizer step `step` (epoch permutations seeded by (seed, epoch): resumable)."""
    per_epoch = max(1, n // cfg.batch_size)
    epoch, k = divmod(step, per_epoch)
    order = list(range(n))
    random.Random(cfg.seed * 100_003 + epoch).shuffle(order)
    return order[k * cfg.batch_size:(k + 1) * cfg.batch_size]


def train_lm(texts: list[str], out: str | Path, cfg: TrainConfig | None = None, extra: dict | None = None,
             progress: Any = None) -> dict:
    """Train tokenizer + model on `texts`, save both to `out` in fp16; resumes from `out/checkpoint`. Returns the
    info dict written to `out/erasekit_text.json` (steps, seconds, final loss)."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    cfg = cfg or TrainConfig()
    if not texts:
        raise InvalidValueError("no training texts")
    out = Path(out)
    ck = out / "checkpoint"
    ck.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    if (ck / "tokenizer.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(ck)
    else:
        tokenizer = train_tokenizer(texts, cfg.vocab_size)
        tokenizer.save_pretrained(ck)
    model = make_model(cfg, len(tokenizer))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    step, elapsed, cpu, losses = 0, 0.0, 0.0, []
    if (ck / "state.pt").exists():
        state = load_checkpoint(ck / "state.pt")
        model.load_state_dict(load_file(ck / "model.safetensors"), strict=False)
        model.tie_weights()
        opt.load_state_dict(state["optimizer"])
        step, elapsed, losses = int(state["step"]), float(state["elapsed"]), list(state["losses"])
        cpu = float(state.get("cpu", 0.0))
    model.train()
    t0, c0 = time.perf_counter() - elapsed, time.process_time() - cpu
    stopped = "steps"
    while step < cfg.steps:
        if cfg.budget_s and time.perf_counter() - t0 > cfg.budget_s:
            stopped = "budget"
            break
        ids, mask, labels = batch_tensors(tokenizer, [texts[i] for i in _batches(len(texts), cfg, step)],
                                          cfg.n_positions)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        loss = lm_loss(model, ids, mask, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if progress is not None:
            progress(step, cfg.steps, losses[-1])
        if step % cfg.save_every == 0 or step == cfg.steps:
            save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"},
                      ck / "model.safetensors.tmp")
            (ck / "model.safetensors.tmp").replace(ck / "model.safetensors")
            torch.save({"optimizer": opt.state_dict(), "step": step, "elapsed": time.perf_counter() - t0,
                        "cpu": time.process_time() - c0,
                        "losses": losses}, ck / "state.pt.tmp")
            (ck / "state.pt.tmp").replace(ck / "state.pt")
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    model.eval()
    model.half().save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    tail = losses[-20:] or [float("nan")]
    info = {"config": asdict(cfg), "steps_done": step, "stopped_by": stopped, "train_seconds": round(seconds, 1),
            "train_cpu_seconds": round(cpu_seconds, 1),
            "final_loss": sum(tail) / len(tail), "n_texts": len(texts), "dtype": "float16",
            "parameters": sum(p.numel() for p in model.parameters()), **(extra or {})}
    atomic_write_text(out / INFO_FILE, json.dumps(info, indent=1))
    return info


def _check_causal_architecture(folder: Path, conf: Any) -> None:
    """Refuse a config whose recorded architectures are none of transformers' causal-LM classes (e.g. a masked LM
    or an encoder, which AutoModelForCausalLM could otherwise load with a random head)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    causal: set[str] = set()
    for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        causal.update([v] if isinstance(v, str) else v)
    archs = list(getattr(conf, "architectures", None) or [])
    if archs and not causal & set(archs):
        raise ErasekitError(f"{str(folder)!r} is not a causal LM: its config records {', '.join(archs)}; give a "
                            "folder of a causal LM (e.g. GPT2LMHeadModel, LlamaForCausalLM)")


def load_lm(folder: str | Path, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """(model, tokenizer) of a causal-LM folder, in `dtype`, eval mode. A folder that is not a causal LM raises one
    line naming it."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ErasekitError(f"{str(folder)!r} is not a causal-LM folder (no config.json); give a folder written by "
                            "save_pretrained, e.g. `erasekit text train --out DIR`")
    try:
        conf = AutoConfig.from_pretrained(folder)  # a config.json transformers cannot read fails here, in one line
        _check_causal_architecture(folder, conf)
        model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, output_loading_info=True)
        tok = AutoTokenizer.from_pretrained(folder)
    except (ValueError, OSError, KeyError) as e:
        from ..errors import first_line

        raise ErasekitError(f"{str(folder)!r} is not a loadable causal LM with a tokenizer ({first_line(e, 200)})") \
            from None
    missing = sorted(info.get("missing_keys") or [])
    if missing:  # e.g. an encoder checkpoint: the LM head would be random
        raise ErasekitError(f"{str(folder)!r} is not a causal LM: its weights lack {len(missing)} of the model's "
                            f"parameters (e.g. {missing[0]}); give a folder saved from a causal LM")
    rows = model.get_input_embeddings().num_embeddings
    if len(tok) < 2 or not tok("a b", add_special_tokens=False)["input_ids"] or len(tok) > rows:
        raise ErasekitError(f"{str(folder)!r} has no usable tokenizer for this model ({len(tok)} tokens, the model "
                            f"embeds {rows}); save the tokenizer with the model (tokenizer.save_pretrained)")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok
