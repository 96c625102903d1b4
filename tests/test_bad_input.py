"""Bad input through the public entry points (readers, train.py, evaluate.py): one test per case.

Cases already covered elsewhere are not repeated here (tests/test_readers.py, test_tensors.py,
test_evaluate.py). Each case must give an error naming the file, the record or line and the problem
(train.py: SystemExit with one message; evaluate.py: `error: ...`, exit 2), or a counted skip.
"""
import json
import re
import shutil
import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image as PILImage

import evaluate
import rmpl
from run import RunDir
import toy
import train
from data import DataError, read_jmee, read_m2e2, read_mnre, read_swig
from tests.conftest import TINY



@pytest.fixture(scope="module")
def toy_world(tmp_path_factory):
    return toy.generate(tmp_path_factory.mktemp("toy"), seed=0, **TINY)


@pytest.fixture
def world(toy_world, tmp_path):
    """A fresh copy of the tiny toy world, to corrupt one file of."""
    return Path(shutil.copytree(toy_world, tmp_path / "world"))


def edit_json(path: Path, change):
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def first_image(world: Path) -> Path:
    return sorted((world / "swig" / "images").glob("toyswig-train-*"))[0]


def truncated_jpeg(path: Path):
    """A JPEG whose header is fine (so the reader's verify() passes) but whose pixel data is cut."""
    img = PILImage.open(path).convert("RGB")
    img.save(path, "JPEG")  # the same size; pillow reads the content, not the extension
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def huge_png_header(path: Path, w: int = 100_000, h: int = 100_000):
    """A few bytes that claim a w x h image: must be refused before any decoding."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def not_utf8(path: Path, line: int):
    """Put a 0xff byte into the given (1-based) line of a text file."""
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = b"\xff" + lines[line - 1]
    path.write_bytes(b"\n".join(lines))


def duplicate_first_key(path: Path):
    text, obj = path.read_text(), json.loads(path.read_text())
    key = next(iter(obj))
    path.write_text("{" + json.dumps(key) + ": " + json.dumps(obj[key]) + ", " + text.strip()[1:])


# ----------------------------------------------------------------------------- train.py --data DIR
# (corruption, what the one-line exit message must contain)
TRAIN_CASES = {
    "ace truncated": (lambda w: (w / "ace/train.json").write_text((w / "ace/train.json").read_text()[:100]),
                      r"ace/train.json: not valid JSON"),
    "ace empty file": (lambda w: (w / "ace/train.json").write_text(""), r"ace/train.json: not valid JSON"),
    "ace wrong top level": (lambda w: (w / "ace/train.json").write_text("{}"),
                            r"ace/train.json: expected a JSON list at the top level, got dict"),
    "ace not utf-8": (lambda w: not_utf8(w / "ace/train.json", 3), r"ace/train.json: not valid JSON \('utf-8' codec"),
    "ace words not a list": (lambda w: edit_json(w / "ace/train.json", lambda o: o[2].update(words="abc")),
                             r"ace/train.json: record 2: words must be a list of strings, got 'abc'"),
    "mnre bad line in the middle": (lambda w: not_utf8(w / "mnre/train.txt", 4), r"mnre/train.txt: line 4: not valid UTF-8"),
    "m2e2 dev truncated": (lambda w: (w / "m2e2/dev/text_only_event.json").write_text("[{\"sentence_id\": \"x"),
                           r"m2e2/dev/text_only_event.json: not valid JSON"),
    "m2e2 coref not utf-8": (lambda w: not_utf8(w / "m2e2/dev/crossmedia_coref.txt", 2),
                             r"m2e2/dev/crossmedia_coref.txt: line 2: not valid UTF-8"),
    "swig duplicate id": (lambda w: duplicate_first_key(w / "swig/train.json"),
                          r"swig/train.json: not valid JSON \(duplicate key 'toyswig-train-00000.png'\)"),
    "swig mapping missing": (lambda w: (w / "swig/ace_sr_mapping.txt").unlink(), r"ace_sr_mapping.txt: file not found"),
    "image empty file": (lambda w: first_image(w).write_bytes(b""), r"toyswig-train-00000.png: record .*not a readable image"),
    "image truncated png": (lambda w: first_image(w).write_bytes(first_image(w).read_bytes()[:300]),
                            r"toyswig-train-00000.png: record .*not a readable image"),
    "image truncated jpeg": (lambda w: truncated_jpeg(first_image(w)), r"toyswig-train-00000.png: cannot read image .*truncated"),
    "image not an image": (lambda w: first_image(w).write_text("hello"), r"toyswig-train-00000.png: record .*not a readable image"),
    "image huge": (lambda w: huge_png_header(first_image(w)), r"toyswig-train-00000.png: record .*DecompressionBomb"),
    "nothing there": (lambda w: [shutil.rmtree(w / d) for d in ("ace", "swig", "mnre", "m2e2")], r"no data found"),
}


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_exits_with_a_clear_message(world, tmp_path, case):
    corrupt, message = TRAIN_CASES[case]
    corrupt(world)
    with pytest.raises(SystemExit) as exit_:
        train.main(["--data", str(world), "--out", str(tmp_path / "runs"), "--max-steps", "1", "--batch-size", "4",
                    "--dev-docs", "0"])
    assert isinstance(exit_.value.code, str) and exit_.value.code.startswith("train.py: "), exit_.value.code
    assert re.search(message, exit_.value.code), exit_.value.code


@pytest.mark.parametrize("change", [
    lambda o: o[0].update(words=[]),                                     # an empty sentence
    lambda o: o[0]["words"].__setitem__(0, ""),                          # an empty word
    lambda o: o[0]["words"].__setitem__(0, "New York"),                  # a word the tokenizer cannot hold
])
def test_train_skips_unusable_sentences_and_says_so(world, tmp_path, capsys, change):
    def fix(o):  # no events, so that only the words are wrong
        o[0]["golden-event-mentions"] = []
        change(o)
    edit_json(world / "ace" / "train.json", fix)
    train.main(["--data", str(world), "--out", str(tmp_path / "runs"), "--max-steps", "1", "--batch-size", "4",
                "--dev-docs", "0"])
    out = capsys.readouterr().out
    assert "ace/train.json: skipped 1 records: record 0: " in out


# ----------------------------------------------------------------------------- readers, cases not in test_readers.py
def jmee(tmp_path, records) -> Path:
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("words, problem", [
    ([], "a sentence with no words"),
    (["a", ""], "word '' is empty or holds a space"),
    (["New York"], "word 'New York' is empty or holds a space"),
])
def test_jmee_skips_unusable_words(tmp_path, words, problem):
    path = jmee(tmp_path, [{"words": words, "golden-event-mentions": []}, {"words": ["ok"], "golden-event-mentions": []}])
    with pytest.warns(UserWarning, match=rf"train.json: skipped 1 records: record 0: {problem}"):
        assert [s.words for s in read_jmee(path)] == [("ok",)]


@pytest.mark.parametrize("text, message", [
    ('[{"words": ["a"], "golden-event-mentions": [', "not valid JSON"),
    ("", "not valid JSON"),
    ('{"words": []}', "expected a JSON list at the top level, got dict"),
    ('[{"words": ["a"], "golden-event-mentions": [], "words": ["b"]}]', r"not valid JSON \(duplicate key 'words'\)"),
    ('[{"words": "ab", "golden-event-mentions": []}]', "record 0: words must be a list of strings"),
    ('[{"words": ["a", 3], "golden-event-mentions": []}]', "record 0: words must be a list of strings"),
])
def test_jmee_bad_files(tmp_path, text, message):
    (tmp_path / "train.json").write_text(text)
    with pytest.raises(DataError, match=rf"train.json: {message}"):
        read_jmee(tmp_path / "train.json")


def test_mnre_not_utf8_names_the_line(tmp_path):
    PILImage.new("RGB", (8, 8)).save(tmp_path / "x.png")
    good = "{'token': ['a', 'b'], 'h': {'pos': [0, 1]}, 't': {'pos': [1, 2]}, 'img_id': 'x.png', 'relation': 'None'}"
    (tmp_path / "t.txt").write_bytes(f"{good}\n{good}\n".encode() + b"\xc3(\n" + f"{good}\n".encode())
    with pytest.raises(DataError, match=r"t.txt: line 3: not valid UTF-8 \(byte 0xc3\)"):
        read_mnre(tmp_path / "t.txt", tmp_path)


def swig(tmp_path, box, size=(20, 10)):
    PILImage.new("RGB", size).save(tmp_path / "a.png")
    (tmp_path / "map.txt").write_text("arresting\tagent\tJustice||Arrest|Jail\tAgent\n")
    (tmp_path / "s.json").write_text(json.dumps({"a.png": {"verb": "arresting", "width": size[0], "height": size[1],
                                                           "frames": [], "bb": {"agent": box}}}))
    return tmp_path / "s.json", tmp_path, tmp_path / "map.txt"


def test_swig_zero_area_box_skipped(tmp_path):
    with pytest.warns(UserWarning, match=r"s.json: skipped 1 records: record a.png: box \[3, 2, 3, 8\] is not 0 <= x1 < x2"):
        assert read_swig(*swig(tmp_path, [3, 2, 3, 8])) == []


def test_swig_size_differs_from_file_skipped(tmp_path):
    files = swig(tmp_path, [1, 1, 5, 5])
    edit_json(files[0], lambda o: o["a.png"].update(width=21))
    with pytest.warns(UserWarning, match=r"record a.png: width x height 21x10 differ from the file's 20x10"):
        assert read_swig(*files) == []


# ----------------------------------------------------------------------------- the gold, through evaluate.py
def gold_dir(world: Path) -> Path:
    return world / "m2e2" / "test"


@pytest.mark.parametrize("name, corrupt, message", [
    ("image_multimedia_event.json", lambda p: edit_json(p, lambda o: next(iter(o.values()))["role"].update(
        Entity=[["1", 5, 5, 5, 9]])), r"image_multimedia_event.json: record .*: box \[5, 5, 5, 9\] is not 0 <= x1 < x2"),
    ("image_multimedia_event.json", duplicate_first_key, r"image_multimedia_event.json: not valid JSON \(duplicate key"),
    ("text_only_event.json", lambda p: edit_json(p, lambda o: o.append(o[0])),
     r"text_only_event.json: record toy-test-000_0: sentence id given twice in this file"),
    ("text_only_event.json", lambda p: edit_json(p, lambda o: o[0].update(words=[], **{"golden-event-mentions": []})),
     r"text_only_event.json: record toy-test-000_0: a sentence with no words"),
    ("text_only_event.json", lambda p: p.write_bytes(p.read_bytes()[:1] + b"\xef\xbb\xbf" + p.read_bytes()[1:]),
     r"text_only_event.json: not valid JSON"),  # a BOM at the start of the file is skipped, anywhere else it is bad
    ("text_only_event.json", lambda p: p.write_text("[" * 100_000), r"text_only_event.json: not valid JSON \(nested too deeply\)"),
    ("crossmedia_coref.txt", lambda p: not_utf8(p, 1), r"crossmedia_coref.txt: line 1: not valid UTF-8"),
])
def test_evaluate_bad_gold_exit_2(world, capsys, name, corrupt, message):
    path = gold_dir(world) / name
    pred = world / "pred.jsonl"
    pred.write_text("")
    corrupt(path)
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--gold", str(gold_dir(world)), "--pred", str(pred)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert re.search(message, err), err


MISSING_DEVICES = ["nonsense", "cpu:1"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:1"])


@pytest.mark.parametrize("device", MISSING_DEVICES)
def test_a_device_this_machine_lacks_is_one_line(world, tmp_path, capsys, device):
    """Before any work, not torch's assertion deep inside the first ``.to``."""
    with pytest.raises(SystemExit) as exit_:
        train.main(["--data", str(world), "--out", str(tmp_path / "runs"), "--device", device])
    assert re.fullmatch(rf"train.py: --device: (unknown )?device '{device}'.*", exit_.value.code)
    ckpt = tmp_path / "ckpt"  # the device is picked before the checkpoint's weights are read
    ckpt.mkdir()
    (ckpt / RunDir.INFO).write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        rmpl.main(["--checkpoint", str(ckpt), "--data", str(world), "--device", device])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert f"device '{device}'" in err, err


