"""Nodes: task vectors, task arithmetic / DARE / TIES, EDG experts, bake a merged model to .safetensors.

Every merge is lazy (per-key ComfyUI weight patches computed when the model loads) and seeded per key.
"""
from __future__ import annotations

import json
import logging
import os

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io, ui

from ..comfy_bridge.probes import cli_flag
from ..limits import check_path_text
from ..merging.bake import OUT_DTYPES, bake_model, clean_stale_partials
from ..merging.filters import PRESET_HELP, PRESETS
from ..merging.lora import make_lora_task_vector
from ..merging.methods import METHODS, method_help
from ..merging.patches import apply_task_vectors, edg_experts, make_task_vector

log = logging.getLogger("i2v_motion")

TaskVectorType = io.Custom("I2V_TASK_VECTOR")
CATEGORY = "i2v_motion/merging"
MAX_TASK_VECTORS = 4
SEED_MAX = 0xFFFFFFFFFFFFFFFF
BAKE_FOLDERS = ("output", "diffusion_models")

_FILTER_TIP = "Which weights take part. " + "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()) + "."
_REGEX_TIP = ("Regular expression searched in ModelPatcher keys (e.g. 'input_blocks\\.1\\.' or 'attn2'). With the "
              "'custom' preset it is the filter; with another preset it narrows it further (AND). Empty: no narrowing.")


def _filter_inputs(partial: bool = False) -> list:
    out = [
        io.Combo.Input("filter", options=list(PRESETS), default="all", tooltip=_FILTER_TIP),
        io.String.Input("regex", default="", multiline=False, tooltip=_REGEX_TIP),
    ]
    if partial:
        out.append(io.Boolean.Input(
            "allow_partial", default=False, optional=True,
            tooltip="Off: models whose selected weights differ (another variant, e.g. 256 vs 512) are an error. On: "
                    "merge only the weights both have; the skipped ones are listed on the node."))
    return out


def _skipped_report(tv) -> str | None:
    skipped = tv.info.get("skipped_keys") or []
    if not skipped:
        return None
    shown = "\n".join(skipped[:20]) + (f"\n… +{len(skipped) - 20} more" if len(skipped) > 20 else "")
    return f"allow_partial: {len(skipped)} weight(s) exist in only one model and were skipped:\n{shown}"


def _dare_inputs(default_p: float) -> list:
    return [
        io.Float.Input("p", default=default_p, min=0.0, max=0.999, step=0.01,
                       tooltip="DARE drop rate: each delta element is dropped with probability p and the rest "
                               "rescaled by 1/(1-p). Must be in [0, 1); 0 disables DARE."),
        io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=False,
                     tooltip="Seed of the DARE masks; each key's mask comes from (seed, key), so the weights are "
                             "bit-identical whatever the load order or low-VRAM mode."),
        io.Boolean.Input("keep_1d", default=True,
                         tooltip="Leave 1-D tensors (biases, norm gains) undropped, as the EDG release does."),
    ]


class TaskVector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_TaskVector",
            display_name="Task Vector (fine-tune − base)",
            category=CATEGORY,
            description="τ = θ_finetune − θ_base over the selected diffusion-model weights. Lazy: holds references "
                        "to both models; nothing is computed until a merged model loads.",
            inputs=[
                io.Model.Input("base", tooltip="The model the fine-tune started from (e.g. DynamiCrafter 512)."),
                io.Model.Input("finetune",
                               tooltip="The fine-tuned model (e.g. DynamiCrafter-CIL-512); same architecture."),
                *_filter_inputs(partial=True),
            ],
            outputs=[TaskVectorType.Output(display_name="task_vector",
                                           tooltip="Task vector for Apply Task Vectors.")],
        )

    @classmethod
    def execute(cls, base, finetune, filter: str = "all", regex: str = "", allow_partial: bool = False) -> io.NodeOutput:
        tv = make_task_vector(base, finetune, filter, regex, allow_partial=allow_partial)
        log.info("task vector: %d keys, %.1f M parameters (%s)", len(tv), tv.num_params / 1e6, filter)
        report = _skipped_report(tv)
        return io.NodeOutput(tv, ui=ui.PreviewText(report)) if report else io.NodeOutput(tv)


