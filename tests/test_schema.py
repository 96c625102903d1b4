"""Schema: known answers for the target language and boxes, round trips, and parse under garbage."""
import json
import random

import pytest
from hypothesis import given, settings, strategies as st

import schema as S
from schema import Argument, Box, ImageEvent, Relation, Span, TextEvent

WORDS = "Rebels bombed the market in Aleppo and rebels fled the market".split()


def test_linearise_known_answer():
    ev = TextEvent("Conflict:Attack", Span(1, 2), (Argument("Attacker", Span(0, 1)), Argument("Place", Span(5, 6)),
                                                    Argument("Target", Span(9, 11))))
    assert S.linearise([ev], WORDS) == ["<t:Conflict:Attack>", "bombed", "<r:Attacker>", "Rebels", "<r:Place>", "Aleppo",
                                        "<r:Target>", "the", "market", "<occ2>"]


@pytest.mark.parametrize("box, size, tokens, back", [
    # L = 128, one bin = 2 px: x1 floors, x2 covers up to the bin that holds it
    (Box(10, 20, 30.5, 41), (128, 64), ["<loc_5>", "<loc_10>", "<loc_15>", "<loc_20>"], Box(10, 20, 32, 42)),
    (Box(0, 0, 128, 64), (128, 64), ["<loc_0>", "<loc_0>", "<loc_63>", "<loc_31>"], Box(0, 0, 128, 64)),
    # a box inside one bin keeps that bin's area, never zero area
    (Box(3.1, 3.2, 3.3, 3.4), (64, 64), ["<loc_3>", "<loc_3>", "<loc_3>", "<loc_3>"], Box(3, 3, 4, 4)),
    # portrait image: bins follow the longer side (H = 200, bin = 3.125 px); x2 is clipped to W
    (Box(0, 0, 100, 200), (100, 200), ["<loc_0>", "<loc_0>", "<loc_31>", "<loc_63>"], Box(0, 0, 100, 200)),
])
def test_box_tokens_known_answers(box, size, tokens, back):
    assert S.box_to_tokens(box, size) == tokens
    assert S.tokens_to_box(tokens, size) == back


def test_reversed_box_tokens_are_swapped():
    assert S.tokens_to_box(["<loc_9>", "<loc_8>", "<loc_1>", "<loc_2>"], (64, 64)) == Box(1, 2, 10, 9)


def test_tokens_to_box_in_the_letterbox_padding():
    """An image 64 wide and 32 high fills bins 0..31 of the y axis; a box starting below is not in the image."""
    assert S.tokens_to_box(["<loc_0>", "<loc_40>", "<loc_9>", "<loc_50>"], (64, 32)) is None
    assert S.tokens_to_box(["<loc_0>", "<loc_30>", "<loc_9>", "<loc_50>"], (64, 32)) == Box(0, 30, 10, 32)
    image_event = ["<t:Life:Die>", "<r:Victim>", "<loc_0>", "<loc_40>", "<loc_9>", "<loc_50>"]
    assert S.parse(image_event, size=(64, 32)) == [S.ImageEvent("Life:Die")]  # the argument is dropped


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 4000), st.integers(1, 4000), st.data())
def test_box_within_one_bin(w, h, data):
    x1 = data.draw(st.floats(0, w, allow_nan=False, exclude_max=True))
    y1 = data.draw(st.floats(0, h, allow_nan=False, exclude_max=True))
    x2 = data.draw(st.floats(x1, w, exclude_min=True)) if x1 < w else w
    y2 = data.draw(st.floats(y1, h, exclude_min=True)) if y1 < h else h
    back = S.tokens_to_box(S.box_to_tokens(Box(x1, y1, x2, y2), (w, h)), (w, h))
    one_bin = max(w, h) / S.NUM_BINS
    assert all(abs(a - b) <= one_bin + 1e-9 for a, b in zip((x1, y1, x2, y2), (back.x1, back.y1, back.x2, back.y2)))
    assert back.x1 < back.x2 and back.y1 < back.y2


