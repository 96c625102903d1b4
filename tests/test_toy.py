"""The toy world: deterministic, read back by the real readers, consistent across media, no
leakage, a keyword baseline that writes a scorable file, and a generator that needs neither scorer
nor trainer."""
import hashlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

import data
import evaluate
import toy
import toy.tools
from schema import EVENT_TYPES, IMAGE_ROLES, Box, Span
from toy.pictures import CAST

SMALL = dict(ace_train=40, ace_dev=10, ace_test=10, swig_train=24, swig_dev=6, swig_test=6,
             mnre_train=20, mnre_dev=6, mnre_test=6, m2e2_dev=8, m2e2_test=8)


def files(root: Path) -> dict[str, bytes]:
    paths = [p for p in sorted(root.rglob("*")) if p.is_file()]
    return {str(p.relative_to(root)): p.read_bytes() for p in paths}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return toy.generate(tmp_path_factory.mktemp("toy"), seed=0, **SMALL)


@pytest.fixture(scope="module")
def sources(world):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src = data.read_sources(world)
    # the only thing readers may report is what the mapping drops on purpose (other ACE types, Time
    # roles)
    assert all("skipped" not in str(w.message) for w in caught), [str(w.message) for w in caught]
    return src


def test_deterministic(world, tmp_path):
    again = files(toy.generate(tmp_path / "again", seed=0, **SMALL))
    assert again == files(world)
    other = files(toy.generate(tmp_path / "other", seed=1, **SMALL))
    assert other != again and other["ace/train.json"] != again["ace/train.json"]


def test_command_line_writes_the_same_world(world, tmp_path):
    sizes = [x for k, v in SMALL.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    toy.world.main(["--out", str(tmp_path / "cli"), "--seed", "0", *sizes])
    assert files(tmp_path / "cli") == files(world)
    with pytest.raises(SystemExit):  # no --out: refused before anything is written
        toy.world.main(["--seed", "0"])
    with pytest.raises(SystemExit):  # draw without --doc / --png is refused before anything is done
        toy.tools.main(["draw", str(world)])


def test_generator_imports_neither_scorer_nor_trainer():
    code = "import sys, toy; print(' '.join(sorted(sys.modules)))"
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         check=True)
    loaded = set(run.stdout.split())
    assert {"toy", "toy.world", "toy.text", "toy.pictures"} <= loaded
    assert not loaded & {"evaluate", "train", "rmpl", "model", "data", "torch", "toy.tools"}


def test_ensure_data_generates_only_the_default(tmp_path, monkeypatch, capsys):
    made = []  # what generate was asked for (the real one takes seconds at the default sizes)

    def generate(root, seed):
        made.append((Path(root), seed))
        Path(root).mkdir()

    monkeypatch.setattr(toy.world, "generate", generate)  # what ensure_data calls
    default = tmp_path / "default"
    assert toy.ensure_data(str(default), default=str(default)) == default
    assert toy.ensure_data(str(default), default=str(default)) == default  # second use: there
    assert made == [(tmp_path / "default.partial", 0)]  # written aside, then renamed: never half a world
    assert default.is_dir() and not (tmp_path / "default.partial").exists()
    assert toy.ensure_data(default, default="elsewhere") == default  # it exists: taken as it is
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # a mistyped --data never becomes a fresh world
        toy.ensure_data(tmp_path / "typo", default=str(default))
    assert e.value.code == 2 and len(made) == 1 and not (tmp_path / "typo").exists()
    err = capsys.readouterr().err
    assert err.startswith("error: --data ") and "typo does not exist" in err
    assert err.count("\n") == 1


