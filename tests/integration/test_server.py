"""The pack inside a real headless ComfyUI, driven over HTTP exactly as a user's editor would.

Workflows run here: every ``example_workflows/*.json`` (UI format, converted with ``/object_info``)
plus the stock-node harness checks in ``tests/integration/workflows/``.

Expectations sidecar ``<name>.expect.json`` next to a workflow, or for the example workflows in
``tests/integration/expect/`` (``example_workflows/`` holds only loadable workflows; required for a workflow
to be run here):

``frames``, ``width``, ``height``
    What every animated image the workflow saves (e.g. ``SaveAnimatedWEBP``) holds when run as shipped
    with real weights.
``inputs``
    ``{"<file name in LoadImage>": "<path relative to the workflow>"}``: pictures copied into the server's
    input folder. Unlisted names: a same-named file beside the workflow or in ``inputs/``, else a
    synthetic picture of ``input_size`` (``[w, h]``, default ``[512, 320]``).
``tiny_overrides``
    ``{"<node id or class_type>": {"<input>": value}}`` applied to the API prompt when it runs on tiny
    random-weight checkpoints (here, and ``tools/demo.py``'s fallback): smaller size/length, fewer steps.
``tiny_expect``
    ``{"frames", "width", "height"}`` of that tiny run (default: the top-level values).
``tiny_models``
    ``{"<models sub-path>": spec}``: the stand-in files to write (``support.standins``: ``{"kind": ..., args}``,
    e.g. ``{"diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors": {"kind": "wan21_i2v"}}``; without ``kind`` a
    DynamiCrafter checkpoint, ``make_tiny_checkpoint`` kwargs, ``"arch": "svd"`` for SVD). Default: one tiny
    checkpoint per ``I2VMotion_LoadDynamiCrafter`` ``ckpt_name``, written under that very name (so ``.ckpt`` names
    exercise the pickle path), and the official Wan file names core loaders name; see ``workflow.tiny_models``.
``tiny_replace``
    ``{"<node id or class_type>": {"class_type": ..., "drop": [inputs], "inputs": {...}} or null}``: node swaps
    of the tiny run, applied after ``tiny_overrides``. Default: each ``CLIPTextEncode`` fed by a Wan
    ``CLIPLoader`` becomes the test-only ``I2VTest_WanTextEncode`` (umT5-shaped conditioning from the text; no
    umT5-XXL) and the loader is dropped; null cancels a swap. See ``workflow.tiny_replacements``.
``timeout``
    Seconds allowed for the run (default 900).
``files``
    How many animated files the run saves (unchecked when absent), e.g. one per video of a batch.

Checks on every saved animation: frame count and size as expected, no frame a single flat colour
(NaN/inf decode to flat frames). libwebp merges identical consecutive frames, so a fully static video
also fails the frame count.
"""
from __future__ import annotations

import copy
import glob
import json
import sys
import time
from pathlib import Path

import comfy_server
import pytest
import workflow

from .conftest import REPO, STATS, comfy_dir, make_tiny_models, place_input_images

pytestmark = pytest.mark.integration

PACK_LOADER = "I2VMotion_LoadDynamiCrafter"
EXAMPLES = sorted(p for p in (REPO / "example_workflows").glob("*.json") if not p.name.endswith(".expect.json"))
HARNESS = sorted(p for p in (REPO / "tests" / "integration" / "workflows").glob("*.json")
                 if not p.name.endswith(".expect.json"))
TEMPLATE_GLOB = "comfyui_workflow_templates_*/templates/*.json"


def _pack_node_ids() -> list[str]:
    import i2v_motion.nodes

    return [n.GET_SCHEMA().node_id for n in i2v_motion.nodes.all_nodes()]


# -- registration -----------------------------------------------------------------------------------
def test_pack_imports_without_failure(comfy):
    assert comfy.pack_import_failures() == []
    assert f"custom_nodes/{comfy_server.PACK_NAME}" in comfy.log_text(), "pack was not even attempted"


def test_every_pack_node_is_registered(object_info):
    expected = _pack_node_ids()
    missing = [n for n in expected if n not in object_info]
    assert not missing, f"nodes of the pack missing from /object_info: {missing}"


def test_import_failure_is_detected(tmp_path):
    """The harness itself: a pack that raises on import makes start() fail with ComfyUI's traceback."""
    broken = tmp_path / "broken_pack"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise RuntimeError('i2v-motion deliberately broken for the test')\n")
    srv = comfy_server.ComfyServer(comfy_dir(), sys.executable, base_dir=tmp_path / "base", pack_dir=broken)
    with pytest.raises(comfy_server.PackImportError, match="deliberately broken"):
        srv.start(timeout=240)
    assert srv.proc is None