# ----------------------------------------------------------------------------- round trips over generated records
VOCAB = ["a", "the", "Anna", "fled", "Aleppo", "é", "U.S.", "-", "market"]  # small, so phrases repeat (<occK>)


@st.composite
def sentence_and_events(draw):
    words = draw(st.lists(st.sampled_from(VOCAB), min_size=1, max_size=12))
    n = len(words)

    def span():
        s = draw(st.integers(0, n - 1))
        return Span(s, draw(st.integers(s + 1, min(n, s + 3))))

    events = []
    for _ in range(draw(st.integers(0, 3))):
        t = draw(st.sampled_from(list(S.EVENT_TYPES)))
        args = tuple(Argument(draw(st.sampled_from(S.TEXT_ROLES[t])), span()) for _ in range(draw(st.integers(0, 3))))
        events.append(TextEvent(t, span(), tuple(dict.fromkeys(args))))
    events = list(dict.fromkeys(events))
    # spans past the schema's MAX_OCC occurrences are not allowed; this vocabulary is too small to reach it
    return words, events


@settings(max_examples=400, deadline=None)
@given(sentence_and_events())
def test_text_round_trip(case):
    words, events = case
    assert S.parse(S.linearise(events, words), words) == events


@st.composite
def image_and_events(draw):
    size = (draw(st.integers(16, 2000)), draw(st.integers(16, 2000)))
    events, written = [], set()
    for _ in range(draw(st.integers(0, 2))):
        t = draw(st.sampled_from(list(S.EVENT_TYPES)))
        args, seen = [], set()
        for _ in range(draw(st.integers(0, 4))):
            x1, x2 = sorted(draw(st.lists(st.integers(0, size[0]), min_size=2, max_size=2, unique=True)))
            y1, y2 = sorted(draw(st.lists(st.integers(0, size[1]), min_size=2, max_size=2, unique=True)))
            arg = Argument(draw(st.sampled_from(S.IMAGE_ROLES[t])), Box(x1, y1, x2, y2))
            key = (arg.role, *S.box_to_tokens(arg.target, size))
            if key not in seen:  # two boxes in the same bins are one box to the schema
                seen.add(key)
                args.append(arg)
        event = ImageEvent(t, tuple(args))
        if tuple(S.linearise([event], size=size)) not in written:
            written.add(tuple(S.linearise([event], size=size)))
            events.append(event)
    return size, events


def _close(a, b, size):
    """Records equal, boxes within one bin."""
    if isinstance(a, Box):
        tol = max(size) / S.NUM_BINS + 1e-9
        return isinstance(b, Box) and all(abs(p - q) <= tol for p, q in zip(vars(a).values(), vars(b).values()))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_close(p, q, size) for p, q in zip(a, b))
    if isinstance(a, (Argument, ImageEvent, Relation)):
        return type(a) is type(b) and all(_close(p, q, size) for p, q in zip(vars(a).values(), vars(b).values()))
    return a == b


@settings(max_examples=300, deadline=None)
@given(image_and_events())
def test_image_round_trip(case):
    size, events = case
    assert _close(events, S.parse(S.linearise(events, size=size), size=size), size)


def test_relation_round_trip():
    rels = [Relation("/per/per/couple", Span(0, 1), Span(5, 6)), Relation("/per/misc/present_in", Span(0, 1), Box(6, 9, 39, 72)),  # bin-aligned box: exact
            Relation("None", Span(2, 4), Span(9, 11))]
    assert S.parse(S.linearise(rels, WORDS, (64, 96)), WORDS, (64, 96)) == rels


