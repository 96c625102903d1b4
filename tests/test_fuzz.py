"""Parser and scorer under garbage (seeded hypothesis, so CI sees the same cases every run).

parse must never raise, whatever it reads, and keeps every well-formed record before the garbage; the scorer
must never crash on any well-formed prediction file, and every P / R / F1 stays within [0, 100] with
match <= min(pred, gold).
"""
import json
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rmpl
import schema as S
import toy
from data import read_m2e2
from evaluate import CELLS, Protocol, load_predictions, score, score_by_type

TYPES = sorted(S.TEXT_ROLES)
FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------------------- parse
# parse has no try/except (schema.py): an exception anywhere in it fails these tests.
SENTENCE = "the rebels bombed Aleppo and the army attacked the rebels in Aleppo".split()
SIZE = (64, 32)  # one location bin is one pixel: integer boxes inside the image read back exactly
ARG = S.Argument
GOLD = [  # every kind of record, text first, with second occurrences (<occ2>) in the arguments
    S.TextEvent("Conflict:Attack", S.Span(2, 3), (ARG("Attacker", S.Span(1, 2)), ARG("Place", S.Span(3, 4)))),
    S.TextEvent("Conflict:Attack", S.Span(7, 8),
                (ARG("Attacker", S.Span(5, 7)), ARG("Target", S.Span(9, 10)), ARG("Place", S.Span(11, 12)))),
    S.ImageEvent("Life:Die", (ARG("Victim", S.Box(0, 0, 32, 32)), ARG("Instrument", S.Box(40, 8, 64, 30)))),
    S.Relation("/per/loc/place_of_residence", S.Span(1, 2), S.Span(3, 4)),
    S.TextEvent("Life:Die", S.Span(2, 3)),
]
WORDS = ["the", "rebels", "bombed", "Aleppo", "the", "<head>", "", " ", "\u2581", "x y"]
TOKEN = st.one_of(st.sampled_from(S.SPECIAL_TOKENS), st.sampled_from(WORDS), st.text(max_size=6),
                  st.sampled_from(["<t:Nope>", "<r:Nope>", "<loc_-1>", "<loc_64>", "<occ1>", "<occ99>"]),
                  st.sampled_from(SENTENCE), st.sampled_from(list(S.TYPE_TOKENS.values())))  # text events


def check_records(records, words, size):
    """What any parse result must satisfy: known types and roles of the right modality, spans inside the
    sentence, boxes inside the image, no duplicates."""
    assert len(set(records)) == len(records)
    for rec in records:
        if isinstance(rec, S.Relation):
            targets = [rec.head, rec.tail]
        else:
            targets = [a.target for a in rec.arguments]
            roles = (S.TEXT_ROLES if isinstance(rec, S.TextEvent) else S.IMAGE_ROLES)[rec.event_type]
            assert all(a.role in roles for a in rec.arguments)
        if isinstance(rec, S.TextEvent):
            assert words is not None and all(isinstance(t, S.Span) for t in targets)
            targets.append(rec.trigger)
        if isinstance(rec, S.ImageEvent):
            assert size is not None and all(isinstance(t, S.Box) for t in targets)
        for t in targets:
            if isinstance(t, S.Span):
                assert 0 <= t.start < t.end <= len(words)
            else:
                assert 0 <= t.x1 and 0 <= t.y1 and t.x2 <= size[0] and t.y2 <= size[1]


@FUZZ
@given(tokens=st.lists(TOKEN, max_size=60),
       words=st.none() | st.just(SENTENCE) | st.lists(st.sampled_from(WORDS) | st.text(max_size=4), max_size=12),
       size=st.none() | st.tuples(st.integers(0, 5000), st.integers(0, 5000)))
def test_parse_never_raises(tokens, words, size):
    check_records(S.parse(tokens, words, size), words, size)


# Mostly the sentence's own words, type, role and occurrence tokens: random sequences that often spell real
# events, and words followed by an <occK> past their last occurrence.
SENTENCE_TOKEN = st.one_of(
    st.sampled_from(SENTENCE), st.sampled_from(SENTENCE), st.sampled_from(list(S.TYPE_TOKENS.values())),
    st.sampled_from(list(S.ROLE_TOKENS.values())), st.sampled_from(S.LOC_TOKENS),
    st.sampled_from([*S.OCC_TOKENS.values(), S.HEAD, S.TAIL, *list(S.REL_TOKENS.values())[:3]]), TOKEN)


@FUZZ
@given(tokens=st.lists(SENTENCE_TOKEN, min_size=4, max_size=60), size=st.none() | st.just(SIZE))
def test_parse_random_tokens_over_a_real_sentence(tokens, size):
    check_records(S.parse(tokens, SENTENCE, size), SENTENCE, size)


