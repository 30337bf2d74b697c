"""The benchmarks' CI stand-ins and the GPU check's plan.

- ``tools/bench_schedule.py --quick`` and ``tools/bench_dynamicrafter.py --quick`` run end to end on the CPU and print
  their goals with met / NOT met (the numbers of a stand-in are not asserted: performance lives in the benches);
- the GPU check sizes its parts by the device it finds: full size and both dynamic-VRAM modes on CUDA; on a CPU the
  tests part gets most of the budget, and a small or busy CPU runs the model parts at the tiny size.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import gpu_check

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("bench", [["bench_schedule.py", "--quick", "--cpu", "--skip-memory"],
                                   ["bench_dynamicrafter.py", "--quick", "--cpu"]])
def test_quick_benchmarks_run_and_print_their_goals(bench):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(REPO / "tools" / bench[0]), *bench[1:]], capture_output=True, text=True,
                       env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    goals = [ln for ln in r.stdout.splitlines() if ln.startswith("goal")]
    assert goals and all(("met" in g) for g in goals), r.stdout[-2000:]
    assert "[--quick" in r.stdout  # a stand-in says so


def test_gpu_check_plans_by_device():
    parts = ["tests", "sampling", "edg"]
    size, runs = gpu_check.plan(parts, cuda=True, size=None, cpus=16, load=0.5)
    assert size == "full" and [(p, d) for p, d, _ in runs] == [("tests", True), ("tests", False), ("sampling", True),
                                                               ("sampling", False), ("edg", True)]
    size, runs = gpu_check.plan(parts, cuda=False, size=None, cpus=2, load=7.5)
    assert size == "tiny" and [(p, d) for p, d, _ in runs] == [("tests", False), ("sampling", False), ("edg", False)]
    weights = {p: w for p, _, w in runs}
    assert weights["tests"] > sum(weights.values()) / 2  # the tests part gets most of a CPU's budget
    assert gpu_check.plan(parts, cuda=False, size=None, cpus=16, load=2.0)[0] == "small"
    assert gpu_check.plan(parts, cuda=False, size=None, cpus=16, load=20.0)[0] == "tiny"
    assert gpu_check.plan(parts, cuda=False, size="small", cpus=2, load=9.0)[0] == "small"  # asked for: kept
