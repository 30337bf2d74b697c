"""Keyframe interpolation: N keyframes → N−1 segments (one batch of videos) → one video without repeats."""
from __future__ import annotations

import pytest
import torch

import nodes as comfy_nodes
from i2v_motion.backbones.conditioning import fit_image
from i2v_motion.backbones.keyframes import join_segments
from i2v_motion.nodes.backbone import DynamiCrafterKeyframes, JoinKeyframeSegments

W, H, T = 64, 64, 4


def _out(o):
    return o.result if hasattr(o, "result") else o


def test_segments_conditioning_and_join(tiny_dc):
    g = torch.Generator().manual_seed(3)
    k1, k2, k3 = torch.rand(1, 64, 96, 3, generator=g), torch.rand(1, 80, 80, 3, generator=g), torch.rand(1, 64, 64, 3, generator=g)
    pos = comfy_nodes.CLIPTextEncode().encode(tiny_dc.clip, "a ball rolls across a meadow")[0]
    neg = comfy_nodes.CLIPTextEncode().encode(tiny_dc.clip, "")[0]
    p, n, lat = _out(DynamiCrafterKeyframes.execute(pos, neg, tiny_dc.vae, tiny_dc.clip_vision, k1, k2, W, H, T, 24,
                                                    "crop", keyframe_3=k3))
    assert lat["samples"].shape == (2 * T, 4, H // 8, W // 8)
    v = p[0][1]
    assert v["num_video_frames"] == T and v["clip_vision_tokens"].shape[0] == 2
    c = v["concat_latent_image"].reshape(2, T, 4, H // 8, W // 8)
    lat_keys = tiny_dc.vae.encode(torch.cat([fit_image(k, W, H) for k in (k1, k2, k3)]))
    for s in range(2):  # segment s: keyframe s first, keyframe s+1 last, zeros between (official interp)
        torch.testing.assert_close(c[s, 0], lat_keys[s], rtol=0, atol=1e-5)
        torch.testing.assert_close(c[s, -1], lat_keys[s + 1], rtol=0, atol=1e-5)
        assert c[s, 1:-1].abs().max() == 0
    out = comfy_nodes.common_ksampler(tiny_dc.model, 0, 2, 7.5, "euler", "simple", p, n, lat)[0]
    frames = comfy_nodes.VAEDecode().decode(tiny_dc.vae, out)[0]
    video = _out(JoinKeyframeSegments.execute(frames, T, "next_segment"))[0]
    assert video.shape[0] == 2 * (T - 1) + 1
    torch.testing.assert_close(video[:T - 1], frames[:T - 1])
    torch.testing.assert_close(video[T - 1:], frames[T:])  # segment 2 whole; segment 1's last frame dropped


def test_join_keeps_one_frame_per_meeting_point():
    seg = torch.arange(3 * 5, dtype=torch.float32).reshape(15, 1, 1, 1)  # 3 segments of 5 frames
    nxt = join_segments(seg, 5, "next_segment").flatten().tolist()
    prev = join_segments(seg, 5, "previous_segment").flatten().tolist()
    avg = join_segments(seg, 5, "average").flatten().tolist()
    assert nxt == [0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 14]
    assert prev == [0, 1, 2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14]
    assert avg == [0, 1, 2, 3, 4.5, 6, 7, 8, 9.5, 11, 12, 13, 14]
    assert len(nxt) == 3 * 4 + 1
    with pytest.raises(ValueError, match="segment_length"):
        join_segments(seg, 4)


def test_keyframe_errors(tiny_dc):
    one = torch.rand(1, 64, 64, 3)
    pos = comfy_nodes.CLIPTextEncode().encode(tiny_dc.clip, "x")[0]
    with pytest.raises(ValueError, match="at least 2 frames"):
        DynamiCrafterKeyframes.execute(pos, pos, tiny_dc.vae, tiny_dc.clip_vision, one, one, W, H, 1, 24, "crop")
