"""Textual inversion (Gal et al., 2023): teach a frozen text-to-image model one new word.

    token_id = add_placeholder_token(pipe.tokenizer, pipe.text_encoder, "<boot>", "shoe")
    original = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    optimizer = torch.optim.AdamW(trainable_embeddings(pipe), lr=3e-3, weight_decay=1e-2)
    for batch in ...:
        loss = textual_inversion_loss(pipe, images, "a photo of a <boot>", generator)
        loss.backward(); optimizer.step(); optimizer.zero_grad()
        restore_other_rows(pipe.text_encoder, original, [token_id])
    save_learned_embeds(pipe.text_encoder, pipe.tokenizer, "<boot>", "learned_embeds.safetensors")

Everything is frozen but the token-embedding table, and of it only the new row is meant to
change. The steps follow diffusers' textual inversion script
(`examples/textual_inversion/textual_inversion.py`): add the placeholder token
to the tokenizer, grow the embedding table by one row, start that row from a related word's
embedding, optimise the table with the diffusion loss, and after every step copy the other
rows back from a saved original. (Zeroing their gradients is not enough: AdamW's weight
decay moves every row whatever its gradient.) The result is written in the layout
`StableDiffusionPipeline.load_textual_inversion` reads: one safetensors file holding one
tensor (vectors, width) under the placeholder's name.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from sdlearn.losses import diffusion_loss
from sdlearn.utils import atomic_write


def add_placeholder_token(tokenizer, text_encoder, placeholder_token: str, initializer_token: str) -> int:
    """Add `placeholder_token` to the tokenizer and a row for it to the embedding table; return its id.

    The new row starts as a copy of `initializer_token`'s embedding, which must be one token.
    A placeholder that is already in the vocabulary is refused, as diffusers refuses it: its
    embedding would be overwritten, and with it every prompt that uses the word. Add every
    placeholder before building the optimizer: the table grows by a row, and an optimizer's
    state refers to the old table, which this replaces by a new parameter.
    """
    if not isinstance(placeholder_token, str) or not placeholder_token.strip():
        raise ValueError(f"the placeholder token must be a non-empty string such as '<my-boot>', got "
                         f"{placeholder_token!r}")
    if placeholder_token in tokenizer.get_vocab():
        raise ValueError(f"the placeholder token {placeholder_token!r} is already in the tokenizer's vocabulary, so "
                         f"training it would change a word the model knows; choose a new string such as "
                         f"'<{placeholder_token.strip('<>')}-concept>'")
    init_ids = tokenizer.encode(initializer_token, add_special_tokens=False)
    if len(init_ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(init_ids)
        raise ValueError(f"the initializer {initializer_token!r} is {len(init_ids)} tokens {pieces}, not one; choose "
                         f"a single-token word (for example 'shoe' or 'bag') to start the new embedding from")
    tokenizer.add_tokens(placeholder_token)
    token_id = tokenizer.convert_tokens_to_ids(placeholder_token)
    text_encoder.resize_token_embeddings(len(tokenizer))
    # transformers resizes the table in place; autograd keeps the old shape for that parameter, so
    # the table becomes a new parameter (and a gradient of the old shape goes with the old one)
    embeddings = text_encoder.get_input_embeddings()
    old = embeddings.weight
    embeddings.weight = torch.nn.Parameter(old.detach().clone(), requires_grad=old.requires_grad)
    table = embeddings.weight
    with torch.no_grad():
        table[token_id] = table[init_ids[0]].clone()
    return token_id


def trainable_embeddings(pipe) -> list[torch.nn.Parameter]:
    """Freeze the pipeline (U-Net, autoencoder, text encoder) but the token-embedding table; return the table.

    The table is the one parameter to hand the optimizer; `restore_other_rows` keeps all but
    the new rows as they were.
    """
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        part.requires_grad_(False)
    table = pipe.text_encoder.get_input_embeddings().weight
    table.requires_grad_(True)
    return [table]


@torch.no_grad()
def restore_other_rows(text_encoder, original: torch.Tensor, token_ids) -> float:
    """Copy every row but `token_ids` back from `original`; return how far they had drifted (largest |change|).

    `original` is the table right after `add_placeholder_token` (same shape).
    """
    table = text_encoder.get_input_embeddings().weight
    if original.shape != table.shape:
        raise ValueError(f"original {tuple(original.shape)} is not the shape of the embedding table "
                         f"{tuple(table.shape)}: save it after add_placeholder_token")
    keep = torch.ones(len(table), dtype=torch.bool, device=table.device)
    keep[list(token_ids)] = False
    drift = (table[keep] - original[keep].to(table)).abs().max().item()
    table[keep] = original[keep].to(table)
    return drift


def textual_inversion_loss(pipe, images: torch.Tensor, prompts, generator: torch.Generator, *,
                           snr_gamma: float | None = None) -> torch.Tensor:
    """The diffusion loss of pictures (B, C, H, W) in [0, 1] under their prompts, with gradients to the text encoder.

    The pictures are encoded by the frozen autoencoder (the mean of its Gaussian); the prompts
    go through the text encoder with gradients, so that the loss reaches the embedding table;
    the U-Net is frozen and predicts with the pipeline's prediction type and noise schedule.
    """
    from sdlearn.models.autoencoder import encode_latents
    from sdlearn.tokenizer import tokenize

    prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts for {len(images)} images: give one prompt, or one per image")
    with torch.no_grad():
        latents = encode_latents(pipe.vae, images * 2 - 1)
    ids = tokenize(prompts, pipe.tokenizer, max_length=pipe.tokenizer.model_max_length).to(latents.device)
    context = pipe.text_encoder(ids)[0]                          # (B, 77, D), with gradients
    scheduler = pipe.scheduler

    def model(x, t):
        return pipe.unet(x, t, encoder_hidden_states=context).sample

    return diffusion_loss(model, latents, scheduler.alphas_cumprod.to(latents.device), generator,
                          prediction_type=scheduler.config.prediction_type, snr_gamma=snr_gamma)


def save_learned_embeds(text_encoder, tokenizer, placeholder_token: str, path) -> Path:
    """Write the placeholder's embedding as `learned_embeds.safetensors`: {placeholder: (1, width)}, atomically.

    The layout of diffusers' training script, which `StableDiffusionPipeline.load_textual_inversion`
    reads back.
    """
    if placeholder_token not in tokenizer.get_vocab():
        raise ValueError(f"{placeholder_token!r} is not in the tokenizer: add it with add_placeholder_token first")
    token_id = tokenizer.convert_tokens_to_ids(placeholder_token)
    row = text_encoder.get_input_embeddings().weight[token_id:token_id + 1].detach().float().cpu().contiguous()
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        handle.write(_serialise({placeholder_token: row}))
    return path


def _serialise(tensors: dict) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata={"format": "pt"})


def check_learned_embeds(path, text_encoder) -> tuple[str, torch.Tensor]:
    """Read a learned-embedding file and check it fits `text_encoder`: (placeholder, (vectors, width)) or a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no learned-embedding file at {path}")
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        if len(keys) != 1:
            raise ValueError(f"{path} holds {len(keys)} tensors ({keys[:5]}); a learned-embedding file holds one, "
                             f"named after its placeholder token")
        embedding = handle.get_tensor(keys[0])
    width = text_encoder.get_input_embeddings().weight.shape[-1]
    embedding = embedding[None] if embedding.ndim == 1 else embedding
    if embedding.ndim != 2 or embedding.shape[-1] != width:
        raise ValueError(f"{path} holds an embedding of shape {tuple(embedding.shape)}, but this text encoder's "
                         f"tokens are {width} wide: it was trained for another text encoder (Stable Diffusion "
                         f"1.5's are 768 wide, the shipped model's 64)")
    return keys[0], embedding


def load_learned_embeds(pipe, path, token: str | None = None) -> str:
    """Load a learned-embedding file into a pipeline with diffusers' `load_textual_inversion`, after checking it fits.

    Returns the token the prompts should use. `pipe.unload_textual_inversion(token)` removes it again.
    """
    name, _ = check_learned_embeds(path, pipe.text_encoder)
    token = token or name
    if token in pipe.tokenizer.get_vocab():
        raise ValueError(f"{token!r} is already in the tokenizer's vocabulary: unload it first "
                         f"(pipe.unload_textual_inversion({token!r})) or load the file under another token=")
    pipe.load_textual_inversion(str(path), token=token)
    return token


__all__ = ["add_placeholder_token", "check_learned_embeds", "load_learned_embeds", "restore_other_rows",
           "save_learned_embeds", "textual_inversion_loss", "trainable_embeddings"]
