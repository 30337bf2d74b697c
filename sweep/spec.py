"""Sweep specs: a workflow and a grid of settings, read from YAML or JSON and checked before anything runs.

A spec (all paths relative to the spec file)::

    workflow: ../../example_workflows/edg_expert_schedule.json   # UI or API format
    mode: product                  # product (every combination) | zip (the i-th value of every axis together)
    axes:                          # node: title, id or class type; input: the input's name
      - {node: EDG Experts (dynamics / control), input: beta_d, values: [0.25, 0.75, 1.25]}
      - {node: KSampler, input: seed, range: {start: 42, stop: 44}}     # stop inclusive; step 1
      - {node: LoadImage, input: image, images: [a.png, b.png]}         # files, uploaded to each server
    overrides: {KSampler: {steps: 20}}   # fixed changes, applied before the axes
    outputs: [SaveAnimatedWEBP]    # output nodes whose files are collected (default: all)
    metrics: [flow, dynamic_degree, flicker, layout]   # default: all (layout where the workflow has one)
    timeout: 1800                  # seconds one job may take before its server counts as hung
    retries: 2                     # re-runs of a job whose server died or hung (its own errors: never)
    tiny: auto                     # stand-in checkpoints when the workflow's are missing (a demo; see tiny.py)
    servers: [http://gpu-box:8188] # optional: attach to running ComfyUI servers instead of starting them
    out: sweep_runs/edg_weights    # output folder (relative to the working directory; --out wins)

Every problem is reported as ``file:line: field: what is wrong (what is expected)`` by :class:`SpecError`
before a single server starts; node and input names are checked against the server's ``/object_info`` as
soon as the first server answers, before any job is queued.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METRICS = ("flow", "dynamic_degree", "flicker", "layout")
MODES = ("product", "zip")
TOP_KEYS = {"workflow", "mode", "axes", "overrides", "outputs", "metrics", "timeout", "retries", "tiny", "servers",
            "out", "name"}
AXIS_KEYS = {"node", "input", "values", "range", "images", "name"}
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
MAX_JOBS = 100_000


class SpecError(ValueError):
    """A spec that cannot run: the message names the file, the line, the field and what is expected."""


@dataclass
class Axis:
    """One swept input: ``values`` in order (image axes: local files)."""

    node: str | int
    input: str
    values: list
    name: str
    images: bool = False
    line: int = 0
    node_id: str | None = None  # resolved against the prompt


@dataclass
class Spec:
    """A checked sweep spec (see the module docstring)."""

    path: Path
    workflow_path: Path
    workflow: dict
    axes: list[Axis]
    mode: str = "product"
    overrides: dict = field(default_factory=dict)
    outputs: list = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    timeout: float = 1800.0
    retries: int = 2
    tiny: Any = "auto"
    servers: list[str] = field(default_factory=list)
    out: str | None = None
    name: str = ""
    lines: dict = field(default_factory=dict, repr=False)

    def combinations(self) -> list[dict[str, Any]]:
        """Every job's axis values ``{axis name: value}``, in grid order."""
        names = [a.name for a in self.axes]
        if self.mode == "zip":
            rows = zip(*(a.values for a in self.axes))
        else:
            rows = itertools.product(*(a.values for a in self.axes))
        return [dict(zip(names, r)) for r in rows]

    def where(self, *path: Any) -> str:
        """``file:line`` of a field (the nearest enclosing one that has a line)."""
        p = tuple(path)
        while p and p not in self.lines:
            p = p[:-1]
        return f"{self.path}:{self.lines.get(p, 1)}"


# -- reading -------------------------------------------------------------------------------------------------

