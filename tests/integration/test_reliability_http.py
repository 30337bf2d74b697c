"""The bad-input catalogue, server-level subset: over HTTP, against the real headless ComfyUI, as a shared
workflow would arrive. Each case must come back as a message (validation error or execution error with the
pack's own text) and leave the server up. The full catalogue is ``tests/unit/test_reliability.py``."""
from __future__ import annotations

import shutil

import comfy_server
import pytest
import workflow
from safetensors.torch import load_file, save_file

from .conftest import REPO, make_tiny_models, place_input_images

pytestmark = pytest.mark.integration
CASES = REPO / "example_workflows" / "layout_cases"


def _case_graph(folder: str, name: str = "(index)") -> dict:
    return {"1": {"class_type": "I2VMotion_LayoutCaseLoader", "inputs": {"folder": folder, "index": 0, "name": name}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}


def _fails(comfy, prompt: dict, timeout: float = 300) -> str:
    """Run ``prompt``; it must fail (rejected or raising). Returns the message the user sees."""
    with pytest.raises((comfy_server.PromptRejected, comfy_server.ExecutionFailed)) as ei:
        comfy.run(prompt, timeout=timeout)
    assert comfy.alive() and comfy.get_json("/system_stats")
    if isinstance(ei.value, comfy_server.ExecutionFailed):
        return ei.value.details.get("exception_message", "")
    return str(ei.value)


def test_case_folders_outside_input_are_refused(comfy):
    outside = comfy.input_dir.parent / "outside_cases"
    outside.mkdir(exist_ok=True)
    shutil.copy(CASES / "ball_roll.json", outside / "ball_roll.json")
    shutil.copy(CASES / "ball_roll.png", outside / "ball_roll.png")
    msgs = {f: _fails(comfy, _case_graph(f)) for f in (str(outside), "../outside_cases", "/etc", "/no/such/dir")}
    for f, m in msgs.items():
        assert "must be inside ComfyUI's input folder" in m, (f, m)
        assert "ball_roll" not in m and "passwd" not in m
    # the same case inside input/ loads
    inside = comfy.input_dir / "my_cases"
    inside.mkdir(exist_ok=True)
    for ext in (".json", ".png"):
        shutil.copy(CASES / f"ball_roll{ext}", inside / f"ball_roll{ext}")
    res = comfy.run(_case_graph("my_cases"), timeout=120)
    assert res.files


def test_case_image_outside_is_refused(comfy):
    case = comfy.input_dir / "evil_cases"
    case.mkdir(exist_ok=True)
    secret = comfy.input_dir.parent / "secret.png"
    shutil.copy(CASES / "ball_roll.png", secret)
    (case / "evil.json").write_text('{"image": "../../secret.png", "objects": [{"phrase": "x", "boxes": '
                                    '[[0, 0.1, 0.1, 0.2, 0.2]]}]}')
    msg = _fails(comfy, _case_graph("", "evil_cases/evil"))  # listed: a case JSON in a sub-folder of input/
    assert "its image must be inside its case folder" in msg and "secret" not in msg


def _i2v_prompt(comfy, object_info, ckpt_name: str) -> dict:
    path = REPO / "example_workflows" / "dynamicrafter_i2v.json"
    expect = workflow.load_expect(path)
    prompt = workflow.to_api(workflow.load(path), object_info)
    workflow.apply_overrides(prompt, expect.get("tiny_overrides"))
    workflow.set_input(prompt, "I2VMotion_LoadDynamiCrafter", "ckpt_name", ckpt_name)
    place_input_images(comfy, prompt, path, expect)
    return prompt


def test_nonfinite_checkpoint_is_an_error(comfy, object_info):
    make_tiny_models(comfy, {"checkpoints/dynamicrafter_512.ckpt": {"variant": "512"}})
    good = comfy.models_dir / "checkpoints" / "tiny_for_nan.safetensors"
    if not good.is_file():
        from support.fixtures import make_tiny_checkpoint

        make_tiny_checkpoint(str(good))
    sd = load_file(str(good))
    sd["model.diffusion_model.out.2.weight"][0] = float("nan")
    save_file(sd, str(comfy.models_dir / "checkpoints" / "nan_512.safetensors"))
    msg = _fails(comfy, _i2v_prompt(comfy, object_info, "nan_512.safetensors"))
    assert "nan_512.safetensors: non-finite values (NaN/Inf)" in msg and "out.2.weight" in msg, msg


def test_nan_producing_merge_is_an_error(comfy, object_info):
    """EDG experts with legal but extreme coefficients: a NaN latent is an error naming them, not a success."""
    make_tiny_models(comfy, {"checkpoints/dynamicrafter_512.ckpt": {"variant": "512"}})
    prompt = _i2v_prompt(comfy, object_info, "dynamicrafter_512.ckpt")
    loader = workflow.find_nodes(prompt, "I2VMotion_LoadDynamiCrafter")[0]
    sampler = workflow.find_nodes(prompt, "KSampler")[0]
    prompt["900"] = {"class_type": "I2VMotion_TaskVector",
                     "inputs": {"base": [loader, 0], "finetune": [loader, 0], "filter": "all", "regex": ""}}
    prompt["901"] = {"class_type": "I2VMotion_ApplyTaskVectors",
                     "inputs": {"model": prompt[sampler]["inputs"]["model"], "task_vector_1": ["900", 0],
                                "weight_1": 10.0, "weight_2": 1.0, "weight_3": 1.0, "weight_4": 1.0, "method": "dare",
                                "p": 0.999, "seed": 0, "keep_1d": True, "density": 0.2}}
    # a task vector of a model with itself is zero: use a real fine-tune
    make_tiny_models(comfy, {"checkpoints/finetune_for_nan_512.ckpt": {"variant": "512", "seed": 1}})
    prompt["902"] = {"class_type": "I2VMotion_LoadDynamiCrafter",
                     "inputs": {"ckpt_name": "finetune_for_nan_512.ckpt", "variant": "auto", "weight_dtype": "default"}}
    prompt["900"]["inputs"]["finetune"] = ["902", 0]
    prompt[sampler]["inputs"]["model"] = ["901", 0]
    msg = _fails(comfy, prompt)
    assert "sampling produced NaN/Inf" in msg and "merge coefficients" in msg and "p 0.999" in msg, msg


def test_unknown_combo_value_is_refused_by_name(comfy, object_info):
    make_tiny_models(comfy, {"checkpoints/dynamicrafter_512.ckpt": {"variant": "512"}})
    prompt = _i2v_prompt(comfy, object_info, "dynamicrafter_512.ckpt")
    workflow.set_input(prompt, "I2VMotion_LoadDynamiCrafter", "variant", "2048")
    msg = _fails(comfy, prompt)
    assert "2048" in msg and "variant" in msg, msg  # 0.33 refuses it at /prompt, 0.3.75 in the node


def test_bake_with_empty_prefix_is_refused(comfy, object_info):
    make_tiny_models(comfy, {"checkpoints/dynamicrafter_512.ckpt": {"variant": "512"}})
    prompt = {"1": {"class_type": "I2VMotion_LoadDynamiCrafter",
                    "inputs": {"ckpt_name": "dynamicrafter_512.ckpt", "variant": "auto", "weight_dtype": "default"}},
              "2": {"class_type": "I2VMotion_BakeMerged",
                    "inputs": {"model": ["1", 0], "filename_prefix": "", "folder": "output", "dtype": "keep"}}}
    msg = _fails(comfy, prompt)
    assert "has no file name" in msg, msg
    assert not list(comfy.output_dir.rglob("*.safetensors"))


def test_case_json_link_out_of_input_is_refused(comfy):
    """A case JSON in input/ that is a link to a file elsewhere: refused over HTTP, nothing of that file quoted."""
    outside = comfy.input_dir.parent / "elsewhere_cases"
    outside.mkdir(exist_ok=True)
    (outside / "lonely.json").write_text('{"image": "SECRET-IMAGE.png", "objects": [{"phrase": "SECRET-PHRASE", '
                                         '"boxes": [[0, 0.1, 0.1, 0.2, 0.2]]}]}')
    sub = comfy.input_dir / "linked_cases"
    sub.mkdir(exist_ok=True)
    link = sub / "lonely.json"
    if not link.is_symlink():
        link.symlink_to(outside / "lonely.json")
    msg = _fails(comfy, _case_graph("linked_cases", "lonely"))
    # refused by the loader, or before the run as a name the loader never offers (ComfyUI's own combo check on 0.33,
    # the pack's on 0.3.75): either way nothing of the outside file is quoted
    assert any(m in msg for m in ("must be inside ComfyUI's input folder", "is not one of its choices",
                                  "value_not_in_list")), msg
    assert "SECRET" not in msg and "elsewhere" not in msg, msg


def test_path_strings_are_refused_with_the_packs_message(comfy, object_info):
    make_tiny_models(comfy, {"checkpoints/dynamicrafter_512.ckpt": {"variant": "512"}})
    for prefix, gist in (("i2v/mer\x00ged", "NUL character"), ("i2v/CON", "device name on Windows"),
                         ("i2v/merged.", "ends in a dot")):
        prompt = {"1": {"class_type": "I2VMotion_LoadDynamiCrafter",
                        "inputs": {"ckpt_name": "dynamicrafter_512.ckpt", "variant": "auto", "weight_dtype": "default"}},
                  "2": {"class_type": "I2VMotion_BakeMerged",
                        "inputs": {"model": ["1", 0], "filename_prefix": prefix, "folder": "output", "dtype": "keep"}}}
        msg = _fails(comfy, prompt)
        assert gist in msg, (prefix, msg)
    assert not list(comfy.output_dir.rglob("*.safetensors"))
