"""EDG's expert formulas written literally (float32, per tensor): what the lazy merges must reproduce."""
from __future__ import annotations

import torch

from i2v_motion.merging.ops import dare

def edg_dynamics(base: torch.Tensor, finetune: torch.Tensor, *, alpha_d: float = 0.25, beta_d: float = 0.75,
                 p: float = 0.7, seed: int = 0, key: str = "", tag: str = "edg.dynamics",
                 keep_1d: bool = True) -> torch.Tensor:
    """Dynamics expert, literal formula: θ_base + β_d·DARE_p(α_d·(θ_base − θ_ft)) (float32)."""
    b = base.to(torch.float32)
    d = dare(float(alpha_d) * (b - finetune.to(torch.float32)), p, seed=seed, key=key, tag=tag, keep_1d=keep_1d)
    return b + float(beta_d) * d


def edg_control(base: torch.Tensor, finetune: torch.Tensor, *, alpha_c: float = 1.0, beta_c: float = 0.25,
                p: float = 0.7, seed: int = 0, key: str = "", tag: str = "edg.control",
                keep_1d: bool = True) -> torch.Tensor:
    """Control expert, literal formula: α_c·θ_ft + β_c·DARE_p(θ_ft − θ_base) (float32)."""
    f = finetune.to(torch.float32)
    d = dare(f - base.to(torch.float32), p, seed=seed, key=key, tag=tag, keep_1d=keep_1d)
    return float(alpha_c) * f + float(beta_c) * d
