"""The sweep runner end to end: real Ray, real ComfyUI servers, the example EDG workflow on tiny checkpoints.

- a 2 x 3 grid (EDG ``beta_d`` x seeds) on local Ray with 2 workers that start their own servers; worker 0's
  server is killed with SIGKILL in the middle of a job: every job is still done exactly once (the killed one
  again, on the other worker), the server is restarted, and every output equals, bit for bit, the same prompt
  run serially on one server;
- Ctrl-C (SIGINT) of the CLI mid-sweep: exit 130, the started server is stopped, finished results are kept; the
  same command again (attached to other servers) runs only the rest;
- a two-node Ray cluster on this machine (``ray start --head`` + ``ray start --address``) with the sweep's driver
  joining it through ``RAY_ADDRESS``: one worker on each node;
- bad specs give ``file:line: field: ...`` errors (exit code 2 from the CLI, no traceback).

Shared by the module so the tests stay inside their CI budget: one models folder with the two tiny DynamiCrafter
checkpoints ``edg_expert_schedule.json`` loads, two started servers (the serial reference, attached sweeps and
the cluster test use them) and one local Ray instance for the in-process sweep (2 CPUs, a 200 MB object store,
no dashboard). Tests never assert wall-clock times; the terminal summary prints them.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import comfy_server
import paths
import pytest

from .conftest import REPO, STATS as _STATS, comfy_dir

paths.use_pack_root()  # the pack's sweep package; last on the path, so ComfyUI's own top-level modules win

pytestmark = pytest.mark.integration

WORKFLOW = REPO / "example_workflows" / "edg_expert_schedule.json"
TINY_MODELS = {"checkpoints/dynamicrafter_512.ckpt": {"variant": "512"},
               "checkpoints/dynamicrafter_cil_512.ckpt": {"variant": "512", "seed": 1}}
# the example's CI sizes (tests/integration/expect/edg_expert_schedule.expect.json) with fewer steps
SMALL = {"5": {"width": 128, "height": 64, "length": 8}, "6": {"steps": 2}}
STATS: dict = _STATS.setdefault("sweep", {})  # printed in the terminal summary


def need_ray():
    try:
        import cv2  # noqa: F401
        import pandas  # noqa: F401
        import ray
    except ImportError as e:
        pytest.fail(f"the sweep's requirements are missing from this python ({e}); tools/test.py installs "
                    "sweep/requirements.txt into the host venv (python3 tools/host.py --host H --sweep)", pytrace=False)
    return ray


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """A ComfyUI models root holding the tiny checkpoints the example workflow names."""
    from sweep.tiny import make_tiny_checkpoints

    root = tmp_path_factory.mktemp("sweep-models")
    t0 = time.perf_counter()
    make_tiny_checkpoints(root, TINY_MODELS, comfy_dir(), sys.executable)
    STATS["tiny checkpoints"] = time.perf_counter() - t0
    return root


@pytest.fixture(scope="module")
def servers(tiny_root, tmp_path_factory) -> list[comfy_server.ComfyServer]:
    """Two headless ComfyUI servers (started side by side) with the tiny checkpoints."""
    srvs = [comfy_server.ComfyServer(comfy_dir(), sys.executable, base_dir=tmp_path_factory.mktemp(f"sweep-srv{i}"),
                                     extra_model_dirs=[tiny_root], env=dict(os.environ, OMP_NUM_THREADS="1"))
            for i in range(2)]
    errors: list[Exception] = []

    def start(s):
        try:
            s.start(timeout=240)
        except comfy_server.ComfyError as e:
            errors.append(e)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=start, args=(s,)) for s in srvs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    STATS["two servers started"] = time.perf_counter() - t0
    if errors:
        for s in srvs:
            s.stop()
        pytest.fail(f"ComfyUI server did not start: {errors[0]}", pytrace=False)
    yield srvs
    for s in srvs:
        s.stop()


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the in-process sweeps (capped: this machine has 2 cores)."""
    ray = need_ray()
    t0 = time.perf_counter()
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")  # as the sweep does: no OOM kills of the workers
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False, log_to_driver=False,
             runtime_env={"py_modules": [str(REPO / "sweep")], "env_vars": {"OMP_NUM_THREADS": "1"}},
             _node_ip_address="127.0.0.1")
    STATS["ray.init"] = time.perf_counter() - t0
    yield ray
    ray.shutdown()


