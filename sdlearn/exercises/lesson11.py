"""Checks for the exercises of lesson 11, text encoders."""

from __future__ import annotations

import torch

from sdlearn.exercises import Failed, exercise

START, END = 49406, 49407          # CLIP's <|startoftext|> and <|endoftext|>; in SD 1.x the end token also pads
CONTEXT = 77                       # CLIP's context length


def _as_int_list(ids, what: str) -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.ndim != 1:
            raise Failed(f"{what} should be one list of ids (or a 1-D tensor), got a tensor of shape "
                         f"{tuple(ids.shape)}.")
        ids = ids.tolist()
    if not isinstance(ids, (list, tuple)):
        raise Failed(f"{what} should be a list of 77 integers, got a {type(ids).__name__}.")
    return [int(i) for i in ids]


def _reference_ids(pieces: list[int]) -> list[int]:
    kept = pieces[:CONTEXT - 2]
    return [START] + kept + [END] * (CONTEXT - 1 - len(kept))


@exercise("11.1", "start, end, padding and truncation")
def check_clip_input_ids(clip_input_ids):
    from sdlearn.tokenizer import clip_tokenizer

    tokenizer = clip_tokenizer()
    prompts = ["a photo of a sneaker facing left", "", "a " * 75, "a photo of a sneaker facing left, upside down " * 8]
    for prompt in prompts:
        pieces = tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"]   # long ones on purpose
        name = "the empty prompt" if not pieces else f"a prompt of {len(pieces)} pieces"
        given = list(pieces)
        got = _as_int_list(clip_input_ids(given), f"for {name}, the result")
        if given != pieces:
            raise Failed("your function changed the list it was given; build a new list instead (the caller may "
                         "still need the pieces).")
        expected = _reference_ids(pieces)
        if got == expected:
            continue
        if len(pieces) > CONTEXT - 2 and len(got) > CONTEXT:
            raise Failed(f"for {name} you returned {len(got)} ids; only 75 pieces fit between the start and end "
                         f"tokens: keep pieces[:75].")
        if len(got) == len(pieces) + 2 and got[:1] == [START] and got[-1:] == [END]:
            raise Failed(f"for {name} you returned {len(got)} ids: the start and end tokens are right, now pad "
                         f"with the end token {END} up to 77.")
        if len(got) != CONTEXT:
            raise Failed(f"for {name} there should be exactly 77 ids, got {len(got)}.")
        if got[0] != START:
            raise Failed(f"the first id should be the start token {START} (<|startoftext|>), got {got[0]}.")
        padding = got[len(pieces[:CONTEXT - 2]) + 2:]
        if padding and all(i == 0 for i in padding):
            raise Failed(f"Stable Diffusion 1.x pads with the end token {END}, not with 0: its tokenizer's pad "
                         "token is the end token. (OpenAI's clip.tokenize, OpenCLIP and Stable Diffusion 2.x do pad "
                         "with 0, the symbol '!'; a text encoder needs the padding it was trained with.)")
        if len(pieces) > CONTEXT - 2:
            if got[1:CONTEXT - 1] == pieces[-(CONTEXT - 2):]:
                raise Failed("you kept the last 75 pieces; CLIP keeps the first 75 and drops the rest.")
            if got == [START] + pieces[:CONTEXT - 1]:
                raise Failed(f"the last of the 77 ids is a piece of the prompt: after cutting, the end token {END} "
                             "must still close the prompt (start + the first 75 pieces + end).")
            if got[-1] != END:
                raise Failed(f"the 77th id should be the end token {END}, got {got[-1]}.")
        first_difference = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
        raise Failed(f"for {name} the ids should be [{START}] + the first 75 pieces + [{END}], padded with {END} "
                     f"to 77; yours differ first at position {first_difference}.")
    return "the same ids as sdlearn.tokenizer.tokenize and Stable Diffusion 1.x's CLIPTokenizer."


