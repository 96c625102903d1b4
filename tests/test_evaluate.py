"""Known-answer tests for evaluate.py on a tiny gold directory written in the official five-file format.

The tiny gold (counts worked out by hand):
    sentence D_0  Police arrested the man in Paris   Justice:Arrest-Jail trigger 1:2, Agent 0:1, Person 2:4, Place 5:6
    sentence D_1  Troops attacked the town           Conflict:Attack trigger 1:2, Attacker 0:1, Target 2:4
    sentence D_2  Nothing happened here              (no event)
    image D_0     Justice:Arrest-Jail  Person (0,0,10,10) (20,0,30,10), Agent (0,0,10,20)
    image D_1     Conflict:Attack      Attacker (0,0,4,4)
    image D_2     (no event; named by the sentences' image lists)
    links         D_0 - D_0 Justice:Arrest-Jail, D_1 - D_1 Conflict:Attack
gold counts: text mention 2, text argument 5, image mention 2, image argument 4, multimedia mention 2,
multimedia argument 3 + 2 text arguments + 3 + 1 boxes = 9.
"""
import json
import subprocess
import sys
import warnings

import pytest

import evaluate
from data import M2E2, read_m2e2
from evaluate import CELLS, PredictionError, iou, load_predictions, match_boxes, score
from schema import Argument, Box, Image, ImageEvent, Predictions

ARREST, ATTACK = "Justice:Arrest-Jail", "Conflict:Attack"
GOLD_COUNTS = {"text_mention": 2, "text_argument": 5, "image_mention": 2, "image_argument": 4,
               "multimedia_mention": 2, "multimedia_argument": 9}
SWITCHES = ("keep_events", "trigger_start", "gold_images_only", "unattached_args")


def sentence(sid, words, events, file_images=("D_0.jpg", "D_1.jpg", "D_2.jpg")):
    """One record of text_*_event.json; events = [(type, (ts, te), [(role, start, end)])]."""
    mentions = [{"event_type": t, "trigger": {"start": ts, "end": te, "text": " ".join(words[ts:te])},
                 "arguments": [{"role": r, "start": s, "end": e, "text": " ".join(words[s:e])} for r, s, e in args]}
                for t, (ts, te), args in events]
    entities = [{"entity-type": "PER", "text": " ".join(words[s:e]), "start": s, "end": e}
                for _, _, args in events for _, s, e in args]
    return {"sentence_id": sid, "words": list(words), "sentence": " ".join(words), "golden-entity-mentions": entities,
            "golden-event-mentions": mentions, "image": list(file_images)}


def write_gold(directory):
    """The tiny gold of the module docstring, as the five official files."""
    directory.mkdir()
    text_only = [sentence("D_0", "Police arrested the man in Paris".split(),
                          [(ARREST, (1, 2), [("Agent", 0, 1), ("Person", 2, 4), ("Place", 5, 6)])]),
                 sentence("D_2", "Nothing happened here".split(), [])]
    text_mm = [sentence("D_1", "Troops attacked the town".split(), [(ATTACK, (1, 2), [("Attacker", 0, 1), ("Target", 2, 4)])])]
    image_mm = {"D_0": {"event_type": ARREST, "role": {"Person": [["1", 0, 0, 10, 10], ["1", 20, 0, 30, 10]],
                                                        "Agent": [["0", 0, 0, 10, 20]]}}}
    image_only = {"D_1": {"event_type": ATTACK, "role": {"Attacker": [["1", 0, 0, 4, 4]]}}}
    files = {"text_only_event.json": text_only, "text_multimedia_event.json": text_mm,
             "image_only_event.json": image_only, "image_multimedia_event.json": image_mm}
    for name, content in files.items():
        (directory / name).write_text(json.dumps(content))
    (directory / "crossmedia_coref.txt").write_text(f"D_0\tD_0.jpg\t{ARREST}\nD_1\tD_1.jpg\t{ATTACK}\n")
    return directory


