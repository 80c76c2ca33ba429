"""Textual inversion (sdlearn.finetune.textual_inversion) on the shipped pipeline, against diffusers' loader."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdlearn import pipelines
from sdlearn.finetune import (add_placeholder_token, check_learned_embeds, load_learned_embeds, restore_other_rows,
                              save_learned_embeds, textual_inversion_loss, trainable_embeddings)
from sdlearn.text_to_image import text_to_image


@pytest.fixture
def pipe():
    return pipelines.load("fashion_text2image")       # fresh for every test: the tests change its vocabulary


def _boots(n=4):
    from sdlearn.data import fashion_for_diffusion

    images, labels = fashion_for_diffusion("test")
    return ((images[labels == 9][:n] + 1) / 2).clamp(0, 1)


def test_placeholder_starts_as_the_initializer_and_the_prompt_means_the_same(pipe):
    vocab = len(pipe.tokenizer)
    token_id = add_placeholder_token(pipe.tokenizer, pipe.text_encoder, "<boot>", "shoe")
    table = pipe.text_encoder.get_input_embeddings().weight
    assert token_id == vocab and table.shape[0] == vocab + 1
    shoe = pipe.tokenizer.convert_tokens_to_ids("shoe</w>")
    assert torch.equal(table[token_id], table[shoe])
    settings = dict(num_inference_steps=4, guidance_scale=5.0)
    a = text_to_image(pipe, "a photo of a <boot>", **settings, generator=torch.Generator().manual_seed(0))
    b = text_to_image(pipe, "a photo of a shoe", **settings, generator=torch.Generator().manual_seed(0))
    assert (a - b).abs().max().item() <= 1e-6


def test_training_moves_only_the_new_row_when_the_others_are_restored(pipe):
    token_id = add_placeholder_token(pipe.tokenizer, pipe.text_encoder, "<boot>", "shoe")
    original = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    optimizer = torch.optim.AdamW(trainable_embeddings(pipe), lr=1e-2, weight_decay=1e-2)
    assert not any(p.requires_grad for p in pipe.unet.parameters())
    generator = torch.Generator().manual_seed(0)
    drifts, losses = [], []
    for _ in range(3):
        loss = textual_inversion_loss(pipe, _boots(), "a photo of a <boot>", generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        drifts.append(restore_other_rows(pipe.text_encoder, original, [token_id]))
        losses.append(loss.item())
    table = pipe.text_encoder.get_input_embeddings().weight
    assert drifts[0] > 0                                  # weight decay moved rows that had no gradient
    changed = (table - original).abs().amax(1) > 0
    assert changed.nonzero().flatten().tolist() == [token_id]


def test_zeroing_gradients_does_not_stop_weight_decay(pipe):
    """The pitfall: under AdamW a row with zero gradient still shrinks by lr * weight_decay * row."""
    add_placeholder_token(pipe.tokenizer, pipe.text_encoder, "<boot>", "shoe")
    table = trainable_embeddings(pipe)[0]
    before = table.detach().clone()
    optimizer = torch.optim.AdamW([table], lr=1e-2, weight_decay=1e-2)
    table.grad = torch.zeros_like(table)
    optimizer.step()
    torch.testing.assert_close(table.detach(), before * (1 - 1e-2 * 1e-2))


def test_saved_file_loads_through_diffusers_and_gives_our_pixels(pipe, tmp_path):
    token_id = add_placeholder_token(pipe.tokenizer, pipe.text_encoder, "<boot>", "shoe")
    with torch.no_grad():
        pipe.text_encoder.get_input_embeddings().weight[token_id] += 0.3      # a learned vector, not the shoe's
    path = save_learned_embeds(pipe.text_encoder, pipe.tokenizer, "<boot>", tmp_path / "learned_embeds.safetensors")
    stored = load_file(path)
    assert list(stored) == ["<boot>"] and stored["<boot>"].shape == (1, 64)
    settings = dict(num_inference_steps=4, guidance_scale=5.0)
    ours = text_to_image(pipe, "a photo of a <boot>", **settings, generator=torch.Generator().manual_seed(1))

    fresh = pipelines.load("fashion_text2image")
    token = load_learned_embeds(fresh, path)
    assert token == "<boot>"
    theirs = fresh("a photo of a <boot>", **settings, generator=torch.Generator().manual_seed(1),
                   output_type="pt").images
    assert (ours - theirs).abs().max().item() <= 1e-5
    fresh.unload_textual_inversion("<boot>")
    assert "<boot>" not in fresh.tokenizer.get_vocab()
    assert fresh.text_encoder.get_input_embeddings().weight.shape[0] == 49408


def test_bad_input_says_what_to_do(pipe, tmp_path):
    with pytest.raises(ValueError, match="already in the tokenizer's vocabulary"):
        add_placeholder_token(pipe.tokenizer, pipe.text_encoder, "shoe</w>", "bag")
    with pytest.raises(ValueError, match=r"is 2 tokens .* not one"):
        add_placeholder_token(pipe.tokenizer, pipe.text_encoder, "<boot>", "ankle boot")
    wide = tmp_path / "sd15.safetensors"
    save_file({"<cat>": torch.zeros(1, 768)}, str(wide))
    with pytest.raises(ValueError, match="768.*64 wide"):
        check_learned_embeds(wide, pipe.text_encoder)
    two = tmp_path / "two.safetensors"
    save_file({"a": torch.zeros(1, 64), "b": torch.zeros(1, 64)}, str(two))
    with pytest.raises(ValueError, match="holds 2 tensors"):
        load_learned_embeds(pipe, two)
    with pytest.raises(ValueError, match="not in the tokenizer"):
        save_learned_embeds(pipe.text_encoder, pipe.tokenizer, "<never-added>", tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="2 prompts for 4 images"):
        textual_inversion_loss(pipe, _boots(), ["a", "b"], torch.Generator().manual_seed(0))


def test_a_second_placeholder_after_training_the_first(pipe):
    """Adding a word after training another grows the table again; training goes on with a new optimizer."""
    first = add_placeholder_token(pipe.tokenizer, pipe.text_encoder, "<boot>", "shoe")
    table = trainable_embeddings(pipe)[0]
    loss = textual_inversion_loss(pipe, _boots(2), "a photo of a <boot>", torch.Generator().manual_seed(0))
    loss.backward()
    second = add_placeholder_token(pipe.tokenizer, pipe.text_encoder, "<three>", "bag")
    assert second == first + 1 and pipe.text_encoder.get_input_embeddings().weight is not table
    optimizer = torch.optim.AdamW(trainable_embeddings(pipe), lr=1e-2)
    loss = textual_inversion_loss(pipe, _boots(2), "a photo of a <three>", torch.Generator().manual_seed(0))
    loss.backward()
    optimizer.step()
    assert pipe.text_encoder.get_input_embeddings().weight.grad.shape == (49410, 64)
