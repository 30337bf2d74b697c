"""Distributed, resumable parameter sweeps of ComfyUI workflows on Ray: ``python -m sweep SPEC ...``.

A client of ComfyUI's HTTP API that ships with the pack; ComfyUI never imports it (the pack's ``__init__.py``
only lists nodes) and it never imports ComfyUI. Importing this package imports nothing heavy: Ray, pandas and
OpenCV (``sweep/requirements.txt``) load only where a sweep runs.
"""
