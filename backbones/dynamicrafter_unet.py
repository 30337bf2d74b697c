"""DynamiCrafter's 3D UNet and image Resampler, built from ``comfy.ops`` layers and ComfyUI attention.

Module and parameter names follow the official checkpoints exactly (``temopral_conv`` included), so
official state dicts load unchanged. Video is carried as frames-as-batch ``[B*T, C, H, W]`` (as core
SVD does); temporal layers fold it to ``[B, C, T, H, W]``. The Resampler lives inside the UNet as
``image_proj_model`` so weight patches, merges and LoRAs reach both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange

from comfy.ldm.modules.attention import optimized_attention
from comfy.ldm.modules.diffusionmodules.util import timestep_embedding

from ..runcache import RowMemo, run_store

TEXT_TOKENS = 77
QUERIES_PER_FRAME = 16
IMAGE_TOKENS_STORE = "dynamicrafter.image_tokens"  # the run-cache store of Resampler rows (runcache.RowMemo)


@dataclass
class ResamplerConfig:
    """Shape of the image-token Resampler (official: dim 1024, depth 4, 12×64 heads, 16×16 queries)."""

    dim: int = 1024
    depth: int = 4
    dim_head: int = 64
    heads: int = 12
    num_queries: int = 16
    video_length: int = 16
    embedding_dim: int = 1280
    output_dim: int = 1024
    ff_mult: int = 4


@dataclass
class UNetConfig:
    """Shape of the DynamiCrafter UNet; defaults are the official 512/1024 model."""

    in_channels: int = 8
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (0, 1, 2)
    num_head_channels: int = 64
    context_dim: int = 1024
    temporal_conv: bool = True
    addition_attention: bool = True
    image_cross_attention: bool = True
    image_cross_attention_scale_learnable: bool = False  # True for the 256 model (attn2.alpha)
    fs_condition: bool = True
    default_fs: int = 24
    temporal_length: int = 16
    resampler: ResamplerConfig | None = field(default_factory=ResamplerConfig)


# ----------------------------------------------------------------------------------------------
# building blocks


class CrossAttention(torch.nn.Module):
    """Attention with optional image cross-attention (``to_k_ip``/``to_v_ip``) on the tokens after the text."""

    def __init__(self, query_dim: int, context_dim: int | None, heads: int, dim_head: int,
                 image_cross_attention: bool = False, scale_learnable: bool = False,
                 dtype=None, device=None, operations=None):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = operations.Linear(query_dim, inner, bias=False, dtype=dtype, device=device)
        self.to_k = operations.Linear(context_dim, inner, bias=False, dtype=dtype, device=device)
        self.to_v = operations.Linear(context_dim, inner, bias=False, dtype=dtype, device=device)
        self.to_out = torch.nn.Sequential(operations.Linear(inner, query_dim, dtype=dtype, device=device),
                                          torch.nn.Dropout(0.0))
        self.image_cross_attention = image_cross_attention
        self.scale_learnable = scale_learnable
        if image_cross_attention:
            self.to_k_ip = operations.Linear(context_dim, inner, bias=False, dtype=dtype, device=device)
            self.to_v_ip = operations.Linear(context_dim, inner, bias=False, dtype=dtype, device=device)
            if scale_learnable:
                self.alpha = torch.nn.Parameter(torch.empty((), dtype=dtype, device=device))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        q = self.to_q(x)
        if context is None:  # self-attention
            out = optimized_attention(q, self.to_k(x), self.to_v(x), self.heads)
            return self.to_out(out)
        text = context[:, :TEXT_TOKENS]
        out = optimized_attention(q, self.to_k(text), self.to_v(text), self.heads)
        if self.image_cross_attention and context.shape[1] > TEXT_TOKENS:
            img = context[:, TEXT_TOKENS:]
            out_ip = optimized_attention(q, self.to_k_ip(img), self.to_v_ip(img), self.heads)
            if self.scale_learnable:
                out_ip = out_ip * (torch.tanh(self.alpha.to(out_ip)) + 1)
            out = out + out_ip
        return self.to_out(out)


class GEGLU(torch.nn.Module):
    def __init__(self, dim_in: int, dim_out: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.proj = operations.Linear(dim_in, dim_out * 2, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(torch.nn.Module):
    def __init__(self, dim: int, mult: int = 4, dtype=None, device=None, operations=None):
        super().__init__()
        inner = dim * mult
        self.net = torch.nn.Sequential(GEGLU(dim, inner, dtype=dtype, device=device, operations=operations),
                                       torch.nn.Dropout(0.0),
                                       operations.Linear(inner, dim, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(torch.nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None,
                 image_cross_attention: bool = False, scale_learnable: bool = False,
                 dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.attn1 = CrossAttention(dim, None, heads, dim_head, **kw)
        self.ff = FeedForward(dim, **kw)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head, image_cross_attention, scale_learnable, **kw)
        self.norm1 = operations.LayerNorm(dim, dtype=dtype, device=device)
        self.norm2 = operations.LayerNorm(dim, dtype=dtype, device=device)
        self.norm3 = operations.LayerNorm(dim, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(torch.nn.Module):
    """Per-frame transformer with linear proj_in/proj_out; cross-attends text (+ the frame's image tokens)."""

    def __init__(self, channels: int, heads: int, dim_head: int, context_dim: int,
                 image_cross_attention: bool, scale_learnable: bool, dtype=None, device=None, operations=None):
        super().__init__()
        inner = heads * dim_head
        self.norm = operations.GroupNorm(32, channels, eps=1e-6, affine=True, dtype=dtype, device=device)
        self.proj_in = operations.Linear(channels, inner, dtype=dtype, device=device)
        self.transformer_blocks = torch.nn.ModuleList([BasicTransformerBlock(
            inner, heads, dim_head, context_dim, image_cross_attention, scale_learnable,
            dtype=dtype, device=device, operations=operations)])
        self.proj_out = operations.Linear(inner, channels, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        x_in = x
        x = rearrange(self.norm(x), "b c h w -> b (h w) c")
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context)
        x = self.proj_out(x)
        return rearrange(x, "b (h w) c -> b c h w", h=h, w=w) + x_in


class TemporalTransformer(torch.nn.Module):
    """Self-attention over time at every pixel (attn1 and attn2 both attend over time); Conv1d projections."""

    def __init__(self, channels: int, heads: int, dim_head: int, use_linear: bool = True,
                 dtype=None, device=None, operations=None):
        super().__init__()
        inner = heads * dim_head
        self.use_linear = use_linear  # official: Linear in the UNet blocks, Conv1d(k=1) in init_attn
        self.norm = operations.GroupNorm(32, channels, eps=1e-6, affine=True, dtype=dtype, device=device)
        if use_linear:
            self.proj_in = operations.Linear(channels, inner, dtype=dtype, device=device)
            self.proj_out = operations.Linear(inner, channels, dtype=dtype, device=device)
        else:
            self.proj_in = operations.Conv1d(channels, inner, 1, dtype=dtype, device=device)
            self.proj_out = operations.Conv1d(inner, channels, 1, dtype=dtype, device=device)
        self.transformer_blocks = torch.nn.ModuleList([BasicTransformerBlock(
            inner, heads, dim_head, None, dtype=dtype, device=device, operations=operations)])

    def forward(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        _, _, h, w = x.shape
        x_in = x
        x = self.norm(rearrange(x, "(b t) c h w -> b c t h w", b=batch))  # stats over (t, h, w) per video
        if self.use_linear:
            x = self.proj_in(rearrange(x, "b c t h w -> (b h w) t c"))
        else:
            x = rearrange(self.proj_in(rearrange(x, "b c t h w -> (b h w) c t")), "n c t -> n t c")
        for block in self.transformer_blocks:
            x = block(x)
        if self.use_linear:
            x = rearrange(self.proj_out(x), "n t c -> n c t")
        else:
            x = self.proj_out(rearrange(x, "n t c -> n c t"))
        return rearrange(x, "(b h w) c t -> (b t) c h w", b=batch, h=h, w=w) + x_in


class TemporalConvBlock(torch.nn.Module):
    """Four (GroupNorm, SiLU, Conv3d over time) stages with a residual."""

    def __init__(self, channels: int, dtype=None, device=None, operations=None):
        super().__init__()

        def stage(with_dropout: bool):
            layers = [operations.GroupNorm(32, channels, dtype=dtype, device=device), torch.nn.SiLU()]
            if with_dropout:
                layers.append(torch.nn.Dropout(0.0))
            layers.append(operations.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0), dtype=dtype, device=device))
            return torch.nn.Sequential(*layers)

        self.conv1 = stage(False)
        self.conv2 = stage(True)
        self.conv3 = stage(True)
        self.conv4 = stage(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv4(self.conv3(self.conv2(self.conv1(x))))


class ResBlock(torch.nn.Module):
    def __init__(self, channels: int, emb_channels: int, out_channels: int, temporal_conv: bool,
                 dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.in_layers = torch.nn.Sequential(operations.GroupNorm(32, channels, **kw), torch.nn.SiLU(),
                                             operations.Conv2d(channels, out_channels, 3, padding=1, **kw))
        self.emb_layers = torch.nn.Sequential(torch.nn.SiLU(), operations.Linear(emb_channels, out_channels, **kw))
        self.out_layers = torch.nn.Sequential(operations.GroupNorm(32, out_channels, **kw), torch.nn.SiLU(),
                                              torch.nn.Dropout(0.0),
                                              operations.Conv2d(out_channels, out_channels, 3, padding=1, **kw))
        if out_channels == channels:
            self.skip_connection = torch.nn.Identity()
        else:
            self.skip_connection = operations.Conv2d(channels, out_channels, 1, **kw)
        if temporal_conv:
            self.temopral_conv = TemporalConvBlock(out_channels, operations=operations, **kw)  # sic: official key
        else:
            self.temopral_conv = None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, batch: int) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[..., None, None]
        h = self.skip_connection(x) + self.out_layers(h)
        if self.temopral_conv is not None:
            h = rearrange(h, "(b t) c h w -> b c t h w", b=batch)
            h = rearrange(self.temopral_conv(h), "b c t h w -> (b t) c h w")
        return h


class Downsample(torch.nn.Module):
    def __init__(self, channels: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.op = operations.Conv2d(channels, channels, 3, stride=2, padding=1, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(torch.nn.Module):
    def __init__(self, channels: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.conv = operations.Conv2d(channels, channels, 3, padding=1, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Block(torch.nn.ModuleList):
    """A UNet stage (official ``TimestepEmbedSequential``): dispatches each layer its own inputs."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, batch: int) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb, batch)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, TemporalTransformer):
                x = layer(x, batch)
            else:
                x = layer(x)
        return x


# ----------------------------------------------------------------------------------------------
# Resampler (image tokens)


class PerceiverAttention(torch.nn.Module):
    def __init__(self, dim: int, dim_head: int, heads: int, dtype=None, device=None, operations=None):
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.norm1 = operations.LayerNorm(dim, dtype=dtype, device=device)
        self.norm2 = operations.LayerNorm(dim, dtype=dtype, device=device)
        self.to_q = operations.Linear(dim, inner, bias=False, dtype=dtype, device=device)
        self.to_kv = operations.Linear(dim, inner * 2, bias=False, dtype=dtype, device=device)
        self.to_out = operations.Linear(inner, dim, bias=False, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x, latents = self.norm1(x), self.norm2(latents)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        return self.to_out(optimized_attention(self.to_q(latents), k, v, self.heads))


class Resampler(torch.nn.Module):
    """Perceiver resampler: 257 CLIP-vision tokens → ``num_queries × video_length`` image tokens."""

    def __init__(self, cfg: ResamplerConfig, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.cfg = cfg
        self.latents = torch.nn.Parameter(torch.empty(1, cfg.num_queries * cfg.video_length, cfg.dim, **kw))
        self.proj_in = operations.Linear(cfg.embedding_dim, cfg.dim, **kw)
        self.proj_out = operations.Linear(cfg.dim, cfg.output_dim, **kw)
        self.norm_out = operations.LayerNorm(cfg.output_dim, **kw)
        inner = cfg.dim * cfg.ff_mult
        self.layers = torch.nn.ModuleList([torch.nn.ModuleList([
            PerceiverAttention(cfg.dim, cfg.dim_head, cfg.heads, operations=operations, **kw),
            torch.nn.Sequential(operations.LayerNorm(cfg.dim, **kw),
                                operations.Linear(cfg.dim, inner, bias=False, **kw), torch.nn.GELU(),
                                operations.Linear(inner, cfg.dim, bias=False, **kw)),
        ]) for _ in range(cfg.depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latents = self.latents.to(x).repeat(x.shape[0], 1, 1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


# ----------------------------------------------------------------------------------------------
# the UNet


class DynamiCrafterUNet(torch.nn.Module):
    """The official ``openaimodel3d.UNetModel`` (+ Resampler), frames-as-batch in and out."""

    def __init__(self, config: UNetConfig | None = None, dtype=None, device=None, operations=None, **_):
        super().__init__()
        cfg = config or UNetConfig()
        self.config = cfg
        self.dtype = dtype
        kw = dict(dtype=dtype, device=device, operations=operations)
        mc = cfg.model_channels
        emb_dim = mc * 4
        self.time_embed = torch.nn.Sequential(operations.Linear(mc, emb_dim, dtype=dtype, device=device), torch.nn.SiLU(),
                                              operations.Linear(emb_dim, emb_dim, dtype=dtype, device=device))
        if cfg.fs_condition:
            self.fps_embedding = torch.nn.Sequential(operations.Linear(mc, emb_dim, dtype=dtype, device=device),
                                                     torch.nn.SiLU(),
                                                     operations.Linear(emb_dim, emb_dim, dtype=dtype, device=device))

        def heads_for(ch: int) -> tuple[int, int]:
            return ch // cfg.num_head_channels, cfg.num_head_channels

        def attn_layers(ch: int) -> list[torch.nn.Module]:
            heads, dim_head = heads_for(ch)
            return [SpatialTransformer(ch, heads, dim_head, cfg.context_dim, cfg.image_cross_attention,
                                       cfg.image_cross_attention_scale_learnable, **kw),
                    TemporalTransformer(ch, heads, dim_head, **kw)]

        self.input_blocks = torch.nn.ModuleList([Block([operations.Conv2d(cfg.in_channels, mc, 3, padding=1,
                                                                           dtype=dtype, device=device)])])
        if cfg.addition_attention:
            self.init_attn = Block([TemporalTransformer(mc, 8, cfg.num_head_channels, use_linear=False, **kw)])
        chans = [mc]
        ch = mc
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[torch.nn.Module] = [ResBlock(ch, emb_dim, mult * mc, cfg.temporal_conv, **kw)]
                ch = mult * mc
                if level in cfg.attention_levels:
                    layers += attn_layers(ch)
                self.input_blocks.append(Block(layers))
                chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(Block([Downsample(ch, **kw)]))
                chans.append(ch)
        self.middle_block = Block([ResBlock(ch, emb_dim, ch, cfg.temporal_conv, **kw), *attn_layers(ch),
                                   ResBlock(ch, emb_dim, ch, cfg.temporal_conv, **kw)])
        self.output_blocks = torch.nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), emb_dim, mult * mc, cfg.temporal_conv, **kw)]
                ch = mult * mc
                if level in cfg.attention_levels:
                    layers += attn_layers(ch)
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch, **kw))
                self.output_blocks.append(Block(layers))
        self.out = torch.nn.Sequential(operations.GroupNorm(32, ch, dtype=dtype, device=device), torch.nn.SiLU(),
                                       operations.Conv2d(mc, cfg.out_channels, 3, padding=1, dtype=dtype, device=device))
        self.image_proj_model = Resampler(cfg.resampler, **kw) if cfg.resampler is not None else None

    # -- conditioning helpers ------------------------------------------------------------------
    def image_context(self, context: torch.Tensor, clip_tokens: torch.Tensor | None, frames: int,
                      lead: int = 0, memo: RowMemo | None = None) -> torch.Tensor:
        """Text context ``[B, 77, D]`` + image tokens → per-frame context ``[B*T, L, D]`` (official layout).

        Image tokens are ``Resampler(clip_tokens)``: ``16 × video_length`` of them. When that equals
        ``16 × frames`` each frame sees the text plus its own 16 tokens; otherwise every frame sees the
        text plus all tokens (the official fallback). ``lead`` frames before a context window (ComfyUI's
        causal anchor) take the tokens of the window's first frame. ``memo``: the run's memo of Resampler rows
        (image tokens computed once per video and sampling run, not at every step and CFG pass).
        """
        if clip_tokens is None or self.image_proj_model is None:
            return context.repeat_interleave(frames, dim=0)
        x = clip_tokens.to(context)
        img = self.image_proj_model(x) if memo is None else memo(self.image_proj_model, x)
        own = frames - lead
        if lead and img.shape[1] != QUERIES_PER_FRAME * own:
            own, lead = frames, 0
        if img.shape[1] == QUERIES_PER_FRAME * own:
            text = context[:, :TEXT_TOKENS].repeat_interleave(frames, dim=0)
            img = rearrange(img, "b (t l) c -> b t l c", t=own)
            if lead:
                img = torch.cat([img[:, :1].expand(-1, lead, -1, -1), img], dim=1)
            return torch.cat([text, img.flatten(0, 1)], dim=1)
        return torch.cat([context[:, :TEXT_TOKENS], img], dim=1).repeat_interleave(frames, dim=0)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None,
                clip_tokens: torch.Tensor | None = None, fs: torch.Tensor | int | None = None,
                num_video_frames: int | None = None, transformer_options: dict | None = None, **_) -> torch.Tensor:
        """``x``: ``[B*T, C, H, W]``; ``context``, ``clip_tokens``, ``timesteps`` per frame or per video.

        Per-frame inputs (as ComfyUI's conds arrive: repeated to the frame batch) are reduced to one
        per video by taking every T-th entry. In a context window ``T`` is the window's frame count (a
        causal anchor frame before the window included).
        """
        frames = int(num_video_frames or x.shape[0])
        if x.shape[0] % frames:
            raise ValueError(f"batch of {x.shape[0]} frames is not a multiple of num_video_frames={frames}")
        b = x.shape[0] // frames
        window = (transformer_options or {}).get("context_window")
        lead = 0
        if window is not None and getattr(window, "index_list", None) is not None:
            anchor = getattr(window, "causal_anchor_index", None)
            if anchor is not None and anchor >= 0 and frames == len(window.index_list) + 1:
                lead = 1

        def per_video(v):
            if v is None or not torch.is_tensor(v) or v.ndim == 0:
                return v
            return v[::frames] if v.shape[0] == b * frames and frames > 1 else v

        timesteps = per_video(timesteps)
        if timesteps.ndim == 0 or timesteps.shape[0] == 1:
            timesteps = timesteps.reshape(1).expand(b)
        context = per_video(context)
        clip_tokens = per_video(clip_tokens)
        dtype = x.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))
        if self.config.fs_condition:
            if fs is None:
                fs = self.config.default_fs
            if not torch.is_tensor(fs):
                fs = torch.tensor([fs], device=x.device)
            fs = per_video(fs.reshape(-1))
            if fs.shape[0] == 1:
                fs = fs.expand(b)
            emb = emb + self.fps_embedding(timestep_embedding(fs, self.config.model_channels).to(dtype))
        emb = emb.repeat_interleave(frames, dim=0)
        memo = run_store(transformer_options, IMAGE_TOKENS_STORE, RowMemo)
        ctx = self.image_context(context, clip_tokens, frames, lead, memo).to(dtype)

        h = x
        hs = []
        for i, block in enumerate(self.input_blocks):
            h = block(h, emb, ctx, b)
            if i == 0 and self.config.addition_attention:
                h = self.init_attn(h, emb, ctx, b)
            hs.append(h)
        h = self.middle_block(h, emb, ctx, b)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb, ctx, b)
        return self.out(h)


def init_random_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter with seeded random values (comfy.ops layers start as ``torch.empty``).

    Norm gains get ``1 + 0.1·noise``, biases ``0.1·noise``, other weights ``noise / sqrt(fan_in)`` so
    activations stay finite through a deep random network. For test fixtures and benchmarks only.
    """
    g = torch.Generator().manual_seed(seed)
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    with torch.no_grad():
        for mod in module.modules():
            for name, p in mod.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
                if isinstance(mod, norms) and name == "weight":
                    val = 1.0 + 0.1 * noise
                elif p.ndim <= 1:
                    val = 0.1 * noise
                else:
                    val = noise / math.sqrt(max(1, p[0].numel()))
                p.copy_(val.to(p.dtype))
    return module
