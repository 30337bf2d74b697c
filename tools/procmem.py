"""Process memory readings for the benchmarks (Linux ``/proc``): current and peak RSS, peak reset."""
from __future__ import annotations


def status(pid: int | None = None) -> dict[str, int]:
    """``VmRSS`` (current) and ``VmHWM`` (peak) of this process (or process ``pid``), in bytes."""
    out = {}
    with open(f"/proc/{pid or 'self'}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) * 1024
    return out


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (``clear_refs`` 5); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
