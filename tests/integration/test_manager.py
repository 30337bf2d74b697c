"""Installed the way users install it: ComfyUI-Manager clones the pack from a git URL into a real ComfyUI 0.33.

ComfyUI 0.33 ships the Manager as a pip package (``manager_requirements.txt``: ``comfyui_manager==4.2.2``,
started with ``--enable-manager``); ``tools/host.py --extras`` installs exactly that into the 0.33 host. This test:

1. makes a bare git repository of this checkout's HEAD (plus uncommitted changes to tracked files) and serves it
   over smart HTTP on 127.0.0.1 (``tools/git_http.py``, git's own ``http-backend``); the Manager's own mirror
   setting ``GITHUB_ENDPOINT`` points the pack's public URL, as the README gives it, at that server;
2. starts ComfyUI with ``--enable-manager --enable-manager-legacy-ui`` and the settings a user writes into
   ``user/__manager/config.ini`` for a git-URL install (``allow_git_url_install = true``; ``network_mode =
   offline`` keeps the Manager off the internet, so the test is hermetic), checks the pack is not there, and
   installs it with the request the Manager's "Install via Git URL" button sends
   (``POST /v2/customnode/install/git_url``): git clone, then ``pip install`` of requirements.txt
   (``PIP_NO_INDEX=1``: a requirement ComfyUI does not already provide fails the install instead of downloading);
3. restarts ComfyUI (stop, start, same base directory): the pack's nodes are in ``/object_info``, its example
   workflows in ``/workflow_templates``, and the demo workflow from the clone runs on a tiny checkpoint;
   torch and every other package of the venv are unchanged (``pip freeze``, torch's version, file and RECORD);
4. disables the pack through the Manager's task queue (what the default 0.33 Manager UI uses), restarts: no
   node left; uninstalls it the same way, restarts: nothing of it left on disk or in ComfyUI.

The Manager's log lines (what it ran, from where) and the git server's request log are printed (``-s`` or the
captured output of a failure show them). Skipped, with the reason, where ComfyUI has no pip-packaged Manager
(0.3.75) or the 0.33 host cannot be built (no ``../shared``).
"""
from __future__ import annotations

import configparser
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import comfy_server
import pytest
import workflow

from .conftest import REPO, comfy_dir, place_input_images
from .test_server import _check_animation

pytestmark = pytest.mark.integration

SHARED_DIR = REPO.parent / "shared"
PUBLIC_URL = "https://github.com/comfyui-i2v-motion/comfyui-i2v-motion"  # as README's install section gives it
DIR_NAME = "comfyui-i2v-motion"  # the folder the Manager clones it into (the URL's last part)
NODE_PREFIX = "I2VMotion_"
DEMO = "dynamicrafter_i2v.json"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
MANAGER_LOG = re.compile(r"Install: |CLONE into|Using GitPython|Download: git clone|EXECUTE =>|skip black listed|"
                         r"Installation was successful|install script failed|Invalid git url|Already exists|"
                         r"Requirement already satisfied|Successfully installed|ERROR|network_mode|Legacy UI")


def _manager_pin(comfy: Path) -> str | None:
    req = comfy / "manager_requirements.txt"
    if not req.is_file():
        return None
    for line in req.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.lower().replace("-", "_").startswith("comfyui_manager"):
            return line
    return None


@pytest.fixture(scope="module")
def manager_host() -> tuple[Path, str]:
    """The ComfyUI dir and the Manager pin it asks for; skips where there is no pip-packaged Manager."""
    comfy = comfy_dir()
    pin = _manager_pin(comfy)
    if pin is None:
        pytest.skip(f"ComfyUI at {comfy} ships no pip-packaged Manager (no manager_requirements.txt): the Manager "
                    "install test runs on the 0.33 host")
    name = os.environ.get("I2V_HOST_NAME", "")
    if importlib.util.find_spec("comfyui_manager") is None:
        import host

        spec = host.spec_for(name) if name and name != "COMFYUI_PATH" else None
        if spec is None or spec.extras is None:
            pytest.skip(f"comfyui_manager is not installed in {sys.executable} and this is not a host whose extras "
                        "the bootstrap installs (tools/host.py --host 0.33 --extras)")
        if not SHARED_DIR.is_dir():
            pytest.skip(f"{SHARED_DIR} is absent (developer and CI checkouts only): no 0.33 host")
        try:
            host.ensure_extras(name)
        except (SystemExit, subprocess.CalledProcessError) as e:
            pytest.fail(f"installing the 0.33 host's extras failed: {e}", pytrace=False)
        importlib.invalidate_caches()
    want = pin.split("==", 1)[1] if "==" in pin else None
    have = importlib.metadata.version("comfyui_manager")
    assert want is None or have == want, f"{comfy}/manager_requirements.txt asks for {pin}, the host has {have}"
    return comfy, pin


