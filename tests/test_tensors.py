"""Records -> tensors (tensors.py): tokenizer, letterboxed images, examples/collate, sampler."""
import functools
import random
from collections import Counter

import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image as PILImage, ImageDraw

import schema
from data import DataError
from tasks import Example, tempered_weights
from tensors import (EOS_ID, FIRST_SPECIAL_ID, IMAGE_MEAN, IMAGE_STD, PAD_ID, ImageCache, TaskSampler,
                     Tokenizer, collate, cuts, encode_example, hflip, load_image)

CORPUS = ["the rebels bombed Aleppo on Monday", "police arrested the man in Paris",
          "Anna married Bob , and they flew to Rome", "soldiers killed three people near the border",
          "the company paid $ 5 million to the union"] * 20


@functools.lru_cache(maxsize=None)
def tok() -> Tokenizer:  # trained once per session (hypothesis tests cannot take function fixtures)
    return Tokenizer.train(CORPUS, vocab_size=600, seed=0)


# ----------------------------------------------------------------------------- tokenizer
def test_training_is_deterministic():
    a = Tokenizer.train(CORPUS, vocab_size=600, seed=0)
    b = Tokenizer.train(list(CORPUS), vocab_size=600, seed=0)
    assert a.proto == b.proto
    assert Tokenizer.train(CORPUS + ["zebras graze"], vocab_size=600, seed=0).proto != a.proto


def test_fixed_ids_and_special_tokens_are_single_contiguous_ids():
    t = tok()
    assert (t.pad_id, t.sp.unk_id(), t.bos_id, t.eos_id) == (0, 1, 2, 3)
    for i, s in enumerate(schema.SPECIAL_TOKENS):
        assert t.encode([s]) == [FIRST_SPECIAL_ID + i]
        assert t.decode([FIRST_SPECIAL_ID + i]) == [s]
    assert 600 >= t.vocab_size > FIRST_SPECIAL_ID + len(schema.SPECIAL_TOKENS) + 256


def test_known_encoding():
    t = tok()
    ids = t.encode(["<t:Conflict:Attack>", "bombed", "<r:Place>", "Aleppo"])
    attack, place = (FIRST_SPECIAL_ID + schema.SPECIAL_TOKENS.index(s) for s in ("<t:Conflict:Attack>", "<r:Place>"))
    # frequent training words are single pieces "▁bombed", "▁Aleppo"
    assert ids == [attack, t.sp.piece_to_id("\u2581bombed"), place, t.sp.piece_to_id("\u2581Aleppo")]
    assert t.sp.unk_id() not in ids


SPECIALS = st.sampled_from(schema.SPECIAL_TOKENS)
WORDS = st.text(st.characters(blacklist_characters=" \u2581", blacklist_categories=("Cs",)), min_size=1,
                max_size=12)  # any unicode but a space, '▁' or a lone surrogate


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(SPECIALS, WORDS), max_size=20))
def test_round_trip(tokens):
    ids = tok().encode(tokens)
    assert PAD_ID not in ids and tok().sp.unk_id() not in ids  # byte fallback: nothing becomes <unk>
    assert tok().decode(ids) == tokens


@pytest.mark.parametrize("tokens", [
    ["Zürich", "北京", "☃", "naïve", "ﬁx", "Å", "Å"],        # unseen characters, NFC vs NFD kept apart
    ["don't", "U.S.", "--", "(", "$5", "e-mail", "a\tb", "x\u00a0y"],  # punctuation, tab, no-break space
    ["<head>", "<tail>", "<loc_0>", "<loc_63>", "<occ2>", "unseenword", "<head>"],
    [],
])
def test_round_trip_known(tokens):
    assert tok().decode(tok().encode(tokens)) == tokens


def test_decode_drops_pad_bos_eos_and_takes_tensors():
    t = tok()
    ids = t.encode(["<head>", "rebels", "Aleppo"])
    assert t.decode(torch.tensor([t.bos_id] + ids + [t.eos_id, t.pad_id, t.pad_id])) == ["<head>", "rebels", "Aleppo"]


@pytest.mark.parametrize("word", ["", "two words", "a\u2581b", "\ud800"])
def test_encode_refuses_words_that_cannot_round_trip(word):
    with pytest.raises(ValueError, match="cannot encode word"):
        tok().encode(["ok", word])


