"""Jobs and the manifest: what runs, under which key, and what has finished.

A job is one API prompt (the workflow after the tiny stand-in overrides, the spec's overrides and one point of
the grid), plus the local files it uploads. Its **key** is the sha256 of the prompt (input pictures named by
their content hash) and of every input file's sha256, so the same settings always get the same key and a
changed picture or workflow a new one.

The manifest (``manifest.jsonl`` in the output folder) gets one JSON line per finished job, appended with a
single ``write`` + ``fsync`` once the job's files are in place; a torn last line (the driver killed mid-write)
is ignored when read back. Re-running a sweep skips every key whose last record is ``ok`` or a failure of the
job's own (a bad value, a NaN guard); jobs whose servers died or hung past their retries run again.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .spec import Spec

MANIFEST = "manifest.jsonl"


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def canonical(obj: Any) -> str:
    """JSON text that is the same for equal data (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def upload_name(path: Path | str, sha: str) -> str:
    """The name a local input file gets on a server: content-addressed, so two files never collide."""
    p = Path(path)
    return f"sweep-{sha[:16]}{p.suffix.lower()}"


@dataclass
class Job:
    """One grid point, ready to queue."""

    index: int
    key: str
    values: dict[str, Any]
    prompt: dict
    uploads: dict[str, str] = field(default_factory=dict)  # server name -> local path
    attempts: int = 0
    avoid: set = field(default_factory=set)  # workers it failed on (infrastructure)
    errors: list[str] = field(default_factory=list)


def job_key(prompt: dict, input_shas: dict[str, str]) -> str:
    """sha256 of the prompt (without ``_meta``) and the input files' sha256 values."""
    bare = {nid: {k: v for k, v in n.items() if k != "_meta"} for nid, n in prompt.items()}
    return hashlib.sha256(canonical({"prompt": bare, "inputs": dict(sorted(input_shas.items()))}).encode()).hexdigest()


def find_local_input(name: str, spec: Spec, comfy_input_dirs: list[Path]) -> Path | None:
    """A ``LoadImage`` file the workflow names, on this machine: beside the spec or the workflow, in the
    workflow's ``inputs/`` folder, or in a ComfyUI input folder given to the sweep."""
    cands = [spec.path.parent / name, spec.workflow_path.parent / name, spec.workflow_path.parent / "inputs" / name]
    cands += [d / name for d in comfy_input_dirs]
    return next((c.resolve() for c in cands if c.is_file()), None)


def build_jobs(spec: Spec, base_prompt: dict, comfy_input_dirs: list[Path] = (),
               pre_overrides: dict | None = None) -> list[Job]:
    """Every job of the spec from the API prompt the workflow converts to (axes already resolved).

    ``pre_overrides`` (the tiny stand-ins' smaller sizes) apply before the spec's own overrides."""
    from .spec import find_node
    from .workflow import find_nodes

    prompt0 = copy.deepcopy(base_prompt)
    for layer in (pre_overrides or {}, spec.overrides):
        for ref, values in layer.items():
            nid = find_node(prompt0, ref, spec.where("overrides", ref), "overrides")
            prompt0[nid]["inputs"].update(values)
    shas: dict[str, str] = {}

    def sha_of(p: str) -> str:
        if p not in shas:
            shas[p] = sha256_file(p)
        return shas[p]

    jobs = []
    image_axes = {(a.node_id, a.input) for a in spec.axes if a.images}
    for i, values in enumerate(spec.combinations()):
        prompt = copy.deepcopy(prompt0)
        uploads: dict[str, str] = {}
        for a in spec.axes:
            v = values[a.name]
            if a.images:
                name = upload_name(v, sha_of(v))
                uploads[name] = v
                v = name
            prompt[a.node_id]["inputs"][a.input] = v
        # the workflow's own pictures: uploaded under their content hash when found here, else left to the server
        for nid in find_nodes(prompt, "LoadImage"):
            name = prompt[nid]["inputs"].get("image")
            if (nid, "image") in image_axes or not isinstance(name, str):
                continue
            local = find_local_input(name, spec, list(comfy_input_dirs))
            if local is not None:
                up = upload_name(local, sha_of(str(local)))
                uploads[up] = str(local)
                prompt[nid]["inputs"]["image"] = up
        key = job_key(prompt, {n: sha_of(p) for n, p in uploads.items()})
        shown = {k: (Path(v).name if isinstance(v, str) and any(a.images and a.name == k for a in spec.axes) else v)
                 for k, v in values.items()}
        jobs.append(Job(i, key, shown, prompt, uploads))
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        dups = len(keys) - len(set(keys))
        raise ValueError(f"{spec.path}: {dups} job(s) of the grid are identical to another (same prompt and inputs); "
                         "an axis repeats a value or sets an input the workflow ignores")
    return jobs


class Manifest:
    """Append-only record of finished jobs (``manifest.jsonl``); one writer, the sweep's driver."""

    def __init__(self, folder: Path | str):
        self.path = Path(folder) / MANIFEST
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def records(self) -> list[dict]:
        """Every complete record, in order (a torn last line is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "key" in rec:
                out.append(rec)
        return out

    def latest(self) -> dict[str, dict]:
        """The last record of every key."""
        return {r["key"]: r for r in self.records()}

    def finished(self) -> dict[str, dict]:
        """Keys that need no new run: ``ok``, or failed by the job's own error."""
        return {k: r for k, r in self.latest().items()
                if r.get("status") == "ok" or (r.get("status") == "failed" and r.get("error_kind") == "job")}

    def append(self, record: dict) -> None:
        """Add one record durably: a single ``write`` of one line on an ``O_APPEND`` descriptor, then fsync."""
        data = (canonical(record) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            with open(self.path, "rb") as f:  # a torn last line from a killed run: start on a fresh line
                f.seek(0, os.SEEK_END)
                if f.tell() > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        data = b"\n" + data
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Write a file so that it is either absent or complete (temporary name, fsync unless not ``durable``, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
