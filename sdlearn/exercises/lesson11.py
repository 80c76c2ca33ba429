"""Checks for the exercises of lesson 11, text encoders."""

from __future__ import annotations

import torch

from sdlearn.exercises import Failed, exercise

START, END = 49406, 49407          # CLIP's <|startoftext|> and <|endoftext|>; in SD 1.x the end token also pads
CONTEXT = 77                       # CLIP's context length
ROOM = CONTEXT - 2                 # pieces that fit between the start and end tokens


# --------------------------------------------------------------------------- 11.1 which phrases to keep

LONG_PROMPT = ("a photo of a white leather sneaker facing left, studio lighting, soft shadows, sharp focus, "
               "highly detailed, 4k, product photography, on a wooden table, next to a red bag and a pair of blue "
               "jeans, morning light through a tall window, shallow depth of field, film grain, trending on "
               "artstation, award winning, in the style of a glossy magazine cover, with a pale blue sky, a lake "
               "and green hills in the background")


PULLOVER = ["a photo of a pullover", "knitted from thick grey wool with a high collar and long sleeves",
            "folded on a chair", "in the morning sun", "next to a pair of brown boots", "bokeh", "unreal engine 5",
            "hdr", "best quality", "cinematic", "on a white background", "kodak portra 400", "hyperrealistic",
            "4k uhd", "f/1.8", "masterpiece", "volumetric lighting", "studio photo", "35mm film", "sharp",
            "with buttons down the front"]


def _phrase_lists() -> list[list[str]]:
    return [PULLOVER, LONG_PROMPT.split(", "), ["a photo of a sandal facing right", "upside down"], []]


def _greedy(phrases, count, *, room=ROOM, stop_at_first=False, separator=", "):
    kept = []
    for phrase in phrases:
        if count(separator.join(kept + [phrase])) <= room:
            kept.append(phrase)
        elif stop_at_first:
            break
    return separator.join(kept)


@exercise("11.1", "which phrases to keep")
def check_fit_prompt(fit_prompt):
    from sdlearn.tokenizer import clip_tokenizer

    tokenizer = clip_tokenizer()

    def pieces(text):
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def summed_without_commas(text):
        return sum(pieces(phrase) for phrase in text.split(", ")) if text else 0

    for phrases in _phrase_lists():
        got = fit_prompt(list(phrases), tokenizer)
        right = _greedy(phrases, pieces)
        if got == right:
            continue
        if not isinstance(got, str):
            raise Failed(f"return the prompt as one string, the kept phrases joined by ', '; got "
                         f"{type(got).__name__}.")
        mistakes = [
            (_greedy(phrases, lambda text: len(text.split())),
             f"you counted words; the 75 slots hold CLIP's pieces, and a word can be several (\"artstation\" is "
             f"{pieces('artstation')}, \"4k\" is {pieces('4k')}). Count with the tokenizer."),
            (_greedy(phrases, summed_without_commas),
             "the ', ' between two phrases is a piece too (',' is token 267): count the pieces of the joined "
             "prompt, not of the phrases alone."),
            (_greedy(phrases, pieces, room=CONTEXT),
             "77 slots include the start and end tokens: the prompt's own pieces must fit in 75."),
            (_greedy(phrases, pieces, room=CONTEXT - 4),
             "the start and end tokens have their own 2 of the 77 slots: the prompt's pieces may fill all 75."),
            (_greedy(phrases, pieces, stop_at_first=True),
             "a phrase that does not fit is dropped, but a shorter one after it may still fit: go on through "
             "the list instead of stopping at the first phrase that is too long."),
        ]
        for answer, message in mistakes:
            if got == answer and answer != right:
                raise Failed(message)
        if got.replace(" ", "") == right.replace(" ", ""):
            raise Failed("join the kept phrases with ', ' (a comma and a space).")
        if pieces(got) > ROOM:
            raise Failed(f"your prompt has {pieces(got)} pieces; only 75 fit between the start and end tokens.")
        if sorted(got.split(", ")) == sorted(right.split(", ")):
            raise Failed("keep the phrases in the order given: the most important come first, and CLIP reads in "
                         "order.")
        kept = got.split(", ") if got else []
        in_order = [phrase for phrase in phrases if phrase in kept]
        if in_order == kept and pieces(got) <= ROOM and not any(
                phrase not in kept and pieces(", ".join(kept + [phrase])) <= ROOM for phrase in phrases):
            raise Failed("your phrases fit, but they are not the ones to keep: the phrases come most important "
                         "first, so go through them in that order and keep each one that still fits with those "
                         "already kept, rather than choosing short phrases to fit more of them.")
        for phrase in phrases:
            if phrase not in kept and pieces(", ".join(kept + [phrase])) <= ROOM:
                raise Failed(f"\"{phrase}\" would still fit: go through the phrases in order and keep each one "
                             f"that fits with those already kept.")
        raise Failed(f"the answer is {right!r} ({pieces(right)} pieces); you gave {got!r}.")
    long_phrases = LONG_PROMPT.split(", ")
    kept = _greedy(long_phrases, pieces).split(", ")
    dropped = [phrase for phrase in long_phrases if phrase not in kept]
    return (f"the long prompt of this lesson keeps {len(kept)} of its {len(long_phrases)} phrases in "
            f"{pieces(', '.join(kept))} pieces, dropping {' and '.join(repr(p) for p in dropped)}.")