def _lines(node: Any, path: tuple = (), out: dict | None = None) -> dict:
    """``{field path: 1-based line}`` from a composed YAML node tree."""
    import yaml

    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[path + (key,)] = k.start_mark.line + 1
            _lines(v, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out[path + (i,)] = v.start_mark.line + 1
            _lines(v, path + (i,), out)
    return out


def read(path: Path | str) -> tuple[dict, dict]:
    """The spec file's data and its line map; YAML (JSON is read as YAML, for line numbers)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"{path}: cannot read the spec: {e.strerror or e}") from None
    try:
        import yaml
    except ImportError:  # JSON still works without PyYAML, without line numbers
        if path.suffix.lower() != ".json":
            raise SpecError(f"{path}: YAML specs need PyYAML (pip install -r sweep/requirements.txt)") from None
        try:
            return json.loads(text), {}
        except ValueError as e:
            raise SpecError(f"{path}:{getattr(e, 'lineno', 1)}: not valid JSON: {e}") from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as e:
        if path.suffix.lower() == ".json":  # JSON that YAML cannot read (tab indents): no line map then
            try:
                data = json.loads(text)
            except ValueError as je:
                raise SpecError(f"{path}:{getattr(je, 'lineno', 1)}: not valid JSON: {je}") from None
            if not isinstance(data, dict):
                raise SpecError(f"{path}:1: the spec must be a mapping with at least 'workflow' and 'axes'")
            return data, {}
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise SpecError(f"{path}:{line}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: "
                        f"{getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}:1: the spec must be a mapping with at least 'workflow' and 'axes'")
    return data, (_lines(node) if node is not None else {})


def _range(r: Any, where: str) -> list:
    """``{start, stop[, step | num]}`` or ``[start, stop(, step)]``: stop inclusive when the steps land on it."""
    if isinstance(r, list):
        if not 2 <= len(r) <= 3:
            raise SpecError(f"{where}: range: expected [start, stop] or [start, stop, step], got {r!r}")
        r = dict(zip(("start", "stop", "step"), r))
    if not isinstance(r, dict) or not {"start", "stop"} <= set(r) or set(r) - {"start", "stop", "step", "num"}:
        raise SpecError(f"{where}: range: expected {{start, stop}} with an optional step or num, got {r!r}")
    vals = [r.get(k) for k in ("start", "stop", "step", "num")]
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
               for v in vals):
        raise SpecError(f"{where}: range: start, stop, step and num must be finite numbers, got {r!r}")
    start, stop, step, num = vals
    if num is not None:
        if not isinstance(num, int) or num < 1:
            raise SpecError(f"{where}: range: num must be a whole number >= 1, got {num!r}")
        if num == 1:
            return [start]
        return [start + (stop - start) * i / (num - 1) for i in range(num)]
    step = 1 if step is None else step
    if step == 0 or (stop - start) * step < 0:
        raise SpecError(f"{where}: range: step {step!r} never gets from {start!r} to {stop!r}")
    n = int(math.floor((stop - start) / step + 1e-9)) + 1
    if n > MAX_JOBS:
        raise SpecError(f"{where}: range: {n} values is too many (at most {MAX_JOBS})")
    ints = all(isinstance(v, int) for v in (start, stop, step))
    return [start + i * step if ints else round(start + i * step, 12) for i in range(n)]


def _axis(i: int, a: Any, base: Path, where: str) -> Axis:
    if not isinstance(a, dict):
        raise SpecError(f"{where}: axes[{i}]: expected a mapping {{node, input, values | range | images}}, "
                        f"got {a!r}")
    unknown = set(a) - AXIS_KEYS
    if unknown:
        raise SpecError(f"{where}: axes[{i}]: unknown field(s) {sorted(unknown)} (expected {sorted(AXIS_KEYS)})")
    for k in ("node", "input"):
        if k not in a:
            raise SpecError(f"{where}: axes[{i}]: missing '{k}' (the node's title, id or class type; the input's name)")
    if not isinstance(a["node"], (str, int)) or isinstance(a["node"], bool) or a["node"] == "":
        raise SpecError(f"{where}: axes[{i}].node: expected a node title, id or class type, got {a['node']!r}")
    if not isinstance(a["input"], str) or not a["input"]:
        raise SpecError(f"{where}: axes[{i}].input: expected an input name, got {a['input']!r}")
    given = [k for k in ("values", "range", "images") if k in a]
    if len(given) != 1:
        raise SpecError(f"{where}: axes[{i}]: give exactly one of values, range or images (got {given or 'none'})")
    images = False
    if "values" in a:
        values = a["values"]
        if not isinstance(values, list) or not values:
            raise SpecError(f"{where}: axes[{i}].values: expected a non-empty list, got {values!r}")
        bad = [v for v in values if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise SpecError(f"{where}: axes[{i}].values: {bad[0]!r} is not a finite number")
    elif "range" in a:
        values = _range(a["range"], f"{where}: axes[{i}]")
    else:
        images = True
        files = a["images"]
        if isinstance(files, str):
            files = [files]
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            raise SpecError(f"{where}: axes[{i}].images: expected a list of image files, got {files!r}")
        values = []
        for f in files:
            p = (base / f).expanduser().resolve()
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXT) if p.is_dir() else [p]
            for q in found:
                if not q.is_file():
                    raise SpecError(f"{where}: axes[{i}].images: {f} not found (looked for {q})")
                if q.suffix.lower() not in IMAGE_EXT:
                    raise SpecError(f"{where}: axes[{i}].images: {f} is not an image ({', '.join(IMAGE_EXT)})")
                values.append(str(q))
    name = a.get("name") or a["input"]
    if not isinstance(name, str):
        raise SpecError(f"{where}: axes[{i}].name: expected text, got {name!r}")
    return Axis(a["node"], a["input"], list(values), name, images)


def load(path: Path | str) -> Spec:
    """Read and check a spec file (structure, types, files); raises :class:`SpecError`."""
    path = Path(path).resolve()
    data, lines = read(path)

    def at(*p: Any) -> str:
        q = tuple(p)
        while q and q not in lines:
            q = q[:-1]
        return f"{path}:{lines.get(q, 1)}"

    unknown = set(data) - TOP_KEYS
    if unknown:
        k = sorted(unknown)[0]
        raise SpecError(f"{at(k)}: unknown field {k!r} (expected one of {', '.join(sorted(TOP_KEYS))})")
    if "workflow" not in data:
        raise SpecError(f"{at()}: missing 'workflow' (the workflow JSON, UI or API format, relative to the spec)")
    if not isinstance(data["workflow"], str):
        raise SpecError(f"{at('workflow')}: workflow: expected a file path, got {data['workflow']!r}")
    wf_path = (path.parent / data["workflow"]).expanduser().resolve()
    if not wf_path.is_file():
        raise SpecError(f"{at('workflow')}: workflow: {data['workflow']} not found (looked for {wf_path})")
    try:
        wf = json.loads(wf_path.read_text())
    except ValueError as e:
        raise SpecError(f"{at('workflow')}: workflow: {wf_path} is not valid JSON: {e}") from None
    from .workflow import is_api_format

    if not isinstance(wf, dict) or not (("nodes" in wf and "links" in wf) or is_api_format(wf)):
        raise SpecError(f"{at('workflow')}: workflow: {wf_path} is neither a UI-format (nodes, links) nor an "
                        "API-format ({id: {class_type, inputs}}) ComfyUI workflow")
    mode = data.get("mode", "product")
    if mode not in MODES:
        raise SpecError(f"{at('mode')}: mode: expected product or zip, got {mode!r}")
    axes_in = data.get("axes")
    if not isinstance(axes_in, list) or not axes_in:
        raise SpecError(f"{at('axes')}: axes: expected a non-empty list of {{node, input, values | range | images}}")
    axes = []
    for i, a in enumerate(axes_in):
        ax = _axis(i, a, path.parent, at("axes", i))
        ax.line = lines.get(("axes", i), 0)
        axes.append(ax)
    names = [a.name for a in axes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:  # same input name on two nodes: qualify by node
        for a in axes:
            if a.name in dup:
                a.name = f"{a.node}.{a.input}"
        names = [a.name for a in axes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SpecError(f"{at('axes')}: axes: {dup[0]!r} is swept twice (give each axis a distinct 'name')")
    if mode == "zip":
        lens = {a.name: len(a.values) for a in axes}
        if len(set(lens.values())) > 1:
            raise SpecError(f"{at('mode')}: mode zip needs axes of one length; got {lens}")
    total = math.prod(len(a.values) for a in axes) if mode == "product" else len(axes[0].values)
    if total > MAX_JOBS:
        raise SpecError(f"{at('axes')}: axes: {total} jobs is more than {MAX_JOBS}")
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise SpecError(f"{at('overrides')}: overrides: expected {{node: {{input: value}}}}, got {overrides!r}")
    outputs = data.get("outputs") or []
    if isinstance(outputs, (str, int)):
        outputs = [outputs]
    if not isinstance(outputs, list) or not all(isinstance(o, (str, int)) and not isinstance(o, bool) for o in outputs):
        raise SpecError(f"{at('outputs')}: outputs: expected a list of output node titles, ids or class types")
    metrics = data.get("metrics", list(METRICS))
    if metrics in (None, "none"):
        metrics = []
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, list) or any(m not in METRICS for m in metrics):
        bad = [m for m in (metrics if isinstance(metrics, list) else [metrics]) if m not in METRICS]
        raise SpecError(f"{at('metrics')}: metrics: unknown {bad!r} (expected some of {', '.join(METRICS)})")
    timeout = data.get("timeout", 1800)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise SpecError(f"{at('timeout')}: timeout: expected seconds > 0, got {timeout!r}")
    retries = data.get("retries", 2)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 20:
        raise SpecError(f"{at('retries')}: retries: expected a whole number 0..20, got {retries!r}")
    tiny = data.get("tiny", "auto")
    if tiny not in ("auto", True, False) and not (isinstance(tiny, dict) and set(tiny) <= {"models", "overrides"}):
        raise SpecError(f"{at('tiny')}: tiny: expected auto, true, false or {{models, overrides}}, got {tiny!r}")
    servers = data.get("servers") or []
    if isinstance(servers, str):
        servers = [servers]
    if not isinstance(servers, list) or not all(isinstance(s, str) and s.startswith(("http://", "https://"))
                                                for s in servers):
        raise SpecError(f"{at('servers')}: servers: expected a list of http:// URLs of running ComfyUI servers")
    out = data.get("out")
    if out is not None and not isinstance(out, str):
        raise SpecError(f"{at('out')}: out: expected a folder path, got {out!r}")
    return Spec(path=path, workflow_path=wf_path, workflow=wf, axes=axes, mode=mode, overrides=overrides,
                outputs=outputs, metrics=list(metrics), timeout=float(timeout), retries=retries, tiny=tiny,
                servers=servers, out=out, name=str(data.get("name") or path.stem), lines=lines)


# -- checks against the server ----------------------------------------------------------------------------------

def find_node(prompt: dict, ref: str | int, where: str, what: str = "node") -> str:
    """The id of the API-prompt node ``ref`` names: an id, else a unique title, else a unique class type."""
    if str(ref) in prompt:
        return str(ref)
    titled = [nid for nid, n in prompt.items() if (n.get("_meta") or {}).get("title") == ref]
    typed = [nid for nid, n in prompt.items() if n.get("class_type") == ref]
    for hits in (titled, typed):
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise SpecError(f"{where}: {what} {ref!r} matches nodes {', '.join(sorted(hits, key=_id_key))}; "
                            "name one by id or by a unique title")
    known = sorted({f"{nid} ({(n.get('_meta') or {}).get('title') or n.get('class_type')})"
                    for nid, n in prompt.items()}, key=_id_key)
    raise SpecError(f"{where}: {what} {ref!r} is not a node id, title or class type of the workflow "
                    f"(its nodes: {', '.join(known)})")


def _id_key(s: str) -> tuple:
    head = s.split(" ", 1)[0]
    return (0, int(head), s) if head.isdigit() else (1, 0, s)


def input_names(object_info: dict, class_type: str) -> list[str]:
    """Every input name a node class declares (required, optional)."""
    spec = (object_info.get(class_type) or {}).get("input", {})
    return [n for sect in ("required", "optional") for n in (spec.get(sect) or {})]


def resolve(spec: Spec, prompt: dict, object_info: dict) -> None:
    """Check the spec's nodes and inputs against an API prompt and the server's ``/object_info``; sets each
    axis's ``node_id``. Values themselves are left to ComfyUI (a bad one fails that job with its message)."""
    for i, a in enumerate(spec.axes):
        where = spec.where("axes", i)
        a.node_id = find_node(prompt, a.node, where, f"axes[{i}].node")
        ctype = prompt[a.node_id]["class_type"]
        names = set(input_names(object_info, ctype)) | set(prompt[a.node_id]["inputs"])
        if a.input not in names:
            raise SpecError(f"{where}: axes[{i}].input: node {a.node_id} ({ctype}) has no input {a.input!r} "
                            f"(its inputs: {', '.join(sorted(names))})")
        if a.images and ctype != "LoadImage" and a.input != "image":
            raise SpecError(f"{where}: axes[{i}].images: image axes set a LoadImage node's 'image' input, "
                            f"not {ctype}.{a.input}")
    for ref, values in spec.overrides.items():
        where = spec.where("overrides", ref)
        nid = find_node(prompt, ref, where, "overrides")
        ctype = prompt[nid]["class_type"]
        names = set(input_names(object_info, ctype)) | set(prompt[nid]["inputs"])
        for k in values:
            if k not in names:
                raise SpecError(f"{spec.where('overrides', ref, k)}: overrides: node {nid} ({ctype}) has no "
                                f"input {k!r} (its inputs: {', '.join(sorted(names))})")
    for i, ref in enumerate(spec.outputs):
        nid = find_node(prompt, ref, spec.where("outputs", i), f"outputs[{i}]")
        if not (object_info.get(prompt[nid]["class_type"]) or {}).get("output_node"):
            raise SpecError(f"{spec.where('outputs', i)}: outputs[{i}]: node {nid} "
                            f"({prompt[nid]['class_type']}) is not an output node (nothing to collect)")


def output_ids(spec: Spec, prompt: dict) -> list[str] | None:
    """The node ids whose files are collected (None: every output)."""
    if not spec.outputs:
        return None
    return [find_node(prompt, ref, spec.where("outputs", i), f"outputs[{i}]") for i, ref in enumerate(spec.outputs)]
