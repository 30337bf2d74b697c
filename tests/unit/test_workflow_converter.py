"""The UI→API workflow converter (``tools/workflow.py``) on widget kinds it has no table for (row 1 of
``../shared/comfyui/README.md``): dynamic combos with nested widgets and sockets, IMAGECOMPARE (never saved),
COMBO control values, array values, and a widget type nobody has defined yet — all read from object_info
entries in the form ComfyUI 0.33's V3 schema writes them (``comfy_api/latest/_io.py`` ``as_dict``) and saved
nodes in the form frontend 1.49.6 writes them (layouts taken from shipped templates). The real templates of
both hosts' frontends are converted and validated by a live server in ``tests/integration``.
"""
from __future__ import annotations


import pytest

import workflow  # noqa: E402

OUTPUTS = {"Producer": {"input": {}, "output": ["IMAGE", "MASK", "DA3_GEOMETRY", "AUDIO_ENCODER_OUTPUT"]}}


def _info(required: dict, optional: dict | None = None) -> dict:
    return {"input": {"required": required, "optional": optional or {}},
            "input_order": {"required": list(required), "optional": list(optional or {})}, "output": []}


def _convert(node: dict, info: dict, extra_nodes: list | None = None, links: list | None = None) -> dict:
    object_info = {**OUTPUTS, node["type"]: info}
    wf = {"nodes": [node, *(extra_nodes or [])], "links": links or []}
    warnings: list[str] = []
    prompt = workflow.ui_to_api(wf, object_info, warnings)
    assert warnings == [], warnings
    return prompt[str(node["id"])]["inputs"]


DA3 = _info({
    "da3_geometry": ["DA3_GEOMETRY", {}],
    "output": ["COMFY_DYNAMICCOMBO_V3", {"options": [
        {"key": "depth", "inputs": {"required": {
            "normalization": [["v2_style", "min_max"], {"default": "v2_style"}],
            "apply_sky_clip": ["BOOLEAN", {"default": True}]}}},
        {"key": "sky_mask", "inputs": {"required": {"colored": ["BOOLEAN", {"default": False}]}}},
    ]}],
})


def test_dynamic_combo_nested_widgets():
    node = {"id": 7, "type": "DA3Render", "mode": 0, "widgets_values": ["depth", "min_max", False],
            "inputs": [{"name": "da3_geometry", "type": "DA3_GEOMETRY", "link": 1},
                       {"name": "output", "type": "COMFY_DYNAMICCOMBO_V3", "widget": {"name": "output"}, "link": None},
                       {"name": "output.normalization", "type": "COMBO", "widget": {"name": "output.normalization"},
                        "link": None}]}
    src = {"id": 12, "type": "Producer", "mode": 0, "widgets_values": [], "inputs": []}
    got = _convert(node, DA3, [src], [[1, 12, 2, 7, 0, "DA3_GEOMETRY"]])
    assert got == {"da3_geometry": ["12", 2], "output": "depth", "output.normalization": "min_max",
                   "output.apply_sky_clip": False}
    # another option selected: its own nested widgets, nothing of the other option's
    node2 = {**node, "widgets_values": ["sky_mask", True], "inputs": node["inputs"][:2]}
    assert _convert(node2, DA3, [src], [[1, 12, 2, 7, 0, "DA3_GEOMETRY"]]) == \
        {"da3_geometry": ["12", 2], "output": "sky_mask", "output.colored": True}


def test_dynamic_combo_nested_sockets_take_no_value():
    info = _info({
        "mode": ["COMFY_DYNAMICCOMBO_V3", {"options": [
            {"key": "single_speaker", "inputs": {"required": {}}},
            {"key": "two_speakers", "inputs": {"required": {"audio_encoder_output_2": ["AUDIO_ENCODER_OUTPUT", {}],
                                                            "mask_1": ["MASK", {}], "mask_2": ["MASK", {}]}}}]}],
        "width": ["INT", {"default": 832, "min": 16}], "height": ["INT", {"default": 480}],
        "length": ["INT", {"default": 81}], "motion_frame_count": ["INT", {"default": 9, "advanced": True}],
        "audio_scale": ["FLOAT", {"default": 1.0}]})
    node = {"id": 3, "type": "WanInfiniteTalkToVideo", "mode": 0,
            "widgets_values": ["two_speakers", 832, 480, 81, 9, 1],
            "inputs": [{"name": "mode", "type": "COMFY_DYNAMICCOMBO_V3", "widget": {"name": "mode"}, "link": None},
                       {"name": "mode.mask_1", "type": "MASK", "link": 4}]}
    src = {"id": 9, "type": "Producer", "mode": 0, "widgets_values": [], "inputs": []}
    got = _convert(node, info, [src], [[4, 9, 1, 3, 1, "MASK"]])
    assert got == {"mode": "two_speakers", "mode.mask_1": ["9", 1], "width": 832, "height": 480, "length": 81,
                   "motion_frame_count": 9, "audio_scale": 1}


def test_imagecompare_is_not_saved_but_sent():
    info = _info({"compare_view": ["IMAGECOMPARE", {"socketless": True}]},
                 {"image_a": ["IMAGE", {}], "image_b": ["IMAGE", {}]})
    node = {"id": 5, "type": "ImageCompare", "mode": 0, "widgets_values": [], "inputs": []}
    assert _convert(node, info) == {"compare_view": {"__value__": ["", ""]}}


def test_combo_control_values_and_arrays_and_unknown_widget_kinds():
    info = _info({
        "sampler": [["euler", "ddim"], {"control_after_generate": True}],
        "seed": ["INT", {"default": 0}],
        "tint": ["COLOR", {"default": "#ffffff", "socketless": True}],
        "points": ["FANCY_SPLINE_V9", {"default": []}],   # a widget kind no table knows: never an output type
        "image": ["IMAGE", {}],
    })
    node = {"id": 2, "type": "Future", "mode": 0,
            "widgets_values": ["ddim", "randomize", "", 42, "fixed", "#102030", [[0, 0], [1, 1]]], "inputs": []}
    assert _convert(node, info) == {"sampler": "ddim", "seed": 42, "tint": "#102030",
                                    "points": {"__value__": [[0, 0], [1, 1]]}}


def test_saved_node_decides_widget_or_socket():
    """A typed input of an unknown kind with a default is a widget unless the saved node lists it as a socket."""
    info = _info({"strength": ["FANCY_SCALAR", {"default": 1.0}], "amount": ["FLOAT", {"default": 0.5}]})
    as_widget = {"id": 1, "type": "N", "mode": 0, "widgets_values": [2.0, 0.25], "inputs": []}
    assert _convert(as_widget, info) == {"strength": 2.0, "amount": 0.25}
    as_socket = {"id": 1, "type": "N", "mode": 0, "widgets_values": [0.25],
                 "inputs": [{"name": "strength", "type": "FANCY_SCALAR", "link": None}]}
    assert _convert(as_socket, info) == {"amount": 0.25}


@pytest.mark.parametrize("entry, expect", [
    (["MODEL", {}], False), (["INT", {"default": 1}], True), (["INT", {"forceInput": True}], False),
    ([["a", "b"], {}], True), (["STRING", {"multiline": True}], True), (["IMAGE", {"default": None}], False),
    (["ANYTHING", {"widgetType": "COMBO"}], True), (["IMAGECOMPARE", {"socketless": True}], True),
])
def test_widget_rule(entry, expect):
    typ, opts = workflow._entry_type(entry)
    assert workflow.is_widget("x", typ, opts, workflow.produced_types(OUTPUTS)) is expect