def _torch_state(py: str) -> dict:
    """What identifies the installed torch: version, build, where it loads from, and its RECORD's hash."""
    code = ("import json, torch, importlib.metadata as m; d = m.distribution('torch'); "
            "rec = d.read_text('RECORD') or ''; import hashlib; "
            "print(json.dumps({'version': torch.__version__, 'git': torch.version.git_version, "
            "'cuda': torch.version.cuda, 'file': torch.__file__, "
            "'record_sha256': hashlib.sha256(rec.encode()).hexdigest()}))")
    out = subprocess.run([py, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _freeze(py: str) -> list[str]:
    return subprocess.run([py, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True,
                          env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")).stdout.splitlines()


def _pack_nodes(srv: comfy_server.ComfyServer) -> list[str]:
    return sorted(k for k in srv.object_info(refresh=True) if k.startswith(NODE_PREFIX))


def _imported_modules(log: str) -> list[str]:
    """Custom node folders of the last start's "Import times for custom nodes" block."""
    block = log.rsplit("Import times for custom nodes:", 1)
    if len(block) < 2:
        return []
    out = []
    for line in block[1].splitlines()[1:]:
        m = re.search(r"seconds(?: \(IMPORT FAILED\))?: (.+)$", line)
        if not m:
            break
        out.append(m.group(1).strip())
    return out


def _queue_task(srv: comfy_server.ComfyServer, kind: str, params: dict, timeout: float = 120) -> dict:
    """Queue one Manager task as its UI does (``/v2/manager/queue/task`` + ``/start``); its history entry."""
    ui_id = uuid.uuid4().hex
    status, body = srv.post_json("/v2/manager/queue/task", {"kind": kind, "params": params, "ui_id": ui_id,
                                                             "client_id": "i2v-motion-test"})
    assert status == 200, f"queueing {kind}: HTTP {status} {body}"
    status, body = srv.post_json("/v2/manager/queue/start", None)
    assert status in (200, 201), f"starting the Manager queue: HTTP {status} {body}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hist = srv.get_json(f"/v2/manager/queue/history?ui_id={ui_id}").get("history") or {}
        if hist.get("status", {}).get("completed"):
            return hist
        time.sleep(0.25)
    raise AssertionError(f"Manager task {kind} {params} did not finish in {timeout:.0f} s")


def _write_manager_config(base: Path) -> Path:
    """``user/__manager/config.ini`` with what a user sets for a git-URL install (plus offline, for the test)."""
    path = base / "user" / "__manager" / "config.ini"
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = configparser.ConfigParser()
    cfg["default"] = {"security_level": "normal", "allow_git_url_install": "true", "network_mode": "offline"}
    with open(path, "w") as f:
        cfg.write(f)
    return path


def _read_ini(path: Path) -> dict:
    cfg = configparser.ConfigParser(strict=False)
    cfg.read(path)
    return dict(cfg["default"]) if cfg.has_section("default") else {}


def test_manager_git_url_install_restart_run_disable_uninstall(manager_host, tmp_path):
    from git_http import GitHttpServer, bare_mirror

    comfy, pin = manager_host
    py = sys.executable
    t_all = time.perf_counter()
    report: list[str] = []

    def note(line: str) -> None:  # printed as it happens: a failure's captured output shows how far it got
        report.append(line)
        print(f"[manager install] {line}", flush=True)

    note(f"ComfyUI {comfy} with {pin} (installed: comfyui_manager {importlib.metadata.version('comfyui_manager')}), "
         f"python {py}")

    # -- the pack as a git repository on loopback ------------------------------------------------------
    git_root = tmp_path / "git"
    commit = bare_mirror(REPO, git_root / "comfyui-i2v-motion" / "comfyui-i2v-motion")
    note(f"git mirror of {REPO} at commit {commit}")
    base = tmp_path / "comfy"
    config = _write_manager_config(base)
    note(f"{config}: {_read_ini(config)}")

    torch_before, freeze_before = _torch_state(py), _freeze(py)
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}

    def start(legacy_ui: bool) -> tuple[comfy_server.ComfyServer, int]:
        """A server on the same base directory, and where its part of the (appended) log begins."""
        since = len((base / "comfyui.log").read_text(errors="replace")) if (base / "comfyui.log").is_file() else 0
        srv = comfy_server.ComfyServer(comfy, py, base_dir=base, load_pack=False, isolate=False, env=env,
                                       extra_args=["--enable-manager"]
                                       + (["--enable-manager-legacy-ui"] if legacy_ui else []))
        try:
            srv.start(timeout=240)
        except comfy_server.ComfyError as e:
            pytest.fail(f"ComfyUI with the Manager did not start: {e}", pytrace=False)
        return srv, since

    with GitHttpServer(git_root) as git:
        # COLUMNS: the Manager's console output is wrapped at 80 columns otherwise
        env.update(GITHUB_ENDPOINT=git.url, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", COLUMNS="400")

        # -- 1. before: Manager on, pack absent; install by git URL ------------------------------------------
        t0 = time.perf_counter()
        srv, since = start(legacy_ui=True)
        try:
            assert "[ComfyUI-Manager] network_mode: offline" in srv.log_text()[since:], \
                "the Manager did not read config.ini"
            stats = srv.get_json("/system_stats")
            before_nodes = _pack_nodes(srv)
            assert before_nodes == [], f"pack nodes present before the install: {before_nodes[:5]}"
            note(f"before install: {len(srv.object_info())} node types, {len(before_nodes)} {NODE_PREFIX}*; "
                 f"/system_stats pytorch {stats['system'].get('pytorch_version')}")
            t_install = time.perf_counter()
            req = urllib.request.Request(srv.url + "/v2/customnode/install/git_url", data=PUBLIC_URL.encode(),
                                         method="POST")
            try:
                with urllib.request.urlopen(req, timeout=300) as r:
                    status = r.status
            except urllib.error.HTTPError as e:
                status = e.code
            install_s = time.perf_counter() - t_install
            manager_lines = [ANSI.sub("", ln).rstrip() for ln in srv.log_text()[since:].splitlines()
                             if ln.strip() and MANAGER_LOG.search(ln)]
        finally:
            srv.stop()
        note(f"POST /v2/customnode/install/git_url {PUBLIC_URL} -> HTTP {status} in {install_s:.1f} s; "
             "Manager log:")
        for ln in manager_lines:
            note(f"    {ln}")
        note("git server requests: " + "; ".join(git.requests))
        assert status == 200, "the Manager refused or failed the install:\n" + "\n".join(report)
        installed = base / "custom_nodes" / DIR_NAME
        assert (installed / "__init__.py").is_file(), f"nothing cloned into {installed}"
        origin = subprocess.run(["git", "-C", str(installed), "remote", "get-url", "origin"], capture_output=True,
                                text=True).stdout.strip()
        head = subprocess.run(["git", "-C", str(installed), "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        note(f"clone {installed}: origin {origin}, HEAD {head}")
        assert head == commit, f"the Manager cloned {head}, the mirror serves {commit}"
        assert origin.startswith(git.url), f"cloned from {origin}, not from the loopback server {git.url}"
        assert any("git-upload-pack" in r for r in git.requests), git.requests
        pip_runs = [ln for ln in manager_lines if "EXECUTE =>" in ln or "pip" in ln]
        assert not any(re.search(r"\btorch", ln) for ln in pip_runs), f"the Manager ran pip on torch: {pip_runs}"
        note(f"step 1 (start, check, install, stop): {time.perf_counter() - t0:.1f} s")

        # -- 2. restart: nodes, templates, the demo workflow; torch untouched ---------------------------------
        t0 = time.perf_counter()
        srv, since = start(legacy_ui=False)
        try:
            failures = [ln for ln in srv.log_text()[since:].splitlines() if "IMPORT FAILED" in ln]
            assert failures == [], "\n".join(failures)
            after_nodes = _pack_nodes(srv)
            import i2v_motion.nodes

            expected = sorted(n.GET_SCHEMA().node_id for n in i2v_motion.nodes.all_nodes())
            assert after_nodes == expected, f"after install: {after_nodes} != the pack's {expected}"
            assert str(installed) in _imported_modules(srv.log_text()[since:]), \
                "ComfyUI did not import the installed pack"
            templates = srv.get_json("/workflow_templates").get(DIR_NAME, [])
            assert Path(DEMO).stem in templates, f"/workflow_templates lists {templates} for {DIR_NAME}"
            installed_list = srv.get_json("/v2/customnode/installed")
            assert installed_list.get(DIR_NAME, {}).get("enabled") is True, installed_list
            note(f"after install + restart: {len(srv.object_info())} node types, {len(after_nodes)} "
                 f"{NODE_PREFIX}*; templates {sorted(templates)}; Manager lists {installed_list[DIR_NAME]}")

            wf_path = installed / "example_workflows" / DEMO  # the clone's own copy
            expect = workflow.load_expect(wf_path)
            prompt = workflow.to_api(workflow.load(wf_path), srv.object_info())
            tiny = workflow.tiny_models(prompt, expect)
            workflow.apply_overrides(prompt, expect.get("tiny_overrides"))
            expect = {**expect, **expect.get("tiny_expect", {})}
            from support import standins

            standins.make_all(srv.models_dir, tiny)
            place_input_images(srv, prompt, wf_path, expect)
            res = srv.run(prompt, timeout=600)
            files = [f for f in srv.output_files(res.outputs) if f.suffix == ".webp"]
            assert files, f"the demo saved no animation: {res.outputs}"
            for f in files:
                _check_animation(f, expect)
            note(f"demo {DEMO} (tiny checkpoint {list(tiny)}, {expect['frames']} frames "
                 f"{expect['width']}x{expect['height']}): {res.seconds:.1f} s -> {[f.name for f in files]}")
            stats = srv.get_json("/system_stats")
            note(f"/system_stats pytorch after install: {stats['system'].get('pytorch_version')}")

            # the default 0.33 Manager UI's own disable request ({"is_unknown": false}) reports success for a
            # git-URL install but moves nothing (Manager 4.2.2; README says so): check it still does not
            hist = _queue_task(srv, "disable", {"node_name": DIR_NAME, "is_unknown": False})
            ui_disable_noop = (installed / "__init__.py").is_file()
            note(f"disable as the default UI sends it (is_unknown false): {hist.get('result')}, pack "
                 f"{'still in custom_nodes' if ui_disable_noop else 'moved'}")
            assert ui_disable_noop, ("the default Manager UI's disable now works for git-URL installs: update the "
                                     "README's install section")
            hist = _queue_task(srv, "disable", {"node_name": DIR_NAME, "is_unknown": True})
            note(f"disable with is_unknown true: {hist.get('result')}")
            assert hist.get("result") == "success", hist
        finally:
            srv.stop()
        torch_after, freeze_after = _torch_state(py), _freeze(py)
        note(f"torch before: {torch_before}")
        note(f"torch after:  {torch_after}")
        assert torch_after == torch_before, "the install changed torch"
        changed = sorted(set(freeze_before) ^ set(freeze_after))
        note(f"pip freeze: {len(freeze_before)} packages before, {len(freeze_after)} after, "
             f"differences: {changed or 'none'}")
        assert not changed, f"the Manager's install changed the venv: {changed}"
        disabled = base / "custom_nodes" / ".disabled" / DIR_NAME
        assert not installed.exists() and (disabled / "__init__.py").is_file(), \
            f"after disable: {installed} exists={installed.exists()}, {disabled} exists={disabled.exists()}"
        note(f"step 2 (restart, checks, demo, disable, stop): {time.perf_counter() - t0:.1f} s")

        # -- 3. restart: disabled means not loaded; uninstall --------------------------------------------------
        t0 = time.perf_counter()
        srv, since = start(legacy_ui=False)
        try:
            nodes = _pack_nodes(srv)
            assert nodes == [], f"disabled pack still registers {nodes[:5]}"
            assert not any(DIR_NAME in m for m in _imported_modules(srv.log_text()[since:])), \
                "the disabled pack was imported"
            assert srv.get_json("/v2/customnode/installed").get(DIR_NAME, {}).get("enabled") is False
            note(f"after disable + restart: {len(nodes)} {NODE_PREFIX}*")
            hist = _queue_task(srv, "uninstall", {"node_name": DIR_NAME, "is_unknown": True})
            note(f"uninstall with is_unknown true: {hist.get('result')}")
            assert hist.get("result") == "success", hist
        finally:
            srv.stop()

        # -- 4. restart: nothing of the pack anywhere ----------------------------------------------------------
        srv, since = start(legacy_ui=False)
        try:
            nodes = _pack_nodes(srv)
            leftovers = [p for p in (base / "custom_nodes").rglob("*") if DIR_NAME in str(p)]
            assert nodes == [] and leftovers == [], f"after uninstall: nodes {nodes[:5]}, files {leftovers[:5]}"
            assert DIR_NAME not in srv.get_json("/v2/customnode/installed")
            assert DIR_NAME not in srv.get_json("/workflow_templates")
            assert not any(DIR_NAME in m for m in _imported_modules(srv.log_text()[since:]))
        finally:
            srv.stop()
        note(f"after uninstall + restart: 0 {NODE_PREFIX}*, no files; steps 3-4: "
             f"{time.perf_counter() - t0:.1f} s")
    assert _torch_state(py) == torch_before
    note(f"total {time.perf_counter() - t_all:.1f} s")