class LoraTaskVector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_LoraTaskVector",
            display_name="LoRA as Task Vector",
            category=CATEGORY,
            description="A LoRA file as a task vector τ = α/r·B·A over the model it is for, computed per key when a "
                        "merged model loads (core's own LoRA arithmetic): extrapolate it (weight > 1, negative), DARE "
                        "it, or TIES-combine several LoRAs in Apply Task Vectors. With method sum and weight w the "
                        "weights equal Load LoRA (model only) at strength w.",
            inputs=[
                io.Model.Input("model", tooltip="The model the LoRA was trained on (e.g. Wan 2.1 I2V 14B for a Wan 2.1 "
                                                "I2V LoRA); the task vector's keys are read with this model's key map."),
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras"),
                               tooltip="A LoRA in models/loras, in any format core's LoRA loaders read (kohya "
                                       "lora_unet_*, diffusers/PEFT lora_A/lora_B, LoCon, LoHa, LoKr); DoRA is refused "
                                       "(it rescales the base weight, not a task vector)."),
                *_filter_inputs(),
            ],
            outputs=[TaskVectorType.Output(display_name="task_vector",
                                           tooltip="Task vector for Apply Task Vectors (with fine-tune task vectors "
                                                   "or other LoRAs of the same model).")],
        )

    @classmethod
    def execute(cls, model, lora_name: str, filter: str = "all", regex: str = "") -> io.NodeOutput:
        path = folder_paths.get_full_path("loras", lora_name)
        if path is None:
            raise ValueError(f"LoRA {lora_name!r} not found in models/loras")
        tv = make_lora_task_vector(model, path, filter, regex)
        log.info("LoRA task vector %s: %d keys, %.1f M parameters (%s)", lora_name, len(tv), tv.num_params / 1e6, filter)
        return io.NodeOutput(tv)


