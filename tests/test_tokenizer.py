"""CLIP's tokenizer from the vendored BPE vocabulary: the ids of the original, padding, truncation, errors."""

import hashlib
import logging
import warnings

import pytest
import torch
from transformers import CLIPTokenizer

from sdlearn.tokenizer import (MAX_LENGTH, VOCAB_FILE, PromptTruncatedWarning, bytes_to_unicode, clip_tokenizer,
                               clip_vocab_and_merges, tokenize, write_clip_tokenizer_files)

# Ids from CLIP's own tokenizer (open_clip's SimpleTokenizer on the same vocabulary file).
ORIGINAL_IDS = {
    "a photo of an astronaut riding a horse": [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407],
    "a sneaker facing left": [49406, 320, 24781, 7619, 1823, 49407],
    "an ankle boot": [49406, 550, 14777, 8087, 49407],
    "A Shoe.": [49406, 320, 7342, 269, 49407],
    "a photo of a t-shirt/top": [49406, 320, 1125, 539, 320, 339, 268, 2523, 270, 1253, 49407],
    "book a ticket": [49406, 1116, 320, 4500, 49407],
    "read a book": [49406, 1199, 320, 1116, 49407],
    "a graceful swan": [49406, 320, 25242, 12530, 49407],
    "ThIs   has    odd  spacing": [49406, 589, 791, 11387, 588, 9442, 49407],
    "don't stop believin'": [49406, 847, 713, 1691, 4972, 530, 262, 49407],
    "3.14159 and 42 apples": [49406, 274, 269, 272, 275, 272, 276, 280, 537, 275, 273, 14032, 49407],
    "über café": [49406, 6522, 1516, 15304, 49407],
}


def test_vendored_file_is_the_real_vocabulary():
    assert hashlib.sha256(VOCAB_FILE.read_bytes()).hexdigest() == \
        "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["a</w>"] == 320 and vocab["horse</w>"] == 4558


def test_bytes_to_unicode_is_reversible_and_printable():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord("a")] == "a" and table[ord(" ")] == "Ġ"          # space moves to a printable character
    assert all(not c.isspace() for c in table.values())


@pytest.mark.parametrize("prompt", list(ORIGINAL_IDS))
def test_ids_equal_the_original_clip_tokenizer(prompt):
    assert clip_tokenizer()(prompt)["input_ids"] == ORIGINAL_IDS[prompt]


def test_padding_to_77_with_the_end_token():
    ids = tokenize(["a photo of an astronaut riding a horse", ""])
    assert ids.shape == (2, MAX_LENGTH) and ids.dtype == torch.long
    assert ids[0, :10].tolist() == ORIGINAL_IDS["a photo of an astronaut riding a horse"]
    assert (ids[0, 10:] == 49407).all()
    assert ids[1, :2].tolist() == [49406, 49407] and (ids[1, 2:] == 49407).all()


def test_long_prompts_are_truncated_with_a_warning():
    long_prompt = "a very long description of a shoe " * 20                # 140 tokens
    with pytest.warns(PromptTruncatedWarning, match=r"has 140 tokens; only 75 fit, so the last 65 were dropped"):
        ids = tokenize([long_prompt, "a red truck"])
    assert ids.shape == (2, 77) and ids[0, 0] == 49406 and ids[0, -1] == 49407
    assert ids[0, 1:76].tolist() == clip_tokenizer()(long_prompt)["input_ids"][1:76]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                       # a prompt that fits: no warning
        tokenize("x " * 75)


def test_files_round_trip_through_from_pretrained(tmp_path):
    directory = write_clip_tokenizer_files(tmp_path / "tokenizer")
    assert sorted(p.name for p in directory.iterdir()) == ["merges.txt", "special_tokens_map.json",
                                                            "tokenizer_config.json", "vocab.json"]
    loaded = CLIPTokenizer.from_pretrained(directory)
    for prompt, ids in ORIGINAL_IDS.items():
        assert loaded(prompt)["input_ids"] == ids
    assert loaded.model_max_length == 77 and loaded.pad_token_id == 49407
    assert not list(tmp_path.rglob("*.tmp*"))                                # nothing half-written left


@pytest.mark.parametrize("bad, error, match", [
    ([], ValueError, "the list of prompts is empty"),
    (42, TypeError, "must be a string or a list of strings, got int"),
    (["a shoe", None], TypeError, r"prompt 1 is a NoneType \(None\), not a string"),
    ([b"bytes"], TypeError, "prompt 0 is a bytes"),
])
def test_bad_prompts_are_clear_errors(bad, error, match):
    with pytest.raises(error, match=match):
        tokenize(bad)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_truncation_is_reported_once_by_our_warning_not_by_a_transformers_log_line():
    from transformers.utils import logging as hf_logging

    fresh = clip_tokenizer.__wrapped__()            # transformers logs its line once per tokenizer object
    recorder, library_logger, verbosity = _Records(), logging.getLogger("transformers"), hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    library_logger.addHandler(recorder)
    try:
        with pytest.warns(PromptTruncatedWarning):
            tokenize("a shoe " * 100, tokenizer=fresh)
    finally:
        library_logger.removeHandler(recorder)
        hf_logging.set_verbosity(verbosity)
    assert [record.getMessage() for record in recorder.records] == []