# -- workflows --------------------------------------------------------------------------------------
def _check_animation(path: Path, expect: dict) -> None:
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        n = getattr(im, "n_frames", 1)
        assert n == expect["frames"], (f"{path.name}: {n} frames, expected {expect['frames']} (the WEBP encoder "
                                       "merges identical consecutive frames: a static video shows fewer)")
        assert im.size == (expect["width"], expect["height"]), f"{path.name}: size {im.size}"
        for i, frame in enumerate(ImageSequence.Iterator(im)):
            lo_hi = frame.convert("RGB").getextrema()
            assert any(lo != hi for lo, hi in lo_hi), f"{path.name}: frame {i} is one flat colour {lo_hi} (NaN?)"


def _run_case(comfy, object_info, wf_path: Path) -> None:
    expect = workflow.load_expect(wf_path)
    assert {"frames", "width", "height"} <= set(expect), \
        f"{wf_path.name}: needs a {wf_path.stem}.expect.json with frames/width/height (see this module's docstring)"
    warnings: list[str] = []
    prompt = workflow.to_api(workflow.load(wf_path), object_info, warnings)
    assert warnings == [], f"{wf_path.name}: widget values do not match the node definitions: {warnings}"
    tiny = workflow.tiny_models(prompt, expect)
    if tiny:
        workflow.apply_overrides(prompt, expect.get("tiny_overrides"))
        workflow.apply_replacements(prompt, workflow.tiny_replacements(prompt, expect))
        expect = {**expect, **expect.get("tiny_expect", {})}
        tiny = workflow.tiny_models(prompt, expect)  # what the swapped graph still loads
    make_tiny_models(comfy, tiny)
    place_input_images(comfy, prompt, wf_path, expect)
    t0 = time.perf_counter()
    try:
        res = comfy.run(prompt, timeout=expect.get("timeout", 900))
    except comfy_server.ComfyError as e:
        pytest.fail(f"{wf_path.name}: {e}", pytrace=False)
    STATS["runs"][wf_path.name] = time.perf_counter() - t0
    animated = {nid: o for nid, o in res.outputs.items() if any(o.get("animated") or [])}
    assert animated, f"{wf_path.name}: no animated output in history: {json.dumps(res.outputs)[:500]}"
    files = comfy.output_files(animated)
    assert files, f"no output files: {res.outputs}"
    if "files" in expect:
        assert len(files) == expect["files"], f"{wf_path.name}: {len(files)} animated files, expected {expect['files']}"
    for f in files:
        assert f.is_file(), f"history lists {f} but it is not on disk"
        _check_animation(f, expect)


@pytest.mark.parametrize("wf_path", HARNESS, ids=lambda p: p.stem)
def test_harness_workflow(comfy, object_info, wf_path):
    """Harness checks: stock nodes only (conversion + run + output checks independently of any model), and
    graphs that are not examples (a batch of videos split per video with RebatchImages)."""
    _run_case(comfy, object_info, wf_path)


@pytest.mark.parametrize("wf_path", EXAMPLES, ids=lambda p: p.stem)
def test_example_workflow(comfy, object_info, wf_path):
    _run_case(comfy, object_info, wf_path)


