"""Test support shared by the tests and the developer tools (never shipped: the Registry archive leaves ``tests/``
out): tiny random-weight checkpoints in the official layouts (``fixtures``), tiny Wan 2.1 / 2.2 stand-ins and
umT5-shaped text conditioning (``wan``), the one cached maker of every stand-in file that sidecars, integration
tests and the demo share (``standins``), the test-only ComfyUI nodes of stand-in runs (``comfy_nodes/``), synthetic
scenes and the shipped cases' generator (``synth``), tiny core models and weight readers (``models``), the oracle
layout pipeline (``oracle``), reference formulas (``reference``), ComfyUI 0.33's dynamic-VRAM layout on the CPU
(``dynamic_vram``). Importable as ``support`` (pytest's ``pythonpath`` and :func:`tools.paths` put ``tests/`` on
the path); the pack itself is imported as ``i2v_motion`` (``tools/comfy_inproc.py``)."""
