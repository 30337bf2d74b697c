"""Limits shared by every node of the pack, memory estimates made before allocating, and path strings.

One frame limit for the whole pack (layouts, masks, guides, I2V latents), one pixel limit for images and
masks the pack makes, and :func:`check_alloc`: a request whose working memory is estimated above what the
device (or RAM, for CPU tensors) has free is refused with the estimate, before anything is allocated.

What "free" means on the CPU is :func:`ram_available`, the one memory-limit reader every estimate uses: the
smallest of the free RAM ComfyUI sees, what the process's address-space / data limits (``ulimit -v`` / ``-d``) still
allow, and what its memory cgroup still allows (v2 ``memory.max − memory.current``, v1 ``limit_in_bytes −
usage_in_bytes``, the tightest level of the hierarchy) — in a container free RAM shows the host's memory, and a
request past the cgroup's limit gets the whole ComfyUI server killed.

:func:`check_path_text`: every string that becomes part of a path (prefixes, folders, case names) is checked for
what no file system (or Windows, where many users run ComfyUI) takes, before it reaches ``open``.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from .layout.boxes import MAX_FRAMES  # frames of any video the pack builds (the models were trained on 16)

__all__ = ["MAX_FRAMES", "MAX_SIDE", "HEADROOM", "nbytes", "human", "free_memory", "ram_available", "rlimit_available",
           "cgroup_available", "check_alloc", "check_frames", "check_side", "vae_encode_need", "check_path_text"]
MAX_SIDE = 8192      # pixels per side of images/masks the pack makes
HEADROOM = 0.9       # share of the free memory a single request may plan to use


def nbytes(shape, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of a tensor of ``shape`` and ``dtype``."""
    n = 1
    for s in shape:
        n *= int(s)
    return n * torch.empty((), dtype=dtype).element_size()


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def free_memory(device: torch.device | str | None = None) -> int:
    """Free memory of ``device`` as ComfyUI sees it; for the CPU, :func:`ram_available`."""
    import comfy.model_management as mm

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cpu":
        return ram_available()
    try:
        return int(mm.get_free_memory(dev))
    except Exception:  # a device ComfyUI cannot query: do not block on it
        return 1 << 62


_UNLIMITED = 1 << 60


def _status_kb(field: str, status: str = "/proc/self/status") -> int | None:
    try:
        for line in Path(status).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def rlimit_available() -> int | None:
    """Bytes the process may still map under its address-space and data limits (``ulimit -v`` / ``-d``), or None."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    out = None
    for limit, field in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft = resource.getrlimit(limit)[0]
        if soft in (resource.RLIM_INFINITY, -1) or soft >= _UNLIMITED:
            continue
        used = _status_kb(field) or 0
        left = max(0, int(soft) - used)
        out = left if out is None else min(out, left)
    return out


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        v = int(text)
    except ValueError:
        return None
    return None if v >= _UNLIMITED else v


def cgroup_available(proc_cgroup: str | Path = "/proc/self/cgroup", root: str | Path = "/sys/fs/cgroup") -> int | None:
    """Bytes the process's memory cgroup (v2 or v1) still allows at its tightest level, or None without a limit.

    The process's cgroup path comes from ``proc_cgroup``; inside a cgroup namespace (a container) that path does not
    exist under ``root`` and the mount itself is the process's cgroup. Every ancestor up to ``root`` is read."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    root = Path(root)
    places = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hier, controllers, rel = parts
        if hier == "0" and controllers == "":  # v2 unified
            base = root if (root / "cgroup.controllers").exists() else root / "unified"
            places.append((base, rel, "memory.max", "memory.current"))
        elif "memory" in controllers.split(","):  # v1
            places.append((root / "memory", rel, "memory.limit_in_bytes", "memory.usage_in_bytes"))
    best = None
    for base, rel, limit_file, usage_file in places:
        if not base.is_dir():
            continue
        here = base / rel.lstrip("/")
        if not here.is_dir():
            here = base  # a cgroup namespace: the mount is this process's own cgroup
        while True:
            limit, usage = _read_int(here / limit_file), _read_int(here / usage_file)
            if limit is not None and usage is not None:
                left = max(0, limit - usage)
                best = left if best is None else min(best, left)
            if here == base or base not in here.parents:
                break
            here = here.parent
    return best


