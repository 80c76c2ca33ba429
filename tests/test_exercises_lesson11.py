"""Lesson 11's checks: right answers pass, typical wrong answers fail with a message that names the mistake.

Where the check has no message of its own for a mistake, the test asserts the general one,
so that a clearer message later is a deliberate change.
"""

import pytest
import torch
import torch.nn.functional as F

from sdlearn.exercises import check

START, END = 49406, 49407


# --------------------------------------------------------------------------- 11.1 fit_prompt(phrases, tokenizer)

def _pieces(tokenizer, text):
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _keep(phrases, fits, *, stop_at_first=False):
    kept = []
    for phrase in phrases:
        if fits(kept + [phrase]):
            kept.append(phrase)
        elif stop_at_first:
            break
    return ", ".join(kept)


def fit_prompt(phrases, tokenizer):
    return _keep(phrases, lambda kept: _pieces(tokenizer, ", ".join(kept)) <= 75)


def fit_prompt_with_the_full_ids(phrases, tokenizer):
    """Counting all 77 ids, start and end included, is right too."""
    return _keep(phrases, lambda kept: len(tokenizer(", ".join(kept))["input_ids"]) <= 77)


def fit_by_words(phrases, tokenizer):
    return _keep(phrases, lambda kept: len(", ".join(kept).split()) <= 75)


def fit_without_the_commas(phrases, tokenizer):
    return _keep(phrases, lambda kept: sum(_pieces(tokenizer, phrase) for phrase in kept) <= 75)


def fit_in_77(phrases, tokenizer):
    return _keep(phrases, lambda kept: _pieces(tokenizer, ", ".join(kept)) <= 77)


def fit_in_73(phrases, tokenizer):
    return _keep(phrases, lambda kept: _pieces(tokenizer, ", ".join(kept)) <= 73)


def fit_stopping_at_the_first_too_long(phrases, tokenizer):
    return _keep(phrases, lambda kept: _pieces(tokenizer, ", ".join(kept)) <= 75, stop_at_first=True)


def fit_returning_the_list(phrases, tokenizer):
    return fit_prompt(phrases, tokenizer).split(", ")


def fit_joined_by_commas_only(phrases, tokenizer):
    return fit_prompt(phrases, tokenizer).replace(", ", ",")


def fit_shortest_first(phrases, tokenizer):
    kept = fit_prompt(sorted(phrases, key=lambda phrase: _pieces(tokenizer, phrase)), tokenizer).split(", ")
    return ", ".join(phrase for phrase in phrases if phrase in kept)


def fit_nothing(phrases, tokenizer):
    return ""


# --------------------------------------------------------------------------- 11.2 changed_slots(ids_a, ids_b, causal)

def changed_slots(ids_a, ids_b, causal):
    differ = ids_a != ids_b
    if not differ.any():
        return torch.zeros(77, dtype=torch.bool)
    if not causal:
        return torch.ones(77, dtype=torch.bool)
    return torch.cumsum(differ.int(), dim=0) > 0          # True from the first difference on


def changed_slots_as_list(ids_a, ids_b, causal):
    return changed_slots(ids_a, ids_b, causal).tolist()


def only_the_changed_ids(ids_a, ids_b, causal):
    return ids_a != ids_b


def every_slot_always(ids_a, ids_b, causal):
    return torch.ones(77, dtype=torch.bool) if (ids_a != ids_b).any() else torch.zeros(77, dtype=torch.bool)


def causal_rule_always(ids_a, ids_b, causal):
    return changed_slots(ids_a, ids_b, True)


def up_to_the_end_token(ids_a, ids_b, causal):
    mask = changed_slots(ids_a, ids_b, causal)
    if causal:
        mask[int(ids_a.argmax()) + 1:] = False
    return mask


def slot_numbers(ids_a, ids_b, causal):
    return changed_slots(ids_a, ids_b, causal).nonzero().flatten()


def one_slot_late(ids_a, ids_b, causal):
    return torch.cat([torch.tensor([False]), changed_slots(ids_a, ids_b, causal)[:-1]])


# --------------------------------------------------------------------------- 11.3 cosine_per_token(a, b)

def dot_product(a, b):
    return (a * b).sum(-1)


def normalised_by_column(a, b):
    return (F.normalize(a, dim=0) * F.normalize(b, dim=0)).sum(-1)


def all_pairs(a, b):
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


