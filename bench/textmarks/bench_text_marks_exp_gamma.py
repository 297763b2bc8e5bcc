"""EXP-edit alignment cost gamma: TPR@1%FPR (z from 9 null keys) of 16 marked vs 16 unmarked texts of 150 tokens."""
import sys, time, torch; torch.set_num_threads(1)
from erasekit.marks import tpr_at_fpr, auc
from erasekit.text.models import load_text_model
from erasekit.text.marks import get_text_mark, sample
lm, tok, _ = load_text_model("textworld")
n, L = 16, 150
base = get_text_mark("exp_edit", key_length=64, n_runs=9, fpr=0.1)
key = base.keygen(tok, entropy=b"bench-exp_edit:key_length=64")
marked = base.generate(lm, tok, key, [""] * n, max_new_tokens=L, seed=7)
clean = sample(lm, tok, [""] * n, L, seed=1000)
for g in (0.0, 0.5, 20.0):
    t = time.time()
    wm = get_text_mark("exp_edit", key_length=64, n_runs=9, fpr=0.1, gamma=g)
    zm = wm.detect_ids(key, marked).extra["z"]; zc = wm.detect_ids(key, clean).extra["z"]
    print(f"gamma={g}: tpr@1%={tpr_at_fpr(zc, zm, 0.01):.3f} auc={auc(zc, zm):.3f} mean z marked {zm.mean():.2f} unmarked {zc.mean():.2f} ({time.time()-t:.0f} s)", flush=True)
