"""experiments/real_text.py: its converter on the real M2E2 text and TextEE's splits (skipped without
../shared), its baseline by hand, and the whole command on a tiny split."""
import json
import warnings

import pytest

import data
import evaluate
import real_text
import rmpl
import schema as S


def split_ids(shared_dir, k=1):
    return real_text.read_split(shared_dir / "data" / "textee", k)


# ----------------------------------------------------------------------------- the converter on real files
def test_build_gives_textee_counts(shared_dir, tmp_path):
    """TextEE's data/preprocessing/m2e2/README.md, split 1: 4211 / 901 / 901 sentences, 748 / 183 / 174 events,
    1120 / 280 / 259 arguments; and data.py's readers see the same (nothing skipped or dropped)."""
    counts = real_text.build(shared_dir / "data" / "m2e2", split_ids(shared_dir), tmp_path)
    assert counts == {"train": {"sentences": 4211, "events": 748, "arguments": 1120},
                      "dev": {"sentences": 901, "events": 183, "arguments": 280},
                      "test": {"sentences": 901, "events": 174, "arguments": 259}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a skipped or dropped record would warn
        for split, c in counts.items():
            sents = data.read_jmee(tmp_path / "ace" / f"{split}.json")
            assert (len(sents), sum(len(s.events) for s in sents),
                    sum(len(e.arguments) for s in sents for e in s.events)) == tuple(c.values())
        gold = data.read_m2e2(tmp_path / "m2e2" / "test", images=True)
    assert len(gold.sentences) == 901 and not gold.images and not gold.links


def test_a_few_real_sentences_convert_unchanged(shared_dir, tmp_path):
    """The first sentences with and without events of each split: JMEE and M2E2 copies read back to the records
    data.py makes from the official file itself."""
    m2e2 = shared_dir / "data" / "m2e2"
    official = {r["sentence_id"]: r for r in json.loads((m2e2 / "text_only_event.json").read_text())}
    ids = {}
    for split, all_ids in split_ids(shared_dir).items():
        with_event = [i for i in all_ids if official[i]["golden-event-mentions"]][:2]
        ids[split] = with_event + [i for i in all_ids if not official[i]["golden-event-mentions"]][:1]
    real_text.build(m2e2, ids, tmp_path)
    for split, chosen in ids.items():
        expected = [data._m2e2_sentence(official[i]) for i in chosen]
        got = data.read_jmee(tmp_path / "ace" / f"{split}.json")
        assert [(s.id, s.words, s.events) for s in got] == [(s.id, s.words, s.events) for s in expected]
        assert sum(len(s.events) for s in got) >= 2
        if split != "train":
            gold = data.read_m2e2(tmp_path / "m2e2" / split)
            assert [(s.id, s.words, s.events, s.images) for s in gold.sentences.values()] == \
                   [(s.id, s.words, s.events, ()) for s in expected]


def test_build_refuses_unknown_and_repeated_ids(shared_dir, tmp_path):
    m2e2 = shared_dir / "data" / "m2e2"
    with pytest.raises(SystemExit, match="1 not in"):
        real_text.build(m2e2, {"train": ["no_such_sentence_7"], "dev": [], "test": []}, tmp_path)
    sid = split_ids(shared_dir)["test"][0]
    with pytest.raises(SystemExit, match="1 in more than one split"):
        real_text.build(m2e2, {"train": [sid], "dev": [sid], "test": []}, tmp_path)


@pytest.mark.parametrize("switch", [[], ["--unattached-args"]])
def test_gold_written_as_predictions_scores_100(shared_dir, tmp_path, capsys, switch):
    real_text.build(shared_dir / "data" / "m2e2", split_ids(shared_dir, 3), tmp_path)
    gold_dir = tmp_path / "m2e2" / "test"
    gold = data.read_m2e2(gold_dir)
    pred = tmp_path / "gold.jsonl"
    pred.write_text("".join(json.dumps(line) + "\n"
                            for line in rmpl.prediction_lines(S.Predictions({k: list(s.events)
                                                                              for k, s in gold.sentences.items()}))))
    evaluate.main(["--gold", str(gold_dir), "--pred", str(pred), "--json", *switch])
    res = json.loads(capsys.readouterr().out)
    assert res["text_mention"]["f1"] == res["text_argument"]["f1"] == 100.0


# ----------------------------------------------------------------------------- the baseline, by hand
def _rec(words, events=()):
    return {"words": words.split(), "golden-event-mentions": [
        {"event_type": t, "trigger": {"start": a, "end": b}, "arguments": []} for t, a, b in events]}


def test_trigger_table_keeps_frequent_triggers_with_their_majority_type():
    train_recs = [_rec("troops attacked the town", [("Conflict:Attack", 1, 2)]),
                  _rec("critics attacked the plan", [("Conflict:Attack", 1, 2)]),  # 2 of 3: kept
                  _rec("they attacked it"),
                  _rec("he was shot dead", [("Conflict:Attack", 2, 3), ("Life:Die", 2, 3)]),
                  _rec("a shot", [("Life:Die", 1, 2)]),  # shot: Die 2, Attack 1 -> Die
                  _rec("they met in Paris", [("Contact:Meet", 1, 2)]),
                  _rec("he met her"), _rec("we met"),  # met: 1 of 3 < 1/2: dropped
                  _rec("took to the streets", [("Conflict:Demonstrate", 0, 4)])]
    table = real_text.trigger_table(train_recs)
    assert table == {("attacked",): "Conflict:Attack", ("shot",): "Life:Die",
                     ("took", "to", "the", "streets"): "Conflict:Demonstrate"}
    events = real_text.apply_table(table, _rec("Protesters Took to the streets and police ATTACKED them"))
    assert events == [{"event_type": "Conflict:Demonstrate", "trigger": {"start": 1, "end": 5}, "arguments": []},
                      {"event_type": "Conflict:Attack", "trigger": {"start": 7, "end": 8}, "arguments": []}]


def test_trigger_coverage_known_answers():
    train_recs = [_rec("troops attacked the town", [("Conflict:Attack", 1, 2)]),
                  _rec("critics attacked the plan"),  # attacked: 1 of 2 -> rate >= 1/2
                  _rec("they met in Paris", [("Contact:Meet", 1, 2)]),
                  _rec("he met her"), _rec("we met"), _rec("met again"), _rec("I met him"),
                  _rec("a man died", [("Life:Die", 2, 3)])]  # met: 1 of 5 -> 1/5 - 1/2
    dev_recs = [_rec("rebels attacked a base", [("Conflict:Attack", 1, 2)]),
                _rec("we met them", [("Contact:Meet", 1, 2)]),
                _rec("they met", [("Contact:Phone-Write", 1, 2)]),  # seen phrase, another type
                _rec("he met nobody"),
                _rec("police fired", [("Conflict:Attack", 1, 2)])]  # never a train trigger
    assert real_text.trigger_coverage(train_recs, dev_recs) == {
        "dev occurrences of those phrases": 5, "dev triggers": 4, "dev triggers: never a train trigger": 1,
        "dev triggers: same type in train": 2, "dev triggers: train rate 1/5 - 1/2": 2,
        "dev triggers: train rate >= 1/2": 1}


def test_mention_errors_known_answers():
    gold = [_rec("troops attacked and killed him", [("Conflict:Attack", 1, 2), ("Life:Die", 3, 4)]),
            _rec("a man died", [("Life:Die", 2, 3)]),
            _rec("he met her", [("Contact:Meet", 1, 2)]),
            _rec("nothing happened")]
    for k, r in enumerate(gold):
        r["sentence_id"] = f"d_{k}"
    ev = lambda t, s, e: {"event_type": t, "trigger": {"start": s, "end": e}, "arguments": []}
    pred = [{"sentence_id": gold[0]["sentence_id"], "events": [ev("Conflict:Attack", 1, 2), ev("Life:Die", 3, 5)]},
            {"sentence_id": gold[1]["sentence_id"], "events": [ev("Conflict:Attack", 2, 3)]},
            {"sentence_id": gold[2]["sentence_id"], "events": []},
            {"sentence_id": gold[3]["sentence_id"], "events": [ev("Life:Die", 1, 2)]}]
    assert real_text.mention_errors(gold, pred) == {
        "... of which predicted empty": 1, "gold: right": 1, "gold: sentence empty": 1, "gold: wrong span": 1,
        "gold: wrong type": 1, "pred: extra, event sentence": 2, "pred: extra, no-event sentence": 1,
        "sentences with gold events": 3}


def test_run_trains_and_scores_a_tiny_split_end_to_end(shared_dir, tmp_path):
    """The whole command on 60 / 15 / 15 real sentences of split 1 and a few steps: both stages train, dev and test are
    predicted and scored, and a second call reuses the finished split instead of training again."""
    ids = split_ids(shared_dir)
    textee = tmp_path / "textee" / "m2e2_split1"
    textee.mkdir(parents=True)
    for split, n in (("train", 60), ("dev", 15), ("test", 15)):
        (textee / f"{split}.txt").write_text("\n".join(ids[split][:n]) + "\n")
    argv = ["run", "--splits", "1", "--m2e2", str(shared_dir / "data" / "m2e2"), "--textee", str(tmp_path / "textee"),
            "--data", str(tmp_path / "data"), "--out", str(tmp_path / "runs"), "--stage1-steps", "3",
            "--stage2-steps", "2", "--batch-size", "4", "--vocab-size", "600", "--max-text-len", "64",
            "--no-event-bias", "3", "0"]
    result = real_text.main(argv)
    split = result["splits"][1]
    assert split["counts"]["test"]["sentences"] == 15 and set(split["seconds"]) >= {"stage1", "stage2", "total"}
    assert set(split["test"]) == {"strict", "unattached_args"} and "text_argument" in split["dev"]["strict"]
    assert json.loads((tmp_path / "runs" / "split1" / "stage1" / "rmpl.json").read_text())["config"]["max_text_len"] == 64
    logged = (tmp_path / "runs" / "split1" / "real_text.log").read_text()
    assert "--no-event-bias 3.0" in logged and "--no-event-bias 0.0" in logged  # both tried on dev
    f1 = {b: r["text_mention"] for b, r in split["dev_by_bias"].items()}
    assert split["no_event_bias"] == max([3.0, 0.0], key=lambda b: (f1[str(b)], b == 3.0))  # the first on a tie
    assert real_text.main(argv)["splits"][1] == split  # done before: read back, not trained again
    rescored = real_text.main([*argv[:-2], "0"])["splits"][1]  # another bias: scored again, not trained again
    assert rescored["seconds"]["stage1"] == split["seconds"]["stage1"] and rescored["no_event_bias"] == 0.0
