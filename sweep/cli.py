"""``python -m sweep SPEC --workers N (--comfyui PATH | --server URL ...) --out DIR``

Runs the spec's grid on Ray (local by default; the cluster at ``RAY_ADDRESS`` when set), one ComfyUI server per
worker, and writes ``results.csv``, ``results.parquet``, ``report.html``, the outputs and ``manifest.jsonl``
into DIR. Run it again to finish an interrupted sweep: finished jobs are skipped.

Exit codes: 0 every job ok; 1 some jobs failed; 2 the spec (or the command line) is wrong; 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .comfy import PACK_DIR


def default_comfyui() -> str | None:
    """``COMFYUI_PATH``, else the ComfyUI this pack is installed in (``ComfyUI/custom_nodes/<pack>``)."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        return env
    up = PACK_DIR.parent.parent
    return str(up) if PACK_DIR.parent.name == "custom_nodes" and (up / "main.py").is_file() else None


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m sweep", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Spec format: see sweep/spec.py or the README's Sweeps section.")
    ap.add_argument("spec", type=Path, help="the sweep spec (YAML or JSON)")
    ap.add_argument("--workers", type=int, default=None,
                    help="Ray workers, one ComfyUI server each (default: one per GPU, or 1 without GPUs)")
    ap.add_argument("--comfyui", default=None,
                    help="ComfyUI folder the workers start servers from (default: COMFYUI_PATH, or the ComfyUI this "
                         "pack is installed in)")
    ap.add_argument("--server", action="append", default=[],
                    help="attach to a running ComfyUI server at this URL instead (repeat: one worker each)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: the spec's out, else "
                                                           "sweep_runs/<spec name>)")
    ap.add_argument("--python", default=None, help="the python that runs ComfyUI (default: this one)")
    ap.add_argument("--models", action="append", default=[],
                    help="extra ComfyUI models folder for the started servers (repeatable)")
    ap.add_argument("--all-custom-nodes", action="store_true",
                    help="started servers load every pack in the ComfyUI's custom_nodes (default: only this one)")
    ap.add_argument("--retry-failed", action="store_true",
                    help="run again the jobs that failed by their own error (default: skipped like finished ones)")
    ap.add_argument("--check", action="store_true", help="only check the spec and print the grid size")
    ap.add_argument("--no-progress", action="store_true", help="no progress line")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: --workers)")
    ap.add_argument("--node-ip-address", default=None,
                    help="with RAY_ADDRESS: this machine's address in the Ray cluster (where it has several)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    from .spec import SpecError, load

    try:
        spec = load(a.spec)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = len(spec.combinations())
    print(f"[sweep] {spec.path.name}: {spec.mode} of "
          + " x ".join(f"{ax.name} ({len(ax.values)})" for ax in spec.axes) + f" = {n} jobs on "
          + spec.workflow_path.name, file=sys.stderr)
    if a.check:
        return 0
    servers = a.server or spec.servers
    comfyui = None if servers else (a.comfyui or default_comfyui())
    comfyui = str(Path(comfyui).expanduser().resolve()) if comfyui else None
    if not servers and not comfyui:
        print("error: no ComfyUI to start servers from: give --comfyui PATH (a ComfyUI folder with this pack in "
              "custom_nodes), set COMFYUI_PATH, or attach to running servers with --server URL", file=sys.stderr)
        return 2
    if comfyui and not (Path(comfyui) / "main.py").is_file():
        print(f"error: --comfyui {comfyui}: not a ComfyUI folder (no main.py)", file=sys.stderr)
        return 2
    if a.workers is not None and a.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    out = a.out or Path(spec.out or Path("sweep_runs") / spec.name)
    from .engine import Options, run_sweep
    from .tiny import prepare

    opts = Options(out=out, workers=a.workers, comfyui=comfyui, servers=servers, python=a.python,
                   model_dirs=a.models, all_custom_nodes=a.all_custom_nodes, retry_failed=a.retry_failed,
                   progress=not a.no_progress, num_cpus=a.num_cpus,
                   node_ip=a.node_ip_address)
    try:
        summary = run_sweep(spec, opts, prepare=prepare)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
    print(f"[sweep] {summary.ok} ok, {summary.failed} failed, {summary.skipped} skipped (already finished) of "
          f"{summary.total} in {summary.seconds:.1f} s" + (" — interrupted" if summary.interrupted else ""),
          file=sys.stderr)
    print(f"[sweep] results: {out / 'results.parquet'}, {out / 'results.csv'}; report: {out / 'report.html'}",
          file=sys.stderr)
    if summary.interrupted:
        return 130
    return 1 if summary.failed else 0
