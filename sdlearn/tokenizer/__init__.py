"""CLIP's tokenizer, built from the real BPE vocabulary vendored in this directory.

    tokenizer = clip_tokenizer()                      # a transformers.CLIPTokenizer, offline
    ids = tokenize(["a photo of an astronaut riding a horse"], tokenizer)   # (1, 77) tensor
    write_clip_tokenizer_files("my_model/tokenizer")  # vocab.json + merges.txt for from_pretrained

`bpe_simple_vocab_16e6.txt.gz` is the byte-pair-encoding vocabulary CLIP and Stable Diffusion
1.x use (MIT licence, see LICENSE-open_clip.txt). It lists merges in the order they were
learned. The vocabulary follows from it:

1. the 256 byte symbols (every byte mapped to a printable character, `bytes_to_unicode`),
2. the same 256 with the end-of-word marker `</w>` appended,
3. one symbol per merge, the first 49152 - 256 - 2 = 48894 merges,
4. `<|startoftext|>` (49406) and `<|endoftext|>` (49407), which also pads.

So the vocabulary has 49408 entries, the size of Stable Diffusion's token embedding table.
"""

from __future__ import annotations

import gzip
import json
import warnings
from functools import lru_cache
from pathlib import Path

import torch

from sdlearn.utils import atomic_write

VOCAB_FILE = Path(__file__).resolve().parent / "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
N_MERGES = VOCAB_SIZE - 2 * 256 - 2           # 48894
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77                               # CLIP's context length: 75 tokens + start + end


class PromptTruncatedWarning(UserWarning):
    """A prompt had more tokens than fit in the context and was cut."""


def bytes_to_unicode() -> dict[int, str]:
    """A reversible map from the 256 byte values to printable characters.

    Printable Latin-1 bytes map to themselves; the others (control characters, space, ...) are
    moved to code points from 256 upwards, so that BPE never sees whitespace or control bytes.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary (symbol -> id) and its merges ("a b" strings, in priority order)."""
    lines = gzip.decompress(VOCAB_FILE.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1:1 + N_MERGES]                              # line 0 is a version header
    if len(merges) != N_MERGES or any(len(m.split()) != 2 for m in merges):
        raise ValueError(f"{VOCAB_FILE} is damaged: expected {N_MERGES} merges of two symbols")
    symbols = list(bytes_to_unicode().values())
    symbols += [s + "</w>" for s in symbols]
    symbols += ["".join(m.split()) for m in merges]
    symbols += [BOS, EOS]
    return {s: i for i, s in enumerate(symbols)}, merges


def write_clip_tokenizer_files(directory) -> Path:
    """Write vocab.json, merges.txt and the tokenizer's config, as `CLIPTokenizer.from_pretrained` reads them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    with atomic_write(directory / "vocab.json", "w") as handle:
        json.dump(vocab, handle, ensure_ascii=False)
    with atomic_write(directory / "merges.txt", "w") as handle:
        handle.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH, "bos_token": BOS,
              "eos_token": EOS, "unk_token": EOS, "pad_token": EOS, "do_lower_case": True}
    with atomic_write(directory / "tokenizer_config.json", "w") as handle:
        json.dump(config, handle, indent=1)
    with atomic_write(directory / "special_tokens_map.json", "w") as handle:
        json.dump({"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}, handle, indent=1)
    return directory


@lru_cache(maxsize=1)
def clip_tokenizer():
    """A `transformers.CLIPTokenizer` with CLIP's real vocabulary, built offline from the vendored file."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=dict(vocab), merges=[tuple(m.split()) for m in merges], model_max_length=MAX_LENGTH)


def check_prompts(prompts) -> list[str]:
    """A prompt or a list of prompts as a list of strings, or a clear error."""
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise TypeError(f"a prompt must be a string or a list of strings, got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError("the list of prompts is empty; give at least one prompt (\"\" is the empty prompt)")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompt {i} is a {type(prompt).__name__} ({prompt!r}), not a string")
    return list(prompts)


def tokenize(prompts, tokenizer=None, max_length: int = MAX_LENGTH) -> torch.Tensor:
    """Token ids (B, max_length): start token, the prompt's tokens, end token, padded with the end token.

    A prompt with more than max_length - 2 tokens is cut to fit, with a `PromptTruncatedWarning`
    naming the prompt and the number of tokens dropped (Stable Diffusion's pipeline cuts too,
    and logs it). The empty prompt "" is valid: it is the unconditional prompt of guidance.
    """
    prompts = check_prompts(prompts)
    tokenizer = tokenizer or clip_tokenizer()
    rows = []
    # verbose=False: transformers would log that the ids are too long; the warning below says more.
    for prompt, ids in zip(prompts, tokenizer(prompts, add_special_tokens=True, verbose=False)["input_ids"]):
        if len(ids) > max_length:
            dropped = len(ids) - max_length
            ids = ids[:max_length - 1] + [tokenizer.eos_token_id]          # keep the start, cut, end again
            kept = tokenizer.decode(ids[1:-1])
            warnings.warn(f"the prompt {prompt[:60]!r}{'...' if len(prompt) > 60 else ''} has "
                          f"{len(ids) + dropped - 2} tokens; only {max_length - 2} fit, so the last {dropped} were "
                          f"dropped. It now ends with {kept[-40:]!r}; shorten the prompt to keep its end.",
                          PromptTruncatedWarning, stacklevel=2)
        rows.append(ids + [tokenizer.pad_token_id] * (max_length - len(ids)))
    return torch.tensor(rows, dtype=torch.long)
