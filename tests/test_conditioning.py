"""Class conditioning: the embedding as a lookup, the null class, the loss, sampling per class, the flip judge."""

import pytest
import torch

from sdlearn.conditioning import (class_conditional_loss, drop_labels, generate_for_classes, one_hot_embedding,
                                  with_null_class)
from sdlearn.losses import diffusion_loss
from sdlearn.metrics import faces_flipped
from sdlearn.models.unet import UNet, UNetConfig
from sdlearn.samplers import NoiseModel, generate
from sdlearn.schedules import alphas_cumprod_from_betas, make_betas

ALPHAS_CUMPROD = alphas_cumprod_from_betas(make_betas("squaredcos_cap_v2", 1000))


def tiny_unet(num_class_embeds=3, seed=0):
    torch.manual_seed(seed)
    return UNet(UNetConfig(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                           layers_per_block=1, attention_levels=(False, False), mid_attention=False,
                           norm_num_groups=4, num_class_embeds=num_class_embeds))


def test_one_hot_times_table_is_the_embedding_lookup():
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(10, 6)
    labels = torch.tensor([3, 0, 9, 3, 5])
    got = one_hot_embedding(labels, embedding.weight)
    assert got.shape == (5, 6)
    torch.testing.assert_close(got, embedding(labels), rtol=0, atol=1e-6)
    assert not torch.allclose(got[0], got[1])          # different classes, different rows
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        one_hot_embedding(torch.tensor([10]), embedding.weight)
    with pytest.raises(TypeError, match="integers"):
        one_hot_embedding(torch.tensor([1.0]), embedding.weight)


def test_null_class_replaces_only_the_dropped_labels_and_leaves_the_input_alone():
    labels = torch.tensor([0, 9, 4, 7])
    drop = torch.tensor([True, False, False, True])
    got = with_null_class(labels, drop, 10)
    assert got.tolist() == [10, 9, 4, 10]
    assert labels.tolist() == [0, 9, 4, 7]
    with pytest.raises(ValueError, match="also a real label"):
        with_null_class(labels, drop, 9)
    with pytest.raises(ValueError, match="boolean mask"):
        with_null_class(labels, drop.long(), 10)


def test_drop_labels_drops_about_the_asked_share_and_is_seeded():
    labels = torch.randint(10, (20000,), generator=torch.Generator().manual_seed(0))
    dropped = drop_labels(labels, 0.3, 10, torch.Generator().manual_seed(1))
    share = (dropped == 10).float().mean().item()
    assert abs(share - 0.3) < 0.015
    kept = dropped != 10
    assert torch.equal(dropped[kept], labels[kept])
    assert torch.equal(dropped, drop_labels(labels, 0.3, 10, torch.Generator().manual_seed(1)))
    assert torch.equal(drop_labels(labels, 0.0, 10, None), labels)
    assert (drop_labels(labels, 1.0, 10, None) == 10).all()
    with pytest.raises(ValueError, match="probability"):
        drop_labels(labels, 1.5, 10, None)


def test_loss_is_diffusion_loss_with_the_labels_passed_to_the_network():
    model = tiny_unet()
    x0 = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    got = class_conditional_loss(model, x0, labels, ALPHAS_CUMPROD, torch.Generator().manual_seed(3),
                                 prediction_type="v_prediction", snr_gamma=5.0)

    def conditioned(x, t):
        return model(x, t, class_labels=labels)

    expected = diffusion_loss(conditioned, x0, ALPHAS_CUMPROD, torch.Generator().manual_seed(3),
                              prediction_type="v_prediction", snr_gamma=5.0)
    assert torch.equal(got, expected)
    other = class_conditional_loss(model, x0, labels.flip(0), ALPHAS_CUMPROD, torch.Generator().manual_seed(3),
                                   prediction_type="v_prediction", snr_gamma=5.0)
    assert not torch.equal(got, other)                  # the labels reach the network


