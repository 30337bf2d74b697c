"""LoRAs as task vectors (issue 19 item 4): a LoRA file becomes an I2V_TASK_VECTOR whose delta per key is core's own
α/r·B·A, so task arithmetic at weight w equals core's LoraLoaderModelOnly at strength w bit for bit (fp32 and fp16
storage), and DARE / TIES / extrapolation work on it as on fine-tunes."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import comfy.sd
import folder_paths
from i2v_motion.merging import apply_task_vectors, ops
from i2v_motion.merging.lora import make_lora_task_vector
from i2v_motion.nodes import merging as NM
from support.models import loaded_weights, stored, tiny_svd

RANK = 4


def _lora_sd(model, seed: int, keys: int = 6, alpha: float | None = 2.0, dora: bool = False) -> dict:
    """A PEFT-style LoRA (``diffusion_model.<module>.lora_A/lora_B.weight`` + alpha) over some 2-D weights."""
    g = torch.Generator().manual_seed(seed)
    cands = [k for k, p in model.model.named_parameters() if k.startswith("diffusion_model.") and p.ndim == 2
             and (".attn" in k or ".ff." in k)]
    temporal = [k for k in cands if "time_stack" in k]
    names = [k for k in cands if k not in temporal][: keys // 2] + temporal[: keys - keys // 2]
    sd = {}
    for k in names:
        out_f, in_f = dict(model.model.named_parameters())[k].shape
        base = k[: -len(".weight")]
        sd[f"{base}.lora_A.weight"] = torch.randn(RANK, in_f, generator=g) * 0.1
        sd[f"{base}.lora_B.weight"] = torch.randn(out_f, RANK, generator=g) * 0.1
        if alpha is not None:
            sd[f"{base}.alpha"] = torch.tensor(alpha)
        if dora:
            sd[f"{base}.dora_scale"] = torch.ones(out_f, 1)
    return sd


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    d = tmp_path_factory.mktemp("loras")
    folder_paths.add_model_folder_path("loras", str(d))
    return d


def _write(d, name: str, sd: dict) -> str:
    path = str(d / name)
    save_file(sd, path)
    return path


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_sum_equals_core_lora_loader_bit_for_bit(loras, dtype):
    base = tiny_svd(0, dtype=dtype)
    sd = _lora_sd(base, 1)
    path = _write(loras, f"svd_{str(dtype)[6:]}.safetensors", sd)
    tv = make_lora_task_vector(base, path)
    assert len(tv) == 6
    before = stored(base)
    for w in (1.0, 0.7, -0.5, 2.5):
        core, _ = comfy.sd.load_lora_for_models(base, None, sd, w, 0.0)
        ours = apply_task_vectors(base, [tv], [w], method="sum")
        a, b = loaded_weights(core), loaded_weights(ours)
        changed = [k for k in a if not torch.equal(a[k], before[k])]
        assert len(changed) == 6, changed
        for k in a:
            assert torch.equal(a[k], b[k]), (w, k, float((a[k].float() - b[k].float()).abs().max()))


def test_dare_ties_and_extrapolation_on_loras(loras):
    base = tiny_svd(0)
    sd1, sd2 = _lora_sd(base, 1), _lora_sd(base, 2)
    tv1 = make_lora_task_vector(base, _write(loras, "a.safetensors", sd1))
    tv2 = make_lora_task_vector(base, _write(loras, "b.safetensors", sd2))
    b = stored(base)
    dare = loaded_weights(apply_task_vectors(base, [tv1], [1.5], method="dare", p=0.5, seed=3))
    ties = loaded_weights(apply_task_vectors(base, [tv1, tv2], [0.8, -1.2], method="ties", density=0.3))
    for k in tv1.keys:
        d1, d2 = tv1.delta(k), tv2.delta(k)
        want = 1.5 * ops.dare(d1, 0.5, seed=3, key=k, tag="tv0")
        torch.testing.assert_close(dare[k], b[k] + want, rtol=0, atol=1e-6)
        torch.testing.assert_close(ties[k], b[k] + ops.ties_merge([0.8 * d1, -1.2 * d2], 0.3), rtol=0, atol=1e-6)
        # the delta is α/r·B·A
        mod = k[: -len(".weight")]
        manual = (sd1[f"{mod}.lora_B.weight"] @ sd1[f"{mod}.lora_A.weight"]) * (2.0 / RANK)
        torch.testing.assert_close(d1, manual, rtol=1e-6, atol=1e-7)


def test_lora_node_and_errors(loras):
    base = tiny_svd(0)
    _write(loras, "node.safetensors", _lora_sd(base, 4))
    tv = NM.LoraTaskVector.execute(base, "node.safetensors", "temporal", "").result[0]
    assert tv.keys and all("time_" in k for k in tv.keys)
    with pytest.raises(ValueError, match=r"DoRA"):
        make_lora_task_vector(base, _write(loras, "dora.safetensors", _lora_sd(base, 5, dora=True)))
    with pytest.raises(ValueError, match=r"none of its 2 tensors is a LoRA of this model"):
        make_lora_task_vector(base, _write(loras, "other.safetensors",
                                           {"lora_te_text_model_x.lora_up.weight": torch.zeros(4, 4),
                                            "lora_te_text_model_x.lora_down.weight": torch.zeros(4, 4)}))
    with pytest.raises(ValueError, match=r"selects none of the"):
        NM.LoraTaskVector.execute(base, "node.safetensors", "custom", "no_such_layer")
    assert base.patches == {}
