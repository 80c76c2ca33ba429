"""Checks for the exercises of lesson 12, CLIP."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from sdlearn.exercises import Failed, exercise, name_the_mistake, same_tensor
from sdlearn.losses import contrastive_loss
from sdlearn.models.clip import retrieve


_close = partial(same_tensor, atol=1e-4)      # this lesson's tolerances
_name_the_mistake = partial(name_the_mistake, atol=1e-4)


def _features(n, d, generator, low=0.3, high=4.0):
    """n random vectors of d numbers with very different lengths, so that forgetting to normalise shows."""
    lengths = low + (high - low) * torch.rand(n, 1, generator=generator)
    return F.normalize(torch.randn(n, d, generator=generator), dim=-1) * lengths


@exercise("12.1", "the similarity grid as logits")
def check_clip_logits(clip_logits):
    g = torch.Generator().manual_seed(121)
    images, texts = _features(5, 8, g), _features(4, 8, g)     # 5 images and 4 captions: rows and columns differ
    temperature = 0.1
    got = clip_logits(images.clone(), texts.clone(), temperature)
    cosine = F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T     # (5, 4)
    expected = cosine / temperature
    if not isinstance(got, torch.Tensor):
        raise Failed("return a tensor of logits, shape (N_images, N_texts).")
    if tuple(got.shape) == (4, 5):
        raise Failed("that is (N_texts, N_images); one row per image: image_features @ text_features.T.")
    if got.shape != expected.shape:
        raise Failed(f"for 5 images and 4 captions the logits should have shape (5, 4), got {tuple(got.shape)}.")
    if torch.allclose(got.detach().sum(-1), torch.ones(5), atol=1e-4):
        raise Failed("each row sums to 1: those are probabilities. Return the logits (scaled similarities); the "
                     "softmax belongs to the loss.")
    normalised_images = F.normalize(images, dim=-1)
    normalised_texts = F.normalize(texts, dim=-1)
    wrong = {
        "you did not normalise: divide each embedding by its length (F.normalize(x, dim=-1)) so that the "
        "similarity is the cosine, between -1 and 1, whatever the lengths.": images @ texts.T / temperature,
        "normalise the text embeddings too, not only the image embeddings.": normalised_images @ texts.T / temperature,
        "normalise the image embeddings too, not only the text embeddings.": images @ normalised_texts.T / temperature,
        "you normalised each column (dim=0); normalise each embedding, one row of D numbers (dim=-1).":
            F.normalize(images, dim=0) @ F.normalize(texts, dim=0).T / temperature,
        "you multiplied by the temperature; divide by it. A small temperature makes the logits larger and the "
        "softmax sharper (CLIP's logit_scale is 1 / temperature).": cosine * temperature,
        "those are the cosine similarities; divide them by the temperature.": cosine,
    }
    _name_the_mistake(got, wrong)
    if not _close(got, expected):
        raise Failed("the logits differ from cos(image_i, text_j) / temperature.")
    again = clip_logits(images, texts, 0.02)
    if not _close(again, cosine / 0.02, atol=1e-3):
        raise Failed("right for temperature 0.1, wrong for 0.02: use the temperature you are given.")
    return "cos(image_i, text_j) / temperature, what SmallCLIP's forward returns."


@exercise("12.2", "the symmetric contrastive loss")
def check_symmetric_infonce(symmetric_infonce):
    g = torch.Generator().manual_seed(122)
    logits = (3 * torch.randn(6, 6, generator=g)).requires_grad_(True)   # not symmetric: the two directions differ
    got = symmetric_infonce(logits)
    expected = contrastive_loss(logits.detach())
    if isinstance(got, float):
        raise Failed("return the loss as a tensor, not a Python float (.item() cuts it from the graph, and "
                     "training needs loss.backward()).")
    if not isinstance(got, torch.Tensor):
        raise Failed("return the loss as a tensor with a single number.")
    if got.numel() != 1:
        raise Failed(f"return one number, the average over the batch, not a tensor of shape {tuple(got.shape)}.")
    if not got.requires_grad:
        raise Failed("the loss has no gradient: compute it with torch operations on the logits, without .item(), "
                     ".detach() or .numpy().")
    got = got.detach().reshape(())
    n = logits.shape[0]
    targets = torch.arange(n)
    x = logits.detach()
    rows = F.cross_entropy(x, targets)
    columns = F.cross_entropy(x.T, targets)
    wrong = {
        "that is only the image-to-text half (a softmax over each row); add the text-to-image half (a softmax "
        "over each column) and average the two.": rows,
        "that is only the text-to-image half (a softmax over each column); add the image-to-text half (a softmax "
        "over each row) and average the two.": columns,
        "you added the two directions; average them (divide by 2).": rows + columns,
        "you summed over the batch; take the mean over the N pairs.": n * expected,
        "the loss is negative: it is minus the log-probability of the right answer.": -expected,
        "take the log of the probabilities: the loss is -log p, the cross-entropy.":
            -(x.softmax(1).diagonal().mean() + x.softmax(0).diagonal().mean()) / 2,
    }
    _name_the_mistake(got, wrong)
    if not torch.allclose(got, expected, atol=1e-4):
        raise Failed("the loss differs from the average of the cross-entropy over the rows (targets 0..N-1) and "
                     "over the columns. The right answer for row i and for column i is the diagonal entry i, i.")
    matched = 20 * torch.eye(4)
    if symmetric_infonce(matched).item() > 1e-6:
        raise Failed("a batch where every image is far closer to its own caption should give a loss near 0.")
    return "equal to sdlearn's contrastive_loss (and to CLIPModel's loss in transformers)."


@exercise("12.3", "zero-shot prediction from embeddings")
def check_zero_shot_predict(zero_shot_predict):
    g = torch.Generator().manual_seed(123)
    images = _features(40, 8, g)
    texts = _features(5, 8, g, low=0.2, high=5.0)           # one prompt embedding per class, of very different lengths
    cosine = F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T       # (40, 5)
    expected = cosine.argmax(dim=1)
    got = zero_shot_predict(images.clone(), texts.clone())
    if not isinstance(got, torch.Tensor):
        raise Failed("return a tensor of class indices, one per image.")
    if tuple(got.shape) == (5,):
        raise Failed("that is one answer per class (the argmax over the images, dim=0); take the argmax over the "
                     "classes (dim=1) to get one class per image.")
    if tuple(got.shape) == (40, 5):
        raise Failed("that is the whole similarity matrix; return the index of the best class for each image "
                     "(argmax over dim=1), shape (N,).")
    if got.shape != expected.shape:
        raise Failed(f"for 40 images and 5 classes return 40 class indices, shape (40,), got {tuple(got.shape)}.")
    if got.dtype.is_floating_point:
        raise Failed("return class indices (integers, as argmax gives them), not similarities or probabilities.")
    got = got.long()
    if torch.equal(got, (images @ texts.T).argmax(1)) and not torch.equal(got, expected):
        raise Failed("normalise the text embeddings: with raw dot products, a class whose prompt embedding is "
                     "longer wins for many images whatever they show. Compare directions: the cosine.")
    if torch.equal(got, cosine.argmin(1)):
        raise Failed("that is the least similar class; take the most similar one (argmax).")
    if not torch.equal(got, expected):
        raise Failed("for each image, predict the class whose prompt embedding has the largest cosine similarity "
                     "with the image embedding.")
    return "the class whose prompt is most similar to the image: zero-shot classification."


@exercise("12.4", "top-k retrieval")
def check_top_k_images(top_k_images):
    g = torch.Generator().manual_seed(124)
    gallery = _features(30, 8, g, low=0.1, high=6.0)
    query = _features(1, 8, g)[0]                            # one caption embedding, shape (D,)
    _, expected = retrieve(query[None], gallery, k=5)
    expected = expected[0]
    got = top_k_images(query.clone(), gallery.clone(), 5)
    if not isinstance(got, torch.Tensor):
        raise Failed("return a tensor of k image indices.")
    if tuple(got.shape) == (1, 5):
        raise Failed("return a 1-D tensor of k indices for the one query, shape (k,), not (1, k).")
    if got.shape != expected.shape:
        raise Failed(f"with k = 5 return 5 indices, shape (5,), got {tuple(got.shape)}.")
    if got.dtype.is_floating_point:
        raise Failed("return the indices of the images (topk's .indices or argsort), not their similarities.")
    got = got.long()
    cosine = F.normalize(gallery, dim=-1) @ F.normalize(query, dim=0)        # (30,)
    dots = gallery @ query
    if torch.equal(got, dots.topk(5).indices) and not torch.equal(got, expected):
        raise Failed("normalise the image embeddings: a raw dot product ranks long vectors first whatever their "
                     "direction. Rank by cosine similarity.")
    if torch.equal(got, cosine.topk(5, largest=False).indices):
        raise Failed("those are the 5 least similar images; take the largest similarities.")
    if not torch.equal(got, expected):
        if sorted(got.tolist()) == sorted(expected.tolist()):
            raise Failed("the right images in the wrong order: sort them best first.")
        raise Failed("return the indices of the k images with the largest cosine similarity to the query, best first.")
    got = top_k_images(query, gallery, 12)
    if not isinstance(got, torch.Tensor) or got.shape != (12,) or not torch.equal(
            got.long(), retrieve(query[None], gallery, k=12)[1][0]):
        raise Failed("right for k = 5, wrong for k = 12: return as many indices as k asks for.")
    return "equal to sdlearn.models.clip.retrieve."
