"""Loading DynamiCrafter checkpoints in their real layouts, and refusing bad ones clearly."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

import comfy.model_sampling
from i2v_motion.backbones.checkpoint import CheckpointError, read_state_dict
from support.fixtures import make_tiny_checkpoint
from i2v_motion.backbones.loader import load_dynamicrafter


def _unet_equal(loaded, ref_sd: dict) -> None:
    model_sd = loaded.model.model.diffusion_model.state_dict()
    for k, v in ref_sd.items():
        if k.startswith("model.diffusion_model."):
            rel = k[len("model.diffusion_model."):].replace("framestride_embed.", "fps_embedding.")
        elif k.startswith("image_proj_model."):
            rel = k
        else:
            continue
        assert torch.equal(model_sd[rel].float(), v.float()), k


@pytest.mark.parametrize("ext", [".ckpt", ".pt", ".safetensors"])
def test_formats_load_with_all_parts(tmp_path, ext):
    path = make_tiny_checkpoint(str(tmp_path / f"dc{ext}"))
    loaded = load_dynamicrafter(path, dtype=torch.float32)
    assert loaded.variant == "512"
    assert loaded.clip is not None and loaded.vae is not None and loaded.clip_vision is not None
    sd, _ = read_state_dict(path)
    _unet_equal(loaded, sd)
    ms = loaded.model.get_model_object("model_sampling")
    assert ms.zsnr and isinstance(ms, comfy.model_sampling.V_PREDICTION)


def test_pruned_fp16_without_encoders(tmp_path):
    path = make_tiny_checkpoint(str(tmp_path / "dynamicrafter_512_fp16_pruned.safetensors"), with_clip=False,
                                with_clip_vision=False, dtype=torch.float16)
    loaded = load_dynamicrafter(path)
    assert loaded.clip is None and loaded.clip_vision is None and loaded.vae is not None
    _unet_equal(loaded, load_file(path))


def test_deepspeed_prefix_and_legacy_names(tmp_path):
    src = make_tiny_checkpoint(str(tmp_path / "src.safetensors"), with_clip=False, with_clip_vision=False,
                               with_vae=False)
    sd = load_file(src)
    sd = {k.replace("fps_embedding.", "framestride_embed."): v for k, v in sd.items()}
    path = tmp_path / "deepspeed.ckpt"
    torch.save({"module": {"_forward_module." + k: v for k, v in sd.items()}}, path)
    loaded = load_dynamicrafter(str(path))
    _unet_equal(loaded, sd)


def test_variant_detection(tmp_path):
    p256 = make_tiny_checkpoint(str(tmp_path / "model.safetensors"), variant="256", with_clip=False,
                                with_clip_vision=False, with_vae=False)
    loaded = load_dynamicrafter(p256)
    assert loaded.variant == "256"
    ms = loaded.model.get_model_object("model_sampling")
    assert not isinstance(ms, comfy.model_sampling.V_PREDICTION) and not ms.zsnr
    p1024 = make_tiny_checkpoint(str(tmp_path / "dynamicrafter_1024.safetensors"), with_clip=False,
                                 with_clip_vision=False, with_vae=False)
    assert load_dynamicrafter(p1024).variant == "1024"
    assert load_dynamicrafter(p1024, variant="512_interp").variant == "512_interp"
    with pytest.raises(CheckpointError, match="256 model"):
        load_dynamicrafter(p256, variant="512")


def test_lightning_bookkeeping_objects_are_inert(tmp_path):
    """Lightning checkpoints carry hyper-parameter objects; they load as inert stand-ins."""
    import argparse

    src = make_tiny_checkpoint(str(tmp_path / "src.safetensors"), with_clip=False, with_clip_vision=False,
                               with_vae=False)
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": load_file(src), "hyper_parameters": argparse.Namespace(lr=1e-5)}, path)
    assert load_dynamicrafter(str(path)).variant == "512"


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"x": evil}}, f)
    with pytest.raises(CheckpointError, match="refusing|not a readable"):
        load_dynamicrafter(str(path))
    assert not marker.exists()
    # also inside a torch zip archive
    path2 = tmp_path / "evil2.ckpt"
    torch.save({"state_dict": {"x": evil}}, path2)
    with pytest.raises(CheckpointError, match="refusing"):
        load_dynamicrafter(str(path2))
    assert not marker.exists()


@pytest.mark.parametrize("ext", [".ckpt", ".safetensors"])
def test_truncated_file(tmp_path, ext):
    path = make_tiny_checkpoint(str(tmp_path / f"dc{ext}"), with_clip=False, with_clip_vision=False, with_vae=False)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_dynamicrafter(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_dynamicrafter(str(tmp_path / "nope.ckpt"))
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_dynamicrafter(str(tmp_path / "empty.safetensors"))


def test_not_dynamicrafter(tmp_path):
    sd = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
          "model.diffusion_model.out.2.weight": torch.zeros(4, 320, 3, 3),
          "model.diffusion_model.time_embed.0.weight": torch.zeros(1280, 320)}
    save_file(sd, str(tmp_path / "sd15.safetensors"))
    with pytest.raises(CheckpointError, match="4 input channels"):
        load_dynamicrafter(str(tmp_path / "sd15.safetensors"))
    save_file({"model.diffusion_model.input_blocks.0.0.time_stack.weight": torch.zeros(2)},
              str(tmp_path / "svd.safetensors"))
    with pytest.raises(CheckpointError, match="Stable Video Diffusion"):
        load_dynamicrafter(str(tmp_path / "svd.safetensors"))
    save_file({"foo.bar": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a DynamiCrafter checkpoint"):
        load_dynamicrafter(str(tmp_path / "other.safetensors"))


def test_edg_motion_adapter_is_refused_clearly(tmp_path):
    src = make_tiny_checkpoint(str(tmp_path / "src.safetensors"), with_clip=False, with_clip_vision=False,
                               with_vae=False)
    sd = load_file(src)
    sd["model.diffusion_model.input_blocks.1.2.cc_projection.weight"] = torch.zeros(32, 64)
    save_file(sd, str(tmp_path / "edg_stage1.safetensors"))
    with pytest.raises(CheckpointError, match="EDG stage-1"):
        load_dynamicrafter(str(tmp_path / "edg_stage1.safetensors"))
