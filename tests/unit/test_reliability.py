"""The bad-input catalogue (issues 11 and 18): every case a user or a shared workflow can send, through the real
loading and node code, with what the user must see. A server-level subset runs over HTTP in
``tests/integration/test_reliability_http.py``.

| case | what the user sees (the test asserts the gist) | test |
|---|---|---|
| Load Layout Case folder outside input/ (absolute, ``..``), existing or not | "... must be inside ComfyUI's input folder or the pack's shipped layout cases", identical for both | test_case_folder_outside_is_refused_alike |
| a case JSON in input/ naming an image outside its folder | "case 'x': its image must be inside ...", identical whether the file exists | test_case_image_outside_is_refused_alike |
| a case image that is not an image | "case 'x': 'x.png' is not a readable image" (no absolute path) | test_case_image_unreadable |
| non-finite checkpoint tensor (UNet, VAE) | "<file>: non-finite values (NaN/Inf) in N tensor(s): <keys>" | test_nonfinite_checkpoint |
| a NaN-producing merge (weight ±10, DARE p 0.999) | "sampling produced NaN/Inf ...; likely cause: merge coefficients ..." | test_nan_merge_is_an_error |
| a NaN weight patched in after loading | "non-finite values (NaN/Inf) in 1 weight(s) of the loaded model: <key>" | test_nonfinite_weight_stops_before_sampling |
| 512 weights forced to variant 256 | "variant 256 was chosen but the weights are a 512/1024/interp model" | test_variant_mismatch |
| Task Vector / EDG Experts between 256 and 512 | error naming both models; allow_partial lists the skipped weights on the node | test_merge_across_variants |
| layout frames ≠ I2V latent frames; sampled latent of another size | "frame-count mismatch ..." / "the sampled latent is WxH but the layout regions were made for ..." | test_layout_frame_and_size_mismatch |
| Layout to Mask 8192² × 256, guide / preview of 256 frames at 2048² | "... would need about N GiB of memory, more than the M free in RAM", before allocating | test_allocations_refused_with_estimate |
| more than 256 frames anywhere | "... 1..256" (one frame limit) | test_one_frame_limit |
| a text file named .pt | "<file>: not a PyTorch checkpoint ..." | test_text_file_as_checkpoint |
| keys deleted (Resampler, VAE, text encoder) | "<file>: the <part> is incomplete: tensor '<key>' is missing" | test_missing_keys_named |
| wrong-shape UNet / VAE tensor | "<file>: the <part> weights do not fit ...: <key>: file [..], expected [..]" | test_wrong_shapes_named |
| wrong-shape vision conv1 | "<file>: the CLIP vision tower is not OpenCLIP ViT-H/14 ..." | test_wrong_vision_tower |
| unknown combo values (0.3.75 does not check V3 combos) | "<Node>: <input> = '<value>' is not one of its choices: ..." | test_unknown_combo_values |
| bake: empty prefix, unwritable target, diffusion_models folder | "filename_prefix '' has no file name" / "cannot write ..." / writes models/diffusion_models | test_bake_prefix_folder_and_write_errors |
| kill -9 during a bake | a hidden ``.<name>.<pid>.i2v-partial`` no loader lists, removed at the next start | test_killed_bake_leaves_nothing_visible |
| a case JSON in input/ that is a link to a file elsewhere (with or without its image) | "layout case 'x' must be inside ComfyUI's input folder or ...", nothing of the outside file quoted | test_case_json_link_out_is_refused |
| a process with an address-space limit (ulimit -v) | the estimate is refused against what the limit leaves ("more than the N free in RAM"), not torch's "DefaultCPUAllocator: can't allocate memory" | test_memory_reader_in_a_limited_process |
| a container with a cgroup memory limit (v2 and v1, namespaced or not) | the reader takes ``memory.max − memory.current`` of the tightest level | test_memory_reader_reads_cgroups |
| bake prefix / case folder / case name with NUL, a 300-byte name, CON / com1.txt, a trailing dot or space | "<what> contains a NUL character …" / "… bytes long …" / "… is a device name on Windows …" / "… ends in a dot …" | test_path_strings_are_checked |
| a 16-frame layout sampled with 8-frame conditioning (no reference) | "frame-count mismatch: the layout was made for 16 frames but the positive conditioning for 8 (num_video_frames …)" | test_layout_and_conditioning_lengths_must_agree |
| phase ends in any order | each region is held until its own end (documented; tests/unit/test_layout_wan.py::test_every_order_of_phase_ends_holds_each_region_until_its_own_end) | — |
| ``start_image`` with 4 images for ``batch_size`` 1 | "start_image holds 4 images for batch_size 1: give 1 image (or set batch_size to 4 …)" | test_batch_and_dtype_messages |
| NaN result from finite fp32 / fp16 / bf16 weights | fp32: no "weight_dtype fp32" advice; fp16: "try weight_dtype bf16 or fp32"; bf16: "try weight_dtype fp32" | test_batch_and_dtype_messages |
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import folder_paths
from i2v_motion import layout as L
from support import fixtures
from i2v_motion.backbones.checkpoint import CheckpointError
from i2v_motion.backbones.loader import load_dynamicrafter
from i2v_motion.guards import NonFiniteError
from i2v_motion.limits import MAX_FRAMES
from i2v_motion.merging import apply_task_vectors, edg_experts, make_task_vector
from i2v_motion.merging.bake import clean_stale_partials
from i2v_motion.nodes import all_nodes
from i2v_motion.nodes import backbone as NB
from i2v_motion.nodes import layout as NL
from i2v_motion.nodes import merging as NM

REPO = Path(__file__).resolve().parents[2]
NO_ENCODERS = dict(with_vae=False, with_clip=False, with_clip_vision=False)


def _out(o):
    return o.result if hasattr(o, "result") else o


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def full_ckpt(ckpt_dir) -> Path:
    return Path(fixtures.make_tiny_checkpoint(str(ckpt_dir / "full.safetensors"), seed=0))


def _variant(path: Path, dest: Path, edit) -> Path:
    sd = load_file(str(path))
    edit(sd)
    save_file(sd, str(dest))
    return dest


@pytest.fixture
def input_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "input"
    d.mkdir()
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(d))
    return d


# ------------------------------------------------------------------------------------------ file reads

def test_case_folder_outside_is_refused_alike(input_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text('{"image": "x.png"}')
    msgs = []
    for folder in (str(outside), str(tmp_path / "no_such_dir"), "../outside", "../../../../etc", "/etc"):
        with pytest.raises(L.PathRefused) as e:
            NL.LayoutCaseLoader.execute(folder, 0, "")
        msgs.append(str(e.value).replace(repr(folder), "<folder>"))
        assert "secret" not in str(e.value) and "json" not in str(e.value)
    assert len(set(msgs)) == 1, msgs  # existing and missing places look the same
    # inside input/ works, and so does the shipped default
    shutil_copy_case(input_dir / "mine")
    assert _out(NL.LayoutCaseLoader.execute("mine", 0, ""))[3] == "ball_roll"
    assert _out(NL.LayoutCaseLoader.execute("", 0, "two_boats"))[3] == "two_boats"


def shutil_copy_case(dest: Path, name: str = "ball_roll") -> Path:
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for ext in (".json", ".png"):
        shutil.copy(NL.CASES_DIR / f"{name}{ext}", dest / f"{name}{ext}")
    return dest


def test_case_image_outside_is_refused_alike(input_dir, tmp_path):
    real = tmp_path / "outside.png"
    import shutil

    shutil.copy(NL.CASES_DIR / "ball_roll.png", real)
    case = input_dir / "cases"
    case.mkdir()
    msgs = []
    for image in (str(real), "../../outside.png", str(tmp_path / "missing.png"), "/etc/passwd"):
        (case / "evil.json").write_text('{"image": %s, "objects": [{"phrase": "x", "boxes": [[0, 0.1, 0.1, 0.2, 0.2]]}]}'
                                        % json_str(image))
        with pytest.raises(L.PathRefused) as e:
            NL.LayoutCaseLoader.execute("cases", 0, "evil")
        msgs.append(str(e.value))
    assert len(set(msgs)) == 1 and "outside.png" not in msgs[0] and "passwd" not in msgs[0], msgs


def json_str(s: str) -> str:
    import json

    return json.dumps(s)


def test_case_image_unreadable(input_dir):
    case = shutil_copy_case(input_dir / "bad")
    (case / "ball_roll.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"case 'ball_roll': 'ball_roll.png' is not a readable image") as e:
        NL.LayoutCaseLoader.execute("bad", 0, "")
    assert str(input_dir) not in str(e.value)


def test_case_json_link_out_is_refused(input_dir, tmp_path):
    """A case JSON that is a link out of the allowed roots is refused before it is read; the refusal quotes nothing of
    the file it points to (neither its content nor, when its image is missing, that file's ``image`` field)."""
    outside = tmp_path / "elsewhere"
    shutil_copy_case(outside)
    (outside / "lonely.json").write_text('{"image": "SECRET-IMAGE-NAME.png", "objects": [{"phrase": "SECRET-PHRASE", '
                                         '"boxes": [[0, 0.1, 0.1, 0.2, 0.2]]}]}')
    sub = input_dir / "linked"
    sub.mkdir()
    (sub / "ball_roll.json").symlink_to(outside / "ball_roll.json")
    (sub / "ball_roll.png").symlink_to(outside / "ball_roll.png")
    (sub / "lonely.json").symlink_to(outside / "lonely.json")
    for name in ("ball_roll", "lonely"):
        with pytest.raises(L.PathRefused) as e:
            NL.LayoutCaseLoader.execute("linked", 0, name)
        msg = str(e.value)
        assert "must be inside ComfyUI's input folder" in msg
        assert "SECRET" not in msg and "elsewhere" not in msg and "striped ball" not in msg, msg
    assert "linked/ball_roll" not in NL.case_choices()  # and it is not offered either
    # a link that stays inside input/ is fine (its image in the case folder it is listed in)
    shutil_copy_case(input_dir / "real")
    (sub / "inside.json").symlink_to(input_dir / "real" / "ball_roll.json")
    import shutil

    shutil.copy(NL.CASES_DIR / "ball_roll.png", sub / "ball_roll.png.tmp")
    (sub / "ball_roll.png").unlink()
    (sub / "ball_roll.png.tmp").rename(sub / "ball_roll.png")
    assert _out(NL.LayoutCaseLoader.execute("linked", 0, "inside"))[3] == "inside"


def test_memory_reader_in_a_limited_process(tmp_path):
    """In a child whose address space is limited (``ulimit -v``), the reader reports what the limit leaves, and a
    Layout to Mask the estimate does not fit is refused with the pack's message instead of torch's allocator error."""
    script = textwrap.dedent("""
        import resource, sys
        import comfy_inproc; comfy_inproc.bootstrap("cpu", dynamic_vram=False)
        from i2v_motion import limits
        from i2v_motion.layout import parse_layout
        from i2v_motion.nodes import layout as NL
        size = limits._status_kb("VmSize")
        resource.setrlimit(resource.RLIMIT_AS, (size + (1536 << 20), resource.RLIM_INFINITY))
        left = limits.rlimit_available()
        print("LEFT", left, "AVAILABLE", limits.ram_available(), flush=True)
        lay = parse_layout('{"objects": [{"phrase": "x", "boxes": [[0, 0.1, 0.1, 0.3, 0.3]]}]}', frames=64)
        try:
            NL.LayoutToMask.execute(lay, 2048, 2048, "objects", -1, 0.0, 0.0)  # 6 planes x 64 x 2048^2 fp32: 6 GiB
            print("RAN")
        except ValueError as e:
            print("REFUSED", e)
        except RuntimeError as e:
            print("ALLOCATOR", e)
        small = NL.LayoutToMask.execute(lay, 128, 128, "objects", -1, 0.0, 0.0)
        print("SMALL", tuple(small.result[0].shape))
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO / "tools"), str(REPO / "tests")]))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr[-2000:]
    left = int(out.split("LEFT ")[1].split()[0])
    available = int(out.split("AVAILABLE ")[1].split()[0])
    print(f"address-space limit: {left / 2**20:.0f} MiB left under the limit; the reader says {available / 2**20:.0f} MiB")
    assert 1000 << 20 < left <= 1536 << 20 and available <= left
    assert "REFUSED" in out and "more than the" in out and "free in RAM" in out, out
    assert "ALLOCATOR" not in out and "SMALL (64, 128, 128)" in out


def _fake_cgroup(tmp_path: Path, v2: bool, own: str, levels: dict[str, tuple[str, str]], namespaced: bool = False):
    """A /proc/self/cgroup file and a /sys/fs/cgroup tree with ``{relative dir: (limit, usage)}``."""
    root = tmp_path / ("cg2" if v2 else "cg1")
    base = root if v2 else root / "memory"
    base.mkdir(parents=True)
    if v2:
        (root / "cgroup.controllers").write_text("cpu memory pids\n")
    for rel, (limit, usage) in levels.items():
        d = base / rel if rel else base
        d.mkdir(parents=True, exist_ok=True)
        (d / ("memory.max" if v2 else "memory.limit_in_bytes")).write_text(limit + "\n")
        (d / ("memory.current" if v2 else "memory.usage_in_bytes")).write_text(usage + "\n")
    proc = tmp_path / ("proc_cgroup_v2" if v2 else "proc_cgroup_v1")
    path = "/" if namespaced else own
    proc.write_text(f"0::{path}\n" if v2 else f"4:memory:{path}\n2:cpuacct:/\n0::/\n")
    return proc, root


def test_memory_reader_reads_cgroups(tmp_path):
    from i2v_motion import limits

    gib = 1 << 30
    # v2: the container's own level is tighter than its parent; "max" means no limit at that level
    proc, root = _fake_cgroup(tmp_path / "a", True, "/kubepods/pod1/ctr",
                              {"": ("max", str(50 * gib)), "kubepods": ("max", str(40 * gib)),
                               "kubepods/pod1": (str(16 * gib), str(10 * gib)),
                               "kubepods/pod1/ctr": (str(12 * gib), str(9 * gib))})
    assert limits.cgroup_available(proc, root) == 3 * gib
    # v1, and a parent tighter than the child
    proc, root = _fake_cgroup(tmp_path / "b", False, "/process_api/abc",
                              {"": ("9223372036854771712", str(20 * gib)), "process_api": (str(8 * gib), str(7 * gib)),
                               "process_api/abc": (str(24 * gib), str(6 * gib))})
    assert limits.cgroup_available(proc, root) == 1 * gib
    # a cgroup namespace (a container): /proc/self/cgroup says "/", the mount is the container's own cgroup
    proc, root = _fake_cgroup(tmp_path / "c", True, "/", {"": (str(4 * gib), str(3 * gib))}, namespaced=True)
    assert limits.cgroup_available(proc, root) == 1 * gib
    # no limit anywhere, or no cgroup files: no say
    proc, root = _fake_cgroup(tmp_path / "d", True, "/x", {"": ("max", "100"), "x": ("max", "100")})
    assert limits.cgroup_available(proc, root) is None
    assert limits.cgroup_available(tmp_path / "missing", tmp_path / "nowhere") is None
    print(f"this machine: cgroup says {limits.cgroup_available()}, ulimits say {limits.rlimit_available()}, "
          f"the reader {limits.ram_available() / gib:.1f} GiB")


@pytest.mark.parametrize("text, gist", [
    ("i2v/mer\x00ged", "contains a NUL character"),
    ("i2v/" + "m" * 300, "bytes long"),
    ("i2v/CON", "is a device name on Windows"),
    ("com1.txt/merged", "is a device name on Windows"),
    ("i2v/merged.", "ends in a dot"),
    ("i2v /merged", "ends in a space"),
])
def test_path_strings_are_checked(pair, input_dir, tmp_path, monkeypatch, text, gist):
    out = tmp_path / "bake_out"
    out.mkdir()
    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(out))
    base, _ = pair
    with pytest.raises(ValueError, match=gist):
        NM.BakeMerged.execute(base, text, "output", "keep")
    with pytest.raises(ValueError, match=gist):
        NL.LayoutCaseLoader.execute(text, 0, "")
    with pytest.raises(ValueError, match=gist):
        NL.LayoutCaseLoader.execute("", 0, text + "/x")
    assert not list(out.rglob("*"))  # nothing written


def test_layout_and_conditioning_lengths_must_agree(pair):
    """A 16-frame layout sampled with conditioning made for 8 frames (no reference linked) is an error naming both."""
    import support.oracle as P
    from support.models import dc_cond

    base, _ = pair
    lay = L.parse_layout('{"objects": [{"phrase": "x", "boxes": [[0, 0.1, 0.1, 0.3, 0.3], [15, 0.5, 0.5, 0.7, 0.7]]}]}',
                         frames=16)
    guide = {"samples": torch.zeros(16, 4, 8, 8)}
    model, latent = _out(NL.LayoutMaskedDenoise.execute(base, guide, lay, 0.4, 0.8, 0.9, 1.0, 1.0))
    pos, neg, _ = dc_cond(frames=8)
    for c in (pos, neg):
        c[0][1]["num_video_frames"] = 8
    import comfy.sample

    with pytest.raises(ValueError, match=r"frame-count mismatch: the layout was made for 16 frames but the positive "
                                         r"conditioning for 8 \(num_video_frames of DynamiCrafter Image to Video\)"):
        comfy.sample.sample(model, torch.zeros_like(latent["samples"]), 2, 1.0, "euler", "simple", pos, neg,
                            latent["samples"], noise_mask=latent["noise_mask"], disable_pbar=True)
    for c in (pos, neg):
        c[0][1]["num_video_frames"] = 16
    out = comfy.sample.sample(model, torch.zeros_like(latent["samples"]), 2, 1.0, "euler", "simple", pos, neg,
                              latent["samples"], noise_mask=latent["noise_mask"], disable_pbar=True)
    assert torch.isfinite(out).all()
    del P


def test_batch_and_dtype_messages():
    from i2v_motion.backbones.conditioning import per_video_images
    from i2v_motion.guards import overflow_hint

    img = torch.zeros(4, 8, 8, 3)
    with pytest.raises(ValueError) as e:
        per_video_images(img, 1, "start_image")
    assert str(e.value) == "start_image holds 4 images for batch_size 1: give 1 image (or set batch_size to 4 for one " \
                           "video per image)"
    with pytest.raises(ValueError, match=r"holds 4 images for batch_size 3: give 1 image \(shared by every video\) or 3"):
        per_video_images(img, 3, "start_image")
    assert "weight_dtype" not in overflow_hint(torch.float32) and "already float32" in overflow_hint(torch.float32)
    assert "try weight_dtype bf16 or fp32" in overflow_hint(torch.float16)
    assert "try weight_dtype fp32" in overflow_hint(torch.bfloat16) and "bf16" not in overflow_hint(torch.bfloat16)


# ------------------------------------------------------------------------------------------ garbage as success

def test_nonfinite_checkpoint(full_ckpt, ckpt_dir):
    def nan_unet(sd):
        sd["model.diffusion_model.input_blocks.1.0.in_layers.2.weight"][0, 0, 0, 0] = float("nan")

    def inf_vae(sd):
        sd["first_stage_model.decoder.conv_out.weight"][0, 0, 0, 0] = float("inf")

    for name, edit, key in (("nan_unet", nan_unet, "input_blocks.1.0.in_layers.2.weight"),
                            ("inf_vae", inf_vae, "decoder.conv_out.weight")):
        path = _variant(full_ckpt, ckpt_dir / f"{name}.safetensors", edit)
        with pytest.raises(CheckpointError, match=rf"{name}\.safetensors: non-finite values \(NaN/Inf\) in 1 tensor\(s\): .*{key}"):
            load_dynamicrafter(str(path))


@pytest.fixture(scope="module")
def pair(ckpt_dir):
    a = fixtures.make_tiny_checkpoint(str(ckpt_dir / "a.safetensors"), seed=0, **NO_ENCODERS)
    b = fixtures.make_tiny_checkpoint(str(ckpt_dir / "b.safetensors"), seed=1, **NO_ENCODERS)
    return load_dynamicrafter(a).model, load_dynamicrafter(b).model


def _sample(model):
    from support.models import dc_cond, ksample

    return ksample(model, dc_cond())


def test_nan_merge_is_an_error(pair):
    base, ft = pair
    tv = make_task_vector(base, ft)
    for w, p in ((10.0, 0.999), (-10.0, 0.0)):
        m = apply_task_vectors(base, [tv], [w], method="dare" if p else "sum", p=p)
        with pytest.raises(NonFiniteError, match=r"sampling produced NaN/Inf .*likely cause: merge coefficients"):
            _sample(m)
    assert torch.isfinite(_sample(apply_task_vectors(base, [tv], [0.5]))).all()  # sane weights: no error


def test_nonfinite_weight_stops_before_sampling(pair):
    base, _ = pair
    key = "diffusion_model.out.2.weight"
    bad = base.clone()
    w = dict(base.model.named_parameters())[key]
    bad.add_patches({key: (torch.full_like(w, float("nan")),)}, 1.0)
    steps = []
    with pytest.raises(NonFiniteError, match=rf"in 1 weight\(s\) of the loaded model: {key}"):
        from support.models import dc_cond

        pos, neg, latent = dc_cond()
        import comfy.sample

        comfy.sample.sample(bad, torch.zeros_like(latent["samples"]), 2, 1.0, "euler", "simple", pos, neg,
                            latent["samples"], callback=lambda *a: steps.append(1), disable_pbar=True)
    assert steps == []  # stopped before the first step


# ------------------------------------------------------------------------------------------ mismatches

def test_variant_mismatch(full_ckpt):
    with pytest.raises(CheckpointError, match="variant 256 was chosen but the weights are a 512/1024/interp model"):
        load_dynamicrafter(str(full_ckpt), variant="256")


def test_merge_across_variants(ckpt_dir, pair):
    base512, _ = pair
    f256 = load_dynamicrafter(fixtures.make_tiny_checkpoint(str(ckpt_dir / "f256.safetensors"), variant="256",
                                                            seed=1, **NO_ENCODERS)).model
    for node_call in (lambda **kw: NM.TaskVector.execute(base512, f256, "all", "", **kw),
                      lambda **kw: NM.EDGExperts.execute(base512, f256, **kw)):
        with pytest.raises(ValueError, match=r"DynamiCrafter 512 .*DynamiCrafter 256"):
            node_call()
        out = node_call(allow_partial=True)
        text = str(out.ui.as_dict())
        assert "16 weight(s) exist in only one model" in text and "attn2.alpha" in text


def test_layout_frame_and_size_mismatch():
    import support.oracle as P

    lay = L.parse_layout('{"objects": [{"phrase": "x", "boxes": [[0, 0.1, 0.1, 0.3, 0.3], [15, 0.5, 0.5, 0.7, 0.7]]}]}',
                         frames=16)
    guide = {"samples": torch.zeros(16, 4, 8, 8)}
    model = P.tiny_model()
    with pytest.raises(ValueError, match=r"frame-count mismatch: .* 16 frames but the reference .* has 24"):
        NL.LayoutMaskedDenoise.execute(model, guide, lay, 0.4, 0.8, 0.9, 1.0, 1.0, {"samples": torch.zeros(24, 4, 8, 8)})
    m, latent = _out(NL.LayoutMaskedDenoise.execute(model, guide, lay, 0.4, 0.8, 0.9, 1.0, 1.0))
    fn = m.model_options["denoise_mask_function"]
    with pytest.raises(ValueError, match=r"the sampled latent is 16x16 but the layout regions were made for 8x8"):
        fn.mask_for(0.0, (16, 4, 16, 16))


# ------------------------------------------------------------------------------------------ sizes

def test_allocations_refused_with_estimate():
    import resource

    lay = L.parse_layout('{"objects": [{"phrase": "x", "boxes": [[0, 0.1, 0.1, 0.3, 0.3]]}]}', frames=MAX_FRAMES)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"Layout to Mask at 8192x8192 x 256 frames would need about [\d.]+ (GiB|TiB)"):
        NL.LayoutToMask.execute(lay, 8192, 8192, "objects", -1, 0.0, 0.0)
    img = torch.zeros(1, 4096, 4096, 3)  # estimates of 292 / 154 GiB: refused on any machine
    with pytest.raises(ValueError, match=r"Layout Guide Video of 256 frames at 4096x4096 would need about"):
        NL.LayoutGuide.execute(img, lay, None, 8.0, 4.0, "diffuse")
    with pytest.raises(ValueError, match=r"Layout Preview of 256 frames at 4096x4096 would need about"):
        NL.LayoutPreview.execute(img, lay, 2, True, True)
    assert time.perf_counter() - t0 < 30
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 512, f"refusals allocated {grown_mib:.0f} MiB"  # the 192 MiB image is the test's own


def test_one_frame_limit():
    with pytest.raises(ValueError, match=rf"1\.\.{MAX_FRAMES}"):
        L.parse_layout('{"objects": [{"phrase": "x", "boxes": [[0, 0.1, 0.1, 0.3, 0.3]]}]}', frames=MAX_FRAMES + 1)
    schema_max = {}
    for node in all_nodes():
        for inp in node.define_schema().inputs:
            if inp.id in ("frames", "length") and getattr(inp, "max", None) is not None:
                schema_max[f"{node.__name__}.{inp.id}"] = inp.max
    assert schema_max and set(schema_max.values()) == {MAX_FRAMES}, schema_max


# ------------------------------------------------------------------------------------------ loader messages

def test_text_file_as_checkpoint(ckpt_dir):
    p = ckpt_dir / "notes.pt"
    p.write_text("these are my notes, not weights\n" * 20)
    with pytest.raises(CheckpointError, match=r"notes\.pt: not a PyTorch checkpoint"):
        load_dynamicrafter(str(p))


@pytest.mark.parametrize("key, part", [("image_proj_model.proj_out.weight", "UNet/Resampler"),
                                       ("first_stage_model.decoder.conv_out.weight", "VAE"),
                                       ("cond_stage_model.model.ln_final.weight", "text encoder")])
def test_missing_keys_named(full_ckpt, ckpt_dir, key, part):
    path = _variant(full_ckpt, ckpt_dir / "missing.safetensors", lambda sd: sd.pop(key))
    leaf = key.rsplit(".", 2)[-2] + "." + key.rsplit(".", 1)[-1]
    with pytest.raises(CheckpointError, match=rf"missing\.safetensors: the {part} is incomplete: tensor '[\w.]*{leaf}' is missing"):
        load_dynamicrafter(str(path))


@pytest.mark.parametrize("key, part", [("model.diffusion_model.input_blocks.1.0.in_layers.2.weight", "UNet/Resampler"),
                                       ("first_stage_model.decoder.conv_in.weight", "VAE")])
def test_wrong_shapes_named(full_ckpt, ckpt_dir, key, part):
    def edit(sd):
        sd[key] = torch.zeros(tuple(sd[key].shape[:-1]) + (sd[key].shape[-1] + 2,))

    path = _variant(full_ckpt, ckpt_dir / "shape.safetensors", edit)
    rel = key.split("diffusion_model.", 1)[-1].split("first_stage_model.", 1)[-1]
    with pytest.raises(CheckpointError, match=rf"shape\.safetensors: the {part} weights do not fit .*{rel}: file \["):
        load_dynamicrafter(str(path))


def test_wrong_vision_tower(full_ckpt, ckpt_dir):
    def edit(sd):
        sd["embedder.model.visual.conv1.weight"] = torch.zeros(64, 3, 16, 16)

    path = _variant(full_ckpt, ckpt_dir / "vision.safetensors", edit)
    with pytest.raises(CheckpointError, match=r"vision\.safetensors: the CLIP vision tower is not OpenCLIP ViT-H/14"):
        load_dynamicrafter(str(path))


def test_unknown_combo_values(pair):
    all_nodes()  # the pack's entry point wraps every node's execute with the combo check
    base, ft = pair
    with pytest.raises(ValueError, match=r"LoadDynamiCrafter: variant = '2048' is not one of its choices: auto, 256"):
        NB.LoadDynamiCrafter.execute(variant="2048", weight_dtype="default")
    with pytest.raises(ValueError, match=r"ApplyTaskVectors: method = 'average' is not one of its choices: sum, dare"):
        NM.ApplyTaskVectors.execute(base, make_task_vector(base, ft), 1.0, method="average")
    with pytest.raises(ValueError, match=r"LayoutToMask: region = 'sky' is not one of its choices"):
        NL.LayoutToMask.execute(layout=None, width=8, height=8, region="sky", object_index=-1, feather=0.0, grow=0.0)


# ------------------------------------------------------------------------------------------ bakes

def test_bake_prefix_folder_and_write_errors(pair, tmp_path, monkeypatch):
    base, ft = pair
    dyn, _, _ = edg_experts(base, ft, p=0.0)
    out = tmp_path / "output"
    unet, dm = tmp_path / "models" / "unet", tmp_path / "models" / "diffusion_models"
    for d in (out, unet, dm):
        d.mkdir(parents=True)
    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(out))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "diffusion_models",
                        ([str(unet), str(dm)], folder_paths.supported_pt_extensions))
    for bad in ("", "   ", "sub/", "sub/.."):
        with pytest.raises(ValueError, match="has no file name"):
            NM.BakeMerged.execute(dyn, bad, "output", "keep")
    path = _out(NM.BakeMerged.execute(dyn, "i2v/m", "diffusion_models", "keep"))[0]
    assert Path(path).parent == dm / "i2v" and not any(unet.rglob("*.safetensors"))
    (out / "blocked").write_text("a file where the bake wants a folder")
    with pytest.raises(ValueError, match=r"cannot write"):
        NM.BakeMerged.execute(dyn, "blocked/m", "output", "keep")
    assert not [p for p in out.rglob("*") if p.name.endswith(".i2v-partial")]


def test_killed_bake_leaves_nothing_visible(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    script = textwrap.dedent(f"""
        import sys, time
        import comfy_inproc; comfy_inproc.bootstrap("cpu", dynamic_vram=False)
        from support.models import tiny_svd
        from i2v_motion.merging import bake_model
        m = tiny_svd(0)
        print("ready", flush=True)
        bake_model(m, {str(target / 'm.safetensors')!r}, progress=lambda i, n: time.sleep(0.05))
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO / "tools"), str(REPO / "tests")]))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.time() + 60
        while not list(target.glob(".*.i2v-partial")) and time.time() < deadline:
            time.sleep(0.05)
        partial = list(target.glob(".*.i2v-partial"))
        assert partial, "the bake never started writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert partial[0].exists() and not list(target.glob("*.safetensors"))  # nothing a loader would list
    mine = target / f".x.safetensors.{os.getpid()}.i2v-partial"
    mine.write_bytes(b"a bake of this process, in progress")
    removed = clean_stale_partials(str(target))
    assert [Path(p) for p in removed] == partial and mine.exists()