class ApplyTaskVectors(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        tv_inputs = []
        for i in range(1, MAX_TASK_VECTORS + 1):
            tv_inputs += [
                TaskVectorType.Input(f"task_vector_{i}", optional=i > 1,
                                     tooltip=f"Task vector {i}" + (" (optional)." if i > 1 else ".")),
                io.Float.Input(f"weight_{i}", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip=f"Weight w{i} of task vector {i}: 1 applies the fine-tune, 0 nothing, "
                                       "negative reverses it (EDG extrapolation: -0.25), >1 extrapolates past it."),
            ]
        return io.Schema(
            node_id="I2VMotion_ApplyTaskVectors",
            display_name="Apply Task Vectors",
            category=CATEGORY,
            description="θ = θ_model + Σ wᵢ·τᵢ, optionally through DARE or TIES. Lazy weight patches on a clone of "
                        "the model; stacks with LoRAs and core merges.",
            inputs=[
                io.Model.Input("model", tooltip="The model to add the task vectors to (usually their base)."),
                *tv_inputs,
                io.Combo.Input("method", options=list(METHODS), default="sum",
                               tooltip=method_help()),
                *_dare_inputs(0.7),
                io.Float.Input("density", default=0.2, min=0.001, max=1.0, step=0.01,
                               tooltip="TIES: fraction k of each task vector's entries kept (largest magnitude) "
                                       "per tensor. Used by method 'ties' only."),
            ],
            outputs=[io.Model.Output(display_name="MODEL")],
        )

    @classmethod
    def execute(cls, model, task_vector_1, weight_1: float = 1.0, task_vector_2=None, weight_2: float = 1.0,
                task_vector_3=None, weight_3: float = 1.0, task_vector_4=None, weight_4: float = 1.0,
                method: str = "sum", p: float = 0.7, seed: int = 0, keep_1d: bool = True,
                density: float = 0.2) -> io.NodeOutput:
        pairs = [(task_vector_1, weight_1), (task_vector_2, weight_2), (task_vector_3, weight_3),
                 (task_vector_4, weight_4)]
        tvs = [t for t, _ in pairs if t is not None]
        ws = [w for t, w in pairs if t is not None]
        out = apply_task_vectors(model, tvs, ws, method=method, p=p, seed=seed, keep_1d=keep_1d, density=density)
        return io.NodeOutput(out)


class EDGExperts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_EDGExperts",
            display_name="EDG Experts (dynamics / control)",
            category=CATEGORY,
            description="EDG (CVPR 2025) experts from a base and a fine-tune, with the released coefficients as "
                        "defaults. dynamics = θ_base + β_d·DARE_p(α_d·(θ_base − θ_ft)) for high noise; control = "
                        "α_c·θ_ft + β_c·DARE_p(θ_ft − θ_base) for low noise. Independent seeded masks; lazy.",
            inputs=[
                io.Model.Input("base", tooltip="Base model θ_base (e.g. DynamiCrafter 512)."),
                io.Model.Input("finetune", tooltip="Fine-tune θ_ft (the release uses DynamiCrafter-CIL-512)."),
                io.Float.Input("alpha_d", default=0.25, min=-10.0, max=10.0, step=0.01,
                               tooltip="Dynamics expert: extrapolation strength α_d away from the fine-tune."),
                io.Float.Input("beta_d", default=0.75, min=-10.0, max=10.0, step=0.01,
                               tooltip="Dynamics expert: scale β_d of the DARE'd extrapolation delta."),
                io.Float.Input("alpha_c", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="Control expert: weight α_c of the fine-tune."),
                io.Float.Input("beta_c", default=0.25, min=-10.0, max=10.0, step=0.01,
                               tooltip="Control expert: scale β_c of the DARE'd task vector θ_ft − θ_base."),
                *_dare_inputs(0.7),
                *_filter_inputs(partial=True),
            ],
            outputs=[io.Model.Output("dynamics", display_name="dynamics",
                                     tooltip="Dynamics expert (use for the high-noise steps, t > 500)."),
                     io.Model.Output("control", display_name="control",
                                     tooltip="Control expert (use for the low-noise steps, t ≤ 500).")],
        )

    @classmethod
    def execute(cls, base, finetune, alpha_d: float = 0.25, beta_d: float = 0.75, alpha_c: float = 1.0,
                beta_c: float = 0.25, p: float = 0.7, seed: int = 0, keep_1d: bool = True, filter: str = "all",
                regex: str = "", allow_partial: bool = False) -> io.NodeOutput:
        dyn, con, tv = edg_experts(base, finetune, alpha_d=alpha_d, beta_d=beta_d, alpha_c=alpha_c, beta_c=beta_c,
                                   p=p, seed=seed, keep_1d=keep_1d, preset=filter, regex=regex,
                                   allow_partial=allow_partial)
        report = _skipped_report(tv)
        return io.NodeOutput(dyn, con, ui=ui.PreviewText(report)) if report else io.NodeOutput(dyn, con)


def _bake_dir(folder: str) -> str:
    """output/, or models/diffusion_models (ComfyUI lists models/unet first for that folder name)."""
    if folder == "output":
        return folder_paths.get_output_directory()
    if folder == "diffusion_models":
        paths = folder_paths.get_folder_paths("diffusion_models")
        named = [p for p in paths if os.path.basename(os.path.normpath(p)) == "diffusion_models"]
        return (named or paths)[0]
    raise ValueError(f"folder must be one of {', '.join(BAKE_FOLDERS)}; got {folder!r}")


