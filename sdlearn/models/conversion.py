"""Our U-Net and diffusers' U-Nets: one configuration to the other, and the weights across.

    config = diffusers_config(UNetConfig(...))       # keyword arguments of UNet2DModel / UNet2DConditionModel
    twin = to_diffusers(model)                       # the diffusers U-Net with our model's weights
    model = from_diffusers(pipe.unet)                # our U-Net with a diffusers U-Net's weights
    layout = sd15_unet_config()                      # Stable Diffusion 1.5's layout, as a UNetConfig

`sdlearn.models.unet.UNet` names its modules as diffusers does, so a state dict moves between
the two without renaming a key; what differs is the configuration. `UNetConfig` names the
choices this course teaches, diffusers' configs name their block types ("CrossAttnDownBlock2D",
...) and many settings this U-Net does not implement: `config_from_diffusers` refuses those by
name rather than loading weights into a network that would compute something else.
Lesson 07 checks both directions, weight for weight.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from sdlearn.models.unet import UNet, UNetConfig


def diffusers_config(cfg: UNetConfig) -> dict:
    """The keyword arguments of the diffusers U-Net with this layout (UNet2DModel or UNet2DConditionModel)."""
    levels = len(cfg.block_out_channels)
    common = dict(sample_size=cfg.sample_size, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
                  block_out_channels=cfg.block_out_channels, layers_per_block=cfg.layers_per_block,
                  norm_num_groups=cfg.norm_num_groups, norm_eps=cfg.norm_eps, flip_sin_to_cos=cfg.flip_sin_to_cos,
                  freq_shift=cfg.freq_shift, num_class_embeds=cfg.num_class_embeds, dropout=cfg.dropout)
    if cfg.conditional:
        if not cfg.mid_attention:
            raise ValueError("UNet2DConditionModel has no middle block of two ResNets without attention; "
                             "set mid_attention=True")
        return dict(common,
                    down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D"
                                           for a in cfg.attention_levels),
                    up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D"
                                         for a in reversed(cfg.attention_levels)),
                    mid_block_type="UNetMidBlock2DCrossAttn", cross_attention_dim=cfg.cross_attention_dim,
                    # diffusers' `attention_head_dim` of this class is, for historical reasons, the number of heads
                    attention_head_dim=tuple(cfg.heads(level) for level in range(levels)),
                    transformer_layers_per_block=cfg.transformer_layers_per_block,
                    use_linear_projection=cfg.use_linear_projection)
    head_dims = {cfg.block_out_channels[level] // cfg.heads(level) for level in range(levels)
                 if cfg.attention_levels[level] or (cfg.mid_attention and level == levels - 1)}
    if len(head_dims) > 1:
        raise ValueError(f"UNet2DModel uses one attention_head_dim for every level; this layout has "
                         f"{sorted(head_dims)}")
    return dict(common,
                down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention_levels),
                up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention_levels)),
                attention_head_dim=head_dims.pop() if head_dims else cfg.attention_head_dim,
                add_attention=cfg.mid_attention)


_DOWN = {"DownBlock2D": False, "AttnDownBlock2D": True, "CrossAttnDownBlock2D": True}
_UP = {"UpBlock2D": False, "AttnUpBlock2D": True, "CrossAttnUpBlock2D": True}
# settings of diffusers' U-Nets that this U-Net does not implement, with the value it assumes
_ASSUMED = {"act_fn": "silu", "center_input_sample": False, "downsample_padding": 1, "mid_block_scale_factor": 1,
            "resnet_time_scale_shift": "default", "time_embedding_type": "positional", "class_embed_type": None,
            "addition_embed_type": None, "encoder_hid_dim": None, "only_cross_attention": False,
            "dual_cross_attention": False, "upcast_attention": False, "time_cond_proj_dim": None,
            "class_embeddings_concat": False, "conv_in_kernel": 3, "conv_out_kernel": 3,
            "resnet_skip_time_act": False, "resnet_out_scale_factor": 1.0, "attention_type": "default",
            "reverse_transformer_layers_per_block": None, "num_attention_heads": None, "attn_norm_num_groups": None,
            "downsample_type": "conv", "upsample_type": "conv", "time_embedding_dim": None,
            "timestep_post_act": None, "projection_class_embeddings_input_dim": None}


def config_from_diffusers(config) -> UNetConfig:
    """A `UNetConfig` from the config of a diffusers UNet2DModel or UNet2DConditionModel (dict or FrozenDict).

    Raises a ValueError naming any setting this U-Net does not implement.
    """
    config = dict(config)
    unsupported = [f"{key}={config[key]!r}" for key, value in _ASSUMED.items()
                   if key in config and config[key] != value]
    blocks = list(config.get("down_block_types", ())) + list(config.get("up_block_types", ()))
    unknown = [b for b in blocks if b not in _DOWN and b not in _UP]
    if unknown:
        unsupported.append(f"block types {unknown}")
    if unsupported:
        raise ValueError("this U-Net does not implement these diffusers settings: " + ", ".join(unsupported))
    attention_levels = tuple(_DOWN[b] for b in config["down_block_types"])
    if tuple(_UP[b] for b in config["up_block_types"]) != tuple(reversed(attention_levels)):
        raise ValueError(f"up_block_types {config['up_block_types']} do not mirror down_block_types "
                         f"{config['down_block_types']}")
    conditional = "cross_attention_dim" in config
    kwargs = dict(sample_size=config.get("sample_size") or 32, in_channels=config["in_channels"],
                  out_channels=config["out_channels"], block_out_channels=tuple(config["block_out_channels"]),
                  layers_per_block=config["layers_per_block"], attention_levels=attention_levels,
                  norm_num_groups=config["norm_num_groups"], norm_eps=config["norm_eps"],
                  flip_sin_to_cos=config["flip_sin_to_cos"], freq_shift=config["freq_shift"],
                  num_class_embeds=config.get("num_class_embeds"), dropout=config.get("dropout", 0.0))
    if conditional:
        if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
            raise ValueError(f"mid_block_type {config['mid_block_type']!r} is not implemented")
        heads = config["attention_head_dim"]      # the number of heads, in this class (see diffusers_config)
        heads = tuple(heads) if isinstance(heads, (list, tuple)) else heads
        layers = config.get("transformer_layers_per_block", 1)
        if isinstance(layers, (list, tuple)):
            if len(set(layers)) != 1:
                raise ValueError(f"transformer_layers_per_block {layers}: one number for all levels is implemented")
            layers = layers[0]
        cross_dim = config["cross_attention_dim"]
        if isinstance(cross_dim, (list, tuple)):
            raise ValueError(f"cross_attention_dim {cross_dim}: one context size for all levels is implemented")
        return UNetConfig(**kwargs, num_attention_heads=heads, cross_attention_dim=cross_dim,
                          transformer_layers_per_block=layers,
                          use_linear_projection=config.get("use_linear_projection", False), mid_attention=True)
    head_dim = config.get("attention_head_dim") or 8
    return UNetConfig(**kwargs, attention_head_dim=head_dim, mid_attention=config.get("add_attention", True))


def load_state_dict_strict(model: nn.Module, state_dict: dict) -> None:
    """Load weights, naming every missing and unexpected key and every shape mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong_shape = [f"{k}: {tuple(state_dict[k].shape)} given, {tuple(own[k].shape)} expected"
                   for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_first(unexpected)}")
    if wrong_shape:
        problems.append(f"shape mismatches ({len(wrong_shape)}): {_first(wrong_shape)}")
    if problems:
        raise ValueError("the state dict does not fit this U-Net's configuration; " + "; ".join(problems) +
                         ". Build the U-Net from the checkpoint's own config (config_from_diffusers).")
    model.load_state_dict(state_dict)


