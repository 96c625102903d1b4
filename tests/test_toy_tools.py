"""The toy tools' command line (toy/tools.py's main): what a person sees on good input, and one
`error: ...` line with exit status 2, never a traceback, on each bad input."""
import json
from pathlib import Path

import pytest
from PIL import Image as PILImage

import toy
import toy.tools

TINY = dict(ace_train=4, ace_dev=2, ace_test=2, swig_train=4, swig_dev=2, swig_test=2, mnre_train=2,
            mnre_dev=2, mnre_test=2, m2e2_dev=3, m2e2_test=3)
TINY_ARGS = [x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return toy.generate(tmp_path_factory.mktemp("toy"), seed=0, **TINY)


def refused(argv, capsys) -> str:
    """Run the command line, expect exit status 2; returns its one stderr line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        toy.tools.main(argv)
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_baseline_then_draw_its_predictions(world, tmp_path, capsys):
    pred, png = tmp_path / "kw.jsonl", tmp_path / "doc.png"
    toy.tools.main(["baseline", str(world), "--split", "dev", "--pred", str(pred)])
    assert capsys.readouterr().out.startswith("wrote ")
    assert all(json.loads(line) for line in pred.read_text().splitlines())
    toy.tools.main(["draw", str(world), "--split", "dev", "--doc", "toy-dev-001", "--png", str(png),
                    "--pred", str(pred)])
    assert capsys.readouterr().out == f"drew {png}\n"
    with PILImage.open(png) as im:
        assert im.width >= 200


@pytest.mark.parametrize("command, options", [
    ("stats", []),
    ("baseline", ["--pred", "{tmp}/kw.jsonl"]),
    ("draw", ["--doc", "toy-test-000", "--png", "{tmp}/doc.png"]),
])
def test_missing_directory(command, options, tmp_path, capsys):
    missing = tmp_path / "no_such_world"
    line = refused([command, str(missing), *(o.format(tmp=tmp_path) for o in options)], capsys)
    assert line == f"error: {missing}: no such directory"


def test_missing_split_directory(world, tmp_path, capsys):
    line = refused(["baseline", str(world / "ace"), "--pred", str(tmp_path / "kw.jsonl")], capsys)
    assert "m2e2/test: no such directory" in line


def test_unknown_document(world, tmp_path, capsys):
    png = tmp_path / "d.png"
    line = refused(["draw", str(world), "--doc", "toy-test-999", "--png", str(png)], capsys)
    assert "no document 'toy-test-999'" in line and "toy-test-000 .. toy-test-002" in line
    assert not png.exists()


def draw_pred(world, tmp_path, capsys, pred: Path) -> str:
    png = tmp_path / "d.png"
    argv = ["draw", str(world), "--doc", "toy-test-000", "--png", str(png), "--pred", str(pred)]
    return refused(argv, capsys)


def test_missing_prediction_file(world, tmp_path, capsys):
    line = draw_pred(world, tmp_path, capsys, tmp_path / "nowhere.jsonl")
    assert line == f"error: {tmp_path / 'nowhere.jsonl'}: no such prediction file"


def test_malformed_prediction_file(world, tmp_path, capsys):
    pred = tmp_path / "bad.jsonl"
    pred.write_text('{"sentence_id": "toy-test-000_0", "events": []}\n{oops\n')
    line = draw_pred(world, tmp_path, capsys, pred)
    assert line.startswith(f"error: {pred}, line 2: not valid JSON")


def test_inverted_box_in_prediction_file(world, tmp_path, capsys):
    # the kind of box a new user found in a model's file: x1 > x2 (a location bin in the padding)
    pred = tmp_path / "inverted.jsonl"
    victim = {"role": "Victim", "bbox": [105.02, 55.86, 103, 131.83]}
    event = {"event_type": "Life:Die", "arguments": [victim]}
    pred.write_text(json.dumps({"image_id": "toy-test-000_0", "events": [event]}) + "\n")
    line = draw_pred(world, tmp_path, capsys, pred)
    assert line.startswith(f"error: {pred}, line 1: ") and "x1 <= x2" in line


def test_off_image_box_is_drawn_clipped(world, tmp_path, capsys):
    # valid for the scorer (x1 <= x2, y1 <= y2), but far outside the picture: still drawn, no error
    pred = tmp_path / "far.jsonl"
    victim = {"role": "Victim", "bbox": [0, 0, 1e300, 1e300]}
    event = {"event_type": "Life:Die", "arguments": [victim]}
    pred.write_text(json.dumps({"image_id": "toy-test-000_0", "events": [event]}) + "\n")
    toy.tools.main(["draw", str(world), "--doc", "toy-test-000", "--png", str(tmp_path / "d.png"),
                    "--pred", str(pred)])
    assert (tmp_path / "d.png").exists()


def test_generator_command_line_refuses_an_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as e:
        toy.world.main(["--out", str(blocker / "world"), *TINY_ARGS])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