def test_loss_with_every_label_dropped_uses_the_null_row_only():
    model = tiny_unet(num_class_embeds=4)               # classes 0, 1, 2 and the null class 3
    x0 = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    loss = class_conditional_loss(model, x0, torch.tensor([0, 1, 2, 0, 1]), ALPHAS_CUMPROD,
                                  torch.Generator().manual_seed(5), null_class=3, drop_label_p=1.0)
    loss.backward()
    grad = model.class_embedding.weight.grad
    assert grad[3].abs().sum() > 0
    assert torch.equal(grad[:3], torch.zeros_like(grad[:3]))
    with pytest.raises(ValueError, match="null_class"):
        class_conditional_loss(model, x0, torch.zeros(5, dtype=torch.long), ALPHAS_CUMPROD, None, drop_label_p=0.1)
    with pytest.raises(ValueError, match="one label per image"):
        class_conditional_loss(model, x0, torch.zeros(4, dtype=torch.long), ALPHAS_CUMPROD, None)


def test_generate_for_classes_gives_each_sample_its_label_and_repeats():
    model = tiny_unet().eval()
    kwargs = dict(alphas_cumprod=ALPHAS_CUMPROD, num_inference_steps=4, prediction_type="v_prediction",
                  shape=(1, 8, 8))
    a = generate_for_classes(model, torch.tensor([0, 0, 1]), **kwargs)
    b = generate_for_classes(model, torch.tensor([0, 2, 1]), **kwargs)
    assert a.shape == (3, 1, 8, 8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])     # same noise, same label
    assert not torch.allclose(a[1], b[1])                          # same noise, another label
    assert torch.equal(a, generate_for_classes(model, torch.tensor([0, 0, 1]), **kwargs))
    direct = generate(NoiseModel(model, class_labels=torch.tensor([0, 0, 1])), 3, batch_size=3, **kwargs)
    assert torch.equal(a, direct)                                  # one batch: generate with the labels
    split = generate_for_classes(model, torch.tensor([0, 0, 1]), batch_size=2, **kwargs)
    assert split.shape == (3, 1, 8, 8) and not torch.equal(split[2], a[2])   # batch 2 has its own noise


@pytest.mark.slow
def test_a_short_training_learns_what_each_label_asks_for():
    """Two classes that differ only in brightness: after training, each label gives its own brightness."""
    from sdlearn.training import TrainConfig, train

    n = 512
    labels = torch.arange(n) % 2
    x0 = torch.where(labels[:, None, None, None] == 0, 0.8, -0.8) * torch.ones(n, 1, 8, 8)
    x0 = x0 + 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(6))
    model = tiny_unet(num_class_embeds=2)

    def loss_fn(m, batch, generator):
        return class_conditional_loss(m, batch[0], batch[1], ALPHAS_CUMPROD, generator, prediction_type="v_prediction")

    result = train(model, loss_fn, (x0, labels), TrainConfig(steps=150, batch_size=64, lr=3e-3), progress=False)
    samples = generate_for_classes(result.model, torch.tensor([0] * 8 + [1] * 8), alphas_cumprod=ALPHAS_CUMPROD,
                                   num_inference_steps=10, prediction_type="v_prediction", shape=(1, 8, 8))
    means = samples.mean(dim=(1, 2, 3))
    assert (means[:8] > 0.4).all() and (means[8:] < -0.4).all(), means


def test_faces_flipped_tells_an_image_from_its_mirror():
    g = torch.Generator().manual_seed(7)
    reference = torch.zeros(1, 8, 8)
    reference[:, 2:6, :3] = 1.0                          # mass on the left, like a shoe's toe
    reference[:, :2, :] = 0.5                            # and at the top
    images = reference + 0.3 * torch.randn(20, 1, 8, 8, generator=g)
    assert not faces_flipped(images, reference).any()
    assert faces_flipped(images.flip(-1), reference).all()
    assert faces_flipped(images.flip(-2), reference, dim=-2).all()
    with pytest.raises(ValueError, match="match"):
        faces_flipped(images[:, :, :4], reference)


def test_faces_flipped_on_real_sneakers(debian_fashion):
    from sdlearn.data import fashion_for_diffusion

    images, labels = fashion_for_diffusion("test")
    sneakers = images[labels == 7]
    reference = sneakers.mean(dim=0)
    assert (~faces_flipped(sneakers, reference)).float().mean() > 0.95
    assert faces_flipped(sneakers.flip(-1), reference).float().mean() > 0.95
    assert faces_flipped(sneakers.flip(-2), reference, dim=-2).float().mean() > 0.95
