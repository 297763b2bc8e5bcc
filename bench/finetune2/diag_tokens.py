"""Do Co-Erasing's fitted image tokens evoke the concept? Sample with the textual-inversion prompt, ask the oracle."""
import sys
import torch
torch.set_num_threads(1)
from erasekit import load_pipeline
from erasekit.erasers.coerasing import CoErasingConfig, concept_images, fit_image_tokens
from erasekit.erasers.fewshot import encode_latents
from erasekit.conditioning import encode_embeds, fill, layout
from erasekit.sampling import cfg_combine, decode, denoise, encode_prompts
from erasekit.evaluators import get_evaluator

concept = sys.argv[1]
fit_steps = int(sys.argv[2]) if len(sys.argv) > 2 else 40
pipe = load_pipeline("toyworld")
cfg = CoErasingConfig(fit_steps=fit_steps)
gen = torch.Generator().manual_seed(0)
imgs, _ = concept_images(pipe, [concept], cfg)
ev = get_evaluator("toyworld-oracle")
print("generated images show it:", ev.shows(imgs, concept).mean())
lat = encode_latents(pipe, imgs, gen, flip=False)
# refit keeping the pseudo-word vectors: re-run the fit and rebuild the 77-row prompt
import erasekit.erasers.coerasing as co
toks, losses = fit_image_tokens(pipe, pipe.unet, lat, cfg, gen)
print("fit loss first/last5:", losses[0], sum(losses[-5:]) / 5)
with torch.no_grad():
    u = encode_prompts(pipe, [""])
    # the image tokens as a prompt: BOS row + tokens + EOS padding from the fitted rows
    full = u.clone()
    full[0, 1:1 + toks.shape[1]] = toks[0]
    x = denoise(pipe, [u, full], cfg_combine(5.0), list(range(8)), steps=25)
    out = decode(pipe, x)
print("image-token prompt shows it:", ev.shows(out, concept).mean(), [p["character"] for p in ev.predict(out)])
