"""Conformance: evaluate.py reproduces the published values of the conformance table (README,
"Scoring M2E2 predictions") on the real M2E2 files and the peers' own output files.

The peer outputs in ../shared/data/peers/ come in the peers' own formats; experiments/peers.py writes them
as evaluate.py's JSON Lines. Skips without ../shared.
"""
import functools
import json

import pytest

from data import read_m2e2
from evaluate import CELLS, Protocol, load_predictions, score

from peers import gold_lines, mmutf_lines, unicl_lines

SWITCHES = ("keep_events", "trigger_start", "gold_images_only", "unattached_args")


@functools.lru_cache
def read_gold(directory):
    return read_m2e2(directory)  # read once per session: the real files take a few tenths of a second


@pytest.fixture
def gold(shared_dir):
    return read_gold(shared_dir / "data" / "m2e2")


def write_jsonl(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def cell(result, name):
    c = result[name]
    return c["p"], c["r"], c["f1"], c["match"], c["pred"], c["gold"]


@pytest.mark.parametrize("on", [(), *[(s,) for s in SWITCHES], SWITCHES])
def test_gold_as_predictions_is_100(gold, tmp_path, on):
    result = score(gold, load_predictions(write_jsonl(tmp_path / "gold.jsonl", gold_lines(gold)), gold),
                   Protocol(**{s: True for s in on}))
    assert {name: cell(result, name)[:3] for name in CELLS} == {name: (100.0, 100.0, 100.0) for name in CELLS}
    if not on:  # (switches change the keys, e.g. unattached_args merges an argument shared by two events)
        # 1,053 = 312 text arguments + 741 boxes, recomputed from the raw files by an independent script
        assert [result[name]["gold"] for name in CELLS] == [1297, 1966, 391, 1429, 309, 1053]
    assert result["unknown_ids"] == 0


@pytest.fixture
def mmutf(gold, shared_dir, tmp_path):
    path = write_jsonl(tmp_path / "mmutf.jsonl", mmutf_lines(shared_dir / "data" / "peers"))
    with pytest.warns(UserWarning, match=r"27 predicted ids are not in the gold universe"):
        return load_predictions(path, gold)


def test_mmutf_strict(gold, mmutf):
    result = score(gold, mmutf)
    assert cell(result, "text_mention") == (48.48, 65.00, 55.53, 843, 1739, 1297)
    assert cell(result, "image_mention") == (55.13, 59.08, 57.04, 231, 419, 391)
    assert cell(result, "multimedia_mention") == (83.52, 49.19, 61.91, 152, 182, 309)
    assert result["unknown_ids"] == 27


def test_mmutf_unknown_ids_are_all_images(gold, mmutf):
    unknown = {i for i in mmutf.images if i not in gold.images}
    assert len(unknown) == 27 and all(s in gold.sentences for s in mmutf.sentences)


def test_mmutf_keep_events_gold_images_only(gold, mmutf):
    result = score(gold, mmutf, Protocol(keep_events=True, gold_images_only=True))
    assert cell(result, "text_mention")[:3] == (76.22, 65.00, 70.16)
    assert cell(result, "image_mention")[:3] == (88.51, 59.08, 70.86)


@pytest.mark.parametrize("switches, expected", [
    ({"trigger_start": True}, (51.10, 59.21, 54.86, 768, 1503, 1297)),
    ({"trigger_start": True, "keep_events": True}, (78.13, 59.21, 67.37)),
])
def test_unicl(gold, shared_dir, tmp_path, switches, expected):
    pred = load_predictions(write_jsonl(tmp_path / "unicl.jsonl", unicl_lines(shared_dir)), gold)
    assert cell(score(gold, pred, Protocol(**switches)), "text_mention")[:len(expected)] == expected