def text_line(sid, events):
    return {"sentence_id": sid, "events": [{"event_type": t, "trigger": {"start": ts, "end": te},
                                            "arguments": [{"role": r, "start": s, "end": e} for r, s, e in args]}
                                           for t, (ts, te), args in events]}


def image_line(iid, events):
    return {"image_id": iid, "events": [{"event_type": t, "arguments": [{"role": r, "bbox": list(b)} for r, b in args]}
                                        for t, args in events]}


def link_line(sid, iid, t):
    return {"sentence_id": sid, "image_id": iid, "event_type": t}


GOLD_LINES = [
    text_line("D_0", [(ARREST, (1, 2), [("Agent", 0, 1), ("Person", 2, 4), ("Place", 5, 6)])]),
    text_line("D_1", [(ATTACK, (1, 2), [("Attacker", 0, 1), ("Target", 2, 4)])]),
    image_line("D_0.jpg", [(ARREST, [("Person", (0, 0, 10, 10)), ("Person", (20, 0, 30, 10)), ("Agent", (0, 0, 10, 20))])]),
    image_line("D_1", [(ATTACK, [("Attacker", (0, 0, 4, 4))])]),
    link_line("D_0", "D_0.jpg", ARREST), link_line("D_1", "D_1", ATTACK),
]


@pytest.fixture
def gold_dir(tmp_path):
    return write_gold(tmp_path / "gold")


