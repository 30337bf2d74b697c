#!/usr/bin/env python3
"""Parity with the official DynamiCrafter: ``tools/parity.py VECTORS [SAMPLER_VECTORS]`` → one JSON line.

``VECTORS`` / ``SAMPLER_VECTORS`` are files in the format of ``../shared/vectors/README.md`` (numbers recorded
from the official implementation). Either may be a UNet case (weights + ``io.x``, ``io.out``, …) or a sampler
case (``io.x_T``, ``io.timesteps``, …; its weights are the file named in its metadata ``weights``, beside it).

Everything runs the way a user's graph does:

- the weights load through **Load DynamiCrafter** (the folder of the file is added to ``checkpoints``;
  variant ``auto``, fp32);
- UNet case: the inputs go through ComfyUI's own cond processing (``process_conds`` → our ``extra_conds``,
  per-video text and tokens expanded to frames-as-batch) and ``calc_cond_batch`` at the recorded timestep(s);
  the UNet's and Resampler's raw outputs are read by forward hooks;
- sampler case: conditioning built by the image-to-video node's own code from the recorded first (and last)
  latents and CLIP tokens (``conditioning_values``), then the **DynamiCrafter Official Sampler** and
  **DynamiCrafter Official Schedule** nodes (spacing and steps from the metadata), core's **CFGGuider** and
  **SamplerCustomAdvanced**, from the recorded initial noise.

Printed: ``{"files": [...], "unet": err, "resampler": err, "sampler": err, "timesteps_equal": bool, ...}``, max
absolute errors (fp32, CPU). Goals (``vectors/README.md``): UNet ≤ 1e-4, sampler ≤ 1e-3.

Run with a host's python (``.host/0.33/venv/bin/python tools/parity.py …``); from another python it
re-runs itself with the default host's (``tools/host.py``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SD15_SCALE = 0.18215  # ComfyUI latents = official latents / scale_factor
_LOADED: dict[str, object] = {}


def _read(path: Path) -> tuple[dict, dict]:
    """(io tensors without the ``io.`` prefix, metadata) of a vector file."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
        io = {k[3:]: f.get_tensor(k) for k in f.keys() if k.startswith("io.")}
    return io, meta


def is_sampler_case(path: Path | str) -> bool:
    io, _ = _read(Path(path))
    return "x_T" in io


def _frames_as_batch(x):
    """Official ``[B, C, T, H, W]`` → ComfyUI frames-as-batch ``[B·T, C, H, W]`` (video after video)."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def load_model(path: Path):
    """The MODEL of a weights file, through the Load DynamiCrafter node (cached per file)."""
    import folder_paths

    from i2v_motion.nodes.backbone import LoadDynamiCrafter

    path = Path(path).resolve()
    key = str(path)
    if key not in _LOADED:
        folder_paths.add_model_folder_path("checkpoints", str(path.parent))
        out = LoadDynamiCrafter.execute(path.name, "auto", "fp32")
        _LOADED[key] = (out.result if hasattr(out, "result") else out)[0]
    return _LOADED[key]


def _config(meta: dict, model) -> str:
    cfg = meta.get("config", "")
    if "256" in cfg:
        return "256"
    if "1024" in cfg:
        return "1024"
    return model.model.variant.name if model.model.variant.name in ("256", "1024") else "512"


def unet_parity(path: Path | str) -> dict:
    """UNet + Resampler of one vector file through ComfyUI's cond path; max abs errors."""
    import torch

    import comfy.model_management as mm
    import comfy.sampler_helpers
    import comfy.samplers
    import node_helpers

    path = Path(path)
    io, meta = _read(path)
    model = load_model(path)
    b, _, t, h, w = io["x"].shape
    fs = io["fs"].reshape(-1)
    if not bool((fs == fs[0]).all()):
        raise ValueError(f"{path.name}: fs differs between videos ({fs.tolist()}); one fs per latent is supported")
    mm.load_models_gpu([model])
    base = model.model
    ms = model.get_model_object("model_sampling")
    sigma = ms.sigmas[io["timestep"].long().reshape(-1)].float().repeat_interleave(t)  # per frame
    concat = _frames_as_batch(io["concat"]) / SD15_SCALE
    cond = node_helpers.conditioning_set_values([[io["text"], {}]], {
        "concat_latent_image": concat, "clip_vision_tokens": io["clip_tokens"], "fs": int(fs[0]),
        "num_video_frames": t})
    x_t = _frames_as_batch(io["x"])
    x = x_t * (sigma ** 2 + 1).sqrt().view(-1, 1, 1, 1)  # ComfyUI feeds the UNet x / sqrt(σ² + 1)
    captured: dict = {}
    hooks = [base.diffusion_model.register_forward_hook(lambda m, a, o: captured.__setitem__("unet", o)),
             base.diffusion_model.image_proj_model.register_forward_hook(
                 lambda m, a, o: captured.__setitem__("resampler", o))]
    try:
        device = mm.get_torch_device()
        conds = comfy.samplers.process_conds(base, x, {"positive": comfy.sampler_helpers.convert_cond(cond)}, device,
                                             latent_image=torch.zeros_like(x), seed=0)
        opts = dict(model.model_options)
        opts["transformer_options"] = dict(opts.get("transformer_options", {}))
        model.pre_run()  # as CFGGuider does before sampling
        try:
            with torch.no_grad():
                comfy.samplers.calc_cond_batch(base, [conds["positive"]], x.to(device), sigma.to(device), opts)
        finally:
            model.cleanup()
    finally:
        for hk in hooks:
            hk.remove()
    out = captured["unet"].float().cpu()
    ref = _frames_as_batch(io["out"])
    res = captured["resampler"].float().cpu()
    return {"file": path.name, "config": _config(meta, model), "batch": b, "frames": t, "size": [w * 8, h * 8],
            "timestep": io["timestep"].reshape(-1).tolist(), "fs": int(fs[0]),
            "unet": float((out - ref).abs().max()), "resampler": float((res - io["image_tokens"]).abs().max()),
            "ref_max": float(ref.abs().max())}