def _small_text_model(seed: int, hidden: int = 8):
    """A one-layer CLIPTextModel with CLIP's vocabulary and 77 positions, seeded."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=2 * hidden,
                            num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=CONTEXT,
                            bos_token_id=START, eos_token_id=END, pad_token_id=END)
    with torch.random.fork_rng(devices=[]):              # seeded, without touching the student's random state
        torch.manual_seed(seed)
        return CLIPTextModel(config).eval()


@exercise("11.2", "token embeddings plus position embeddings")
def check_input_embeddings(input_embeddings):
    model = _small_text_model(seed=11)
    token_table = model.embeddings.token_embedding.weight.detach().clone()         # (49408, 8)
    position_table = model.embeddings.position_embedding.weight.detach().clone()   # (77, 8)
    g = torch.Generator().manual_seed(110)
    for length in (CONTEXT, 10):
        ids = torch.randint(0, 49408, (3, length), generator=g)
        try:
            got = input_embeddings(ids.clone(), token_table, position_table)
        except RuntimeError as exc:
            if length < CONTEXT:
                raise Failed(f"with {length} tokens your code raised: {exc}. A sequence of N tokens takes the first "
                             f"N rows of the position table, position_table[:N].") from None
            raise
        with torch.no_grad():
            expected = model.embeddings(input_ids=ids)
        if not isinstance(got, torch.Tensor):
            raise Failed("return a tensor of shape (B, N, D).")
        got = got.detach()
        if tuple(got.shape) == (3, length, 16):
            raise Failed("the result has 2D channels: you concatenated the two embeddings; add them instead.")
        if got.shape != expected.shape:
            raise Failed(f"for ids (3, {length}) and tables of width 8 the result should be (3, {length}, 8), "
                         f"got {tuple(got.shape)}.")
        if torch.allclose(got, token_table[ids], atol=1e-6):
            raise Failed("that is the token embeddings alone; add the position embeddings, so that the same token "
                         "at two positions gets two different vectors.")
        if torch.allclose(got, position_table[:length].expand(3, -1, -1), atol=1e-6):
            raise Failed("that is the position embeddings alone; add the token embeddings token_table[ids].")
        if not torch.allclose(got, expected, atol=1e-6):
            raise Failed("the result differs from token_table[ids] + position_table[:N]: row j of the position "
                         "table goes with the token at position j.")
    return "equal to CLIPTextModel's embedding layer, for 77 tokens and for fewer."


@exercise("11.3", "cosine similarity, position by position")
def check_cosine_per_token(cosine_per_token):
    g = torch.Generator().manual_seed(113)
    a = torch.randn(7, 16, generator=g) * torch.linspace(0.5, 3.0, 7)[:, None]      # rows of different lengths
    b = 0.6 * a + torch.randn(7, 16, generator=g)
    b[2] = 4.0 * a[2]                                   # the same direction, four times as long: cosine exactly 1
    got = cosine_per_token(a.clone(), b.clone())
    expected = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    if not isinstance(got, torch.Tensor):
        raise Failed("return a tensor with one cosine similarity per position, shape (N,).")
    got = got.detach()
    if tuple(got.shape) == (7, 7):
        raise Failed("that is every row of a against every row of b, (N, N); keep only the pairs at the same "
                     "position: one number per row.")
    if got.shape != expected.shape:
        raise Failed(f"for a and b of shape (7, 16) the result should have shape (7,), got {tuple(got.shape)}.")
    if torch.allclose(got, (a * b).sum(-1), atol=1e-4):
        raise Failed("that is the dot product; divide by the lengths of both vectors, so that only the angle "
                     "counts (a vector and four times it should give 1).")
    by_columns = (torch.nn.functional.normalize(a, dim=0) * torch.nn.functional.normalize(b, dim=0)).sum(-1)
    if torch.allclose(got, by_columns, atol=1e-4):
        raise Failed("you normalised each column (over the positions, dim=0); normalise each row, a vector of D "
                     "numbers (dim=-1).")
    if not torch.allclose(got, expected, atol=1e-5):
        raise Failed("the result differs from a_i . b_i / (|a_i| |b_i|) for each position i.")
    return "1 where two vectors point the same way, whatever their lengths."


@exercise("11.4", "the pooled output: the end-of-text token's vector")
def check_pooled_output(pooled_output):
    import warnings

    from sdlearn.tokenizer import tokenize

    model = _small_text_model(seed=114)
    prompts = ["a photo of a sneaker facing left", "a bag", "", "a photo of a pair of trousers, upside down",
               "a shoe " * 40]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                       # the last prompt is cut to 77 tokens, on purpose
        ids = tokenize(prompts)                               # (5, 77)
    with torch.no_grad():
        out = model(input_ids=ids)
    features, expected = out.last_hidden_state, out.pooler_output                # (5, 77, 8), (5, 8)
    got = pooled_output(features.clone(), ids.clone())
    if not isinstance(got, torch.Tensor):
        raise Failed("return a tensor of shape (B, D): one vector per prompt.")
    got = got.detach()
    if got.shape != expected.shape:
        raise Failed(f"for features (5, 77, 8) the result should be (5, 8), one vector per prompt, "
                     f"got {tuple(got.shape)}.")
    if torch.allclose(got, expected, atol=1e-6):
        return "equal to CLIPTextModel's pooler_output."
    wrong = {
        "that is the vector of the last slot (the last 49407 of each row), which is padding for every prompt "
        "shorter than 75 pieces; take the first 49407 of each row, the end-of-text token itself.": features[:, -1],
        "that is the start token's vector; it has seen nothing but itself (CLIP's text transformer is causal). "
        "Take the end-of-text token's vector: it is the first one that has seen the whole prompt.": features[:, 0],
        "that is the average over all 77 positions; CLIP takes the single vector at the end-of-text token.":
            features.mean(1),
        "every prompt used the same position; find the end-of-text position row by row "
        "(ids.argmax(dim=-1) gives one per row).": features[:, ids[0].argmax()],
    }
    for message, value in wrong.items():
        if torch.allclose(got, value, atol=1e-6):
            raise Failed(message)
    raise Failed("for each row b, take features[b, j] where j is the first position holding the end token 49407 "
                 "(the largest id, so ids[b].argmax() finds it).")