def test_layout_to_tracks_drives_core_wan_move(comfy, object_info):
    """A pack layout through Layout to Tracks into core's WanMoveTrackToVideo (ComfyUI 0.33+, core TRACKS) samples a
    1 + 4k-frame video on the tiny Wan 2.1 I2V stand-in: the trajectory nodes connect to core's WanMove path."""
    if "WanMoveTrackToVideo" not in object_info or "I2VMotion_LayoutToTracks" not in object_info:
        pytest.skip("this ComfyUI has no core TRACKS / WanMoveTrackToVideo (ComfyUI 0.33+)")
    make_tiny_models(comfy, {"diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors": {"kind": "wan21_i2v"},
                             "vae/wan_2.1_vae.safetensors": {"kind": "wan21_vae", "dim": 32}})
    comfy_server.write_sample_png(comfy.input_dir / "tracks_start.png", 64, 64)
    layout = ('{"objects": [{"phrase": "ball", "boxes": [[0, 0.1, 0.3, 0.4, 0.6], [8, 0.6, 0.3, 0.9, 0.6]]}]}')
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan2.1_i2v_480p_14B_fp16.safetensors",
                                                     "weight_dtype": "default"}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "3": {"class_type": "I2VTest_WanTextEncode", "inputs": {"text": "a ball rolls to the right"}},
        "4": {"class_type": "I2VTest_WanTextEncode", "inputs": {"text": ""}},
        "5": {"class_type": "LoadImage", "inputs": {"image": "tracks_start.png"}},
        "6": {"class_type": "I2VMotion_LayoutFromJSON", "inputs": {"layout_json": layout, "frames": 9,
                                                                   "interpolation": "linear", "size_space": "log"}},
        "7": {"class_type": "I2VMotion_LayoutToTracks", "inputs": {"layout": ["6", 0], "width": 64, "height": 64}},
        "8": {"class_type": "WanMoveTrackToVideo", "inputs": {"positive": ["3", 0], "negative": ["4", 0], "vae": ["2", 0],
                                                              "tracks": ["7", 0], "strength": 1.0, "width": 64,
                                                              "height": 64, "length": 9, "batch_size": 1,
                                                              "start_image": ["5", 0]}},
        "9": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 0, "steps": 2, "cfg": 3.0,
                                                   "sampler_name": "euler", "scheduler": "simple", "positive": ["8", 0],
                                                   "negative": ["8", 1], "latent_image": ["8", 2], "denoise": 1.0}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["2", 0]}},
        "11": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["10", 0], "filename_prefix": "tracks/wanmove",
                                                            "fps": 16.0, "lossless": False, "quality": 80,
                                                            "method": "default"}},
    }
    res = comfy.run(prompt, timeout=600)
    assert len(res.files) == 1
    _check_animation(res.files[0], {"frames": 9, "width": 64, "height": 64})


def test_example_workflows_exist():
    assert (REPO / "example_workflows" / "dynamicrafter_i2v.json") in EXAMPLES, \
        "example_workflows/dynamicrafter_i2v.json is missing"


# -- conversion against real editor files -------------------------------------------------------------
def _templates() -> list[Path]:
    import site
    import sysconfig

    roots = {sysconfig.get_paths()["purelib"], *getattr(site, "getsitepackages", lambda: [])()}
    return sorted({Path(p) for r in roots for p in glob.glob(str(Path(r) / TEMPLATE_GLOB))})


def test_frontend_templates_convert_and_validate(comfy, object_info):
    """Every core-node template the frontend ships converts to a prompt that /prompt validation accepts
    structurally: the only errors allowed are missing model/media files (nothing is downloaded here)."""
    templates = _templates()
    if not templates:
        pytest.skip("comfyui_workflow_templates_* packages are not installed in this python")
    checked, problems = 0, []
    for path in templates:
        try:
            wf = json.loads(path.read_text())
        except ValueError:
            continue
        if not isinstance(wf, dict) or "nodes" not in wf:
            continue
        warnings: list[str] = []
        try:
            prompt = workflow.ui_to_api(wf, object_info, warnings)
        except workflow.WorkflowError as e:
            if "does not know" in str(e) or "subgraph" in str(e):
                continue  # API/partner nodes (disabled here) or subgraphs: out of scope
            problems.append(f"{path.name}: {e}")
            continue
        checked += 1
        try:
            comfy.queue(prompt)
        except comfy_server.PromptRejected as e:
            for nid, ne in e.node_errors.items():
                for err in ne.get("errors", []):
                    received = str((err.get("extra_info") or {}).get("received_value", ""))
                    if err.get("type") == "value_not_in_list" and "." in received:
                        continue  # a model file we do not have
                    if err.get("type") == "custom_validation_failed" and "Invalid" in err.get("details", ""):
                        continue  # a LoadImage/LoadVideo media file we do not have
                    problems.append(f"{path.name}: node {nid}: {err}")
        else:  # fully valid: nothing to run without models, drop it again
            comfy.post_json("/interrupt", {})
            comfy.post_json("/queue", {"clear": True})
    assert checked >= 20, f"only {checked} templates could be converted"
    assert not problems, "\n".join(problems[:20])


def test_api_to_ui_round_trips_every_example(object_info):
    """``workflow.api_to_ui`` (how the Wan examples are authored) is the inverse of the UI→API conversion: every
    shipped example, converted to API, back to UI and to API again, gives the same prompt."""
    for wf_path in EXAMPLES:
        api = workflow.to_api(workflow.load(wf_path), object_info)
        again = workflow.ui_to_api(workflow.api_to_ui(api, object_info), object_info)
        strip = lambda p: {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in p.items()}  # noqa: E731
        assert strip(again) == strip(api), wf_path.name