def ram_available() -> int:
    """What the CPU side may still allocate: the smallest of ComfyUI's free RAM, the process's ulimits and its memory
    cgroup (see the module doc)."""
    import comfy.model_management as mm

    try:
        free = int(mm.get_free_memory(torch.device("cpu")))
    except Exception:
        free = 1 << 62
    for other in (rlimit_available(), cgroup_available()):
        if other is not None:
            free = min(free, other)
    return free


def check_alloc(estimate: int, what: str, device: torch.device | str | None = None,
                hint: str = "") -> None:
    """Refuse (ValueError) a request whose estimated working memory exceeds what ``device`` has free."""
    free = free_memory(device)
    if estimate > HEADROOM * free:
        where = "RAM" if device is None or torch.device(device).type == "cpu" else str(device)
        raise ValueError(f"{what} would need about {human(estimate)} of memory, more than the {human(free)} free "
                         f"{'in ' if where == 'RAM' else 'on '}{where}{'; ' + hint if hint else ''}")


def vae_encode_need(vae, height: int, width: int) -> int:
    """Bytes ComfyUI expects one ``height``×``width`` VAE encode to take *in RAM* (its own
    ``memory_used_encode`` estimate; 0 when the VAE runs on a GPU, where ComfyUI tiles instead of failing)."""
    fn = getattr(vae, "memory_used_encode", None)
    dev = torch.device(getattr(vae, "device", "cpu") or "cpu")
    if fn is None or dev.type != "cpu":
        return 0
    try:
        return int(fn((1, 3, int(height), int(width)), getattr(vae, "vae_dtype", torch.float32)))
    except Exception:  # a VAE whose estimate wants other shapes: no estimate
        return 0


def vae_frames_at_once(vae, height: int, width: int, cap: int = 8) -> int:
    """How many ``height``×``width`` frames to hand ComfyUI's VAE encode at once on the CPU: what the memory reader
    (:func:`ram_available`: free RAM, ulimits, cgroup) holds of its per-frame estimate, 1..``cap``. ComfyUI sizes its
    own encode batches from free RAM alone, which in a container is the host's; handing it no more frames than
    the reader allows keeps the encode inside the limit (on a GPU: ``cap``, ComfyUI tiles there)."""
    need = vae_encode_need(vae, height, width)
    if need <= 0:
        return cap
    return max(1, min(cap, int(HEADROOM * ram_available()) // need))


def check_frames(frames: int, what: str = "frames") -> int:
    """A frame count in 1..MAX_FRAMES (ValueError otherwise)."""
    if not isinstance(frames, (int, float)) or frames != int(frames) or not 1 <= int(frames) <= MAX_FRAMES:
        raise ValueError(f"{what} must be a whole number in 1..{MAX_FRAMES}; got {frames}")
    return int(frames)


def check_side(value: int, what: str) -> int:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 1 <= int(value) <= MAX_SIDE:
        raise ValueError(f"{what} must be 1..{MAX_SIDE} pixels; got {value}")
    return int(value)


_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$", re.IGNORECASE)
MAX_COMPONENT_BYTES = 255  # the longest file or folder name of ext4, NTFS, APFS


def check_path_text(text: str, what: str) -> str:
    """``text`` (a file name prefix, a sub-folder path, a case name) if every part of it can be a file or folder name
    on any system ComfyUI runs on; else ValueError with the pack's own message (no NUL bytes, no part longer than 255
    bytes, no Windows device names such as CON or COM1, no part ending in a dot or a space)."""
    if not isinstance(text, str):
        raise ValueError(f"{what} must be text; got {type(text).__name__}")
    if "\x00" in text:
        raise ValueError(f"{what} contains a NUL character (\\x00), which no file name may hold; retype it")
    for part in re.split(r"[\\/]", text):
        if not part or part in (".", ".."):
            continue
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise ValueError(f"{what}: the name {part[:40]!r}… is {len(part.encode('utf-8'))} bytes long; file systems "
                             f"take at most {MAX_COMPONENT_BYTES} per file or folder name")
        if _WINDOWS_RESERVED.match(part):
            raise ValueError(f"{what}: {part!r} is a device name on Windows (CON, PRN, AUX, NUL, COM1–9, LPT1–9, also "
                             f"with an extension) and cannot be a file or folder name there; choose another name")
        if part[-1] in ". ":
            raise ValueError(f"{what}: {part!r} ends in a {'dot' if part[-1] == '.' else 'space'}, which Windows drops "
                             f"from file names (the file would not be where the workflow says); remove it")
    return text