def write_lines(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def run(gold_dir, lines, **switches):
    gold = read_m2e2(gold_dir)
    return score(gold, load_predictions(write_lines(gold_dir.parent / "pred.jsonl", lines), gold),
                 evaluate.Protocol(**switches))


def counts(result):
    return {name: (result[name]["match"], result[name]["pred"], result[name]["gold"]) for name in CELLS}


# ----------------------------------------------------------------------------- IoU and box matching
@pytest.mark.parametrize("a, b, expected", [
    ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
    ((0, 0, 1, 1), (1, 0, 2, 1), 0.0),        # touching edges
    ((0, 0, 1, 1), (1, 1, 2, 2), 0.0),        # touching corners
    ((0, 0, 0, 5), (0, 0, 5, 5), 0.0),        # zero area
    ((3, 3, 3, 3), (3, 3, 3, 3), 0.0),        # both zero area: no division by zero
    ((0, 0, 2, 1), (0, 0, 1, 1), 0.5),        # exactly one half
    ((0, 0, 2, 2), (1, 1, 3, 3), 1 / 7),      # inter 1, union 4 + 4 - 1
])
def test_iou(a, b, expected):
    assert iou(a, b) == pytest.approx(expected) and iou(b, a) == pytest.approx(expected)


G1, G2 = ("T", "r", (0, 0, 10, 10)), ("T", "r", (0, 2, 10, 12))
A, B = ("T", "r", (0, 1, 10, 11)), ("T", "r", (0, -3, 10, 7))  # A: 90/110 with G1 and G2 (a tie); B: 70/130 with G1, 50/150 with G2


@pytest.mark.parametrize("pred, gold, expected", [
    ([("T", "r", (0, 0, 2, 1))], [("T", "r", (0, 0, 1, 1))], 1),      # IoU exactly 0.5 counts
    ([("T", "r", (0, 0, 2.04, 1))], [("T", "r", (0, 0, 1, 1))], 0),   # IoU 1 / 2.04 = 0.49 does not
    ([("T", "r", (0, 0, 10, 10))], [G1, ("T", "r", (0, 0, 10, 6))], 1),  # one prediction, two gold boxes: one match
    ([G1, ("T", "r", (0, 0, 10, 6))], [G1], 1),                       # two predictions, one gold box: one match
    ([A, B], [G1, G2], 1),   # tie A-G1 / A-G2 goes to the earlier gold box G1, which B then cannot have
    ([A, B], [G2, G1], 2),   # the same boxes with gold order swapped: A-G2, then B-G1
    ([("U", "r", G1[2])], [G1], 0),                                   # wrong event type
    ([("T", "s", G1[2])], [G1], 0),                                   # wrong role
    ([], [G1], 0),
])
def test_match_boxes(pred, gold, expected):
    assert match_boxes(pred, gold) == expected


# The protocol's threshold, through the public scorer: one gold box (0, 0, 8, 8), area 64, and one predicted
# box of the same event type and role that grows or shrinks in height. The sizes are exact binary fractions,
# so each IoU below is exact and the test sits right at 0.5 on both sides.
GOLD_BOX = Box(0, 0, 8, 8)


@pytest.mark.parametrize("pred_box, matched", [
    (Box(0, 0, 8, 16), True),        # inter 64, union 128: IoU exactly 0.5 counts
    (Box(0, 0, 8, 15.75), True),     # 64 / 126 = 0.508
    (Box(0, 0, 8, 16.25), False),    # 64 / 130 = 0.492: just below 0.5 does not match
    (Box(0, 0, 8, 4), True),         # inter 32, union 64: exactly 0.5 from inside
    (Box(0, 0, 8, 3.875), False),    # 31 / 64 = 0.484
    (Box(0, 0, 8, 18), False),       # 64 / 144 = 0.444: a threshold of 0.4 would take it
])
def test_image_argument_needs_iou_of_one_half(pred_box, matched):
    gold = M2E2(sentences={}, links=[],
                images={"D_0": Image("D_0", (100, 100), (ImageEvent(ATTACK, (Argument("Attacker", GOLD_BOX),)),))})
    pred = Predictions(images={"D_0": [ImageEvent(ATTACK, (Argument("Attacker", pred_box),))]})
    cell = score(gold, pred)["image_argument"]
    assert (cell["match"], cell["pred"], cell["gold"]) == (int(matched), 1, 1)
    assert cell["f1"] == (100.0 if matched else 0.0)
    assert score(gold, pred)["image_mention"]["match"] == 1  # the mention is right either way


# ----------------------------------------------------------------------------- scoring the tiny gold
@pytest.mark.parametrize("on", [(), *[(s,) for s in SWITCHES], SWITCHES])
def test_gold_as_predictions_is_100(gold_dir, on):
    result = run(gold_dir, GOLD_LINES, **{s: True for s in on})
    assert counts(result) == {name: (n, n, n) for name, n in GOLD_COUNTS.items()}
    assert all(result[name]["f1"] == 100.0 for name in CELLS) and result["unknown_ids"] == 0


def test_empty_predictions(gold_dir):
    with pytest.warns(UserWarning, match=r"pred.jsonl: holds no predictions \(no event and no link\): every cell scores 0"):
        result = run(gold_dir, [])
    for name in CELLS:
        assert result[name] == {"p": 0.0, "r": 0.0, "f1": 0.0, "match": 0, "pred": 0, "gold": GOLD_COUNTS[name]}


def test_partial_prediction_numbers(gold_dir):
    # text: right event, 2 of 3 arguments plus a wrong one; a wrong mention on D_2.
    # arguments: P = 2/3, R = 2/5, F1 = 2 * (2/3) * (2/5) / (2/3 + 2/5) = 1/2
    lines = [text_line("D_0", [(ARREST, (1, 2), [("Agent", 0, 1), ("Person", 2, 4), ("Place", 4, 6)])]),
             text_line("D_2", [(ATTACK, (0, 1), [])])]
    result = run(gold_dir, lines)
    assert counts(result)["text_mention"] == (1, 2, 2)
    assert result["text_argument"] == {"p": 66.67, "r": 40.0, "f1": 50.0, "match": 2, "pred": 3, "gold": 5}


def test_duplicate_predictions_count_once(gold_dir):
    box = ("Attacker", (0, 0, 4, 4))
    lines = [image_line("D_1", [(ATTACK, [box, box])]), image_line("D_1.jpg", [(ATTACK, [box])]),  # lines merge
             text_line("D_1", [(ATTACK, (1, 2), [])]), text_line("D_1", [(ATTACK, (1, 2), [])])]
    result = counts(run(gold_dir, lines))
    assert result["image_argument"] == (1, 1, 4) and result["image_mention"] == (1, 1, 2)
    assert result["text_mention"] == (1, 1, 2)


def test_wrong_event_type_on_a_correct_box(gold_dir):
    # Agent is an image role of Movement:Transport too, so the box and role are right but the type is not.
    result = counts(run(gold_dir, [image_line("D_0", [("Movement:Transport", [("Agent", (0, 0, 10, 20))])])]))
    assert result["image_argument"] == (0, 1, 4) and result["image_mention"] == (0, 1, 2)


def test_multimedia_pooling(gold_dir):
    lines = [text_line("D_0", [(ARREST, (1, 2), [("Agent", 0, 1), ("Person", 2, 4)])]),
             text_line("D_1", [(ARREST, (1, 2), [("Person", 2, 4)])]),  # linked only under Attack: not pooled
             image_line("D_0", [(ARREST, [("Person", (0, 0, 10, 9)), ("Person", (50, 50, 60, 60))])]),
             link_line("D_0", "D_0", ARREST), link_line("D_1", "D_0", ATTACK)]  # D_0 linked twice: its boxes once
    result = counts(run(gold_dir, lines))
    assert result["multimedia_mention"] == (1, 2, 2)
    # pred: 2 text arguments (D_0 Arrest; D_1 has no Attack event) + 2 boxes of D_0; match: 2 + 1
    assert result["multimedia_argument"] == (3, 4, 9)


@pytest.mark.parametrize("unattached_args", [False, True])
def test_a_wrong_role_is_not_a_match(gold_dir, unattached_args):
    # D_0's Arrest with Agent 0:1 (right) and Agent 2:4 (the span is the gold Person's; Agent is a role of the
    # type, so only the role is wrong): match 1, pred 2, gold 5; P = 1/2, R = 1/5, F1 = 2 * 0.5 * 0.2 / 0.7 = 2/7.
    # The same under unattached_args (the right trigger, so the key without it changes nothing here).
    lines = [text_line("D_0", [(ARREST, (1, 2), [("Agent", 0, 1), ("Agent", 2, 4)])]), link_line("D_0", "D_0", ARREST)]
    result = run(gold_dir, lines, unattached_args=unattached_args)
    assert result["text_argument"] == {"p": 50.0, "r": 20.0, "f1": 28.57, "match": 1, "pred": 2, "gold": 5}
    # multimedia argument: the two text tuples of the linked D_0 Arrest, no boxes; gold 9 (module docstring)
    assert result["multimedia_argument"] == {"p": 50.0, "r": 11.11, "f1": 18.18, "match": 1, "pred": 2, "gold": 9}


def test_a_link_of_the_wrong_type_is_not_a_match(gold_dir):
    # D_0 - D_0 under its gold type, D_1 - D_1 under Arrest (gold: Attack): the right pair of ids, the wrong type.
    # match 1, pred 2, gold 2: P = R = F1 = 1/2.
    lines = [link_line("D_0", "D_0", ARREST), link_line("D_1", "D_1", ARREST)]
    result = run(gold_dir, lines)
    assert result["multimedia_mention"] == {"p": 50.0, "r": 50.0, "f1": 50.0, "match": 1, "pred": 2, "gold": 2}


# Each switch must change exactly the cells named here, and nothing else: the filtering switches leave the
# multimedia cells alone (the links below would change them if they did not).
SWITCH_CASES = {
    "keep_events": ([text_line("D_2", [(ATTACK, (0, 1), [("Target", 2, 3)])]), link_line("D_2", "D_1", ATTACK)],
                    {"text_mention": (0, 1, 2), "text_argument": (0, 1, 5)},
                    {"text_mention": (0, 0, 2), "text_argument": (0, 0, 5)}),
    "trigger_start": ([text_line("D_0", [(ARREST, (1, 3), [("Agent", 0, 1)])])],
                      {"text_mention": (0, 1, 2), "text_argument": (0, 1, 5)},
                      {"text_mention": (1, 1, 2), "text_argument": (1, 1, 5)}),
    "gold_images_only": ([image_line("D_2", [(ATTACK, [("Target", (0, 0, 1, 1))])]), link_line("D_1", "D_2", ATTACK)],
                         {"image_mention": (0, 1, 2), "image_argument": (0, 1, 4)},
                         {"image_mention": (0, 0, 2), "image_argument": (0, 0, 4)}),
    "unattached_args": ([text_line("D_0", [(ARREST, (3, 4), [("Agent", 0, 1), ("Person", 2, 4)])])],
                        {"text_mention": (0, 1, 2), "text_argument": (0, 2, 5)},
                        {"text_mention": (0, 1, 2), "text_argument": (2, 2, 5)}),
}


@pytest.mark.parametrize("switch", SWITCHES)
def test_each_switch_changes_what_it_should(gold_dir, switch):
    lines, strict_cells, switched_cells = SWITCH_CASES[switch]
    strict, switched = counts(run(gold_dir, lines)), counts(run(gold_dir, lines, **{switch: True}))
    assert {k: strict[k] for k in strict_cells} == strict_cells
    assert {k: switched[k] for k in switched_cells} == switched_cells
    assert {k: v for k, v in switched.items() if k not in switched_cells} == \
           {k: v for k, v in strict.items() if k not in strict_cells}


def test_switches_compose(gold_dir):
    lines = [text_line("D_0", [(ARREST, (1, 3), [("Agent", 0, 1)])]), text_line("D_2", [(ATTACK, (0, 1), [])])]
    result = counts(run(gold_dir, lines, trigger_start=True, keep_events=True))
    assert result["text_mention"] == (1, 1, 2) and result["text_argument"] == (1, 1, 5)


def test_unknown_ids_warn_and_are_false_positives(gold_dir):
    lines = [*GOLD_LINES, text_line("X_9", [(ATTACK, (0, 1), [])]), image_line("Y_1.jpg", [(ATTACK, [])])]
    with pytest.warns(UserWarning, match=r"pred.jsonl: 2 predicted ids .* X_9, Y_1"):
        result = run(gold_dir, lines)
    assert result["unknown_ids"] == 2
    assert counts(result)["text_mention"] == (2, 3, 2) and counts(result)["image_mention"] == (2, 3, 2)


def test_by_type(gold_dir):
    gold = read_m2e2(gold_dir)
    pred = load_predictions(write_lines(gold_dir.parent / "p.jsonl", [GOLD_LINES[0], GOLD_LINES[3]]), gold)
    by_type = {t: counts(cells) for t, cells in evaluate.score_by_type(gold, pred).items()}
    assert by_type[ARREST]["text_mention"] == (1, 1, 1) and by_type[ATTACK]["text_mention"] == (0, 0, 1)
    assert by_type[ARREST]["image_argument"] == (0, 0, 3) and by_type[ATTACK]["image_argument"] == (1, 1, 1)
    assert by_type["Life:Die"]["text_argument"] == (0, 0, 0)
    total = counts(score(gold, pred))
    for name in ("text_mention", "text_argument", "image_mention", "image_argument"):  # these add up
        assert tuple(map(sum, zip(*(cells[name] for cells in by_type.values())))) == total[name]


# ----------------------------------------------------------------------------- bad input
def event(t=ARREST, trigger=None, arguments=()):
    return {"event_type": t, "trigger": trigger or {"start": 1, "end": 2}, "arguments": list(arguments)}


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ({"events": []}, "missing key 'sentence_id' or 'image_id'"),
    ({"sentence_id": "D_0"}, "missing key 'events'"),
    ({"sentence_id": 5, "events": []}, "'sentence_id' must be a string"),
    ({"sentence_id": "D_0", "events": {}}, "'events' must be a list"),
    ({"sentence_id": "D_0", "events": ["x"]}, "event 0 must be a JSON object"),
    ({"sentence_id": "D_0", "events": [event("Life:Born")]}, "unknown event type 'Life:Born'"),
    ({"sentence_id": "D_0", "events": [{"event_type": ARREST}]}, "missing key 'trigger' in event 0"),
    ({"sentence_id": "D_0", "events": [event(trigger={"start": 1.0, "end": 2})]}, "'start' must be an integer"),
    ({"sentence_id": "D_0", "events": [event(trigger={"start": True, "end": 2})]}, "'start' must be an integer"),
    ({"sentence_id": "D_0", "events": [event(trigger={"start": 2, "end": 2})]}, "0 <= start < end"),
    ({"sentence_id": "D_0", "events": [event(trigger={"start": -1, "end": 2})]}, "0 <= start < end"),
    ({"sentence_id": "D_0", "events": [event(trigger={"start": 5, "end": 7})]}, "end <= 6 (the sentence length)"),
    ({"sentence_id": "D_0", "events": [event(arguments=[{"role": "Person", "start": 2}])]}, "missing key 'end'"),
    ({"sentence_id": "D_0", "events": [event(arguments=[{"role": "Victm", "start": 2, "end": 3}])]},
     "unknown role 'Victm'"),
    ({"image_id": "D_0", "events": [{"event_type": ARREST, "arguments": [{"role": "place", "bbox": [0, 0, 1, 1]}]}]},
     "unknown role 'place'"),
    ({"image_id": "D_0", "events": [{"event_type": ARREST, "arguments": [{"role": "Person"}]}]}, "four finite numbers"),
    ({"image_id": "D_0", "events": [{"event_type": ARREST, "arguments": [{"role": "Person", "bbox": [0, 0, 1]}]}]},
     "four finite numbers"),
    ({"image_id": "D_0", "events": [{"event_type": ARREST, "arguments": [{"role": "Person", "bbox": [0, 0, "1", 1]}]}]},
     "four finite numbers"),
    ('{"image_id": "D_0", "events": [{"event_type": "Life:Die", "arguments": [{"role": "Victim", "bbox": [0, 0, NaN, 1]}]}]}',
     "four finite numbers"),
    ({"image_id": "D_0", "events": [{"event_type": ARREST, "arguments": [{"role": "Person", "bbox": [0, 0, 10**400, 1]}]}]},
     "four finite numbers"),
    ({"image_id": "D_0", "events": [{"event_type": ARREST, "arguments": [{"role": "Person", "bbox": [0, True, 1, 1]}]}]},
     "four finite numbers"),
    ({"image_id": "D_0", "events": [{"event_type": ARREST, "arguments": [{"role": "Person", "bbox": [5, 0, 1, 1]}]}]},
     "x1 <= x2 and y1 <= y2"),
    ({"sentence_id": "D_0", "events": "Attack"}, "the line: 'events' must be a list, got 'Attack'"),
    ({"sentence_id": "D_0", "events": [{**event(), "arguments": "Attacker"}]},
     "event 0: 'arguments' must be a list, got 'Attacker'"),
    ({"image_id": "D_0", "events": [{"event_type": ARREST, "arguments": {"role": "Person"}}]},
     "event 0: 'arguments' must be a list, got {'role': 'Person'}"),
    ('{"sentence_id": "D_0", "events": [], "events": []}', "not valid JSON (duplicate key 'events')"),
    ('{"sentence_id": "D_0", "events": [{"event_type": "Life:Die", "event_type": "Conflict:Attack"}]}',
     "not valid JSON (duplicate key 'event_type')"),
    pytest.param("[" * 100_000, "not valid JSON (nested too deeply)", id="lists nested 100,000 deep"),
    pytest.param('{"sentence_id": ' * 100_000, "not valid JSON (nested too deeply)", id="objects nested 100,000 deep"),
    pytest.param("\ufeff" + json.dumps(GOLD_LINES[1]), "not valid JSON (Unexpected UTF-8 BOM",
                 id="a BOM on line 2"),  # a byte order mark is skipped only at the start of the file
    ({"sentence_id": "D_0", "image_id": "D_0", "events": []},
     "a line with 'sentence_id' and 'image_id' is a link, which carries 'event_type', not 'events' "
     "(a sentence line has 'sentence_id' and 'events', an image line 'image_id' and 'events', a link line "
     "'sentence_id', 'image_id' and 'event_type')"),
    ({"sentence_id": "D_0", "image_id": "D_0"}, "missing key 'event_type' in the link"),
    ({"sentence_id": "D_0", "image_id": "D_0", "event_type": "Attack"}, "unknown event type 'Attack'"),
])
def test_bad_input_names_file_and_line(gold_dir, line, message):
    path = write_lines(gold_dir.parent / "bad.jsonl", [GOLD_LINES[0], line])
    assert len(path.read_text().splitlines()) == 2
    with pytest.raises(PredictionError) as error:
        load_predictions(path, read_m2e2(gold_dir))
    assert f"{path}, line 2: " in str(error.value) and message in str(error.value)