# --------------------------------------------------------------------------- 11.2 which output slots change

def _small_text_model(seed: int, hidden: int = 8):
    """A one-layer CLIPTextModel with CLIP's vocabulary and 77 positions, seeded."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=2 * hidden,
                            num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=CONTEXT,
                            bos_token_id=START, eos_token_id=END, pad_token_id=END)
    with torch.random.fork_rng(devices=[]):              # seeded, without touching the student's random state
        torch.manual_seed(seed)
        return CLIPTextModel(config).eval()


def _bidirectional_model(seed: int, hidden: int = 8):
    """Token and position embeddings and one transformer layer without a mask: every slot sees every slot."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        embed = torch.nn.Embedding(49408, hidden)
        positions = torch.nn.Parameter(torch.randn(CONTEXT, hidden))
        layer = torch.nn.TransformerEncoderLayer(hidden, nhead=2, dim_feedforward=2 * hidden, dropout=0.0,
                                                 batch_first=True).eval()

    def encode(ids):
        return layer(embed(ids) + positions)
    return encode


def _slot_pairs():
    return [("a photo of a sneaker facing left", "a photo of a sneaker facing right"),
            ("a photo of a bag", "a photo of a bag, upside down"),
            ("a dress", "a bag"),
            ("a photo of a coat", "a photo of a coat")]


def _as_mask(got, what: str) -> torch.Tensor:
    if isinstance(got, (list, tuple)):
        got = torch.tensor(got)
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (CONTEXT,):
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        raise Failed(f"{what} should be 77 booleans, one per slot (True where the output changes); got {shape}.")
    if got.dtype != torch.bool:
        if not ((got == 0) | (got == 1)).all():
            raise Failed(f"{what} should be 77 booleans, one per slot; it has values other than 0 and 1 (slot "
                         f"numbers?). Return a mask, such as a (77,) tensor of dtype torch.bool.")
        got = got.bool()
    return got


def _describe(mask: torch.Tensor) -> str:
    slots = mask.nonzero().flatten().tolist()
    if not slots:
        return "no slot"
    if slots == list(range(slots[0], slots[-1] + 1)):
        return f"slots {slots[0]} to {slots[-1]}" if len(slots) > 1 else f"slot {slots[0]}"
    return "slots " + ", ".join(map(str, slots))