def test_save_load_identical(tmp_path):
    path = tmp_path / "tokenizer.model"
    tok().save(path)
    loaded = Tokenizer.load(path)
    assert loaded.proto == tok().proto and path.read_bytes() == tok().proto
    tokens = ["<t:Life:Die>", "killed", "<r:Victim>", "three", "people"]
    assert loaded.encode(tokens) == tok().encode(tokens)


def test_load_refuses_garbage_and_foreign_models(tmp_path):
    (tmp_path / "bad.model").write_bytes(b"not a model")
    with pytest.raises(DataError, match="bad.model"):
        Tokenizer.load(tmp_path / "bad.model")
    import io
    import sentencepiece as spm
    buf = io.BytesIO()  # a plain sentencepiece model without the schema's tokens
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=buf, vocab_size=60,
                                   hard_vocab_limit=False, minloglevel=2)
    (tmp_path / "plain.model").write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="plain.model.*does not match this schema"):
        Tokenizer.load(tmp_path / "plain.model")


def test_train_errors():
    with pytest.raises(ValueError, match="no training text"):
        Tokenizer.train(["", "  "])
    with pytest.raises(ValueError, match="vocab_size=100"):
        Tokenizer.train(CORPUS, vocab_size=100)


def test_train_on_token_lists_drops_special_tokens():
    a = Tokenizer.train([["<t:Life:Die>", "killed", "<r:Victim>", "Bob"]] * 5, vocab_size=500)
    b = Tokenizer.train(["killed Bob"] * 5, vocab_size=500)
    assert a.proto == b.proto


# ----------------------------------------------------------------------------- images
def unnormalise(x: torch.Tensor) -> torch.Tensor:  # (3, ...) -> 0..255
    return (x * torch.tensor(IMAGE_STD).view(3, 1, 1) + torch.tensor(IMAGE_MEAN).view(3, 1, 1)) * 255


# mode, pillow colour, the RGB it must read as (alpha composited onto white; 16-bit scaled to 8)
MODES = [("RGB", (10, 200, 30), (10, 200, 30)), ("L", 77, (77, 77, 77)), ("1", 1, (255, 255, 255)),
         ("RGBA", (10, 200, 30, 0), (255, 255, 255)), ("LA", (0, 255), (0, 0, 0)),
         ("CMYK", (0, 255, 255, 0), (255, 0, 0)), ("I;16", 32896, (128, 128, 128)), ("I", 65535, (255, 255, 255))]


# pillow cannot write these modes in these formats, so no such file can reach the reader
UNWRITABLE = {("CMYK", "png"), ("I", "png"), ("RGBA", "jpg"), ("LA", "jpg"), ("I;16", "jpg"), ("I", "jpg")}


@pytest.mark.parametrize("mode,colour,rgb,ext", [(*m, ext) for m in MODES for ext in ("png", "jpg", "tiff")
                                                 if (m[0], ext) not in UNWRITABLE])
def test_modes_and_letterbox_geometry(tmp_path, mode, colour, rgb, ext):
    path = tmp_path / f"x.{ext}"
    PILImage.new(mode, (30, 20), colour).save(path)
    x, wh = load_image(path, 16)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and wh == (30, 20)
    # s = 16/30: resized to (16, round(10.67) = 11); rows 11.. are the zero (mean colour) padding
    tol = 3 if ext == "jpg" else 0.6
    assert torch.allclose(unnormalise(x[:, :11, :]), torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1), atol=tol)
    assert (x[:, 11:, :] == 0).all()


def test_palette_with_transparency(tmp_path):
    img = PILImage.new("P", (8, 8), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 1  # palette entry 1 (red) is transparent -> white
    img.save(tmp_path / "p.png")
    x, _ = load_image(tmp_path / "p.png", 8)
    assert torch.allclose(unnormalise(x), torch.full((3, 8, 8), 255.0), atol=0.6)


def bins(box, size):  # schema's quantisation, as integer bins
    return [schema.LOC_TOKENS.index(t) for t in schema.box_to_tokens(box, size)]


@pytest.mark.parametrize("W,H,box", [(123, 77, (31, 17, 88, 60)), (77, 123, (5, 40, 70, 121)),
                                     (301, 299, (150, 0, 301, 33))])
def test_drawn_rectangle_lands_in_its_location_bins(tmp_path, W, H, box):
    """With size = NUM_BINS, canvas pixel k is location bin k: the rectangle fills the bins schema writes."""
    img = PILImage.new("RGB", (W, H), (0, 0, 0))
    ImageDraw.Draw(img).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(255, 255, 255))  # pixels [x1, x2)
    img.save(tmp_path / "r.png")
    x, wh = load_image(tmp_path / "r.png", schema.NUM_BINS)
    grey = unnormalise(x).mean(0)  # (S, S)
    kx1, ky1, kx2, ky2 = bins(schema.Box(*box), wh)
    inside = torch.zeros_like(grey, dtype=torch.bool)
    # pillow's bilinear downscale mixes a canvas pixel's own area and half a pixel either side: bins k1 + 2 ..
    # k2 - 2 see only the rectangle, bins outside k1 - 1 .. k2 + 1 only the background
    inside[ky1 + 2:ky2 - 1, kx1 + 2:kx2 - 1] = True
    near = torch.zeros_like(inside)
    near[max(ky1 - 1, 0):ky2 + 2, max(kx1 - 1, 0):kx2 + 2] = True
    image = torch.zeros_like(inside)
    image[:round(H * schema.NUM_BINS / max(W, H)), :round(W * schema.NUM_BINS / max(W, H))] = True
    assert (grey[inside] > 250).all()
    assert (grey[image & ~near] < 5).all()
    assert (x[:, ~image] == 0).all()


