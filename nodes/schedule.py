"""Nodes: time-decoupled expert injection (EDG stage 3) — several experts in one MODEL, switched by noise level."""
from __future__ import annotations

from comfy_api.latest import io

from ..experts import MODES, UNITS, expert_schedule, parse_points

CATEGORY = "i2v_motion/merging"
MAX_EXPERTS = 4

_UNIT_TIP = ("timestep: switch at a timestep of the model's family, independent of the number of steps: DDPM "
             "timesteps for DynamiCrafter and SVD (999 = pure noise … 0 = clean), the model's own timestep for flow "
             "models (Wan: σ·1000, 1000 = pure noise; Wan 2.2 A14B's official boundary is 900). fraction: switch after "
             "that share of the sampling run's steps.")


class ExpertSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="I2VMotion_ExpertSchedule",
            display_name="Expert Schedule (dynamics → control)",
            category=CATEGORY,
            description="One MODEL that samples the high-noise steps with the first expert and the low-noise steps "
                        "with the second (EDG: dynamics while t > 500, control from t ≤ 500), each with its own "
                        "Resampler image tokens. One copy of the weights: at the switch the differing weights are "
                        "rewritten in place once per run and put back after it (also after an interrupt). Works "
                        "with KSampler, KSamplerAdvanced and SamplerCustomAdvanced.",
            inputs=[
                io.Model.Input("high_noise",
                               tooltip="Expert for the high-noise steps (EDG: the 'dynamics' output of EDG Experts). "
                                       "Must share its base with low_noise (same loaded model, different patches)."),
                io.Model.Input("low_noise",
                               tooltip="Expert for the low-noise steps (EDG: the 'control' output of EDG Experts)."),
                io.Combo.Input("switch_unit", options=list(UNITS), default="timestep", tooltip=_UNIT_TIP),
                io.Float.Input("switch_timestep", default=500.0, min=0.0, max=1000.0, step=1.0,
                               tooltip="unit 'timestep': high_noise runs while t > this, low_noise from t ≤ this "
                                       "(EDG on DynamiCrafter: 500, i.e. steps 1–25 of 50 trailing DDIM steps; Wan 2.2 "
                                       "A14B: 900, the official boundary, in Wan's own timestep σ·1000)."),
                io.Float.Input("switch_fraction", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="unit 'fraction': high_noise runs the first round(fraction × steps) steps of "
                                       "the run, low_noise the rest (0: low_noise only; 1: high_noise only)."),
                io.Combo.Input("mode", options=list(MODES), default="hard",
                               tooltip="hard: one expert per step (the released method). soft: both experts every "
                                       "step blended with CFG weights w_dyn = cfg·t/1000, w_con = cfg − w_dyn (the "
                                       "release's unused variant): 2× the sampling time, and the second expert's "
                                       "differing weights stay resident during the run. Soft ignores the switch."),
            ],
            outputs=[io.Model.Output(display_name="MODEL",
                                     tooltip="The scheduled model; use it like any MODEL (LoRAs added after it apply "
                                             "in both phases).")],
        )

    @classmethod
    def execute(cls, high_noise, low_noise, switch_unit: str = "timestep", switch_timestep: float = 500.0,
                switch_fraction: float = 0.5, mode: str = "hard") -> io.NodeOutput:
        point = switch_timestep if switch_unit == "timestep" else switch_fraction
        out = expert_schedule([high_noise, low_noise], [point], unit=switch_unit, mode=mode,
                              names=["high_noise", "low_noise"])
        return io.NodeOutput(out)


class ExpertScheduleMulti(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        experts = []
        for i in range(1, MAX_EXPERTS + 1):
            experts.append(io.Model.Input(
                f"expert_{i}", optional=i > 2,
                tooltip=f"Expert {i}" + (" (highest noise)." if i == 1 else " (optional)." if i > 2 else ".")
                        + " All experts must share one base model."))
        return io.Schema(
            node_id="I2VMotion_ExpertScheduleMulti",
            display_name="Expert Schedule (several experts)",
            category=CATEGORY,
            description="Like Expert Schedule with up to four experts in noise order (expert_1 at the highest "
                        "noise) and one switch point between each pair. Hard switching only.",
            inputs=[
                *experts,
                io.Combo.Input("switch_unit", options=list(UNITS), default="timestep", tooltip=_UNIT_TIP),
                io.String.Input("switch_points", default="500", multiline=False,
                                tooltip="One switch point per pair of connected experts, comma separated: DDPM "
                                        "timesteps decreasing (e.g. '750, 500, 250'; expert i runs while t > point "
                                        "i) or fractions increasing (e.g. '0.25, 0.5, 0.75')."),
            ],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="The scheduled model.")],
        )

    @classmethod
    def execute(cls, expert_1, expert_2, switch_unit: str = "timestep", switch_points: str = "500",
                expert_3=None, expert_4=None) -> io.NodeOutput:
        pairs = [("expert_1", expert_1), ("expert_2", expert_2), ("expert_3", expert_3), ("expert_4", expert_4)]
        if expert_4 is not None and expert_3 is None:
            raise ValueError("expert_4 is connected but expert_3 is not; connect the experts in noise order")
        used = [(n, m) for n, m in pairs if m is not None]
        out = expert_schedule([m for _, m in used], parse_points(switch_points), unit=switch_unit, mode="hard",
                              names=[n for n, _ in used])
        return io.NodeOutput(out)


NODES = [ExpertSchedule, ExpertScheduleMulti]