@exercise("11.2", "which outputs a changed word reaches")
def check_changed_slots(changed_slots):
    from sdlearn.tokenizer import tokenize

    encoders = {True: _small_text_model(seed=112), False: _bidirectional_model(seed=112)}
    for causal, encoder in encoders.items():
        kind = "a causal encoder (CLIP's)" if causal else "a bidirectional encoder (no mask, like T5)"
        for first, second in _slot_pairs():
            ids = tokenize([first, second])                           # (2, 77)
            with torch.no_grad():
                out = encoder(ids) if not causal else encoder(input_ids=ids).last_hidden_state
            right = (out[0] - out[1]).abs().amax(dim=-1) > 1e-5       # (77,): measured on the encoder
            got = _as_mask(changed_slots(ids[0].clone(), ids[1].clone(), causal), "changed_slots")
            if torch.equal(got, right):
                continue
            case = f"for {first!r} against {second!r} through {kind}"
            differ = ids[0] != ids[1]
            first_change = int(differ.int().argmax()) if differ.any() else None
            end = int(ids[0].argmax())
            if torch.equal(got, differ) and not torch.equal(differ, right):
                raise Failed(f"{case}: a changed word changes more than its own slot. Each slot's output mixes in "
                             f"the slots it attends to, so every slot that can see the change changes too.")
            if causal and first_change is not None and torch.equal(got, torch.ones(CONTEXT, dtype=torch.bool)):
                raise Failed(f"{case}: CLIP's causal mask lets slot j see only slots 0 to j, so the slots before "
                             f"the first change ({_describe(~right)}) keep their outputs exactly.")
            if not causal and first_change is not None and got.any() and not got[0]:
                raise Failed(f"{case}: without a causal mask every slot attends to every other, so one changed "
                             f"word changes every output, slot 0 included.")
            only_to_the_end = torch.zeros(CONTEXT, dtype=torch.bool)
            if first_change is not None:
                only_to_the_end[first_change:end + 1] = True
            if causal and torch.equal(got, only_to_the_end) and not torch.equal(only_to_the_end, right):
                raise Failed(f"{case}: the padding slots after the end token change too: each holds an end token "
                             f"that attends to the whole prompt before it.")
            if not differ.any() and got.any():
                raise Failed(f"{case}: the two prompts are the same, so no output changes.")
            raise Failed(f"{case} the outputs change at {_describe(right)}; you gave {_describe(got)}.")
    return ("causal: every slot from the first changed word on, padding included; bidirectional: every slot. The "
            "words before a change cannot know about it in CLIP.")


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


# --------------------------------------------------------------------------- 11.4 pooling that survives added tokens

@exercise("11.4", "pooling at the end token, whatever the vocabulary")
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
        features = model(input_ids=ids).last_hidden_state     # (5, 77, 8)
    added = ids.clone()
    added[0, 5] = 49408                                       # "a photo of a <sks> facing left": lesson 18's new token
    added[3, 2:4] = torch.tensor([49408, 49409])
    g = torch.Generator().manual_seed(114)
    other = torch.randint(3, 30000, (4, 77), generator=g)     # another tokenizer: end token 2, padding 0
    for row, length in enumerate([5, 12, 1, 40]):
        other[row, length] = 2
        other[row, length + 1:] = 0
    cases = [("CLIP's ids, padded with the end token 49407", ids, END),
             ("ids with tokens added after the vocabulary (49408 and 49409, as textual inversion adds)", added, END),
             ("another tokenizer, whose end token is 2 and padding 0", other, 2)]
    for name, case_ids, eos in cases:
        feats = features[:case_ids.shape[0]]                 # (B, 77, 8): any vectors will do
        rows = torch.arange(case_ids.shape[0])
        first_end = (case_ids == eos).int().argmax(dim=-1)
        expected = feats[rows, first_end]
        got = pooled_output(feats.clone(), case_ids.clone(), eos)
        if not isinstance(got, torch.Tensor):
            raise Failed("return a tensor of shape (B, D): one vector per prompt.")
        got = got.detach()
        if got.shape != expected.shape:
            raise Failed(f"for features {tuple(feats.shape)} the result should be {tuple(expected.shape)}, one "
                         f"vector per prompt, got {tuple(got.shape)}.")
        if torch.allclose(got, expected, atol=1e-6):
            continue
        wrong = {
            "ids.argmax() finds the largest id, which is the end token only while nothing is added after it: "
            "textual inversion (lesson 18) adds ids from 49408 on, and other tokenizers number their end token "
            "differently. Look for the first slot that holds eos_token_id.": feats[rows, case_ids.argmax(dim=-1)],
            "that is the vector of the last slot (or of the last end token), which is padding when the prompt is "
            "short; take the first slot that holds eos_token_id, the end token that closes the prompt.":
                feats[:, -1],
            "every prompt used the same slot; find the end token row by row.": feats[:, int(first_end[0])],
            "use the eos_token_id you are given: this tokenizer's end token is not 49407.":
                feats[rows, (case_ids == END).int().argmax(dim=-1)],
        }
        for message, value in wrong.items():
            if torch.allclose(got, value, atol=1e-6) and not torch.allclose(value, expected, atol=1e-6):
                raise Failed(f"for {name}: {message}")
        raise Failed(f"for {name}: for each row b, take features[b, j] where j is the first slot with "
                     f"ids[b, j] == eos_token_id.")
    return ("the first end token of every row, for CLIP's ids, with added tokens, and for another tokenizer: how "
            "transformers' CLIPTextModel pools when its configuration names the end token.")
