"""Ready for the Comfy Registry: ``pyproject.toml`` complete, ``comfy node validate`` (comfy-cli) clean, the published
archive (``comfy node pack``: git-tracked files minus ``.comfyignore``) holding everything the pack loads, and the
Registry's rules for published code (no ``exec``/``eval``, no pip or other processes started at run time) kept.

comfy-cli runs from its own pinned venv (``tools/host.py --comfy-cli``, built by ``tools/test.py``) with telemetry
off and a throw-away config folder.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
COMFY = PYPROJECT["tool"]["comfy"]
# comfy-cli's registry/config_parser.py: the classifiers it turns into Registry fields
OS_PREFIXES = ("Microsoft", "POSIX", "MacOS", "OS Independent")
ACCELERATORS = {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend",
                "GPU :: Apple Metal"}
RUNTIME_FOLDERS = ("nodes", "comfy_bridge", "families", "backbones", "merging", "experts", "layout")
# Shipped, never imported by ComfyUI: the sweep runner (``python -m sweep``), a client that starts ComfyUI servers
# and Ray workers (processes, by design); the Registry's rules below apply to the modules ComfyUI loads.
NOT_LOADED_BY_COMFYUI = ("sweep/",)


@pytest.fixture(scope="module")
def comfy_cli() -> Path:
    import host

    try:
        return host.ensure_comfy_cli()
    except (SystemExit, subprocess.CalledProcessError) as e:
        pytest.fail(f"comfy-cli could not be built (tools/host.py --comfy-cli; needs PyPI once): {e}", pytrace=False)


def _run_comfy(exe: Path, args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, DO_NOT_TRACK="1", COMFY_NO_TELEMETRY="1", HOME=str(home), XDG_CONFIG_HOME=str(home),
               COLUMNS="200", NO_COLOR="1")
    return subprocess.run([str(exe), "--skip-prompt", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def _validate_problems(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if re.search(r"warning|error|invalid", ln, re.I)]


# -- comfy node validate ------------------------------------------------------------------------------------
def test_comfy_node_validate_is_clean(comfy_cli, tmp_path):
    r = _run_comfy(comfy_cli, ["node", "validate"], REPO, tmp_path)
    out = r.stdout + r.stderr
    print(f"$ comfy node validate  (exit {r.returncode})\n{out}")
    assert r.returncode == 0, out
    assert "All validation checks passed" in out, out
    assert _validate_problems(out) == [], out


def test_comfy_node_validate_catches_what_it_should(comfy_cli, tmp_path):
    """The check above can fail: a bad accelerator classifier and an ``exec`` are reported."""
    bad = tmp_path / "bad_pack"
    bad.mkdir()
    text = (REPO / "pyproject.toml").read_text().replace('"Environment :: GPU :: NVIDIA CUDA"',
                                                         '"Environment :: GPU :: Voodoo"')
    assert "Voodoo" in text
    (bad / "pyproject.toml").write_text(text)
    (bad / "nodes.py").write_text("exec('print(1)')\n")
    r = _run_comfy(comfy_cli, ["node", "validate"], bad, tmp_path)
    out = r.stdout + r.stderr
    assert "Invalid Environment classifier" in out, out
    assert "S102" in out, out


# -- pyproject ------------------------------------------------------------------------------------------------
def _tracked() -> set[str]:
    out = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True).stdout
    return set(out.splitlines())


def test_pyproject_has_what_the_registry_reads():
    project = PYPROJECT["project"]
    assert re.fullmatch(r"[a-z][a-z0-9]*(?:[-_.][a-z0-9]+)*", project["name"]) and len(project["name"]) < 100
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), project["version"]
    assert project.get("description")
    for key in ("PublisherId", "DisplayName", "Icon", "Banner", "requires-comfyui"):
        assert COMFY.get(key), f"[tool.comfy] {key} is empty"
    assert COMFY["PublisherId"] == "i2v-motion" and project["name"] == "comfyui-i2v-motion"
    repo_url = project["urls"]["Repository"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repo_url), repo_url
    # classifiers: at least one OS and one accelerator, all of them in comfy-cli's accepted sets
    classifiers = project["classifiers"]
    oses = [c.removeprefix("Operating System :: ") for c in classifiers if c.startswith("Operating System :: ")]
    accels = [c.removeprefix("Environment :: ") for c in classifiers if c.startswith("Environment ::")]
    assert oses and all(o.startswith(OS_PREFIXES) for o in oses), oses
    assert accels and set(accels) <= ACCELERATORS, accels
    # the floor: the same ComfyUI the suite's oldest host runs
    import host

    assert COMFY["requires-comfyui"] == f">={host.DEFAULT_HOSTS[0]}"


def test_license_file_is_apache_2():
    lic = PYPROJECT["project"]["license"]
    assert lic == {"file": "LICENSE"}, lic
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert "LICENSE" in _tracked()
    assert "License :: OSI Approved :: Apache Software License" in PYPROJECT["project"]["classifiers"]


@pytest.mark.parametrize("key,max_size", [("Icon", (800, 400)), ("Banner", None)])
def test_icon_and_banner_are_shipped_files_at_stable_urls(key, max_size):
    """Raw URLs of files in this repository on its main branch: the file is tracked and a real picture."""
    from PIL import Image

    repo_url = PYPROJECT["project"]["urls"]["Repository"]
    raw = repo_url.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    url = COMFY[key]
    assert url.startswith(raw), f"{key} {url} is not a file of {repo_url} on main"
    rel = url[len(raw):]
    assert rel in _tracked(), f"{key}: {rel} is not tracked by git"
    with Image.open(REPO / rel) as im:
        im.verify()
    with Image.open(REPO / rel) as im:
        assert im.format in ("PNG", "JPEG", "GIF"), im.format
        w, h = im.size
    if max_size:  # the Registry's limit for icons
        assert w <= max_size[0] and h <= max_size[1], (w, h)
    else:  # a wide banner
        assert w > 2 * h and w >= 800, (w, h)


def _req_names(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.append(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].strip().lower().replace("_", "-"))
    return names


def test_requirements_never_replace_torch_and_come_with_comfyui():
    """What the Manager / Registry pip-install for the pack: nothing torch-like, and only what ComfyUI itself
    requires (so the install changes nothing in the user's environment)."""
    ours = _req_names(REPO / "requirements.txt")
    assert ours, "requirements.txt is empty"
    assert not set(ours) & {"torch", "torchvision", "torchaudio", "xformers", "triton"}, ours
    comfy = Path(sys.modules["folder_paths"].__file__).resolve().parent
    theirs = set(_req_names(comfy / "requirements.txt"))
    assert set(ours) <= theirs, f"not required by ComfyUI at {comfy}: {sorted(set(ours) - theirs)}"
    deps = [re.split(r"[<>=!~; ]", d, maxsplit=1)[0].lower() for d in PYPROJECT["project"]["dependencies"]]
    assert sorted(deps) == sorted(ours), (deps, ours)


# -- the published archive ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def packed(comfy_cli, tmp_path_factory) -> zipfile.ZipFile:
    """``comfy node pack`` run on a clone of this checkout (HEAD plus uncommitted changes to tracked files)."""
    from git_http import bare_mirror

    tmp = tmp_path_factory.mktemp("pack")
    bare_mirror(REPO, tmp / "mirror.git")
    subprocess.run(["git", "clone", "-q", str(tmp / "mirror.git"), str(tmp / "src")], check=True)
    r = _run_comfy(comfy_cli, ["node", "pack"], tmp / "src", tmp)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and (tmp / "src" / "node.zip").is_file(), out
    z = zipfile.ZipFile(tmp / "src" / "node.zip")
    print(f"$ comfy node pack: {len(z.namelist())} files, {sum(i.file_size for i in z.infolist()) / 1024:.0f} KiB")
    return z


def test_archive_holds_everything_the_pack_loads(packed):
    names = set(packed.namelist())
    for f in ("__init__.py", "pyproject.toml", "requirements.txt", "LICENSE", "README.md"):
        assert f in names, f"{f} missing from the Registry archive"
    # every module of the pack that ComfyUI imports: what listing its nodes loads in this process
    import i2v_motion.nodes

    assert i2v_motion.nodes.all_nodes()
    loaded = sorted({Path(m.__file__).resolve().relative_to(REPO).as_posix() for name, m in sys.modules.items()
                     if (name == "i2v_motion" or name.startswith("i2v_motion.")) and getattr(m, "__file__", None)})
    assert any(p.startswith("nodes/") for p in loaded), loaded
    missing = [p for p in loaded if p not in names]
    assert not missing, f"imported by ComfyUI but left out of the archive: {missing}"
    # every runtime module and every example workflow / input / layout case
    tracked = _tracked()
    wanted = {p for p in tracked if p.endswith(".py") and p.split("/")[0] in RUNTIME_FOLDERS}
    wanted |= {p for p in tracked if p.startswith("example_workflows/")}
    assert not sorted(wanted - names), sorted(wanted - names)
    # developer-only folders stay out (.comfyignore)
    assert not [n for n in names if n.split("/")[0] in ("tests", "tools", ".ci")]
    # the sweep runner ships (a Registry install has the CLI) and ComfyUI loads none of it
    assert {"sweep/__main__.py", "sweep/engine.py", "sweep/requirements.txt"} <= names
    assert not [n for n in sys.modules if n.startswith("i2v_motion.sweep")], "listing the nodes imported the sweep"


# -- the Registry's rules for published code -----------------------------------------------------------------------
FORBIDDEN_CALLS = {"exec", "eval", "compile", "__import__", "execfile"}
FORBIDDEN_MODULES = {"subprocess", "pty", "pip", "ensurepip", "runpy"}
FORBIDDEN_ATTRS = {("os", "system"), ("os", "popen"), ("os", "spawnl"), ("os", "spawnv"), ("os", "execv"),
                   ("os", "execl"), ("os", "execvp"), ("os", "fork"), ("os", "startfile")}
PIP_TEXT = re.compile(r"\bpip3?\s+install\b|-m\s+pip\b|\bensurepip\b|\buv\s+pip\b", re.I)


def rule_violations(source: str, name: str = "<src>") -> list[str]:
    """Calls of exec/eval & co., process-starting modules and calls, pip command lines in strings."""
    out = []
    tree = ast.parse(source, name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            out.append(f"{name}:{node.lineno}: {node.func.id}()")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and (node.func.value.id, node.func.attr) in FORBIDDEN_ATTRS:
            out.append(f"{name}:{node.lineno}: {node.func.value.id}.{node.func.attr}()")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "__import__":
            out.append(f"{name}:{node.lineno}: __import__()")
        elif isinstance(node, ast.Import):
            out += [f"{name}:{node.lineno}: import {a.name}" for a in node.names
                    if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in FORBIDDEN_MODULES:
            out.append(f"{name}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and PIP_TEXT.search(node.value):
            out.append(f"{name}:{node.lineno}: pip command in a string: {node.value[:60]!r}")
    return out


def test_rule_checker_catches_violations():
    bad = ("import subprocess\nfrom pip._internal import main\nexec('x=1')\nv = eval('1')\nos.system('ls')\n"
           "cmd = 'python -m pip install foo'\nbuiltins.__import__('os')\n")
    found = rule_violations(bad)
    assert len(found) == 7, found
    assert rule_violations("x = 'pipeline install'\nevaluate(1)\nimport importlib\n") == []


def test_published_python_follows_the_registry_rules(packed):
    sources = [n for n in packed.namelist() if n.endswith(".py") and not n.startswith(NOT_LOADED_BY_COMFYUI)]
    assert "__init__.py" in sources and len(sources) > 10
    violations = [v for n in sources for v in rule_violations(packed.read(n).decode(), n)]
    assert not violations, "\n".join(violations)


def test_archive_has_no_symlinks_and_no_bytecode(packed):
    """ComfyUI 0.38's signed "governance" mode refuses packs that contain symlinks or __pycache__/.pyc; the tree
    itself tracks no symlink either (git mode 120000)."""
    import stat

    bytecode = [n for n in packed.namelist() if "__pycache__" in n.split("/") or n.endswith((".pyc", ".pyo"))]
    links = [i.filename for i in packed.infolist() if stat.S_ISLNK(i.external_attr >> 16)]
    assert not bytecode and not links, (bytecode, links)
    staged = subprocess.run(["git", "-C", str(REPO), "ls-files", "-s"], capture_output=True, text=True,
                            check=True).stdout.splitlines()
    assert not [line for line in staged if line.startswith("120000 ")]


# -- one bridge to ComfyUI's internals, no import circles ------------------------------------------------------------
PUBLIC_COMFY = {"comfy_api", "folder_paths", "comfy.model_management", "comfy.utils"}
MODEL_BUILDING = ("comfy.ops", "comfy.ldm", "comfy.model_base", "comfy.latent_formats", "comfy.supported_models_base")
COMFY_TOP = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "node_helpers", "nodes",
             "server", "execution", "latent_preview", "comfy_aimdo"}


def _runtime_modules() -> dict[str, Path]:
    """Dotted name → file of every module ComfyUI may load (the pack's runtime folders and top-level modules)."""
    out = {}
    for f in sorted(REPO.glob("*.py")):
        out["__init__" if f.stem == "__init__" else f.stem] = f
    for folder in RUNTIME_FOLDERS:
        for f in sorted((REPO / folder).rglob("*.py")):
            parts = list(f.relative_to(REPO).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """Absolute names imported by a module (relative imports resolved inside the pack; ``("", n)`` entries skipped)."""
    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".") if pkg and pkg != "__init__" else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
                names = [f"{target}.{a.name}" if target else a.name for a in node.names]
                out += [("pack:" + n, node.lineno) for n in names]
            else:
                out += [(node.module, node.lineno)]
    return out


def test_only_the_bridge_imports_comfy_internals():
    """Outside ``comfy_bridge/`` the pack imports only comfy_api, folder_paths, comfy.model_management and
    comfy.utils; ``backbones/``'s model code may also import the building blocks a model is made of."""
    bad = []
    for module, path in _runtime_modules().items():
        if module.startswith("comfy_bridge"):
            continue
        for name, line in _imports(path, module):
            if name.startswith("pack:") or name.split(".")[0] not in COMFY_TOP:
                continue
            if name in PUBLIC_COMFY or name.split(".")[0] == "comfy_api" or name.startswith("comfy_api."):
                continue
            if module.startswith("backbones") and any(name == m or name.startswith(m + ".") for m in MODEL_BUILDING):
                continue
            bad.append(f"{path.relative_to(REPO)}:{line}: import {name}")
    print(f"{len(_runtime_modules())} runtime modules scanned")
    assert not bad, "ComfyUI internals imported outside comfy_bridge/:\n" + "\n".join(bad)


def test_pack_modules_import_no_circle():
    """The module import graph of the pack (every import, module level or in a function) has no cycle."""
    mods = _runtime_modules()

    def resolve(name: str) -> str | None:
        name = name[len("pack:"):]
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {m: sorted({r for n, _ in _imports(p, m) if n.startswith("pack:") and (r := resolve(n)) and r != m})
             for m, p in mods.items()}
    # a package's __init__ re-exporting its own modules is not a circle: drop package -> own submodule edges
    graph = {m: [d for d in deps if not d.startswith(m + ".")] for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in graph.get(m, []):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]) if d in stack else f"{m} -> {d}")
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycles, "import circles:\n" + "\n".join(cycles)