def clean_bake_partials() -> list[str]:
    """Remove what bakes killed mid-way left in the bake folders (run when the pack loads and before a bake)."""
    removed = []
    for folder in BAKE_FOLDERS:
        try:
            root = _bake_dir(folder)
        except Exception:  # noqa: BLE001 - folder_paths not configured (outside a server)
            continue
        for dirpath, _dirs, _files in os.walk(root):
            removed += clean_stale_partials(dirpath)
    for path in removed:
        log.info("removed the temporary file of an interrupted bake: %s", path)
    return removed


class BakeMerged(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_BakeMerged",
            display_name="Bake Merged Model (.safetensors)",
            category=CATEGORY,
            description="Writes the MODEL's diffusion model with all its patches applied (merges, LoRAs, core merges) "
                        "to .safetensors, one tensor at a time, with the merge recipe in the metadata. DynamiCrafter "
                        "models are saved under official key names, so the pack's loader reads them back.",
            inputs=[
                io.Model.Input("model", tooltip="The (merged) model to bake."),
                io.String.Input("filename_prefix", default="i2v_motion/merged",
                                tooltip="File name prefix (sub-folders allowed); a counter and .safetensors "
                                        "are added."),
                io.Combo.Input("folder", options=list(BAKE_FOLDERS), default="output",
                               tooltip="output: ComfyUI's output folder. diffusion_models: models/diffusion_models, "
                                       "so the file appears in the loaders' lists."),
                io.Combo.Input("dtype", options=list(OUT_DTYPES), default="keep",
                               tooltip="Storage dtype: keep each weight's dtype, or convert floating weights."),
            ],
            outputs=[io.String.Output(display_name="path", tooltip="Absolute path of the written file.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, filename_prefix: str = "i2v_motion/merged", folder: str = "output",
                dtype: str = "keep") -> io.NodeOutput:
        prefix = check_path_text(filename_prefix.strip(), f"filename_prefix {filename_prefix[:80]!r}")
        if not prefix or os.path.basename(prefix.replace("\\", "/")) in ("", ".", ".."):
            raise ValueError(f"filename_prefix {filename_prefix!r} has no file name: give e.g. 'i2v_motion/merged'")
        out_dir = _bake_dir(folder)
        try:
            full_dir, filename, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir)
        except OSError as e:
            raise ValueError(f"cannot write to {os.path.join(out_dir, os.path.dirname(prefix))}: "
                             f"{e.strerror or e}") from None
        except Exception as e:  # ComfyUI refuses prefixes that leave the folder
            raise ValueError(f"filename_prefix {filename_prefix!r}: {e}") from None
        path = os.path.join(full_dir, f"{filename}_{counter:05}_.safetensors")
        clean_stale_partials(full_dir)
        extra = {}
        prompt = getattr(getattr(cls, "hidden", None), "prompt", None)
        if prompt is not None and not cli_flag("disable_metadata", False):
            extra["prompt"] = json.dumps(prompt)
        pbar = comfy.utils.ProgressBar(1)
        device = model.load_device if comfy.model_management.get_torch_device().type != "cpu" else "cpu"

        def progress(i: int, n: int) -> None:
            pbar.update_absolute(i, n)

        try:
            summary = bake_model(model, path, out_dtype=dtype, extra_metadata=extra, device=device, progress=progress,
                                 check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
        except PermissionError:
            raise ValueError(f"cannot write to {full_dir}: permission denied; choose the other folder or a writable "
                             f"location for ComfyUI's {folder} folder") from None
        except OSError as e:
            raise ValueError(f"cannot write {os.path.basename(path)} to {full_dir}: {e.strerror or e}") from None
        msg = f"baked {summary['tensors']} tensors ({summary['bytes'] / 2**30:.2f} GiB) to {path}"
        log.info(msg)
        return io.NodeOutput(path, ui=ui.PreviewText(msg))


NODES = [TaskVector, LoraTaskVector, ApplyTaskVectors, EDGExperts, BakeMerged]