def test_a_huge_value_is_shown_short(gold_dir):
    path = write_lines(gold_dir.parent / "bad.jsonl", [{"sentence_id": "D_0", "events": ["x" * 10_000]}])
    with pytest.raises(PredictionError, match=r"bad.jsonl, line 1: event 0 must be a JSON object, got 'xxx") as error:
        load_predictions(path, read_m2e2(gold_dir))
    assert str(error.value).endswith("...") and len(str(error.value)) < len(str(path)) + 150


@pytest.mark.parametrize("arguments", ["omitted", None, []])
def test_null_arguments_read_as_omitted(gold_dir, arguments):
    """Mention-only systems may leave arguments out; a null reads the same (no arguments), never a crash."""
    def strip(line):
        for e in line["events"]:
            if arguments == "omitted":
                del e["arguments"]
            else:
                e["arguments"] = arguments
        return line
    lines = [strip(json.loads(json.dumps(line))) for line in GOLD_LINES[:4]] + GOLD_LINES[4:]
    result = counts(run(gold_dir, lines))
    assert result["text_mention"] == (2, 2, 2) and result["image_mention"] == (2, 2, 2)
    assert result["text_argument"] == (0, 0, 5) and result["image_argument"] == (0, 0, 4)
    assert result["multimedia_mention"] == (2, 2, 2) and result["multimedia_argument"] == (0, 0, 9)


