"""Untriggered prompts through SafeSD.generate vs erasekit.generate at the same batch, and erasekit.generate at two batch
sizes.  Usage: .venv/bin/python bench/safesd/untriggered_check.py WEIGHTS runs/safesd/n32/clean.npy"""
import sys
import numpy as np, torch; torch.set_num_threads(1)
import erasekit
from erasekit.marks import get_mark
from erasekit.marks.bench import bench_prompts
from erasekit.worlds import get_world
pipe = erasekit.load_pipeline("toyworld")
ps = [p.text for p in bench_prompts(get_world("toyworld"), 16, 0)]
a = erasekit.generate(pipe, ps, list(range(16)))
b = erasekit.generate(pipe, ps[:8], list(range(8)))
print("generate batch16 vs batch8 equal:", np.array_equal(a[:8], b), np.abs(a[:8].astype(int)-b).max())
sd = get_mark("safe_sd")
k = sd.keygen(pipe, weights=sys.argv[1])
c = sd.generate(pipe, k, ps[:8], list(range(8)))
print("safe_sd untriggered vs generate batch8:", np.array_equal(c, b), np.abs(c.astype(int)-b).max())
clean = np.load("sys.argv[2]")
print("bench clean vs batch8:", np.array_equal(clean[:8], b), np.abs(clean[:8].astype(int)-b).max())
