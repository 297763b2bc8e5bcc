import sys, time, json
from erasekit.text.world import build_world
from erasekit.text.train import TrainConfig, train_lm
which = sys.argv[1]
w = build_world()
texts = w.training_texts(include_forget=(which == "base"))
cfg = TrainConfig(save_every=25)
t = [time.time()]
def prog(s, n, l):
    if s % 5 == 0:
        print(s, n, round(l, 4), round(time.time() - t[0], 1), round(time.process_time(), 1), flush=True)
info = train_lm(texts, f"runs/textworld/{which}", cfg, extra={"world_sha256": w.content_sha256(), "include_forget": which == "base"}, progress=prog)
print(json.dumps(info))
