"""A small CLIP: an image encoder and a text encoder trained to agree (Radford et al., 2021).

    model = SmallCLIP(CLIPConfig())
    ids = tokenize(["a photo of a sneaker", "a photo of a bag"])        # sdlearn.tokenizer
    logits = model(images, ids)                  # (B_images, B_texts): scaled cosine similarities
    loss = contrastive_loss(logits)              # symmetric InfoNCE, sdlearn.losses

- The text encoder is a `transformers.CLIPTextModel` in a small configuration, with CLIP's
  real tokenizer and vocabulary (49,408 tokens, 77 positions): the same class, and the same
  input, as Stable Diffusion's text encoder, only narrower and shallower.
- The image encoder is a small CNN (Fashion-MNIST images are 1x32x32).
- Each side ends in a linear projection to a shared `embed_dim`-dimensional space, where
  embeddings are normalised to unit length; similarity is their dot product, multiplied by a
  learned inverse temperature `logit_scale.exp()` (initialised to 1 / 0.07, capped at 100).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class CLIPConfig:
    embed_dim: int = 64                  # the shared image-text space
    image_channels: tuple = (32, 64, 128)
    in_channels: int = 1
    text_hidden: int = 64                # width of the text transformer
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate: int = 256
    vocab_size: int = 49408              # CLIP's BPE vocabulary
    max_length: int = 77                 # CLIP's context length
    init_temperature: float = 0.07

    def __post_init__(self):
        self.image_channels = tuple(self.image_channels)
        if self.text_hidden % self.text_heads:
            raise ValueError(f"text_hidden {self.text_hidden} is not divisible by text_heads {self.text_heads}")

    def text_config(self):
        from transformers import CLIPTextConfig

        return CLIPTextConfig(vocab_size=self.vocab_size, hidden_size=self.text_hidden,
                              intermediate_size=self.text_intermediate, num_hidden_layers=self.text_layers,
                              num_attention_heads=self.text_heads, max_position_embeddings=self.max_length,
                              bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
                              projection_dim=self.embed_dim)


class ImageEncoder(nn.Module):
    """Per level: conv, GroupNorm, SiLU, conv, GroupNorm, SiLU, 2x average pooling; then global average."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        layers, c_in = [], cfg.in_channels
        for c in cfg.image_channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.GroupNorm(8, c), nn.SiLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(8, c), nn.SiLU(), nn.AvgPool2d(2)]
            c_in = c
        self.net = nn.Sequential(*layers)
        self.width = c_in

    def forward(self, x):
        return self.net(x).mean(dim=(2, 3))                       # (B, width)


class SmallCLIP(nn.Module):
    def __init__(self, config: CLIPConfig = CLIPConfig()):
        super().__init__()
        from transformers import CLIPTextModel

        self.config = config
        self.image_encoder = ImageEncoder(config)
        self.text_model = CLIPTextModel(config.text_config())
        self.image_projection = nn.Linear(self.image_encoder.width, config.embed_dim, bias=False)
        self.text_projection = nn.Linear(config.text_hidden, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-length image embeddings (B, embed_dim)."""
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(f"expected images (B, {self.config.in_channels}, H, W), got {tuple(images.shape)}")
        return F.normalize(self.image_projection(self.image_encoder(images)), dim=-1)

    def text_features(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The text transformer's per-token output (B, 77, text_hidden): what a U-Net would attend to."""
        self._check_ids(input_ids)
        return self.text_model(input_ids=input_ids).last_hidden_state

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Unit-length text embeddings (B, embed_dim), from the end-of-text token's output (CLIP's pooling)."""
        self._check_ids(input_ids)
        pooled = self.text_model(input_ids=input_ids).pooler_output
        return F.normalize(self.text_projection(pooled), dim=-1)

    def logits(self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings to logits_per_image: the learned scale (capped at 100) times their cosines."""
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        return scale * image_embeddings @ text_embeddings.T

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """logits_per_image (B_images, B_texts) = scale * cosine similarity."""
        return self.logits(self.encode_image(images), self.encode_text(input_ids))

    def _check_ids(self, input_ids):
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.long, torch.int32):
            raise TypeError("pass token ids (a LongTensor from sdlearn.tokenizer.tokenize), not text")
        if input_ids.ndim != 2 or input_ids.shape[1] > self.config.max_length:
            raise ValueError(f"expected token ids (B, <= {self.config.max_length}), got {tuple(input_ids.shape)}")


@torch.no_grad()
def zero_shot_classify(model: SmallCLIP, images: torch.Tensor, class_prompts: list[str], tokenizer=None,
                       batch_size: int = 1000) -> torch.Tensor:
    """The index of the best-matching prompt for each image: zero-shot classification."""
    from sdlearn.tokenizer import tokenize

    text = model.encode_text(tokenize(class_prompts, tokenizer))
    return (encode_images(model, images, batch_size) @ text.T).argmax(-1)


@torch.no_grad()
def encode_images(model: SmallCLIP, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Unit-length embeddings (N, embed_dim) of many images, `batch_size` at a time, without gradients."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return torch.cat([model.encode_image(chunk) for chunk in images.split(batch_size)])


def retrieve(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k gallery items most similar to each query, best first: (cosine similarities, indices), each (Q, k).

    `queries` (Q, D) are usually text embeddings and `gallery` (N, D) image embeddings (text-to-image
    retrieval), or the other way round. Both are normalised here, so the ranking is by cosine similarity
    whatever their lengths.
    """
    if queries.ndim != 2 or gallery.ndim != 2:
        raise ValueError(f"expected queries (Q, D) and a gallery (N, D), got {tuple(queries.shape)} and "
                         f"{tuple(gallery.shape)}; for a single query pass query[None]")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"the queries have {queries.shape[1]} dimensions and the gallery {gallery.shape[1]}; "
                         "embed both with the same model")
    if not 1 <= k <= gallery.shape[0]:
        raise ValueError(f"k must be between 1 and the gallery size {gallery.shape[0]}, got {k}")
    similarity = F.normalize(queries, dim=-1) @ F.normalize(gallery, dim=-1).T      # (Q, N)
    scores, indices = similarity.topk(k, dim=-1)                                     # sorted, largest first
    return scores, indices
