"""Nodes: the official DynamiCrafter sampler (SAMPLER), its schedule (SIGMAS), video-wide guidance rescale."""
from __future__ import annotations

from comfy_api.latest import io

from ..backbones.sampling import SPACINGS, official_sampler, official_sigmas, rescale_cfg_video


class DynamiCrafterSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_DynamiCrafterSampler",
            display_name="DynamiCrafter Official Sampler (DDIM)",
            category="i2v_motion/sampling",
            description="The official DynamiCrafter DDIM step with guidance rescale on v over each whole video and "
                        "dynamic rescale of x0, starting from pure noise x_T ~ N(0, I) as the official sampler. Use "
                        "with SamplerCustom/SamplerCustomAdvanced and DynamiCrafter Official Schedule (ComfyUI's "
                        "'simple' scheduler truncates the official timesteps when the step count does not divide "
                        "1000); CFG 7.5 in the guider.",
            inputs=[
                io.Float.Input("eta", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="DDIM eta: 1.0 in the official and EDG scripts, 0 for deterministic DDIM."),
                io.Float.Input("guidance_rescale", default=0.7, min=0.0, max=1.0, step=0.01,
                               tooltip="Rescales the guided v to the conditional v's std over each whole video "
                                       "(official 0.7; 0 for the 256 model)."),
                io.Boolean.Input("dynamic_rescale", default=True,
                                 tooltip="Scale pred_x0 by scale_arr[t_prev]/scale_arr[t] as the official 512/1024 "
                                         "models (off for 256)."),
                io.Float.Input("base_scale", default=0.7, min=0.05, max=1.0, step=0.01,
                               tooltip="Dynamic-rescale floor: 0.7 for the 512 model, 0.3 for 1024."),
            ],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, eta: float, guidance_rescale: float, dynamic_rescale: bool, base_scale: float) -> io.NodeOutput:
        return io.NodeOutput(official_sampler(eta, guidance_rescale, base_scale if dynamic_rescale else None))


class TrailingSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_TrailingSchedule",
            display_name="DynamiCrafter Official Schedule (trailing / uniform)",
            category="i2v_motion/sampling",
            description="The official DDIM timesteps as SIGMAS for any step count: uniform_trailing (512/1024/interp: "
                        "999, 979, …, 19 for 50 steps; rounded as the official code, where ComfyUI's 'simple' "
                        "truncates) or uniform (the 256 scripts: 901, 801, …, 1 for 10 steps).",
            inputs=[
                io.Model.Input("model", tooltip="The model whose noise schedule the sigmas come from."),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip="DDIM steps (official: 50)."),
                io.Combo.Input("spacing", options=list(SPACINGS), default="uniform_trailing", optional=True,
                               tooltip="uniform_trailing: the 512/1024/interp scripts (first step at t = 999). "
                                       "uniform: the 256 scripts (t = 1 + k·(1000 // steps), first step below 999; "
                                       "like the official code, more than `steps` steps when steps does not "
                                       "divide 1000)."),
            ],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, model, steps: int, spacing: str = "uniform_trailing") -> io.NodeOutput:
        return io.NodeOutput(official_sigmas(model.get_model_object("model_sampling"), steps, spacing))


class VideoRescaleCFG(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_VideoRescaleCFG",
            display_name="Video Rescale CFG (whole clip)",
            category="i2v_motion/sampling",
            description="Guidance rescale as in DynamiCrafter: std over all frames of each video, not per frame "
                        "(core RescaleCFG works per frame on frames-as-batch latents). Works with any stock sampler.",
            inputs=[
                io.Model.Input("model", tooltip="Model to patch (a clone is patched; the input is untouched)."),
                io.Float.Input("multiplier", default=0.7, min=0.0, max=1.0, step=0.01,
                               tooltip="Guidance rescale strength (official 0.7)."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, multiplier: float) -> io.NodeOutput:
        m = model.clone()
        m.set_model_sampler_cfg_function(lambda args: rescale_cfg_video(args, multiplier))
        return io.NodeOutput(m)


NODES = [DynamiCrafterSampler, TrailingSchedule, VideoRescaleCFG]