@pytest.mark.parametrize("W,H", [(123, 77), (77, 123), (1, 1), (641, 479), (999, 1001), (5, 3000)])
def test_box_round_trip_within_one_bin(W, H):
    rng = random.Random(W * H)
    side = max(W, H) / schema.NUM_BINS
    for _ in range(200):
        x1, x2 = sorted(rng.uniform(0, W) for _ in range(2))
        y1, y2 = sorted(rng.uniform(0, H) for _ in range(2))
        back = schema.tokens_to_box(schema.box_to_tokens(schema.Box(x1, y1, x2, y2), (W, H)), (W, H))
        for a, b in zip((x1, y1, x2, y2), (back.x1, back.y1, back.x2, back.y2)):
            assert abs(a - b) <= side + 1e-9


def test_huge_images(tmp_path, monkeypatch):
    PILImage.new("RGB", (300, 200)).save(tmp_path / "big.png")
    with pytest.raises(DataError, match="big.png.*too large"):
        load_image(tmp_path / "big.png", 64, max_pixels=10_000)
    PILImage.new("RGB", (2000, 1000), (0, 0, 255)).save(tmp_path / "big.jpg")
    x, wh = load_image(tmp_path / "big.jpg", 64, max_pixels=100_000)  # decoded at 1/8: 250 x 125
    assert wh == (2000, 1000) and x.shape == (3, 64, 64)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # pillow's own bomb check, turned into DataError
    with pytest.raises(DataError, match="big.png.*DecompressionBomb"):
        load_image(tmp_path / "big.png", 64)


def test_unreadable_images(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="bad.png"):
        load_image(tmp_path / "bad.png", 16)
    with pytest.raises(DataError, match="missing.png"):
        load_image(tmp_path / "missing.png", 16)


def test_image_cache(tmp_path):
    for name in "ab":
        PILImage.new("RGB", (10, 10)).save(tmp_path / f"{name}.png")
    cache = ImageCache(max_bytes=3 * 16 * 16 * 4)  # room for one 16 x 16 image
    first = cache.load(tmp_path / "a.png", 16)
    assert cache.load(tmp_path / "a.png", 16) is first
    cache.load(tmp_path / "b.png", 16)
    assert list(cache.items) == [(str(tmp_path / "b.png"), 16)] and cache.nbytes == 3 * 16 * 16 * 4


# ----------------------------------------------------------------------------- examples, collate
def test_example_validates_task():
    with pytest.raises(ValueError, match="not one of"):
        Example(task="ner", prompt=[], target=[])