def test_no_events_and_no_links_warns(gold_dir):
    with pytest.warns(UserWarning, match=r"holds no predictions \(no event and no link in 2 lines\)"):
        run(gold_dir, [text_line("D_0", []), "", image_line("D_0", [])])


@pytest.mark.parametrize("ext", [".png", ".PNG", ".jpg"])
def test_image_ids_lose_png_as_in_the_gold(gold_dir, ext):
    """data.strip_ext in both readers: the toy world's images are .png, M2E2's .jpg."""
    lines = [{**line, "image_id": line["image_id"].removesuffix(".jpg") + ext} if "image_id" in line else line
             for line in GOLD_LINES]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unknown ids
        result = run(gold_dir, lines)
    assert counts(result) == {name: (n, n, n) for name, n in GOLD_COUNTS.items()}


def test_a_bom_at_the_start_of_the_file_is_skipped(gold_dir):
    path = gold_dir.parent / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + write_lines(gold_dir.parent / "p.jsonl", GOLD_LINES).read_bytes())
    gold = read_m2e2(gold_dir)
    assert load_predictions(path, gold) == load_predictions(gold_dir.parent / "p.jsonl", gold)


def test_off_type_roles_are_false_positives(gold_dir):
    """A schema role that the event's type lacks in its modality (what a model writes when it gets the type
    wrong) is well-formed: scored as a false positive, counted, and warned about once; the rest scores."""
    off_type = [
        {"sentence_id": "D_0", "events": [event(arguments=[{"role": "Victim", "start": 2, "end": 3}])]},
        {"image_id": "D_0", "events": [{"event_type": ARREST, "arguments": [{"role": "Place", "bbox": [0, 0, 1, 1]}]}]},
    ]
    gold = read_m2e2(gold_dir)
    path = write_lines(gold_dir.parent / "p.jsonl", GOLD_LINES + off_type)
    with pytest.warns(UserWarning, match=r"p.jsonl: 2 arguments have a role that their event type does not have"):
        pred = load_predictions(path, gold)
    result, perfect = score(gold, pred), score(gold, load_predictions(write_lines(gold_dir.parent / "g.jsonl", GOLD_LINES), gold))
    assert result["off_type_roles"] == 2 and perfect["off_type_roles"] == 0
    for name in ("text_argument", "image_argument"):
        assert result[name]["pred"] == perfect[name]["pred"] + 1 and result[name]["match"] == perfect[name]["match"]