def test_evaluate_gold_image_too_large(world):
    """read_m2e2(images=True), as rmpl.py reads the gold: a huge image is refused, not decoded."""
    image = next((gold_dir(world) / "images").iterdir())
    huge_png_header(image)
    with pytest.raises(DataError, match=rf"{image.name}: image .*DecompressionBomb"):
        read_m2e2(gold_dir(world), images=True)


def test_evaluate_bad_prediction_line_in_the_middle(world, capsys):
    lines = [{"sentence_id": "toy-test-000_0", "events": []}, "{oops", {"image_id": "toy-test-000_0", "events": []}]
    pred = world / "pred.jsonl"
    pred.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--gold", str(gold_dir(world)), "--pred", str(pred)])
    assert exit_.value.code == 2 and f"error: {pred}, line 2: not valid JSON" in capsys.readouterr().err


BAD_PREDICTIONS = {  # what a user's writer gets wrong -> the one error line (after "error: FILE, line 2: ")
    "arguments a string": ('{"sentence_id": "toy-test-000_0", "events": [{"event_type": "Life:Die", "trigger": '
                           '{"start": 0, "end": 1}, "arguments": "Victim"}]}',
                           "event 0: 'arguments' must be a list, got 'Victim'"),
    "nested 100,000 deep": ("[" * 100_000, "not valid JSON (nested too deeply)"),
    "a key twice": ('{"image_id": "toy-test-000_0", "events": [], "events": []}', "not valid JSON (duplicate key 'events')"),
    "a link with events": ('{"sentence_id": "toy-test-000_0", "image_id": "toy-test-000_0", "events": []}',
                           "a line with 'sentence_id' and 'image_id' is a link, which carries 'event_type', not 'events'"),
    "a BOM on line 2": ('\ufeff{"image_id": "toy-test-000_0", "events": []}', "not valid JSON (Unexpected UTF-8 BOM"),
}