def test_encode_and_collate(tmp_path):
    PILImage.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "i.png")
    t = tok()
    text = Example("text_event", ["<task:text_event>", "the", "rebels", "bombed", "Aleppo"],
                   ["<t:Conflict:Attack>", "bombed"], meta={"id": "s1"})
    image = Example("image_event", ["<task:image_event>", "<sep>"], ["<t:Life:Die>", "<r:Victim>", "<loc_1>",
                    "<loc_2>", "<loc_3>", "<loc_4>"], image=str(tmp_path / "i.png"), size=(40, 20))
    enc = [encode_example(ex, t, 8) for ex in (text, image)]
    batch = collate(enc, t.pad_id)
    assert set(batch) == {"input_ids", "images", "has_image", "target_ids", "task_ids", "name_ids", "present",
                          "tags"}
    assert (batch["tags"] == -1).all()  # no word tags: nothing for the tagger
    assert batch["present"].isnan().all() and (batch["name_ids"] == PAD_ID).all()  # no relation question
    n_in, n_tgt = len(t.encode(text.prompt)), len(t.encode(text.target)) + 1
    assert batch["input_ids"].shape == (2, max(n_in, 2)) and batch["input_ids"].dtype == torch.long
    assert batch["target_ids"].shape == (2, max(n_tgt, 7)) and batch["target_ids"].dtype == torch.long
    assert batch["input_ids"][1].tolist() == t.encode(image.prompt) + [PAD_ID] * (max(n_in, 2) - 2)
    assert batch["target_ids"][1].tolist()[:7] == t.encode(image.target) + [EOS_ID]  # eos, no bos
    assert (batch["input_ids"] != PAD_ID).sum(1).tolist() == [n_in, 2]  # the mask is ids != pad
    assert (batch["target_ids"] != PAD_ID).sum(1).tolist() == [n_tgt, 7]
    assert batch["images"].shape == (2, 3, 8, 8) and batch["images"].dtype == torch.float32
    assert (batch["images"][0] == 0).all() and (batch["images"][1, :, :4] != 0).all()  # 40x20 -> 8x4 at top
    assert batch["has_image"].tolist() == [False, True] and batch["has_image"].dtype == torch.bool
    assert batch["task_ids"].tolist() == [schema.TASKS.index("text_event"), schema.TASKS.index("image_event")]


def test_each_piece_of_a_word_gets_the_words_tag():
    t = tok()
    words = ["the", "rebels", "bombardedxq", "Aleppo"]  # an unseen word: several pieces
    ex = Example("text_mention", ["<task:text_mention>", "<sep>", *words], [], word_tags=[0, 0, 3, 0])
    e = encode_example(ex, t, 8)
    pieces = [len(t.encode([w])) for w in words]
    assert pieces[2] > 1 and len(e["input_ids"]) == 2 + sum(pieces)
    assert e["tags"].tolist() == [-1, -1] + [tag for n, tag in zip(pieces, ex.word_tags) for _ in range(n)]
    last = Example("text_event", ["<task:text_event>", *words], [], word_tags=[1])  # tags of the last words
    batch = collate([e, encode_example(last, t, 8)], t.pad_id)  # tags pad with -1, like every untagged id
    assert batch["tags"][1].tolist() == [-1] * (1 + sum(pieces[:3])) + [1] * pieces[3] + [-1]


def test_the_grounding_names_are_padded_to_the_batch(tmp_path):
    """(B, K, P): each example's names in order, pad-padded to the batch's most names and longest name; present
    1 / 0 where the answer is known, NaN elsewhere (no name, or an unknown answer)."""
    PILImage.new("RGB", (8, 8)).save(tmp_path / "i.png")
    t = tok()
    ask = lambda *grounding: Example("relation", ["<task:relation>"], [], image=str(tmp_path / "i.png"),
                                     grounding=list(grounding))
    examples = [ask((("rebels",), True), (("the", "rebels", "Aleppo"), False)), ask((("Aleppo",), None)), ask()]
    batch = collate([encode_example(ex, t, 8) for ex in examples], t.pad_id)
    a, b = t.encode(["rebels"]), t.encode(["the", "rebels", "Aleppo"])
    P = len(b)
    row = lambda ids: ids + [PAD_ID] * (P - len(ids))
    assert batch["name_ids"].tolist() == [[row(a), row(b)], [row(t.encode(["Aleppo"])), row([])], [row([]), row([])]]
    assert batch["present"][0].tolist() == [1.0, 0.0] and batch["present"][1:].isnan().all()


def test_truncation_is_counted():
    t = tok()
    ex = Example("text_event", ["<task:text_event>"] + ["<sep>"] * 9, ["<head>"] * 5)
    e = encode_example(ex, t, 8, max_input_len=4, max_target_len=3)
    assert (len(e["input_ids"]), e["input_cut"]) == (4, 6) and (len(e["target_ids"]), e["target_cut"]) == (3, 3)
    assert EOS_ID not in e["target_ids"].tolist()  # a cut target does not teach the model to stop there
    assert cuts([e, encode_example(ex, t, 8)]) == Counter(examples=2, input_truncated=1, target_truncated=1)