class RecordedNoise:
    """A ComfyUI NOISE giving the recorded initial noise (frames-as-batch)."""

    def __init__(self, x):
        self.x = x
        self.seed = 0

    def generate_noise(self, input_latent):
        return self.x.clone()


def sampler_parity(path: Path | str) -> dict:
    """The official DDIM sampler of one vector file through the nodes a user connects; max abs error."""
    import torch

    import comfy.model_management as mm
    import node_helpers
    from comfy_extras.nodes_custom_sampler import CFGGuider, SamplerCustomAdvanced
    from i2v_motion.backbones.conditioning import conditioning_values
    from i2v_motion.nodes.sampling import DynamiCrafterSampler, TrailingSchedule

    def result(o):
        return o.result if hasattr(o, "result") else o

    path = Path(path)
    io, meta = _read(path)
    weights = path.parent / meta.get("weights", "")
    if not weights.is_file():
        raise FileNotFoundError(f"{path.name}: its weights {meta.get('weights')!r} are not beside it in {path.parent}")
    model = load_model(weights)
    cfg_name = _config(meta, model)
    b, _, t, h, w = io["x_T"].shape
    steps = int(meta.get("steps", len(io["timesteps"])))
    spacing = meta.get("spacing", "uniform_trailing")
    interp = meta.get("interp", "False") == "True"
    eta = float(meta.get("eta", 0))
    rescale = float(meta.get("guidance_rescale", 0.0))
    cfg = float(meta.get("cfg", 7.5))
    fs = int(meta.get("fs", 24))
    base_scale = {"256": None, "1024": 0.3}.get(cfg_name, float(meta.get("dynamic_rescale_base_scale", 0.7)))

    first = io["first_latent"][:, :, 0] / SD15_SCALE
    last = io["last_latent"][:, :, -1] / SD15_SCALE if interp else None
    pos_v, neg_v = conditioning_values(first, io["clip_tokens"], io["uc_clip_tokens"], t, fs, last)
    concat_err = float((pos_v["concat_latent_image"] * SD15_SCALE - _frames_as_batch(io["concat"])).abs().max()) \
        if "concat" in io else None
    positive = node_helpers.conditioning_set_values([[io["text"], {}]], pos_v)
    negative = node_helpers.conditioning_set_values([[io["uc_text"], {}]], neg_v)

    sampler = result(DynamiCrafterSampler.execute(eta, rescale, base_scale is not None, base_scale or 0.7))[0]
    sigmas = result(TrailingSchedule.execute(model, steps, spacing))[0]
    ms = model.get_model_object("model_sampling")
    got_t = sorted(round(float(ms.timestep(s.reshape(1)))) for s in sigmas[:-1])
    guider = result(CFGGuider.execute(model, positive, negative, cfg))[0]
    latent = {"samples": torch.zeros(b * t, 4, h, w)}
    noise = RecordedNoise(_frames_as_batch(io["x_T"]))
    with torch.no_grad():
        out = result(SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent))[0]["samples"]
    mm.unload_all_models()
    out = out.float().cpu() * SD15_SCALE
    ref = _frames_as_batch(io["out"])
    return {"file": path.name, "weights": weights.name, "config": cfg_name, "batch": b, "frames": t, "steps": steps,
            "spacing": spacing, "interp": interp, "cfg": cfg, "guidance_rescale": rescale, "fs": fs,
            "timesteps_equal": got_t == io["timesteps"].tolist(), "concat": concat_err,
            "sampler": float((out - ref).abs().max()), "ref_max": float(ref.abs().max())}


def parity(vectors: Path | str, sampler_vectors: Path | str | None = None) -> dict:
    """Run one or two vector files (UNet and/or sampler cases, in any order); the JSON-able summary."""
    out: dict = {"files": []}
    for p in [vectors, sampler_vectors]:
        if p is None:
            continue
        p = Path(p)
        r = sampler_parity(p) if is_sampler_case(p) else unet_parity(p)
        out["files"].append(r)
        for k in ("unet", "resampler", "sampler"):
            if k in r:
                out[k] = max(out.get(k, 0.0), r[k])
        if "timesteps_equal" in r:
            out["timesteps_equal"] = out.get("timesteps_equal", True) and r["timesteps_equal"]
    return out


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or len(argv) > 2:
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    import comfy_inproc
    import host

    host.reexec_in_host(__file__, argv)  # a system python without torch: run again with a host's

    comfy_inproc.bootstrap("cpu")
    print(json.dumps(parity(*argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
