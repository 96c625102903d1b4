"""Readers: known records from tiny hand-written files, every bad input named, the real M2E2 counts."""
import gc
import json
import warnings
from pathlib import Path

import pytest
from PIL import Image as PILImage

import data
from data import DataError, read_jmee, read_m2e2, read_mnre, read_sources, read_swig
from schema import Argument, Box, Image, ImageEvent, Link, Relation, RelationExample, Sentence, Span, TextEvent


def png(path: Path, w: int, h: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", (w, h), (200, 30, 30)).save(path)
    return path


def dump(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def event(t, start, end, *args):
    return {"event_type": t, "trigger": {"start": start, "end": end, "text": "x"},
            "arguments": [{"role": r, "start": s, "end": e, "text": "x"} for r, s, e in args]}


# ----------------------------------------------------------------------------- M2E2
WORDS = ["Police", "arrested", "Anna", "in", "Paris", "after", "the", "attack", "."]


def m2e2_dir(d: Path) -> Path:
    """Two text files sharing sentence D_0 (different events), two image files, one link."""
    die = event("Life:Die", 7, 8, ("Victim", 2, 3))
    arrest = event("Justice:Arrest-Jail", 1, 2, ("Place", 4, 5), ("Person", 2, 3), ("Agent", 0, 1))
    dump(d / "text_only_event.json", [
        {"sentence_id": "D_0", "words": WORDS, "golden-event-mentions": [die], "image": ["D_0.jpg", "D_1.jpg"]},
        {"sentence_id": "D_1", "words": ["Calm", "."], "golden-event-mentions": [], "image": ["D_0.jpg", "D_1.jpg"]},
    ])
    dump(d / "text_multimedia_event.json", [
        {"sentence_id": "D_0", "words": WORDS, "golden-event-mentions": [arrest, die], "image": ["D_0.jpg", "D_1.jpg"]},
    ])
    dump(d / "image_only_event.json", {})
    dump(d / "image_multimedia_event.json", {"D_0": {"event_type": "Justice:Arrest-Jail", "role": {
        "Agent": [["1", 50, 10, 60, 40], ["0", 5, 10, 45, 40]], "Person": [["1", 70, 5, 90, 45]]}}})
    (d / "crossmedia_coref.txt").write_text("D_0\tD_0.jpg\tJustice:Arrest-Jail\n")
    return d


def test_m2e2_known_records(tmp_path):
    m = read_m2e2(m2e2_dir(tmp_path))
    assert list(m.sentences) == ["D_0", "D_1"]
    # union of both files, the duplicate Die event once, events by trigger start, roles in TEXT_ROLES order
    assert m.sentences["D_0"] == Sentence("D_0", tuple(WORDS), (
        TextEvent("Justice:Arrest-Jail", Span(1, 2), (Argument("Person", Span(2, 3)), Argument("Agent", Span(0, 1)),
                                                      Argument("Place", Span(4, 5)))),
        TextEvent("Life:Die", Span(7, 8), (Argument("Victim", Span(2, 3)),)),
    ), ("D_0", "D_1"))
    # both group ("0") and instance ("1") boxes, ordered by role then x1
    assert m.images == {
        "D_0": Image("D_0", None, (ImageEvent("Justice:Arrest-Jail", (
            Argument("Person", Box(70, 5, 90, 45)), Argument("Agent", Box(5, 10, 45, 40)),
            Argument("Agent", Box(50, 10, 60, 40)))),)),
        "D_1": Image("D_1", None, ()),
    }
    assert m.links == [Link("D_0", "D_0", "Justice:Arrest-Jail")]


def test_m2e2_images(tmp_path):
    d = m2e2_dir(tmp_path)
    png(d / "images" / "D_0.png", 100, 50)
    m = read_m2e2(d, images=True)
    assert (m.images["D_0"].size, m.images["D_0"].path) == ((100, 50), str(d / "images" / "D_0.png"))
    assert (m.images["D_1"].size, m.images["D_1"].path) == (None, None)  # no file: annotations only
    png(d / "images" / "D_0.png", 80, 50)  # the Person box ends at x2 = 90
    with pytest.raises(DataError, match=r"image_multimedia_event.json: record D_0: box \[70, 5, 90, 45\] outside"):
        read_m2e2(d, images=True)
    (d / "images" / "D_0.png").write_text("not an image")
    with pytest.raises(DataError, match=r"D_0.png: image D_0: not a readable image"):
        read_m2e2(d, images=True)


def edit_json(path: Path, change):
    obj = json.loads(path.read_text())
    change(obj)
    dump(path, obj)


@pytest.mark.parametrize("name, change, message", [
    ("text_only_event.json", lambda o: o[1].update(sentence_id="D_1", **{"golden-event-mentions": [event("Life:Die", 1, 3)]}),
     r"text_only_event.json: record D_1: span 1..3 outside a sentence of 2 words"),
    ("text_only_event.json", lambda o: o[0]["golden-event-mentions"][0]["arguments"][0].update(role="Attacker"),
     r"text_only_event.json: record D_0: role 'Attacker' is not a text role of Life:Die"),
    ("text_multimedia_event.json", lambda o: o[0]["golden-event-mentions"][0].update(event_type="Business:Merge-Org"),
     r"text_multimedia_event.json: record D_0: unknown event type 'Business:Merge-Org'"),
    ("text_multimedia_event.json", lambda o: o[0].update(words=WORDS[:-1] + ["!"]),
     r"text_multimedia_event.json: record D_0: occurs in both text files with different words"),
    ("text_only_event.json", lambda o: o[1].pop("words"), r"text_only_event.json: record D_1: missing field 'words'"),
    ("image_multimedia_event.json", lambda o: o["D_0"]["role"]["Agent"].append(["1", 30, 10, 20, 40]),
     r"image_multimedia_event.json: record D_0: box \[30, 10, 20, 40\] is not 0 <= x1 < x2"),
    ("image_multimedia_event.json", lambda o: o["D_0"]["role"].update(Place=[["1", 1, 1, 2, 2]]),
     r"image_multimedia_event.json: record D_0: role 'Place' is not an image role of Justice:Arrest-Jail"),
])
def test_m2e2_bad_records(tmp_path, name, change, message):
    d = m2e2_dir(tmp_path)
    edit_json(d / name, change)
    with pytest.raises(DataError, match=message):
        read_m2e2(d)


@pytest.mark.parametrize("name, text, message", [
    ("text_only_event.json", '[{"sentence_id": "D_0", "wor', r"text_only_event.json: not valid JSON"),
    ("image_only_event.json", "[]", r"image_only_event.json: expected a JSON dict at the top level, got list"),
    ("text_only_event.json", "{}", r"text_only_event.json: expected a JSON list at the top level, got dict"),
    ("crossmedia_coref.txt", "D_0\tD_0.jpg\n", r"crossmedia_coref.txt: line 1: expected 3 tab-separated fields, got 2"),
    ("crossmedia_coref.txt", "D_9\tD_0.jpg\tLife:Die\n", r"crossmedia_coref.txt: line 1: unknown sentence 'D_9'"),
    ("crossmedia_coref.txt", "D_0\tE_0.jpg\tLife:Die\n", r"crossmedia_coref.txt: line 1: unknown image 'E_0.jpg'"),
    ("text_only_event.json", '[{"sentence_id": "D_0", "sentence_id": "D_1"}]',
     r"text_only_event.json: not valid JSON \(duplicate key 'sentence_id'\)"),
    pytest.param("text_only_event.json", "[" * 100_000, r"text_only_event.json: not valid JSON \(nested too deeply\)",
                 id="lists nested 100,000 deep"),
    pytest.param("image_only_event.json", '{"D_0": ' * 100_000,
                 r"image_only_event.json: not valid JSON \(nested too deeply\)", id="objects nested 100,000 deep"),
    pytest.param("text_only_event.json", "[\ufeff]", r"text_only_event.json: not valid JSON", id="a BOM inside"),
])
def test_m2e2_bad_files(tmp_path, name, text, message):
    d = m2e2_dir(tmp_path)
    (d / name).write_text(text)
    with pytest.raises(DataError, match=message):
        read_m2e2(d)


def test_m2e2_bom_at_the_start_of_a_file_is_skipped(tmp_path):
    """As in prediction files (evaluate.load_predictions): editors on Windows write one."""
    plain = read_m2e2(m2e2_dir(tmp_path / "plain"))
    d = m2e2_dir(tmp_path / "bom")
    for path in d.iterdir():
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_m2e2(d) == plain


def test_m2e2_missing_file(tmp_path):
    d = m2e2_dir(tmp_path)
    (d / "crossmedia_coref.txt").unlink()
    with pytest.raises(DataError, match="crossmedia_coref.txt: file not found"):
        read_m2e2(d)


def test_m2e2_real_counts(shared_dir):
    m = read_m2e2(shared_dir / "data" / "m2e2")
    events = [e for s in m.sentences.values() for e in s.events]
    boxes = [a for i in m.images.values() for e in i.events for a in e.arguments]
    assert (len(m.sentences), len(events), sum(len(e.arguments) for e in events)) == (6167, 1297, 1966)
    assert (len(m.images), sum(bool(i.events) for i in m.images.values()), len(boxes), len(m.links)) == (940, 391, 1429, 309)


# ----------------------------------------------------------------------------- JMEE
def test_jmee(tmp_path):
    path = dump(tmp_path / "train.json", [
        {"words": ["Rebels", "attacked", "and", "merged", "."], "golden-entity-mentions": [], "golden-event-mentions": [
            event("Conflict:Attack", 1, 2, ("Attacker", 0, 1), ("Time-Within", 4, 5)),
            event("Business:Merge-Org", 3, 4)]},
        {"sentence_id": "s7", "words": ["He", "was", "jailed"], "golden-event-mentions": [
            event("Justice:Arrest_Jail", 2, 3, ("Person", 0, 1))]},
        {"words": ["Short"], "golden-event-mentions": [event("Life:Die", 0, 2)]},
    ])
    with pytest.warns(UserWarning) as caught:
        sentences = read_jmee(path)
    assert sentences == [
        Sentence("train-0", ("Rebels", "attacked", "and", "merged", "."),
                 (TextEvent("Conflict:Attack", Span(1, 2), (Argument("Attacker", Span(0, 1)),)),)),
        Sentence("s7", ("He", "was", "jailed"),
                 (TextEvent("Justice:Arrest-Jail", Span(2, 3), (Argument("Person", Span(0, 1)),)),)),
    ]
    assert len(caught) == 1
    assert str(caught[0].message) == (
        f"{path}: skipped 1 records: record 2: span 0..2 outside a sentence of 1 words; "
        "dropped 1 arguments with roles not of their type; dropped 1 events of other ACE types")


def test_jmee_missing_field(tmp_path):
    path = dump(tmp_path / "dev.json", [{"words": ["a"]}])
    with pytest.raises(DataError, match=r"dev.json: record 0: missing field 'golden-event-mentions'"):
        read_jmee(path)


# ----------------------------------------------------------------------------- SWiG
MAPPING = "arresting\tagent\tJustice||Arrest|Jail\tAgent\narresting\tsuspect\tJustice||Arrest|Jail\tPerson\n"


def swig_files(d: Path, boxes=None):
    """Two PNG images: 'arresting' (mapped; one role unmapped, one without a box) and 'jumping' (unmapped)."""
    png(d / "images" / "arresting_1.png", 64, 48)
    png(d / "images" / "jumping_2.png", 32, 32)
    (d / "ace_sr_mapping.txt").write_text(MAPPING)
    data = {
        "arresting_1.png": {"verb": "arresting", "height": 48, "width": 64,
                            "frames": [{"agent": "n1", "suspect": "n2", "place": "n3"}],
                            "bb": boxes or {"agent": [40, 2, 60, 46], "suspect": [3, 4, 30, 40], "place": [0, 0, 64, 48]}},
        "jumping_2.png": {"verb": "jumping", "height": 32, "width": 32, "frames": [{"agent": "n4"}],
                          "bb": {"agent": [-1, -1, -1, -1]}},
    }
    return dump(d / "train.json", data), d / "images", d / "ace_sr_mapping.txt"


def test_swig(tmp_path):
    images = read_swig(*swig_files(tmp_path))
    assert images == [
        Image("arresting_1", (64, 48), (ImageEvent("Justice:Arrest-Jail", (
            Argument("Person", Box(3, 4, 30, 40)), Argument("Agent", Box(40, 2, 60, 46)))),),
            str(tmp_path / "images" / "arresting_1.png")),
        Image("jumping_2", (32, 32), (), str(tmp_path / "images" / "jumping_2.png")),
    ]
    absent = read_swig(*swig_files(tmp_path, {"agent": [-1, -1, -1, -1], "suspect": [3, 4, 30, 40]}))
    assert absent[0].events == (ImageEvent("Justice:Arrest-Jail", (Argument("Person", Box(3, 4, 30, 40)),)),)


@pytest.mark.parametrize("box, problem", [
    ([30, 4, 3, 40], r"box \[30, 4, 3, 40\] is not 0 <= x1 < x2"),
    ([3, 4, 65, 40], r"box \[3, 4, 65, 40\] outside the 64x48 image"),
])
def test_swig_bad_box_skipped(tmp_path, box, problem):
    files = swig_files(tmp_path, {"agent": box})
    with pytest.warns(UserWarning, match=rf"train.json: skipped 1 records: record arresting_1.png: {problem}"):
        images = read_swig(*files)
    assert [i.id for i in images] == ["jumping_2"]


def test_swig_bad_files(tmp_path):
    json_path, image_dir, mapping = swig_files(tmp_path)
    (image_dir / "jumping_2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=r"jumping_2.png: record jumping_2.png: not a readable image"):
        read_swig(json_path, image_dir, mapping)
    (image_dir / "jumping_2.png").unlink()
    with pytest.raises(DataError, match=r"jumping_2.png: record jumping_2.png: image file not found"):
        read_swig(json_path, image_dir, mapping)
    json_path.write_text('{"arresting_1.png": {"verb": ')
    with pytest.raises(DataError, match=r"train.json: not valid JSON"):
        read_swig(json_path, image_dir, mapping)
    json_path.write_text("[]")
    with pytest.raises(DataError, match=r"train.json: expected a JSON dict at the top level, got list"):
        read_swig(json_path, image_dir, mapping)


@pytest.mark.parametrize("line, message", [
    ("arresting\tagent\tJustice||Arrest|Jail", r"line 1: expected 4 tab-separated fields, got 3"),
    ("arresting\tagent\tBusiness||Merge|Org\tAgent", r"line 1: unknown event type 'Business\|\|Merge\|Org'"),
])
def test_swig_bad_mapping(tmp_path, line, message):
    json_path, image_dir, mapping = swig_files(tmp_path)
    mapping.write_text(line + "\n")
    with pytest.raises(DataError, match=r"ace_sr_mapping.txt: " + message):
        read_swig(json_path, image_dir, mapping)


def test_swig_mapping_role_not_of_image(tmp_path):
    json_path, image_dir, mapping = swig_files(tmp_path)
    mapping.write_text(MAPPING + "arresting\tplace\tJustice||Arrest|Jail\tPlace\n")
    with pytest.warns(UserWarning, match=r"ignored 1 lines whose role is not an image role"):
        images = read_swig(json_path, image_dir, mapping)
    assert [a.role for a in images[0].events[0].arguments] == ["Person", "Agent"]


# ----------------------------------------------------------------------------- MNRE
def mnre_file(d: Path, *lines: str) -> tuple[Path, Path]:
    png(d / "images" / "x.png", 40, 30)
    (d / "train.txt").write_text("\n".join(lines) + "\n")
    return d / "train.txt", d / "images"


GOOD = ("{'token': ['Anna', 'and', 'Ben'], 'h': {'name': 'Anna', 'pos': [0, 1]}, 't': {'name': 'Ben', 'pos': [2, 3]}, "
        "'img_id': 'x.png', 'relation': '/per/per/couple'}")
FIGURE = ("{'token': ['Anna', 'smiles'], 'h': {'name': 'Anna', 'pos': [0, 1]}, 't': {'name': 'man', 'bbox': [5, 6, 20, 30]}, "
          "'img_id': 'x.png', 'relation': 'None'}")


def test_mnre(tmp_path):
    path, image_dir = mnre_file(tmp_path, GOOD, FIGURE)
    image = Image("x", (40, 30), (), str(image_dir / "x.png"))
    assert read_mnre(path, image_dir) == [
        RelationExample("train-0", ("Anna", "and", "Ben"), (Relation("/per/per/couple", Span(0, 1), Span(2, 3)),), image),
        RelationExample("train-1", ("Anna", "smiles"), (Relation("None", Span(0, 1), Box(5, 6, 20, 30)),), image),
    ]


def test_mnre_lines_of_one_sentence_and_picture_make_one_example(tmp_path):
    """MNRE writes one entity pair per line; the example holds them all (a repeated line once)."""
    present = FIGURE.replace("'None'", "'/per/misc/present_in'").replace("[5, 6, 20, 30]", "[1, 1, 9, 9]")
    path, image_dir = mnre_file(tmp_path, FIGURE, GOOD, present, FIGURE)
    image = Image("x", (40, 30), (), str(image_dir / "x.png"))
    assert read_mnre(path, image_dir) == [
        RelationExample("train-0", ("Anna", "smiles"), (Relation("None", Span(0, 1), Box(5, 6, 20, 30)),
                                                         Relation("/per/misc/present_in", Span(0, 1), Box(1, 1, 9, 9))), image),
        RelationExample("train-1", ("Anna", "and", "Ben"), (Relation("/per/per/couple", Span(0, 1), Span(2, 3)),), image),
    ]


@pytest.mark.parametrize("bad, message", [
    ("{'token': ['a'", r"train.txt: line 2: not a Python literal"),
    ("__import__('os').system('touch PWNED')", r"train.txt: line 2: not a Python literal"),
    ("['token']", r"train.txt: line 2: expected a dict literal, got list"),
    ("{'token': ['a'], 'h': {'pos': [0, 1]}, 't': {'pos': [0, 1]}, 'img_id': 'x.png'}", r"line 2: missing field 'relation'"),
    (GOOD.replace("x.png", "y.png"), r"y.png: line 2: image file not found"),
    (GOOD.replace("x.png", "text.png"), r"text.png: line 2: not a readable image"),
])
def test_mnre_bad_lines(tmp_path, monkeypatch, bad, message):
    monkeypatch.chdir(tmp_path)
    path, image_dir = mnre_file(tmp_path, GOOD, bad)
    (image_dir / "text.png").write_text("not an image")
    with pytest.raises(DataError, match=message):
        read_mnre(path, image_dir)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("bad, problem", [
    (GOOD.replace("[2, 3]", "[2, 4]"), r"span 2..4 outside a sentence of 3 words"),
    (FIGURE.replace("[5, 6, 20, 30]", "[5, 6, 20, 31]"), r"box \[5, 6, 20, 31\] outside the 40x30 image"),
    (GOOD.replace("/per/per/couple", "/per/per/friend"), r"unknown relation '/per/per/friend'"),
])
def test_mnre_bad_records_skipped(tmp_path, bad, problem):
    path, image_dir = mnre_file(tmp_path, bad, GOOD)
    with pytest.warns(UserWarning, match=rf"train.txt: skipped 1 records: line 1: {problem}"):
        examples = read_mnre(path, image_dir)
    assert [e.id for e in examples] == ["train-1"]


# ----------------------------------------------------------------------------- the --data DIR
def test_read_sources(tmp_path):
    m2e2_dir(tmp_path / "m2e2" / "test")
    swig_files(tmp_path / "swig")
    mnre_file(tmp_path / "mnre", GOOD)
    dump(tmp_path / "ace" / "dev.json", [{"words": ["a"], "golden-event-mentions": []}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sources = read_sources(tmp_path)
    assert sorted(sources.ace) == ["dev"] and sorted(sources.swig) == sorted(sources.mnre) == ["train"]
    assert sorted(sources.m2e2) == ["test"] and len(sources.m2e2["test"].sentences) == 2
    assert [len(sources.swig["train"]), len(sources.mnre["train"]), len(sources.ace["dev"])] == [2, 1, 1]
    with pytest.raises(DataError, match="no data found"):
        read_sources(tmp_path / "empty")


def test_readers_pause_the_garbage_collector_and_restore_it(tmp_path):
    seen = []
    probe = data.gc_paused(lambda: seen.append(gc.isenabled()))
    assert gc.isenabled()
    probe()
    assert seen == [False] and gc.isenabled()
    with pytest.raises(data.DataError):  # an error inside: the collector is back on
        data.read_jmee(tmp_path / "missing.json")
    assert gc.isenabled()
    gc.disable()
    try:
        probe()
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()