def write_spec(path: Path, axes: list[dict], **extra) -> Path:
    """A spec over the example EDG workflow at the small sizes (JSON is read as YAML, so it is valid here)."""
    import json

    data = {"workflow": str(WORKFLOW), "axes": axes, "overrides": SMALL, "outputs": ["SaveAnimatedWEBP"],
            "metrics": ["flow", "dynamic_degree", "flicker"], "tiny": False, "timeout": 300, **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def _records(out: Path) -> list[dict]:
    from sweep.jobs import Manifest

    return Manifest(out).records()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _cli(args: list[str], **kw) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **kw.pop("env", {}))
    return subprocess.Popen([sys.executable, "-m", "sweep", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _stop(p: subprocess.Popen) -> None:
    """Stop a CLI run the way a user would (Ctrl-C: it stops its servers and its Ray), harder if it hangs."""
    for sig, wait in ((signal.SIGINT, 60), (signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        if p.poll() is not None:
            return
        p.send_signal(sig)
        try:
            p.wait(wait)
        except subprocess.TimeoutExpired:
            continue


def _finish(p: subprocess.Popen, timeout: float) -> str:
    """The CLI's output once it exits; killed (and the test failed with its output) after ``timeout`` s."""
    try:
        return p.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        _stop(p)
        pytest.fail(f"python -m sweep did not finish in {timeout:.0f} s:\n{p.communicate()[0][-4000:]}",
                    pytrace=False)


# -- the 2 x 3 grid with a killed server --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def killed_sweep(local_ray, tiny_root, tmp_path_factory):
    """Run the grid in-process on 2 workers; SIGKILL worker 0's ComfyUI once it is inside a job."""
    from sweep.engine import Options, run_sweep
    from sweep.spec import load

    tmp = tmp_path_factory.mktemp("sweep-kill")
    spec = load(write_spec(tmp / "grid.yaml", [
        {"node": "I2VMotion_EDGExperts", "input": "beta_d", "values": [0.0, 1.5]},
        {"node": "KSampler", "input": "seed", "values": [0, 1, 2]}], overrides={**SMALL, "6": {"steps": 3}}))
    killed: dict = {}

    def killer(status: dict) -> None:
        w0 = status["workers"][0]
        # inside the sampler (a step done, one to go): the job is surely still running when the signal lands
        if not killed and w0.get("busy") and w0.get("pid") and 1 <= (w0.get("value") or 0) < (w0.get("max") or 0):
            os.kill(w0["pid"], signal.SIGKILL)
            killed.update(pid=w0["pid"], key=w0.get("key"), step=w0.get("value"))

    opts = Options(out=tmp / "out", workers=2, comfyui=str(comfy_dir()), python=sys.executable,
                   model_dirs=[str(tiny_root)], progress=False, env={"OMP_NUM_THREADS": "1"})
    t0 = time.perf_counter()
    summary = run_sweep(spec, opts, on_status=killer)
    STATS["2 x 3 sweep, 2 workers, one server killed"] = time.perf_counter() - t0
    return {"spec": spec, "out": tmp / "out", "summary": summary, "killed": killed}


def test_killed_server_every_job_done_exactly_once(killed_sweep):
    out, killed, summary = killed_sweep["out"], killed_sweep["killed"], killed_sweep["summary"]
    assert killed, "the killer never saw worker 0 inside a job (no server was killed)"
    assert not _alive(killed["pid"])
    recs = _records(out)
    keys = [r["key"] for r in recs]
    assert len(recs) == 6 and len(set(keys)) == 6, [(r["key"][:8], r["status"]) for r in recs]
    assert all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    again = [r for r in recs if r["key"] == killed["key"]]
    assert len(again) == 1 and again[0]["attempts"] == 2, again
    assert "died" in again[0]["retry_errors"][0], again[0]["retry_errors"]
    assert again[0]["worker"].startswith("1@"), "the killed job was not retried on the other worker"
    assert [r for r in recs if r["key"] != killed["key"]] and all(
        r["attempts"] == 1 for r in recs if r["key"] != killed["key"])
    workers = {w["index"]: w for w in json.loads((out / "shutdown.json").read_text())}
    assert workers[0]["restarts"] >= 1 and workers[0]["starts"] >= 2, workers[0]
    assert summary.ok == 6 and summary.failed == 0 and summary.retried == 1
    for w in workers.values():  # the servers the workers started are gone
        assert w["pid"] is None or not _alive(w["pid"])


def test_outputs_equal_serial_runs_bit_for_bit(killed_sweep, servers):
    """The same prompts (rebuilt from the spec: same keys) run one after another on one server."""
    from sweep.jobs import build_jobs
    from sweep.spec import resolve
    from sweep.workflow import to_api

    spec, out = killed_sweep["spec"], killed_sweep["out"]
    srv = servers[0]
    info = srv.object_info()
    base = to_api(spec.workflow, info)
    resolve(spec, base, info)
    jobs = build_jobs(spec, base)
    by_key = {r["key"]: r for r in _records(out)}
    assert {j.key for j in jobs} == set(by_key), "job keys are not reproducible from the spec"
    t0 = time.perf_counter()
    for job in jobs:
        for name, path in job.uploads.items():
            srv.upload_image(name, Path(path).read_bytes())
        res = srv.run(job.prompt, timeout=300)
        serial = sorted(f for f in res.files if f.suffix == ".webp")
        swept = [out / f for f in by_key[job.key]["files"]]
        assert len(serial) == 1 and len(swept) == 1, (serial, swept)
        assert serial[0].read_bytes() == swept[0].read_bytes(), \
            f"job {job.index} {job.values}: sweep output differs from the serial run"
    STATS["6 serial runs on one server"] = time.perf_counter() - t0
    # and different settings gave different videos (the comparison above could fail)
    assert len({(out / by_key[j.key]["files"][0]).read_bytes() for j in jobs}) == 6


def test_results_table_and_report(killed_sweep):
    import pandas as pd

    out = killed_sweep["out"]
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 6 and set(df["status"]) == {"ok"}
    for col in ("beta_d", "seed", "outputs", "flow_mean", "dynamic", "flicker", "seconds", "worker"):
        assert col in df.columns, col
    assert sorted(df["beta_d"].unique()) == [0.0, 1.5] and sorted(df["seed"].unique()) == [0, 1, 2]
    assert (df["flow_mean"] > 0).all() and df["flicker"].notna().all()
    csv = pd.read_csv(out / "results.csv")
    assert list(csv.columns) == list(df.columns) and len(csv) == 6
    page = (out / "report.html").read_text()
    for f in df["outputs"]:
        assert (out / f).is_file() and f'src="{f}"' in page
    assert page.count("<svg") == 2 * 4  # flow_mean, motion_top5, dynamic, flicker x (beta_d, seed)
    assert "Failures (0)" in page


def test_layout_metrics_come_from_the_pack_node(local_ray, servers, tmp_path):
    """On a layout workflow the sweep adds the pack's Layout Metrics node to the prompt and reads its report."""
    import math

    from sweep.engine import Options, run_sweep
    from sweep.spec import load

    spec = load(write_spec(tmp_path / "layout.yaml", [
        {"node": "I2VMotion_LayoutCaseLoader", "input": "name", "values": ["car_approach"]}],
        workflow=str(REPO / "example_workflows" / "layout_box_trajectory.json"), outputs=["12"],
        metrics=["flow", "layout"],
        overrides={"3": {"width": 128, "height": 64}, "6": {"width": 128, "height": 64}, "9": {"steps": 2}}))
    summary = run_sweep(spec, Options(out=tmp_path / "out", servers=[servers[0].url], progress=False))
    assert summary.ok == 1, _records(tmp_path / "out")
    m = _records(tmp_path / "out")[0]["metrics"]
    assert 0.0 <= m["viou50"] <= 1.0 and 0.0 <= m["miou"] <= 1.0, m
    assert math.isfinite(m["background_psnr"]) and m["background_psnr"] > 0, m
    assert "afterimage" in m and m["flow_mean"] > 0, m
    assert len(_records(tmp_path / "out")[0]["files"]) == 1  # only the video (node 12), not the boxes preview


# -- Ctrl-C and resume ----------------------------------------------------------------------------------------
def test_interrupt_then_resume(tiny_root, servers, tmp_path):
    need_ray()
    spec = write_spec(tmp_path / "resume.yaml", [
        {"node": "I2VMotion_EDGExperts", "input": "beta_d", "values": [0.5]},
        {"node": "KSampler", "input": "seed", "values": [7, 8, 9]}])
    out = tmp_path / "out"
    t0 = time.perf_counter()
    p = _cli([str(spec), "--workers", "1", "--comfyui", str(comfy_dir()), "--models", str(tiny_root), "--out",
              str(out), "--no-progress"])
    try:
        deadline = time.monotonic() + 240
        while not _records(out) and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.2)
        assert p.poll() is None, "the sweep ended before it could be interrupted:\n" + p.communicate()[0]
        assert _records(out), "no job finished within 240 s"
        p.send_signal(signal.SIGINT)
        log1 = _finish(p, 120)
    finally:
        _stop(p)
    assert p.returncode == 130, log1
    assert "interrupted" in log1 and "Traceback" not in log1, log1
    first = _records(out)
    assert 1 <= len(first) < 3 and all(r["status"] == "ok" for r in first), first
    server_pid = json.loads((out / "workers.json").read_text())[0]["pid"]
    assert not _alive(server_pid), "Ctrl-C left the started ComfyUI server running"
    rows = (out / "results.csv").read_text()
    assert rows.count(",pending,") == 3 - len(first), rows
    kept = {r["key"]: [(out / f).stat().st_mtime_ns for f in r["files"]] for r in first}
    STATS["interrupted run"] = time.perf_counter() - t0

    t0 = time.perf_counter()  # the same sweep again, on other (attached) servers: only the rest runs
    p2 = _cli([str(spec), "--server", servers[0].url, "--server", servers[1].url, "--out", str(out),
               "--no-progress"])
    log2 = _finish(p2, 300)
    assert p2.returncode == 0, log2
    assert f"{len(first)} of 3 job(s) already finished" in log2, log2
    recs = _records(out)
    assert sorted(r["key"] for r in recs) == sorted({r["key"] for r in recs}) and len(recs) == 3, recs
    assert all(r["status"] == "ok" for r in recs)
    for key, mtimes in kept.items():  # finished outputs were not written again
        rec = next(r for r in recs if r["key"] == key)
        assert [(out / f).stat().st_mtime_ns for f in rec["files"]] == mtimes
    assert ",pending," not in (out / "results.csv").read_text()
    STATS["resumed run"] = time.perf_counter() - t0


# -- a two-node Ray cluster on this machine --------------------------------------------------------------------
def test_two_node_cluster(servers, tmp_path):
    need_ray()
    from sweep.comfy import free_port

    ray_exe = str(Path(sys.executable).parent / "ray")
    port = free_port()
    # Two nodes on loopback addresses (Ray rewrites 127.0.0.1 to the machine's network address, not these);
    # Ray 2.60 turns token authentication on for a cluster it starts: the joining node and the driver use it too.
    head_ip, node_ip = "127.0.0.2", "127.0.0.3"
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
               RAY_memory_monitor_refresh_ms="0")
    common = ["--num-cpus", "1", "--object-store-memory", str(100 * 1024 * 1024), "--block", "--disable-usage-stats"]
    nodes = []
    temp = tempfile.mkdtemp(prefix="ray-")  # the head's session files (and its ray_current_cluster) stay here
    t0 = time.perf_counter()
    try:
        nodes.append(subprocess.Popen([ray_exe, "start", "--head", "--port", str(port), "--include-dashboard=false",
                                       "--node-ip-address", head_ip, "--temp-dir", temp, *common], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                      start_new_session=True))
        deadline = time.monotonic() + 120  # the head's GCS answers before the second node joins it
        while time.monotonic() < deadline and nodes[0].poll() is None:
            try:
                socket.create_connection((head_ip, port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        assert nodes[0].poll() is None, "ray start --head exited"
        nodes.append(subprocess.Popen([ray_exe, "start", "--address", f"{head_ip}:{port}", "--node-ip-address",
                                       node_ip, *common], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True))
        spec = write_spec(tmp_path / "cluster.yaml", [
            {"node": "I2VMotion_EDGExperts", "input": "beta_d", "values": [0.5]},
            {"node": "KSampler", "input": "seed", "values": [21, 22]}])
        out = tmp_path / "out"
        p = _cli([str(spec), "--server", servers[0].url, "--server", servers[1].url, "--out", str(out),
                  "--no-progress", "--node-ip-address", head_ip],
                 env={"RAY_ADDRESS": f"{head_ip}:{port}", "RAY_AUTH_MODE": "token"})
        log = _finish(p, 300)
        assert p.returncode == 0, log
        assert f"joining the Ray cluster at {head_ip}:{port}" in log, log
        workers = json.loads((out / "workers.json").read_text())
        assert len({w["node_id"] for w in workers}) == 2, f"both workers on one Ray node: {workers}"
        recs = _records(out)
        assert len(recs) == 2 and all(r["status"] == "ok" for r in recs), recs
    finally:
        for n in reversed(nodes):
            n.terminate()
        for n in reversed(nodes):
            try:
                n.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(n.pid, signal.SIGKILL)
                n.wait(10)
        shutil.rmtree(temp, ignore_errors=True)
    STATS["two-node cluster (ray start x2 + 2 jobs)"] = time.perf_counter() - t0


# -- bad specs ----------------------------------------------------------------------------------------------
BAD = [
    ("workflow: x.json\naxes: [\n", r"bad\.yaml:\d+: not valid YAML"),
    (f"workflow: {WORKFLOW}\naxis: []\n", r"bad\.yaml:2: unknown field 'axis'"),
    (f"workflow: {WORKFLOW}\n", r"bad\.yaml:1: axes: expected a non-empty list"),
    ("workflow: nowhere.json\naxes: [{node: KSampler, input: seed, values: [1]}]\n",
     r"bad\.yaml:1: workflow: nowhere\.json not found"),
    (f"workflow: {WORKFLOW}\naxes:\n  - {{node: KSampler, input: seed, values: [1]}}\n"
     "  - {node: KSampler, input: cfg, values: [1], range: [1, 2]}\n",
     r"bad\.yaml:4: axes\[1\]: give exactly one of values, range or images"),
    (f"workflow: {WORKFLOW}\naxes:\n  - node: KSampler\n    input: cfg\n    range: {{start: 1, stop: 2, step: 0}}\n",
     r"bad\.yaml:3: axes\[0\]: range: step 0 never gets from 1 to 2"),
    (f"workflow: {WORKFLOW}\nmode: zip\naxes:\n  - {{node: KSampler, input: seed, values: [1, 2]}}\n"
     "  - {node: KSampler, input: cfg, values: [1]}\n", r"bad\.yaml:2: mode zip needs axes of one length"),
    (f"workflow: {WORKFLOW}\naxes: [{{node: KSampler, input: seed, values: [1]}}]\nmetrics: [fvd]\n",
     r"bad\.yaml:3: metrics: unknown \['fvd'\]"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_spec_names_line_and_field(text, message, tmp_path):
    import re

    from sweep.spec import SpecError, load

    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(SpecError) as ei:
        load(f)
    assert re.search(message, str(ei.value)), str(ei.value)


def test_bad_nodes_and_inputs_named_against_the_server(servers, tmp_path):
    from sweep.spec import SpecError, load, resolve
    from sweep.workflow import to_api

    info = servers[0].object_info()
    cases = [({"node": "Sampler Of Dreams", "input": "seed", "values": [1]},
              r"bad\.yaml:\d+: axes\[0\]\.node 'Sampler Of Dreams' is not a node id, title or class type .*6 \(KSampler\)"),
             ({"node": "KSampler", "input": "sead", "values": [1]},
              r"bad\.yaml:\d+: axes\[0\]\.input: node 6 \(KSampler\) has no input 'sead' \(its inputs: .*seed"),
             ({"node": "I2VMotion_LoadDynamiCrafter", "input": "ckpt_name", "values": ["a"]},
              r"matches nodes 1, 11; name one by id or by a unique title")]
    import re

    for axis, message in cases:
        spec = load(write_spec(tmp_path / "bad.yaml", [axis]))
        with pytest.raises(SpecError) as ei:
            resolve(spec, to_api(spec.workflow, info), info)
        assert re.search(message, str(ei.value)), str(ei.value)


def test_cli_reports_a_bad_spec_without_a_traceback(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(f"workflow: {WORKFLOW}\naxes:\n  - {{node: KSampler, values: [1]}}\n")
    p = _cli([str(f), "--server", "http://127.0.0.1:9"])
    text = p.communicate(timeout=60)[0]
    assert p.returncode == 2, text
    assert f"error: {f}:3: axes[0]: missing 'input'" in text and "Traceback" not in text, text
