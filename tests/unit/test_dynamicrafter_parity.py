"""Parity with the official DynamiCrafter implementation on every file in ../shared/vectors.

Each file runs through ``tools/parity.py`` (the loader node, ComfyUI's cond path, the sampler and schedule
nodes, CFGGuider and SamplerCustomAdvanced), exactly as ``python tools/parity.py FILE`` does.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import comfy.samplers
from i2v_motion.backbones.sampling import official_sigmas, official_timesteps, sample_dynamicrafter_ddim

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
parity = pytest.importorskip("parity")  # tools/ is on pytest's pythonpath (pyproject.toml)
UNET_GOAL, SAMPLER_GOAL = 1e-4, 1e-3
FILES = sorted(p.name for p in VECTORS.glob("*.safetensors")) if VECTORS.is_dir() else []


_RESULTS: dict[str, dict] = {}


def _parity(path) -> dict:
    """``tools/parity.py`` on one file (once per session: the knobs test reuses the result)."""
    key = str(path)
    if key not in _RESULTS:
        _RESULTS[key] = parity.parity(path)
    return _RESULTS[key]


def _require(vectors_dir, name: str):
    path = vectors_dir / name
    if not path.is_file():
        pytest.skip(f"{name} is not in {vectors_dir}")
    return path


@pytest.mark.parametrize("name", FILES or ["(no vectors)"])
def test_vector_file_matches_official(vectors_dir, name):
    r = _parity(_require(vectors_dir, name))
    case = r["files"][0]
    print(f"parity {name}: {case}")
    if "sampler" in r:
        assert r["timesteps_equal"], f"{name}: our schedule's timesteps differ from the recorded official ones"
        if case["concat"] is not None:
            assert case["concat"] <= 1e-5, "the node's concat latent differs from the official one"
        assert r["sampler"] <= SAMPLER_GOAL, f"{name}: sampler max abs err {r['sampler']:.3g}"
    else:
        assert r["resampler"] <= UNET_GOAL, f"{name}: Resampler max abs err {r['resampler']:.3g}"
        assert r["unet"] <= UNET_GOAL, f"{name}: UNet max abs err {r['unet']:.3g}"
    assert case["ref_max"] > 0.1  # the reference is not trivially zero


def test_official_timesteps_for_any_step_count():
    assert official_timesteps(50)[:3] == [999, 979, 959] and official_timesteps(50)[-1] == 19
    assert official_timesteps(10) == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert official_timesteps(7) == [999, 856, 713, 570, 428, 285, 142]  # rounded (truncation: 857, 714, 571)
    assert official_timesteps(15)[:4] == [999, 932, 866, 799]
    assert official_timesteps(10, "uniform") == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    assert official_timesteps(7, "uniform") == [995, 853, 711, 569, 427, 285, 143, 1]  # 8 steps, as the official code
    assert official_timesteps(3, "uniform") == [667, 334, 1]  # t = 1000 does not exist
    assert all(len(official_timesteps(n)) == n and min(official_timesteps(n)) >= 0 for n in range(1, 201))


def test_simple_scheduler_differs_where_the_step_count_does_not_divide_1000(tiny_dc):
    ms = tiny_dc.model.get_model_object("model_sampling")
    for steps, same in ((10, True), (25, True), (7, False), (15, False), (30, False)):
        simple = comfy.samplers.calculate_sigmas(ms, "simple", steps)
        assert torch.equal(simple, official_sigmas(ms, steps)) == same, steps


def test_knobs_matter_on_the_recorded_runs(vectors_dir):
    """Without the official start (256, uniform spacing) or with truncated timesteps (15 steps) the same
    runs miss the official result by far more than the goal."""
    p256 = _require(vectors_dir, "dc_tiny_256_a_sampler_uniform10.safetensors")
    io, meta = parity._read(p256)
    model = parity.load_model(p256.parent / meta["weights"])
    ms = model.get_model_object("model_sampling")
    first = io["first_latent"][:, :, 0] / parity.SD15_SCALE
    from i2v_motion.backbones.conditioning import conditioning_values

    pos_v, neg_v = conditioning_values(first, io["clip_tokens"], io["uc_clip_tokens"], 4, 3)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds([[io["text"], pos_v]], [[io["uc_text"], neg_v]])
    guider.set_cfg(7.5)
    plain = comfy.samplers.KSAMPLER(sample_dynamicrafter_ddim,
                                    extra_options={"eta": 0.0, "guidance_rescale": 0.0, "base_scale": None})
    noise = parity._frames_as_batch(io["x_T"])
    out = guider.sample(noise, torch.zeros_like(noise), plain, official_sigmas(ms, 10, "uniform"), seed=0)
    err_plain_start = float((out * parity.SD15_SCALE - parity._frames_as_batch(io["out"])).abs().max())
    print(f"256 uniform without the official start: max abs err {err_plain_start:.3g}")
    assert err_plain_start > 100 * SAMPLER_GOAL
    assert _parity(p256)["sampler"] <= SAMPLER_GOAL