def test_layout_and_sizes(world, sources):
    for split in ("train", "dev", "test"):
        assert len(sources.ace[split]) == SMALL[f"ace_{split}"]
        assert len(sources.swig[split]) == SMALL[f"swig_{split}"]
        # whole examples: a picture's lines stay together (and are read as one example)
        assert sum(len(x.relations) for x in sources.mnre[split]) >= SMALL[f"mnre_{split}"]
    for split in ("dev", "test"):
        docs = {s.doc_id for s in sources.m2e2[split].sentences.values()}
        assert len(docs) == SMALL[f"m2e2_{split}"]
        assert {p.name for p in (world / "m2e2" / split).iterdir()} == {
            "images", "text_only_event.json", "text_multimedia_event.json", "image_only_event.json",
            "image_multimedia_event.json", "crossmedia_coref.txt"}


def test_ace_read_back(world, sources):
    raw = json.loads((world / "ace" / "train.json").read_text())
    for rec, s in zip(raw, sources.ace["train"]):
        assert s.id == rec["sentence_id"] and list(s.words) == rec["words"]
        events = rec["golden-event-mentions"]
        meant = sorted((e["event_type"], e["trigger"]["start"], e["trigger"]["end"],
                        sorted((a["role"], a["start"], a["end"])
                               for a in e["arguments"] if a["role"] != "Time-Within"))
                       for e in events if e["event_type"] in EVENT_TYPES)
        got = sorted((e.event_type, e.trigger.start, e.trigger.end,
                      sorted((a.role, a.target.start, a.target.end) for a in e.arguments))
                     for e in s.events)
        assert got == meant
        spans = {(m["start"], m["end"]) for m in rec["golden-entity-mentions"]}
        assert all((a["start"], a["end"]) in spans for e in events for a in e["arguments"])
    share = sum(1 for s in sources.ace["train"] if s.events) / len(raw)
    assert .4 < share < .85


def test_swig_read_back(world, sources):
    raw = json.loads((world / "swig" / "train.json").read_text())
    by_id = {im.id: im for im in sources.swig["train"]}
    for name, rec in raw.items():
        im = by_id[Path(name).stem]
        assert im.size == (rec["width"], rec["height"])
        assert 96 <= im.size[0] <= 160 and 96 <= im.size[1] <= 160
        if rec["verb"] in toy.world.SWIG_VERBS:
            t, roles = toy.world.SWIG_VERBS[rec["verb"]]
            (event,) = im.events
            boxes = sorted(tuple(b) for r, b in rec["bb"].items() if b != [-1, -1, -1, -1])
            assert event.event_type == t and len(boxes) >= 1
            got = sorted((b.x1, b.y1, b.x2, b.y2) for b in (a.target for a in event.arguments))
            assert got == boxes
        else:
            assert rec["verb"] in toy.world.NO_EVENT_VERBS and im.events == ()


def _has_colour(path, box, colour, at_least=4) -> bool:
    with PILImage.open(path) as im:
        crop = im.convert("RGB").crop((int(box.x1), int(box.y1), int(box.x2), int(box.y2)))
        crop = np.asarray(crop)
    return int((crop == colour).all(-1).sum()) >= at_least


def test_mnre_grounds_names_in_figures(sources):
    labels = {r.label for x in sources.mnre["train"] for r in x.relations}
    assert {"/per/misc/present_in", "None"} <= labels
    assert any(lab.startswith("/per/per/") for lab in labels)
    grounded = 0
    for x in sources.mnre["train"]:
        for rel in x.relations:
            if rel.label != "/per/misc/present_in":
                continue
            # the named person's colour is inside the tail box
            assert isinstance(rel.head, Span) and isinstance(rel.tail, Box)
            name = x.words[rel.head.start]
            assert _has_colour(x.image.path, rel.tail, CAST[name])
            grounded += 1
    assert grounded >= 5


