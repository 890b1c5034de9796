"""The segmenter's own decisions, checked exactly on a deterministic backend (Testing/fake_backend.py).

The real models test quality; these tests catch a broken method: the mask choice
taking the worst-scoring mask (or the decoder's IoU), refine running a round fewer
(or more), a slice's prompt ignoring what the configuration asks for.
"""

from __future__ import annotations

import numpy as np
import pytest

from fake_backend import IOU, FakeBackend, rectangle

from SynPoLib.config import MaskChoice, RefinePrompt, SynPoConfig
from SynPoLib.method.segmenter import SynPoSegmenter

R = 256
#: the structure: an axis-aligned rectangle, which an opening by the refine module's
#: 5 x 5 square leaves exactly as it is, so every round's effect is known to the pixel
TOP, LEFT, HEIGHT, WIDTH = 96, 80, 64, 88


def image_with(mask: np.ndarray) -> np.ndarray:
    grey = np.where(mask, 220, 30).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def segment(config: SynPoConfig, support_offset=(0, 0)):
    backend = FakeBackend()
    segmenter = SynPoSegmenter(backend, config)
    support_mask = rectangle((R, R), TOP + support_offset[0], LEFT + support_offset[1], HEIGHT, WIDTH)
    support = segmenter.prepare_support(backend.encode([image_with(support_mask)])[0], support_mask)
    query_mask = rectangle((R, R), TOP, LEFT, HEIGHT, WIDTH)
    result = segmenter.segment(backend.encode([image_with(query_mask)])[0], support)
    return backend, result, query_mask


def no_refine(**edits) -> SynPoConfig:
    return SynPoConfig().updated(**{"refine.rounds": 0, **edits})


def test_the_mask_most_like_the_support_is_kept_not_the_decoders_favourite():
    backend, result, truth = segment(no_refine(), support_offset=(8, -12))
    assert len(backend.calls) == 1 and backend.calls[0]["multimask"]
    # of the three masks (dark: IoU 0.9, bright: 0.5, all: 0.7) the bright one is the structure
    np.testing.assert_array_equal(result.mask, truth)
    assert result.iou == pytest.approx(IOU[1])
    assert result.score > 0.95  # bright cells against a bright prototype: cosine ~1


def test_the_iou_choice_takes_the_decoders_favourite():
    backend, result, truth = segment(no_refine(**{"prompt.mask_choice": MaskChoice.IOU}))
    np.testing.assert_array_equal(result.mask, ~truth)  # the dark mask: the decoder's 0.9
    assert result.iou == pytest.approx(max(IOU))


@pytest.mark.parametrize("rounds", [0, 1, 2, 3])
def test_refine_runs_exactly_the_configured_rounds(rounds):
    cfg = SynPoConfig().updated(**{"refine.rounds": rounds, "refine.prompt": RefinePrompt.MASK})
    backend, result, truth = segment(cfg)
    assert len(backend.calls) == 1 + rounds
    assert backend.calls[0]["mask_input"] is None
    for call in backend.calls[1:]:  # each round re-prompts with the kept component, one mask
        assert call["mask_input"] is not None and not call["multimask"]
    # each round's answer is the previous mask shrunk by one pixel a side (the fake decoder)
    expected = rectangle((R, R), TOP + rounds, LEFT + rounds, HEIGHT - 2 * rounds, WIDTH - 2 * rounds)
    np.testing.assert_array_equal(result.mask, expected)
    for k, call in enumerate(backend.calls[1:]):  # round k+1 was prompted with round k's mask
        prompt = rectangle((R, R), TOP + k, LEFT + k, HEIGHT - 2 * k, WIDTH - 2 * k)
        np.testing.assert_array_equal(call["mask_input"] > 0, prompt)


def test_the_prompt_carries_the_paper_points_and_no_box():
    backend, result, truth = segment(no_refine())
    call = backend.calls[0]
    assert call["box"] is None
    positives = call["points"][call["labels"] == 1].astype(int)
    negatives = call["points"][call["labels"] == 0].astype(int)
    assert len(positives) == 3 and len(negatives) == 4  # n_positive, n_negative [A]
    assert truth[positives[:, 1], positives[:, 0]].all()  # (x, y): positives on the structure
    assert not truth[negatives[:, 1], negatives[:, 0]].any()
