"""Real sentences in the product (skipped without ../shared where they read M2E2's text): the tokenizer gives
every real sentence back, every real span is writable, and long prompts are a flag and are counted at
inference."""
import json
import warnings

import pytest

import data
import model as M
import rmpl
import schema as S
import tasks
import tensors
import train


def test_real_words_round_trip_and_every_span_is_writable(shared_dir):
    """On all 6,013 sentences: the tokenizer (trained on split 1's train at the real-text vocabulary) gives every
    sentence back word for word, and every event of every sentence linearises (no span past MAX_OCC)."""
    records = json.loads((shared_dir / "data" / "m2e2" / "text_only_event.json").read_text())
    sents = [data._m2e2_sentence(r) for r in records]
    train_ids = set((shared_dir / "data" / "textee" / "m2e2_split1" / "train.txt").read_text().split())
    tok = tensors.Tokenizer.train([s.words for s in sents if s.id in train_ids], vocab_size=5000)
    assert all(tok.decode(tok.encode(list(s.words))) == list(s.words) for s in sents)
    assert all(S.linearise(s.events, s.words) is not None for s in sents)


# ----------------------------------------------------------------------------- what real text changed
def test_cut_prompts_are_counted_at_inference():
    """Real sentences run past max_text_len; extraction used to cut them silently."""
    words = "the troops attacked the town at dawn and then they left".split()
    tok = tensors.Tokenizer.train([words] * 20, vocab_size=500)
    cfg = M.ModelConfig(vocab_size=tok.vocab_size, pad_id=0, bos_id=2, eos_id=3, max_text_len=8, max_target_len=4,
                        **M.MODEL_SIZES["tiny"])
    extractor = rmpl.RMPL(M.Seq2Seq(cfg), tok)
    short = tasks.Example("text_mention", [S.TASK_TOKENS["text_mention"], S.SEP, "troops"], [])
    long = tasks.Example("text_mention", [S.TASK_TOKENS["text_mention"], S.SEP, *words], [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extractor.run([short])  # nothing cut, nothing said
    with pytest.warns(UserWarning, match=r"text_mention: 1 of 2 prompts were cut to max_text_len=8"):
        extractor.run([short, long])


def test_max_text_len_is_a_train_flag_that_sizes_the_model():
    cfg = train.parse_args(["--max-text-len", "256"])
    assert cfg.max_text_len == 256 and train.parse_args([]).max_text_len == 128
    src = data.Sources(ace={"train": [S.Sentence("a-0", ("troops", "attacked", "the", "town"))]},
                       swig={}, mnre={}, m2e2={})
    net, _ = train.new_network(train.TrainConfig(vocab_size=500, max_text_len=256), src)
    assert net.cfg.max_text_len == 256 and net.text_pos.weight.shape[0] == 256
    with pytest.raises(SystemExit):
        train.parse_args(["--max-text-len", "0"])


def test_a_vocabulary_too_small_for_the_text_is_one_line_not_a_traceback(tmp_path):
    """Real text has ~110 distinct characters; below schema tokens + 256 bytes + characters sentencepiece fails."""
    (tmp_path / "ace").mkdir()
    (tmp_path / "ace" / "train.json").write_text(json.dumps(
        [{"words": ["Troops", "attacked", "Aleppo", "—", "“again”"], "golden-event-mentions": []}]))
    with pytest.raises(SystemExit, match=r"^train.py: --vocab-size 300 is too small for this training text"):
        train.main(["--data", str(tmp_path), "--out", str(tmp_path / "runs"), "--tasks", "text_event",
                    "--vocab-size", "300", "--max-steps", "1"])
