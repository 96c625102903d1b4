"""train.get_lr, known answers: linear warmup lr * (step + 1) / warmup, then cosine from lr to min_lr at max_steps.

Steps are 0-based: training runs steps 0 .. max_steps - 1, and step 0 already takes a (small) update.
"""
import math

import pytest

import train

CFG = train.TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)  # 100 cosine steps


@pytest.mark.parametrize("step, expected", [
    (0, 1e-3 * 1 / 10),                    # the first step: 1/10 of lr, not 0 (a zero step wastes a batch)
    (4, 1e-3 * 5 / 10),
    (9, 1e-3),                             # warmup - 1: the last warmup step reaches lr
    (10, 1e-3),                            # warmup: the cosine starts at lr (progress 0)
    (60, 1e-4 + 0.5 * (1e-3 - 1e-4)),      # half way through the cosine: the mean of lr and min_lr
    (109, 1e-4 + 0.5 * (1 + math.cos(math.pi * 99 / 100)) * (1e-3 - 1e-4)),  # the last step trained
    (110, 1e-4),                           # max_steps: the floor
    (500, 1e-4),                           # past max_steps (a longer resumed run): stays on the floor
])
def test_get_lr_known_answers(step, expected):
    assert train.get_lr(step, CFG) == pytest.approx(expected, rel=1e-12)


def test_get_lr_without_warmup_starts_at_lr():
    cfg = train.TrainConfig(lr=5e-4, min_lr=0.0, warmup_steps=0, max_steps=4)
    assert [train.get_lr(s, cfg) for s in range(5)] == pytest.approx(
        [5e-4 * 0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(5)], rel=1e-12)
