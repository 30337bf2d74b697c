"""Every example workflow names the model files it needs where the ComfyUI frontend looks for them.

The frontend (1.32 with ComfyUI 0.3.75, 1.49 with 0.33) reads ``node.properties.models`` — ``[{"name", "url",
"directory"}]`` — keeps the entries whose ``name`` is one of the node's widget values, and lists those missing from
``models/<directory>`` in its missing-models dialog with a link to ``url`` (it downloads nothing by itself; a link
counts as downloadable when the URL is on huggingface.co / civitai.com and the name has a model file suffix).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (REPO / "example_workflows").glob("*.json") if not p.name.endswith(".expect.json"))
MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pth", ".pt")  # what the frontend calls a model file
DOWNLOAD_HOSTS = ("https://huggingface.co/", "https://civitai.com/")
PACK_LOADERS = {"I2VMotion_LoadDynamiCrafter": {"checkpoints", "diffusion_models"}}  # folders it reads
# nodes whose file is the user's own (a LoRA they trained or picked): no official download, so no models entry,
# or the frontend would offer a link to something else
USER_FILES = {"I2VMotion_LoraTaskVector"}


def _model_widgets(node: dict) -> list[str]:
    values = node.get("widgets_values") or []
    values = values.values() if isinstance(values, dict) else values
    return [v for v in values if isinstance(v, str) and v.lower().endswith(MODEL_SUFFIXES)]


def test_there_are_example_workflows():
    assert len(EXAMPLES) >= 4, EXAMPLES


@pytest.mark.parametrize("wf_path", EXAMPLES, ids=lambda p: p.stem)
def test_loader_nodes_carry_models_metadata(wf_path):
    import folder_paths

    wf = json.loads(wf_path.read_text())
    checked = 0
    for node in wf["nodes"]:
        files = _model_widgets(node)
        if not files and node["type"] not in PACK_LOADERS:
            continue
        models = (node.get("properties") or {}).get("models")
        where = f"{wf_path.name} node {node['id']} ({node['type']})"
        if node["type"] in USER_FILES:
            assert not models, f"{where}: the user's own file has no official download: {models}"
            continue
        assert models, f"{where}: no properties.models for {files}"
        by_name = {m["name"]: m for m in models}
        assert set(files) <= set(by_name), f"{where}: {sorted(set(files) - set(by_name))} have no models entry"
        for m in models:
            assert set(m) >= {"name", "url", "directory"}, f"{where}: {m}"
            assert m["name"] in files, f"{where}: {m['name']} is not a widget value, the frontend ignores it"
            assert m["directory"] in folder_paths.folder_names_and_paths, \
                f"{where}: ComfyUI has no model folder {m['directory']!r}"
            if node["type"] in PACK_LOADERS:
                assert m["directory"] in PACK_LOADERS[node["type"]], f"{where}: the loader does not read {m}"
            assert m["url"].startswith(DOWNLOAD_HOSTS) and m["name"].lower().endswith(MODEL_SUFFIXES), \
                f"{where}: the frontend would not offer {m['url']} for download"
            assert "/resolve/" in m["url"] or "/api/download/" in m["url"], f"{where}: not a file URL: {m['url']}"
            checked += 1
    assert checked, f"{wf_path.name}: no model loader found"


def test_readme_names_every_download_page():
    """Each file the workflows point at has its official page in the README's model table."""
    readme = (REPO / "README.md").read_text()
    pages = set()
    for wf_path in EXAMPLES:
        for node in json.loads(wf_path.read_text())["nodes"]:
            for m in (node.get("properties") or {}).get("models") or []:
                if m["url"].startswith("https://huggingface.co/"):
                    pages.add("/".join(m["url"].split("/")[:5]))  # https://huggingface.co/<owner>/<repo>
    assert pages
    missing = sorted(p for p in pages if p not in readme)
    assert not missing, f"README does not name {missing}"