@FUZZ
@given(k=st.integers(1, len(GOLD)), opener=st.sampled_from([*S.TYPE_TOKENS.values(), *S.REL_TOKENS.values()]),
       tail=st.lists(TOKEN, max_size=40))
def test_parse_keeps_a_wellformed_prefix_whatever_follows(k, opener, tail):
    """The first k gold records, then garbage that starts a new record: the k records are read back exactly,
    so every case reaches a real text event with arguments (and the bounds checks run on it)."""
    records = S.parse(S.linearise(GOLD[:k], SENTENCE, SIZE) + [opener] + tail, SENTENCE, SIZE)
    assert records[:k] == GOLD[:k]
    check_records(records, SENTENCE, SIZE)


# ----------------------------------------------------------------------------- scorer
@pytest.fixture(scope="module")
def gold():
    root = toy.generate(Path(tempfile.mkdtemp()), seed=0, ace_train=1, ace_dev=1, ace_test=1, swig_train=1, swig_dev=1,
                        swig_test=1, mnre_train=1, mnre_dev=1, mnre_test=1, m2e2_dev=1, m2e2_test=3)
    return read_m2e2(root / "m2e2" / "test")


@st.composite
def predictions(draw, gold) -> S.Predictions:
    """Random well-formed predictions: gold and unknown ids, any type, roles of the type, spans inside the
    sentence, boxes with x1 <= x2 and y1 <= y2 (zero area and outside the image included), some gold events."""
    sentence_ids = st.sampled_from(sorted(gold.sentences) + ["unknown_0", "unknown_1"])
    image_ids = st.sampled_from(sorted(gold.images) + ["unknown_0", "unknown_9"])
    gold_text = [e for s in gold.sentences.values() for e in s.events]
    gold_image = [e for i in gold.images.values() for e in i.events]

    def span(n):
        start = draw(st.integers(0, n - 1))
        return S.Span(start, draw(st.integers(start + 1, n)))

    def box():
        x1, y1 = draw(st.floats(-10, 300)), draw(st.floats(-10, 300))
        return S.Box(x1, y1, x1 + draw(st.floats(0, 200)), y1 + draw(st.floats(0, 200)))

    pred = S.Predictions()
    for sid in draw(st.lists(sentence_ids, max_size=6)):
        n = len(gold.sentences[sid].words) if sid in gold.sentences else draw(st.integers(1, 12))
        for _ in range(draw(st.integers(0, 3))):
            t = draw(st.sampled_from(TYPES))
            args = tuple(S.Argument(draw(st.sampled_from(S.TEXT_ROLES[t])), span(n)) for _ in range(draw(st.integers(0, 3))))
            pred.sentences.setdefault(sid, []).append(S.TextEvent(t, span(n), args))
    for iid in draw(st.lists(image_ids, max_size=4)):
        for _ in range(draw(st.integers(0, 2))):
            t = draw(st.sampled_from(TYPES))
            args = tuple(S.Argument(draw(st.sampled_from(S.IMAGE_ROLES[t])), box()) for _ in range(draw(st.integers(0, 4))))
            pred.images.setdefault(iid, []).append(S.ImageEvent(t, args))
    if gold_text and draw(st.booleans()):  # some right answers, so that matches happen
        for s in gold.sentences.values():
            pred.sentences.setdefault(s.id, []).extend(draw(st.lists(st.sampled_from(s.events), max_size=2)) if s.events else [])
    if gold_image and draw(st.booleans()):
        for i in gold.images.values():
            pred.images.setdefault(i.id, []).extend(draw(st.lists(st.sampled_from(i.events), max_size=1)) if i.events else [])
    pred.links = draw(st.lists(st.builds(S.Link, sentence_ids, image_ids, st.sampled_from(TYPES)), max_size=4))
    pred.links += draw(st.lists(st.sampled_from(gold.links), max_size=2)) if gold.links else []
    return pred


def check_cells(cells: dict):
    for name in CELLS:
        c = cells[name]
        assert all(0 <= c[k] <= 100 for k in ("p", "r", "f1")), (name, c)
        assert 0 <= c["match"] <= min(c["pred"], c["gold"]), (name, c)


@FUZZ
@given(data=st.data(), switches=st.tuples(*[st.booleans()] * 4))
def test_scorer_never_crashes_and_stays_in_range(gold, data, switches):
    pred = data.draw(predictions(gold))
    with tempfile.TemporaryDirectory() as tmp:  # through the file format, as evaluate.py --pred reads it
        path = Path(tmp) / "pred.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in rmpl.prediction_lines(pred)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unknown ids warn: expected here
            loaded = load_predictions(path, gold)
    on = dict(zip(("keep_events", "trigger_start", "gold_images_only", "unattached_args"), switches))
    result = score(gold, loaded, Protocol(**on))
    check_cells(result)
    assert result["unknown_ids"] >= 0
    for cells in score_by_type(gold, loaded, Protocol(**on)).values():
        check_cells(cells)
