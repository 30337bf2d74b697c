"""The merging nodes: schemas (ids, categories, tooltips) and execution through the V3 classes."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import comfy.model_management as mm
import folder_paths
from i2v_motion.nodes.merging import NODES, ApplyTaskVectors, BakeMerged, EDGExperts, TaskVector

from support.models import loaded_weights, stored, tiny_svd  # noqa: E402  (same folder)


def test_schemas():
    ids = set()
    for node in NODES:
        s = node.define_schema()
        s.validate()
        assert s.node_id.startswith("I2VMotion_") and s.category.startswith("i2v_motion/merging")
        ids.add(s.node_id)
        for inp in s.inputs:
            assert inp.tooltip, f"{s.node_id}.{inp.id} has no tooltip"
    assert ids == {"I2VMotion_TaskVector", "I2VMotion_ApplyTaskVectors", "I2VMotion_EDGExperts",
                   "I2VMotion_BakeMerged", "I2VMotion_LoraTaskVector"}
    edg = {i.id: i for i in EDGExperts.define_schema().inputs}
    assert (edg["alpha_d"].default, edg["beta_d"].default, edg["alpha_c"].default, edg["beta_c"].default,
            edg["p"].default) == (0.25, 0.75, 1.0, 0.25, 0.7)
    tv_out = TaskVector.define_schema().outputs[0]
    assert tv_out.io_type == "I2V_TASK_VECTOR"
    assert BakeMerged.define_schema().is_output_node


@pytest.fixture(scope="module")
def svd():
    return tiny_svd(0), tiny_svd(1, perturb_of=0), tiny_svd(2, perturb_of=0)


def test_nodes_execute_lazily_and_match_library(svd):
    base, ft1, ft2 = svd
    b, f1, f2 = stored(base), stored(ft1), stored(ft2)
    tv1 = TaskVector.execute(base, ft1, "temporal", "")[0]
    tv2 = TaskVector.execute(base, ft2, "all", "")[0]
    out = ApplyTaskVectors.execute(base, tv1, -0.5, tv2, 1.25, method="sum")[0]
    assert out is not base and out.model is base.model and base.patches == {}
    w = loaded_weights(out)
    for k in tv2.keys:
        expect = b[k] + 1.25 * (f2[k] - b[k]) + (-0.5 * (f1[k] - b[k]) if k in tv1 else 0)
        torch.testing.assert_close(w[k], expect, rtol=0, atol=3e-6)
    dyn, con = EDGExperts.execute(base, ft1, p=0.0).args
    wd = loaded_weights(dyn)
    for k in tv2.keys:
        torch.testing.assert_close(wd[k], b[k] + 0.1875 * (b[k] - f1[k]), rtol=0, atol=3e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        EDGExperts.execute(base, ft1, p=1.0)
    with pytest.raises(ValueError, match="selects no weight"):
        TaskVector.execute(base, ft1, "resampler", "")


def test_bake_node_writes_recipe_file(svd, tmp_path):
    base, ft, _ = svd
    old = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path))
    try:
        dyn, _ = EDGExperts.execute(base, ft, seed=42, filter="custom", regex=r"input_blocks\.1\.").args
        res = BakeMerged.execute(dyn, "edg/dyn", "output", "fp16")
        path = res.args[0]
        again = BakeMerged.execute(dyn, "edg/dyn", "output", "keep").args[0]
    finally:
        folder_paths.set_output_directory(old)
    assert os.path.dirname(path) == str(tmp_path / "edg") and path.endswith("_.safetensors") and path != again
    assert res.ui is not None and "baked" in json.dumps(res.ui.as_dict())
    sd = load_file(path)
    assert all(v.dtype == torch.float16 for v in sd.values())
    with safe_open(path, "pt") as f:
        r = json.loads(f.metadata()["i2v_motion.recipe"])[0]
    assert r["seed"] == 42 and r["task_vector"]["filter"] == {"preset": "custom", "regex": r"input_blocks\.1\."}
    lazy = loaded_weights(dyn)
    keep = load_file(again)
    for k, v in lazy.items():
        if k.startswith("diffusion_model."):
            assert torch.equal(keep["model." + k], v), k
    mm.unload_all_models()
