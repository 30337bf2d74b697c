"""The bridge to ComfyUI's internals and the backbone families, ready for ComfyUI 0.34–0.38 by capability.

- a ModelPatcher whose ``__init__`` / ``clone`` take keywords this ComfyUI does not know (0.38's ``fast_disk``)
  goes through every operation of the pack unchanged, and its clones stay that class with the keyword kept;
- the expert schedule switches weights in place: every parameter's storage (``data_ptr``) is the same before,
  during and after a switch (captured CUDA graphs, the "Comfy model compiler", stay valid);
- the host builder installs torchaudio only for trees that ask for it, and the pack imports without it;
- families are recognised from models and from weight keys, and a preset a family lacks is a clear error.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import comfy.model_patcher
import comfy.sample
import host
from i2v_motion import families
from i2v_motion.comfy_bridge.finite import nonfinite
from i2v_motion.experts import expert_schedule
from i2v_motion.merging import apply_task_vectors, bake_model, edg_experts, make_task_vector, select_keys
from i2v_motion.nodes import layout as NL
from support import fixtures
from support.models import CPU, dc_cond, ksample, noisy_clone, svd_config, tiny_svd  # noqa: F401

REPO = Path(__file__).resolve().parents[2]


class FuturePatcher(comfy.model_patcher.ModelPatcher):
    """What ComfyUI 0.38 changed, on this ComfyUI: ``__init__`` and ``clone`` take a new keyword (``fast_disk``), and
    a clone must carry it (a pack subclassing ModelPatcher without it fails on clone)."""

    def __init__(self, *args, fast_disk: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fast_disk = fast_disk

    def clone(self, *args, fast_disk: bool | None = None, **kwargs):
        n = super().clone(*args, **kwargs)
        assert type(n) is type(self), "ComfyUI's clone keeps the class"
        n.fast_disk = self.fast_disk if fast_disk is None else fast_disk
        return n


def _future(m: comfy.model_patcher.ModelPatcher) -> FuturePatcher:
    return FuturePatcher(m.model, load_device=m.load_device, offload_device=m.offload_device, fast_disk=True)


def test_a_patcher_with_new_keywords_goes_through_the_pack(tmp_path):
    base, ft = _future(tiny_svd(0)), _future(tiny_svd(1, perturb_of=0))
    tv = make_task_vector(base, ft)
    merged = apply_task_vectors(base, [tv], [1.5], method="dare", p=0.5)
    dyn, con, _ = edg_experts(base, ft, p=0.3)
    sched = expert_schedule([dyn, con], [500])
    for m in (merged, dyn, con, sched):
        assert type(m) is FuturePatcher and m.fast_disk is True
    import support.oracle as P

    lay = NL.parse_layout('{"objects": [{"phrase": "x", "boxes": [[0, 0.1, 0.1, 0.3, 0.3], [3, 0.5, 0.5, 0.7, 0.7]]}]}',
                          frames=4)
    masked, _ = NL.LayoutMaskedDenoise.execute(_future(P.tiny_model()), {"samples": torch.zeros(4, 4, 8, 8)}, lay,
                                               0.4, 0.8, 0.9, 1.0, 1.0).result
    assert type(masked) is FuturePatcher and masked.fast_disk is True
    out = bake_model(merged, str(tmp_path / "m.safetensors"))
    assert out["tensors"] > 0
    assert base.patches == {} and ft.patches == {}  # inputs untouched


def test_loader_builds_a_future_core_patcher(monkeypatch, tmp_path):
    """Core loaders build ``CoreModelPatcher`` (rebound by main.py); ours do too, with keywords only."""
    from i2v_motion.backbones.loader import load_dynamicrafter

    made = []

    class FutureCore(FuturePatcher):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(comfy.model_patcher, "CoreModelPatcher", FutureCore, raising=False)
    path = fixtures.make_tiny_checkpoint(str(tmp_path / "dc.safetensors"), with_vae=False, with_clip=False,
                                         with_clip_vision=False)
    model = load_dynamicrafter(path).model
    assert type(model) is FutureCore and made and model.clone().fast_disk is False
    assert torch.isfinite(ksample(model, dc_cond())).all()


def test_schedule_switches_in_place(tiny_dc):
    """data_ptr of every parameter before, while the second expert runs, and after: the same storage."""
    base = tiny_dc.model
    ft = noisy_clone(base, 5)
    sched = expert_schedule([base, ft], [500])
    model = sched.model

    def ptrs() -> dict[str, int]:
        return {k: p.data_ptr() for k, p in model.named_parameters()}

    import comfy.model_management as mm
    mm.load_models_gpu([sched])
    before = ptrs()
    seen = []

    def probe(executor, *args, **kwargs):
        seen.append(ptrs())
        return executor(*args, **kwargs)

    from i2v_motion.comfy_bridge.hooks import WrappersMP
    sched.add_wrapper_with_key(WrappersMP.APPLY_MODEL, "test.probe", probe)
    ksample(sched, dc_cond())
    after = ptrs()
    mm.unload_all_models()
    assert len(seen) >= 2 and all(s == before for s in seen) and after == before


def test_host_builder_does_not_assume_torchaudio(tmp_path):
    tree = tmp_path / "ComfyUI"
    tree.mkdir()
    (tree / "requirements.txt").write_text("torch\ntorchvision\nnumpy\nsafetensors\n")
    reqs, wants_audio = host._requirements(tree)
    assert not wants_audio and not any(r.startswith("torchaudio") for r in reqs)
    (tree / "requirements.txt").write_text("torch\ntorchaudio\nnumpy\n")
    assert host._requirements(tree)[1] is True


def test_pack_imports_without_torchaudio():
    """The pack never imports torchaudio; on a ComfyUI that does not need it either, it lists its nodes without it."""
    code = ("import sys; sys.modules['torchaudio'] = None\n"
            "import comfy_inproc\n"
            "try:\n"
            "    comfy_inproc.bootstrap('cpu', dynamic_vram=False)\n"
            "    import comfy.sd, nodes  # what ComfyUI's own start-up imports\n"
            "except ImportError as e:\n"
            "    print('COMFY-NEEDS-TORCHAUDIO', e); raise SystemExit(0)\n"
            "import i2v_motion.nodes as N\n"
            "assert 'torchaudio' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
            "print('NODES', len(N.all_nodes()))\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tools"), str(REPO / "tests")]), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    if "COMFY-NEEDS-TORCHAUDIO" in r.stdout:
        pytest.skip("this ComfyUI imports torchaudio at start-up itself (0.33); the pack's own modules are checked by "
                    "test_registry's import scan")
    assert "NODES" in r.stdout
    assert not [f for f in REPO.rglob("*.py") if ".host" not in f.parts and "import torchaudio" in f.read_text()
                and f.name != "test_bridge.py" and "tools" not in f.parts]


# -- families ------------------------------------------------------------------------------------------------------

def test_families_from_models_and_keys(tiny_dc):
    svd = tiny_svd(0)
    assert families.of_model(tiny_dc.model) is families.DYNAMICRAFTER
    assert families.of_model(svd) is families.SVD
    assert families.of_keys([k for k, _ in svd.model.named_parameters()]) is families.SVD
    assert families.of_keys(["diffusion_model.blocks.0.self_attn.q.weight",
                             "diffusion_model.patch_embedding.weight"]) is families.WAN
    assert families.of_keys(["diffusion_model.input_blocks.0.0.weight"]) is families.GENERIC
    assert families.DYNAMICRAFTER.switch_on == "ddpm" and families.WAN.switch_on == "model"
    assert not families.SVD.video_latent and families.WAN.video_latent


def test_family_presets_and_missing_preset_error():
    svd_keys = [k for k, _ in tiny_svd(0).model.named_parameters()]
    temporal = select_keys(svd_keys, "temporal")
    assert temporal and all("time_" in k for k in temporal)
    with pytest.raises(ValueError, match=r"filter preset 'ffn' is not defined for Stable Video Diffusion models"):
        select_keys(svd_keys, "ffn")
    wan = ["diffusion_model.blocks.0.self_attn.q.weight", "diffusion_model.blocks.0.cross_attn.k.weight",
           "diffusion_model.blocks.0.cross_attn.k_img.weight", "diffusion_model.blocks.0.ffn.0.weight",
           "diffusion_model.blocks.0.modulation", "diffusion_model.head.head.weight",
           "diffusion_model.patch_embedding.weight", "diffusion_model.time_embedding.0.weight"]
    assert select_keys(wan, "temporal") == select_keys(wan, "self_attention") == [wan[0]]
    assert select_keys(wan, "image_cross_attention") == [wan[2]]
    assert select_keys(wan, "text_cross_attention") == [wan[1]]
    assert select_keys(wan, "modulation") == [wan[4], wan[7]]
    assert wan[0] not in select_keys(wan, "spatial") and len(select_keys(wan, "spatial")) == len(wan) - 1


def test_temporal_ratio_comes_from_comfyui():
    class VAE:
        downscale_index_formula = (4, 8, 8)

    class Fmt:
        temporal_downscale_ratio = 4

    assert families.temporal_ratio(VAE()) == 4 and families.temporal_ratio(None, Fmt()) == 4
    assert families.temporal_ratio(object(), object()) == 1


def test_one_nonfinite_scan():
    t = {"a": torch.zeros(3), "b": torch.tensor([1.0, float("nan")]), "c": torch.tensor([float("inf")]),
         "i": torch.tensor([1, 2]), "e": torch.zeros(0), "h": torch.tensor([1.0, float("-inf")], dtype=torch.float16)}
    assert nonfinite(t.items()) == ["b", "c", "h"]
    if hasattr(torch, "float8_e4m3fn"):
        assert nonfinite([("f8", torch.zeros(4).to(torch.float8_e4m3fn))]) == []
