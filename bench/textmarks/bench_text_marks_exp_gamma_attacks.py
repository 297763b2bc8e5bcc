"""EXP-edit gamma sweep with attacks: TPR@1%FPR (z from 9 null keys), 16 marked vs 16 unmarked texts of 150 tokens."""
import time, torch; torch.set_num_threads(1)
from erasekit.marks import tpr_at_fpr, auc
from erasekit.text.models import load_text_model
from erasekit.text.marks import get_text_mark, sample
from erasekit.text.marks.attacks import apply_text_attack
lm, tok, _ = load_text_model("textworld")
n, L = 16, 150
base = get_text_mark("exp_edit", key_length=64, n_runs=9, fpr=0.1)
key = base.keygen(tok, entropy=b"bench-exp_edit:key_length=64")
marked = base.generate(lm, tok, key, [""] * n, max_new_tokens=L, seed=7)
clean = sample(lm, tok, [""] * n, L, seed=1000)
for att in ("delete:rate=0.1", "insert:rate=0.1", "substitute:rate=0.1"):
    am, ac = apply_text_attack(att, marked, 768, seed=5), apply_text_attack(att, clean, 768, seed=5)
    for g in (0.0, 1.0, 2.0, 20.0):
        wm = get_text_mark("exp_edit", key_length=64, n_runs=9, fpr=0.1, gamma=g)
        zm = wm.detect_ids(key, am).extra["z"]; zc = wm.detect_ids(key, ac).extra["z"]
        print(f"{att:20s} gamma={g}: tpr@1%={tpr_at_fpr(zc, zm, 0.01):.3f} auc={auc(zc, zm):.3f}", flush=True)
