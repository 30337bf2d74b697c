"""Test support shared by the tests and the developer tools (never shipped: the Registry archive leaves ``tests/``
out): tiny random-weight checkpoints in the official layouts (``fixtures``), synthetic scenes and the shipped
cases' generator (``synth``), tiny core models and weight readers (``models``), the oracle layout pipeline
(``oracle``), reference formulas (``reference``), ComfyUI 0.33's dynamic-VRAM layout on the CPU
(``dynamic_vram``). Importable as ``support`` (pytest's ``pythonpath`` and :func:`tools.paths` put ``tests/`` on
the path); the pack itself is imported as ``i2v_motion`` (``tools/comfy_inproc.py``)."""