# --------------------------------------------------------------------------- 11.4 pooled_output(features, ids, eos)

def pooled_output(features, ids, eos_token_id):
    end = (ids == eos_token_id).int().argmax(dim=-1)          # argmax returns the first of equal maxima
    return features[torch.arange(features.shape[0]), end]


def pooled_output_in_a_loop(features, ids, eos_token_id):
    rows = []
    for b in range(ids.shape[0]):
        j = ids[b].tolist().index(eos_token_id)
        rows.append(features[b, j])
    return torch.stack(rows)


def pooled_by_argmax(features, ids, eos_token_id):
    return features[torch.arange(features.shape[0]), ids.argmax(dim=-1)]


def pooled_at_the_last_end_token(features, ids, eos_token_id):
    last = ids.shape[1] - 1 - (ids == eos_token_id).flip(-1).int().argmax(dim=-1)
    return features[torch.arange(features.shape[0]), last]


def pooled_at_the_last_slot(features, ids, eos_token_id):
    return features[:, -1]


def pooled_at_49407(features, ids, eos_token_id):
    return pooled_output(features, ids, END)


def pooled_at_one_slot_for_all(features, ids, eos_token_id):
    return features[:, int((ids[0] == eos_token_id).int().argmax())]


def pooled_first_row_only(features, ids, eos_token_id):
    return pooled_output(features, ids, eos_token_id)[0]


def pooled_mean(features, ids, eos_token_id):
    return features.mean(1)


RIGHT = [
    ("11.1", fit_prompt),
    ("11.1", fit_prompt_with_the_full_ids),
    ("11.2", changed_slots),
    ("11.2", changed_slots_as_list),
    ("11.4", pooled_output),
    ("11.4", pooled_output_in_a_loop),
]


@pytest.mark.parametrize("exercise_id, answer", RIGHT, ids=[f"{r[0]}-{r[1].__name__}" for r in RIGHT])
def test_right_answers_pass(exercise_id, answer):
    verdict = check(exercise_id, answer)
    assert verdict.passed, verdict.message


WRONG = [
    ("11.1", fit_by_words, "you counted words"),
    ("11.1", fit_without_the_commas, "the ', ' between two phrases is a piece too"),
    ("11.1", fit_in_77, "the prompt's own pieces must fit in 75"),
    ("11.1", fit_in_73, "the prompt's pieces may fill all 75"),
    ("11.1", fit_stopping_at_the_first_too_long, "go on through the list"),
    ("11.1", fit_returning_the_list, "return the prompt as one string"),
    ("11.1", fit_joined_by_commas_only, "join the kept phrases with ', '"),
    ("11.1", fit_shortest_first, "rather than choosing short phrases"),
    ("11.1", fit_nothing, "would still fit"),
    ("11.2", only_the_changed_ids, "a changed word changes more than its own slot"),
    ("11.2", every_slot_always, "keep their outputs exactly"),
    ("11.2", causal_rule_always, "without a causal mask every slot attends to every other"),
    ("11.2", up_to_the_end_token, "the padding slots after the end token change too"),
    ("11.2", slot_numbers, "should be 77 booleans"),
    ("11.2", one_slot_late, "the outputs change at slots 7 to 76; you gave slots 8 to 76"),
    ("11.3", dot_product, "divide by the lengths"),
    ("11.3", normalised_by_column, "normalise each row"),
    ("11.3", all_pairs, "same position"),
    ("11.4", pooled_by_argmax, "Look for the first slot that holds eos_token_id"),
    ("11.4", pooled_at_the_last_end_token, "(or of the last end token), which is padding"),
    ("11.4", pooled_at_the_last_slot, "that is the vector of the last slot"),
    ("11.4", pooled_at_49407, "use the eos_token_id you are given"),
    ("11.4", pooled_at_one_slot_for_all, "find the end token row by row"),
    ("11.4", pooled_first_row_only, "one vector per prompt"),
    ("11.4", pooled_mean, "the first slot with ids[b, j] == eos_token_id"),
]


@pytest.mark.parametrize("exercise_id, answer, message", WRONG, ids=[f"{w[0]}-{w[1].__name__}" for w in WRONG])
def test_wrong_answers_fail_with_a_helpful_message(exercise_id, answer, message):
    verdict = check(exercise_id, answer)
    assert not verdict.passed
    assert message in verdict.message, verdict.message