def test_converter_handles_editor_features(object_info):
    """Reroute, PrimitiveNode into a converted widget, seed control value, upload widget value, bypass, mute."""
    wf = workflow.load(REPO / "tests" / "integration" / "workflows" / "stock_webp.json")
    warnings: list[str] = []
    prompt = workflow.ui_to_api(wf, object_info, warnings)
    assert warnings == []
    assert set(prompt) == {"1", "3", "10", "4", "7"}  # no Reroute/Primitive/Note, bypassed 6, muted 9
    assert prompt["1"]["inputs"] == {"image": "i2v_sample.png"}
    assert prompt["3"]["inputs"]["image"] == ["1", 0]  # through the Reroute
    assert prompt["3"]["inputs"]["width"] == 96  # from the PrimitiveNode, not the stale 512
    assert prompt["4"]["inputs"]["image"] == ["3", 0]
    assert prompt["10"]["inputs"] == {"seed": 42, "strength": 0.1, "image": ["4", 0]}
    assert prompt["7"]["inputs"]["images"] == ["10", 0]  # around the bypassed ImageInvert
    assert workflow.to_api(copy.deepcopy(prompt), {}) == prompt  # API format passes through


# -- errors come back as messages, not crashes ----------------------------------------------------------
def _loader_graph(object_info: dict, ckpt: str) -> dict:
    """Smallest stock graph that loads a checkpoint and reaches an output node."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }


def _example_prompt(object_info: dict) -> dict:
    path = REPO / "example_workflows" / "dynamicrafter_i2v.json"
    if not path.is_file() or PACK_LOADER not in object_info:
        pytest.skip(f"needs {path.name} and the {PACK_LOADER} node")
    return workflow.to_api(workflow.load(path), object_info)


def test_missing_checkpoint_is_rejected_by_validation(comfy, object_info):
    with pytest.raises(comfy_server.PromptRejected) as ei:
        comfy.queue(_loader_graph(object_info, "no_such_model.safetensors"))
    assert "value_not_in_list" in ei.value.error_types()
    assert "no_such_model.safetensors" in str(ei.value)


def test_pack_loader_missing_checkpoint_is_reported(comfy, object_info):
    """ComfyUI 0.3.75 does not check V3 combo values at validation, so the loader itself must name the file."""
    prompt = _example_prompt(object_info)
    assert workflow.set_input(prompt, PACK_LOADER, "ckpt_name", "no_such_dc.safetensors") >= 1
    place_input_images(comfy, prompt, REPO / "example_workflows" / "dynamicrafter_i2v.json",
                       workflow.load_expect(REPO / "example_workflows" / "dynamicrafter_i2v.json"))
    with pytest.raises((comfy_server.PromptRejected, comfy_server.ExecutionFailed)) as ei:
        comfy.run(prompt, timeout=300)
    assert "no_such_dc.safetensors" in str(ei.value)
    if isinstance(ei.value, comfy_server.ExecutionFailed):
        assert ei.value.details.get("node_type") == PACK_LOADER
    assert comfy.alive()


@pytest.mark.parametrize("content", [b"", b"not a safetensors file" * 10], ids=["empty", "garbage"])
def test_unreadable_checkpoint_fails_with_message(comfy, object_info, content):
    name = f"broken_{len(content)}.safetensors"
    (comfy.models_dir / "checkpoints" / name).write_bytes(content)
    with pytest.raises(comfy_server.ExecutionFailed) as ei:
        comfy.run(_loader_graph(object_info, name), timeout=120)
    assert ei.value.details.get("node_type") == "CheckpointLoaderSimple"
    assert ei.value.details.get("exception_message"), ei.value.details
    assert comfy.alive() and comfy.get_json("/system_stats")


@pytest.mark.parametrize("content", [b"", b"not a safetensors file" * 10], ids=["empty", "garbage"])
def test_pack_loader_unreadable_checkpoint_fails_with_message(comfy, object_info, content):
    prompt = _example_prompt(object_info)
    name = f"broken_dc_{len(content)}.safetensors"
    for folder in ("checkpoints", "diffusion_models"):
        (comfy.models_dir / folder / name).write_bytes(content)
    workflow.set_input(prompt, PACK_LOADER, "ckpt_name", name)
    place_input_images(comfy, prompt, REPO / "example_workflows" / "dynamicrafter_i2v.json",
                       workflow.load_expect(REPO / "example_workflows" / "dynamicrafter_i2v.json"))
    with pytest.raises(comfy_server.ExecutionFailed) as ei:
        comfy.run(prompt, timeout=300)
    d = ei.value.details
    assert d.get("node_type") == PACK_LOADER, d
    msg = d.get("exception_message", "")
    assert name in msg or "checkpoint" in msg.lower(), f"unclear error message: {msg!r}"
    assert comfy.alive() and comfy.get_json("/system_stats")