# ----------------------------------------------------------------------------- parse never raises
TOKENS = list(S.SPECIAL_TOKENS) + VOCAB + ["", "<t:Nope>", "<loc_999>"]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=40), st.booleans(), st.booleans())
def test_parse_never_raises_and_returns_valid_records(tokens, with_words, with_size):
    words, size = (VOCAB if with_words else None), ((50, 30) if with_size else None)
    for rec in S.parse(tokens, words, size):
        if isinstance(rec, TextEvent):
            assert all(isinstance(a.target, Span) and a.role in S.TEXT_ROLES[rec.event_type] for a in rec.arguments)
        elif isinstance(rec, ImageEvent):
            assert all(isinstance(a.target, Box) and a.role in S.IMAGE_ROLES[rec.event_type] for a in rec.arguments)


def test_parse_garbage_of_any_type():
    assert S.parse([None, 3, object(), "<t:Life:Die>"], size=(9, 9)) == [ImageEvent("Life:Die")]
    assert S.parse(["<t:Life:Die>"], WORDS) == []  # no trigger, no image: nothing to attach it to
    assert S.parse("not a list") == []
    assert S.parse(None) == []


def test_truncated_output_keeps_complete_records():
    events = [TextEvent("Conflict:Attack", Span(1, 2), (Argument("Attacker", Span(0, 1)),)),
              TextEvent("Movement:Transport", Span(8, 9), (Argument("Artifact", Span(7, 8)),))]
    tokens = S.linearise(events, WORDS)
    assert S.parse(tokens[:-1], WORDS) == [events[0], TextEvent("Movement:Transport", Span(8, 9))]
    rng = random.Random(0)
    for _ in range(200):  # random truncation and corruption: every record read is one the words support
        t = tokens[:rng.randrange(len(tokens) + 1)]
        if t and rng.random() < 0.5:
            t[rng.randrange(len(t))] = rng.choice(TOKENS)
        for rec in S.parse(t, WORDS):
            assert 0 <= rec.trigger.start < rec.trigger.end <= len(WORDS)


def test_span_past_max_occ_is_refused():
    words = ["x"] * (S.MAX_OCC + 1)
    assert S.span_to_tokens(Span(S.MAX_OCC - 1, S.MAX_OCC), words)[-1] == f"<occ{S.MAX_OCC}>"
    with pytest.raises(ValueError, match="occurrence"):
        S.span_to_tokens(Span(S.MAX_OCC, S.MAX_OCC + 1), words)


def test_special_tokens_unique_and_complete():
    assert len(set(S.SPECIAL_TOKENS)) == len(S.SPECIAL_TOKENS)
    assert len(S.MNRE_LABELS) == 23 and len(S.EVENT_TYPES) == 8 and len(S.LOC_TOKENS) == S.NUM_BINS


@pytest.mark.parametrize("written, expected", [
    ("Justice||Arrest|Jail", "Justice:Arrest-Jail"), ("Transaction||Transfer|MONEY", "Transaction:Transfer-Money"),
    ("Conflict||Attack", "Conflict:Attack"), ("Business||Merge|Org", None)])
def test_sr_event_type(written, expected):
    assert S.sr_event_type(written) == expected


def test_schema_matches_real_m2e2_files(shared_dir):
    """Every type and role spelled in the official files is in the schema, in the right modality."""
    m = shared_dir / "data" / "m2e2"
    for name in ("text_only_event.json", "text_multimedia_event.json"):
        for sent in json.loads((m / name).read_text()):
            for ev in sent["golden-event-mentions"]:
                assert {a["role"] for a in ev["arguments"]} <= set(S.TEXT_ROLES[ev["event_type"]])
    for name in ("image_only_event.json", "image_multimedia_event.json"):
        for ev in json.loads((m / name).read_text()).values():
            assert set(ev["role"]) <= set(S.IMAGE_ROLES[ev["event_type"]])
    mapped = {S.sr_event_type(line.split("\t")[2]) for line in (m / "ace_sr_mapping.txt").read_text().splitlines() if line}
    assert mapped == set(S.EVENT_TYPES)
