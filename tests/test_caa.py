"""Context-aware augmentation rows: harmful prefix masked out, refusal trained."""

import random

import pytest
import torch

from mosr.training import caa, losses

I = losses.IGNORE_INDEX


def test_build_row_masks_prompt_and_prefix():
    row = caa.build_row([1, 2, 3], [10, 11], [20, 21, 22])
    assert row.input_ids == [1, 2, 3, 10, 11, 20, 21, 22]
    assert row.labels == [I, I, I, I, I, 20, 21, 22]
    assert row.prefix_tokens == 2


def test_build_row_shortens_prefix_first_and_drops_impossible_rows():
    row = caa.build_row([1, 2, 3], [10, 11, 12, 13], [20, 21], max_length=7)
    assert row.input_ids == [1, 2, 3, 10, 11, 20, 21] and row.prefix_tokens == 2
    assert caa.build_row([1, 2, 3], [10], [20, 21], max_length=4) is None


def test_ce_only_sees_refusal_tokens():
    """The shifted CE targets of a CAA row are exactly the refusal tokens."""
    row = caa.build_row([1, 2, 3], [10, 11], [20, 21, 22])
    labels = torch.tensor([row.labels])
    _, targets = losses.shifted_targets(labels)
    assert targets.tolist() == [20, 21, 22]
    # changing the logits at prefix positions does not change the loss
    torch.manual_seed(0)
    logits = torch.randn(1, len(row.input_ids), 30)
    base = losses.masked_lm_loss(logits, labels)
    logits[0, :4] += 100 * torch.randn(4, 30)  # positions predicting prompt/prefix tokens
    assert losses.masked_lm_loss(logits, labels).item() == pytest.approx(base.item())


def test_prefix_length_distribution():
    rng = random.Random(0)
    ks = [caa.sample_prefix_length(rng, 100, zero_share=0.3, max_prefix=40) for _ in range(4000)]
    zero = sum(k == 0 for k in ks) / len(ks)
    assert 0.27 < zero < 0.33
    assert max(ks) == 40 and min(k for k in ks if k) == 1
    assert all(caa.sample_prefix_length(rng, 5, zero_share=0.0, max_prefix=40) <= 5 for _ in range(100))
    assert caa.sample_prefix_length(rng, 0, zero_share=0.0, max_prefix=40) == 0
    assert all(caa.sample_prefix_length(rng, 9, zero_share=1.0, max_prefix=4) == 0 for _ in range(50))


def test_sentence_ends():
    text = "First step. Second step!\nThird"
    ends = caa.sentence_ends(text)
    assert [text[:e] for e in ends] == ["First step.", "First step. Second step!", text]


def test_refusal_templates_are_varied_and_recognised():
    from mosr.training.refusals import REFUSAL_TEMPLATES, looks_like_refusal

    assert len(set(REFUSAL_TEMPLATES)) >= 20
    assert looks_like_refusal("I'm sorry, but I can't help with that.")
    assert not looks_like_refusal("Sure, here is how to do it.")