def test_not_utf8(gold_dir):
    path = gold_dir.parent / "bad.jsonl"
    path.write_bytes(json.dumps(GOLD_LINES[0]).encode() + b'\n{"sentence_id": "D_\xff", "events": []}\n')
    with pytest.raises(PredictionError, match=r"bad.jsonl, line 2: not valid UTF-8"):
        load_predictions(path, read_m2e2(gold_dir))


# ----------------------------------------------------------------------------- command line
def test_cli_table(gold_dir, capsys):
    evaluate.main(["--gold", str(gold_dir), "--pred", str(write_lines(gold_dir.parent / "p.jsonl", GOLD_LINES)),
                   "--trigger-start"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"protocol: strict + trigger-start  ({gold_dir})"
    assert out[1].split() == ["P", "R", "F1", "match", "pred", "gold"]
    assert out[2].split() == ["text", "event", "mention", "100.00", "100.00", "100.00", "2", "2", "2"]
    assert out[7].split() == ["multimedia", "argument", "role", "100.00", "100.00", "100.00", "9", "9", "9"]
    assert len(out) == 8


def test_cli_json_is_one_object(gold_dir, capsys):
    pred = write_lines(gold_dir.parent / "p.jsonl", [GOLD_LINES[0], text_line("X_1", [])])
    evaluate.main(["--gold", str(gold_dir), "--pred", str(pred), "--json", "--by-type"])
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # fails on anything but exactly one JSON value
    assert isinstance(result, dict) and set(result) == {*CELLS, "unknown_ids", "off_type_roles", "by_type"}
    assert result["text_mention"]["match"] == 1 and result["unknown_ids"] == 1
    assert captured.err.startswith("warning: ") and "1 predicted ids" in captured.err


def test_cli_error_is_one_line_exit_2(gold_dir):
    pred = write_lines(gold_dir.parent / "p.jsonl", [GOLD_LINES[0], "oops"])
    proc = subprocess.run([sys.executable, evaluate.__file__, "--gold", str(gold_dir), "--pred", str(pred)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and "line 2: not valid JSON" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("which", ["gold", "pred"])
def test_cli_missing_file_exit_2(gold_dir, capsys, which):
    paths = {"gold": str(gold_dir), "pred": str(write_lines(gold_dir.parent / "p.jsonl", GOLD_LINES))}
    paths[which] = str(gold_dir.parent / "nowhere")
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--gold", paths["gold"], "--pred", paths["pred"]])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and "nowhere" in err and err.count("\n") == 1