def test_encode_refuses_bad_examples(tmp_path):
    PILImage.new("RGB", (40, 20)).save(tmp_path / "i.png")
    with pytest.raises(DataError, match="i.png.*40x20.*says 20x40"):
        encode_example(Example("image_event", [], [], image=str(tmp_path / "i.png"), size=(20, 40)), tok(), 8)
    with pytest.raises(ValueError, match="'id': 's9'.*cannot encode word"):
        encode_example(Example("text_event", ["two words"], [], meta={"id": "s9"}), tok(), 8)


# ----------------------------------------------------------------------------- sampler
def datasets(sizes):
    return {t: [Example(t, [], [], meta={"id": f"{t}{i}"}) for i in range(n)] for t, n in sizes.items()}


def ids(batch):
    return [ex.meta["id"] for ex in batch]


def test_tempered_weights_known_answers():
    assert tempered_weights({"a": 100, "b": 25}, 0.5) == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    assert tempered_weights({"a": 100, "b": 25, "c": 0}, 0.0) == pytest.approx({"a": 0.5, "b": 0.5, "c": 0})
    assert tempered_weights({"a": 100, "b": 25}, 1.0) == pytest.approx({"a": 0.8, "b": 0.2})


def test_sampler_is_deterministic():
    data = datasets({"text_event": 7, "image_event": 5})
    run = lambda seed: [ids(next(b)) for b in [TaskSampler(data, {"text_event": 1, "image_event": 1}, 4, seed)]
                        for _ in range(10)]
    assert run(0) == run(0) and run(0) != run(1)


def test_sampler_proportions_match_weights():
    weights = {"text_event": 0.6, "image_event": 0.3, "relation": 0.1}
    batches = TaskSampler(datasets({"text_event": 50, "image_event": 20, "relation": 5}), weights, 16, seed=0)
    n = 16 * 500
    drawn = Counter(ex.task for _ in range(500) for ex in next(batches))
    for t, p in weights.items():  # binomial: 4 standard deviations (the test is seeded, so never flaky)
        assert abs(drawn[t] / n - p) <= 4 * (p * (1 - p) / n) ** 0.5, (t, drawn[t] / n)


def test_each_epoch_visits_every_example_once():
    batches = TaskSampler(datasets({"text_event": 10}), {"text_event": 1.0}, 5, seed=3)
    first, second = ids(next(batches)) + ids(next(batches)), ids(next(batches)) + ids(next(batches))
    assert sorted(first) == sorted(second) == sorted(f"text_event{i}" for i in range(10)) and first != second


def test_resume_gives_the_identical_continuation():
    data = datasets({"text_event": 7, "image_event": 3, "relation": 11})
    weights = {"text_event": 2, "image_event": 1, "relation": 1}
    a = TaskSampler(data, weights, 4, seed=5)
    for _ in range(13):
        next(a)
    state = a.state_dict()
    b = TaskSampler(data, weights, 4, seed=5)
    b.load_state_dict(state)
    assert [ids(next(a)) for _ in range(20)] == [ids(next(b)) for _ in range(20)]
    with pytest.raises(ValueError, match="^seed 5 vs 6$"):
        TaskSampler(data, weights, 4, seed=6).load_state_dict(state)
    with pytest.raises(ValueError, match=r"^the task sizes differ \(text_event 7, image_event 3, relation 11 "
                                         r"vs text_event 7, image_event 3, relation 10\): the data changed$"):
        TaskSampler({**data, "relation": data["relation"][:10]}, weights, 4, seed=5).load_state_dict(state)


def test_rank_shards_are_disjoint_and_make_up_the_global_batch():
    data, weights = datasets({"text_event": 40, "image_event": 40}), {"text_event": 1, "image_event": 1}
    ranks = [TaskSampler(data, weights, 3, seed=0, shard=(r, 2)) for r in range(2)]
    single = TaskSampler(data, weights, 6, seed=0)
    seen = [[], []]
    for _ in range(4):  # 24 draws: less than an epoch of either task
        parts = [ids(next(b)) for b in ranks]
        assert parts[0] + parts[1] == ids(next(single))
        for r in range(2):
            seen[r] += parts[r]
    assert not set(seen[0]) & set(seen[1]) and len(set(seen[0])) == 12
    assert ranks[0].state_dict() == ranks[1].state_dict()


def test_sampler_refuses_bad_arguments():
    data = datasets({"text_event": 3})
    with pytest.raises(ValueError, match="unknown tasks"):
        TaskSampler(data, {"ner": 1.0}, 2)
    with pytest.raises(ValueError, match="no task has both"):
        TaskSampler(data, {"text_event": 0.0}, 2)