@pytest.mark.parametrize("case", BAD_PREDICTIONS)
def test_evaluate_bad_prediction_exit_2(world, capsys, case):
    line, message = BAD_PREDICTIONS[case]
    pred = world / "pred.jsonl"
    pred.write_text('\ufeff{"sentence_id": "toy-test-000_0", "events": []}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--gold", str(gold_dir(world)), "--pred", str(pred)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {pred}, line 2: {message}"), err


def test_evaluate_empty_predictions_warn(world, capsys):
    pred = world / "pred.jsonl"
    pred.write_text("")
    evaluate.main(["--gold", str(gold_dir(world)), "--pred", str(pred)])
    captured = capsys.readouterr()
    assert captured.err == f"warning: {pred}: holds no predictions (no event and no link): every cell scores 0\n"
    assert captured.out.splitlines()[2].split()[3:6] == ["0.00", "0.00", "0.00"]


def test_evaluate_png_image_ids(world, capsys):
    """The toy world's image files are .png: ids written as those file names are the gold's images."""
    gold = read_m2e2(gold_dir(world))
    lines = [{"image_id": f"{i.id}.png", "events": [{"event_type": e.event_type, "arguments": [
        {"role": a.role, "bbox": list(vars(a.target).values())} for a in e.arguments]} for e in i.events]}
        for i in gold.images.values() if i.events]
    lines += [{"sentence_id": x.sentence_id, "image_id": f"{x.image_id}.png", "event_type": x.event_type} for x in gold.links]
    assert lines and gold.links
    pred = world / "pred.jsonl"
    pred.write_text("".join(json.dumps(x) + "\n" for x in lines))
    evaluate.main(["--gold", str(gold_dir(world)), "--pred", str(pred), "--json"])
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert captured.err == "" and result["unknown_ids"] == 0
    for name in ("image_mention", "image_argument", "multimedia_mention"):
        assert result[name]["f1"] == 100.0, (name, result[name])


def test_evaluate_degenerate_boxes_are_false_positives(world, capsys):
    """Zero-area and out-of-image predicted boxes are well-formed: scored (as misses), never an error."""
    gold = read_m2e2(gold_dir(world))
    iid, image = next((k, v) for k, v in gold.images.items() if v.events)
    event = image.events[0]
    role = event.arguments[0].role
    boxes = [[5, 5, 5, 9], [5, 5, 9, 5], [5000, 5000, 6000, 6000], [-50, -50, -10, -10]]
    pred = world / "pred.jsonl"
    pred.write_text(json.dumps({"image_id": iid, "events": [{"event_type": event.event_type, "arguments": [
        {"role": role, "bbox": b} for b in boxes]}]}) + "\n")
    evaluate.main(["--gold", str(gold_dir(world)), "--pred", str(pred), "--json"])
    cell = json.loads(capsys.readouterr().out)["image_argument"]
    assert (cell["match"], cell["pred"], cell["p"]) == (0, 4, 0.0)