def _first(items, n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def from_diffusers(diffusers_unet) -> UNet:
    """Our U-Net with the configuration and weights of a diffusers UNet2DModel or UNet2DConditionModel."""
    model = UNet(config_from_diffusers(diffusers_unet.config))
    load_state_dict_strict(model, diffusers_unet.state_dict())
    dtype = next(diffusers_unet.parameters()).dtype
    return model if dtype == torch.float32 else model.to(dtype)


def to_diffusers(model: UNet):
    """The diffusers U-Net (UNet2DModel or UNet2DConditionModel) with this model's configuration and weights."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    cls = UNet2DConditionModel if model.config.conditional else UNet2DModel
    twin = cls(**diffusers_config(model.config))
    load_state_dict_strict(twin, model.state_dict())
    dtype = next(model.parameters()).dtype
    return twin if dtype == torch.float32 else twin.to(dtype)


# The published configuration of Stable Diffusion 1.5's U-Net (unet/config.json of
# stable-diffusion-v1-5/stable-diffusion-v1-5), the settings that shape the network.
SD15_UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}


def sd15_unet_config() -> UNetConfig:
    """Stable Diffusion 1.5's U-Net layout: 4x64x64 latents, 768-dimensional text context, 859.5M parameters."""
    config = {k: v for k, v in SD15_UNET_CONFIG.items() if not k.startswith("_")}
    return config_from_diffusers(config)