def test_m2e2_read_back_and_cross_media(sources):
    for split in ("dev", "test"):
        m = sources.m2e2[split]
        # every image file decodes and every box lies inside it (the reader checks)
        for im in m.images.values():
            assert im.path and im.size
        # every link is a same-type pair; decoys are not linked
        linked, pairs = toy.tools.same_type_pairs(m)
        assert linked == len({(x.sentence_id, x.image_id, x.event_type) for x in m.links}) <= pairs
        for link in m.links:
            s, im = m.sentences[link.sentence_id], m.images[link.image_id]
            assert s.doc_id == im.doc_id and link.image_id in s.images
            (image_event,) = im.events
            assert image_event.event_type == link.event_type
            text_event = next(e for e in s.events if e.event_type == link.event_type)
            # the people the sentence names (in image roles) are drawn in their colours there
            names = [s.words[a.target.start] for a in text_event.arguments
                     if a.role in IMAGE_ROLES[link.event_type] and s.words[a.target.start] in CAST]
            if names and link.event_type != "Contact:Phone-Write":
                boxes = [a.target for a in image_event.arguments]
                assert any(_has_colour(im.path, box, CAST[n]) for n in names for box in boxes)
    sentences = [s for split in ("dev", "test") for s in sources.m2e2[split].sentences.values()]
    share = sum(1 for s in sentences if not s.events) / len(sentences)
    assert .75 <= share <= .95, share  # M2E2: 85% of sentences carry no event
    images = [i for split in ("dev", "test") for i in sources.m2e2[split].images.values()]
    assert any(not i.events for i in images) and any(i.events for i in images)


def test_no_evaluation_leakage(world, sources):
    evaluation = [sources.m2e2[split] for split in ("dev", "test")]
    held_out = {s.words for m in evaluation for s in m.sentences.values()}
    train_text = {s.words for split in sources.ace for s in sources.ace[split]}
    train_text |= {x.words for split in sources.mnre for x in sources.mnre[split]}
    assert not held_out & train_text
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
    images = lambda *sub: list((world.joinpath(*sub, "images")).iterdir())
    held_images = {digest(p) for split in ("dev", "test") for p in images("m2e2", split)}
    train_images = {digest(p) for src in ("swig", "mnre") for p in images(src)}
    assert not held_images & train_images
    assert not any(p.name.startswith("toy-") for src in ("swig", "mnre") for p in images(src))


@pytest.mark.parametrize("words, expected", [
    ("Anna opened fire on Boris in Karsk .",
     [{"event_type": "Conflict:Attack", "trigger": {"start": 1, "end": 4},
       "arguments": [{"role": "Attacker", "start": 0, "end": 1},
                     {"role": "Target", "start": 4, "end": 5},
                     {"role": "Place", "start": 6, "end": 7}]}]),
    ("Boris fired an employee .",  # ambiguous on purpose: the baseline takes it for an attack
     [{"event_type": "Conflict:Attack", "trigger": {"start": 1, "end": 2},
       "arguments": [{"role": "Attacker", "start": 0, "end": 1}]}]),
    ("The weather in Karsk was cold .", []),
])
def test_keyword_events(words, expected):
    assert toy.tools.keyword_events(words.split()) == expected


def test_baseline_writes_a_scorable_file(world, tmp_path):
    pred = tmp_path / "kw.jsonl"
    toy.tools.main(["baseline", str(world), "--split", "test", "--pred", str(pred)])
    gold = data.read_m2e2(world / "m2e2" / "test")
    cells = evaluate.score(gold, evaluate.load_predictions(pred, gold))
    assert cells["unknown_ids"] == 0
    # every gold trigger is one of the generator's trigger words, and so are ambiguous words
    assert cells["text_mention"]["r"] == 100.0
    assert cells["text_mention"]["pred"] > cells["text_mention"]["gold"]
    assert cells["image_argument"]["pred"] == 0


def test_stats_and_draw(world, tmp_path, capsys):
    toy.tools.main(["stats", str(world)])
    out = capsys.readouterr().out
    assert "| ace | train | 40 |" in out and "m2e2 text" in out and "mnre train" in out
    doc = "toy-test-000"
    png = toy.tools.draw_doc(world, "test", doc, tmp_path / "doc.png")
    with PILImage.open(png) as im:
        assert im.width >= 200 and im.height > 100
