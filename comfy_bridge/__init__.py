"""The only package of the pack that touches ComfyUI's internals (beyond its public node API).

Everything else imports ComfyUI only through here, plus ``comfy_api`` (the node schema), ``folder_paths``,
``comfy.model_management`` and ``comfy.utils``; the model code in ``backbones/`` may also import the building
blocks a model is made of (``comfy.ops``, ``comfy.ldm.*``, ``comfy.model_base``, ``comfy.latent_formats``,
``comfy.supported_models_base``). ``tests/unit/test_registry.py`` keeps it so.

Every name here is looked up when it is used, by capability, never by version: ``main.py`` rebinds some at
start-up (``comfy.model_patcher.CoreModelPatcher`` becomes the dynamic-VRAM patcher on NVIDIA), and ComfyUI
0.34–0.38 moved or extended others (``ModelPatcher.__init__``/``clone`` take new keywords, ``string_to_seed``
moved, adapters are rebuilt by prefetch).

Modules:

- :mod:`.probes` — capability probes and names that moved (seed hashing, the patch compute dtype, schema
  fields, optional io types such as core's ``BOUNDING_BOX``, CLI flags);
- :mod:`.weights` — where a weight lives (backup-aware) and **the** patch-weight computation that merges, bakes
  and expert switches share (:func:`.weights.patched_weight`);
- :mod:`.finite` — **the** NaN/Inf scan (loaders, merges, the sampling guards);
- :mod:`.patchers` — patcher kinds (classic / low-VRAM / dynamic VRAM), their patch slots, the ON_LOAD callback
  that applies patches ComfyUI's loaders leave out;
- :mod:`.hooks` — wrapper and callback registration (once per patcher), attachments;
- :mod:`.context_windows` — core context windows on frames-as-batch latents where the handler cannot take them;
- :mod:`.sampling` — model-sampling facts (prediction type, the model's own timestep of a sigma), the sampler
  base class, conditioning helpers;
- :mod:`.schema` — V3 schema compatibility (combo checks 0.3.75 lacks, search aliases where the host has them);
- :mod:`.lora` — LoRA files as core's LoraLoader reads them (key maps, patch tuples).
"""