# ----------------------------------------------------------------------------- horizontal flip
def _figure_image(tmp_path, size, boxes):
    """A grey picture of `size` with each box filled in its own colour -> (path, colours)."""
    img = PILImage.new("RGB", size, (128, 128, 128))
    colours = [(255, 0, 0), (0, 0, 255), (0, 255, 0)][:len(boxes)]
    for (x1, y1, x2, y2), c in zip(boxes, colours):
        ImageDraw.Draw(img).rectangle([x1, y1, x2 - 1, y2 - 1], fill=c)
    img.save(tmp_path / "f.png")
    return str(tmp_path / "f.png"), colours


def _box_colour(encoded, k):
    """Mean un-normalised colour of the canvas inside the target's k-th box (image_size = NUM_BINS)."""
    t = tok().decode(encoded["target_ids"].tolist())
    locs = [int(s[5:-1]) for s in t if s.startswith("<loc_")][4 * k:4 * k + 4]
    x1, y1, x2, y2 = locs
    pixels = encoded["image"][:, y1:y2 + 1, x1:x2 + 1] * torch.tensor(IMAGE_STD).view(3, 1, 1)
    return ((pixels + torch.tensor(IMAGE_MEAN).view(3, 1, 1)) * 255).mean((1, 2))


@pytest.mark.parametrize("size", [(200, 100), (100, 200), (128, 128), (150, 97)])
def test_hflip_keeps_boxes_on_their_figures(tmp_path, size):
    """After the flip, each target box still covers the figure drawn in it, inside the picture's width."""
    W, H = size
    boxes = [(W // 10, H // 5, W // 10 + W // 5, H // 5 + H // 4),
             (W // 2, H // 2, W - W // 8, H - 2)]
    path, colours = _figure_image(tmp_path, size, boxes)
    ev = schema.ImageEvent("Conflict:Attack", tuple(schema.Argument(r, schema.Box(*b))
                                                    for r, b in zip(("Attacker", "Target"), boxes)))
    target = schema.linearise([ev], size=size)
    ex = Example("image_event", ["<task:image_event>"], target, image=path, size=size)
    enc = encode_example(ex, tok(), schema.NUM_BINS)
    flipped = hflip(enc)
    for k, colour in enumerate(colours):
        for e in (enc, flipped):
            want = torch.tensor(colour, dtype=torch.float)
            torch.testing.assert_close(_box_colour(e, k), want, atol=40, rtol=0)
    width = round(schema.NUM_BINS * W / max(size))
    assert (flipped["image"][:, :, width:] == 0).all()  # the padding stays at the right
    again = hflip(flipped)
    assert torch.equal(again["image"], enc["image"])
    assert torch.equal(again["target_ids"], enc["target_ids"])


def test_hflip_resorts_arguments_of_one_role_and_leaves_text_alone(tmp_path):
    boxes = [(10, 10, 30, 60), (120, 10, 150, 60)]
    path, _ = _figure_image(tmp_path, (160, 80), boxes)
    ev = schema.ImageEvent("Contact:Meet", tuple(schema.Argument("Entity", schema.Box(*b))
                                                 for b in boxes))
    ex = Example("image_event", ["<task:image_event>"], schema.linearise([ev], size=(160, 80)),
                 image=path, size=(160, 80))
    flipped = tok().decode(hflip(encode_example(ex, tok(), schema.NUM_BINS))["target_ids"].tolist())
    locs = [int(s[5:-1]) for s in flipped if s.startswith("<loc_")]
    assert locs[0] < locs[4]  # x1 of the first Entity is left of the second's: canonical order kept
    text = Example("text_event", ["<task:text_event>", "hi"], ["<t:Life:Die>"])
    text = encode_example(text, tok(), 8)
    assert hflip(text) is text


def test_sampler_flips_by_step(tmp_path):
    path, _ = _figure_image(tmp_path, (64, 32), [(0, 0, 16, 16)])
    ex = Example("image_mention", ["<task:image_mention>"], [], image=path, size=(64, 32))
    enc = encode_example(ex, tok(), 16)
    sampler = lambda: TaskSampler({"image_mention": [enc]}, {"image_mention": 1.0}, 1, flip_prob=0.5)
    runs = [[batch[0]["image"] for _, batch in zip(range(20), sampler())] for _ in range(2)]
    flipped = [not torch.equal(x, enc["image"]) for x in runs[0]]
    assert 0 < sum(flipped) < 20 and all(torch.equal(a, b) for a, b in zip(*runs))
