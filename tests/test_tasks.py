"""tasks.py: the loss formula, records -> examples, task sampling (known answers)."""
import warnings

import pytest
import torch

import schema as S
import tasks
from schema import Argument, Box, Image, ImageEvent, Sentence, Span, TextEvent

TE, IE = S.TASKS.index("text_event"), S.TASKS.index("image_event")


@pytest.mark.parametrize("weights, expected", [
    (None, (2.5 + 2.0) / 2),                                    # L_t0 = (1*1 + 3*3) / (1 + 3) = 2.5, L_t1 = 2.0
    ({**tasks.TASK_WEIGHTS, "text_event": 3.0}, (3 * 2.5 + 2.0) / 4),
    ({**tasks.TASK_WEIGHTS, "image_event": 0.0}, 2.5),            # a zero weight removes the task
])
def test_multitask_loss_known_answer(weights, expected):
    ce_sum, n_tokens = torch.tensor([1.0, 9.0, 4.0]), torch.tensor([1, 3, 2])  # mean CE 1, 3, 2 per token
    task_ids = torch.tensor([TE, TE, IE])
    loss, parts = tasks.multitask_loss(ce_sum, n_tokens, task_ids, **({"weights": weights} if weights else {}))
    assert loss.item() == pytest.approx(expected)
    assert parts == {"text_event": pytest.approx(2.5), "image_event": pytest.approx(2.0)}


def test_task_length_does_not_set_its_weight():
    """One long-target task and one short one count equally: L_t is a mean over the task's own tokens."""
    loss, _ = tasks.multitask_loss(torch.tensor([100.0, 3.0]), torch.tensor([100, 1]), torch.tensor([TE, IE]))
    assert loss.item() == pytest.approx(2.0)


SENT = Sentence("doc_1", ("a", "man", "died", "in", "Lorn"),
                (TextEvent("Life:Die", Span(2, 3), (Argument("Victim", Span(1, 2)), Argument("Place", Span(4, 5)))),))
IMG = Image("doc_0", (64, 32), (ImageEvent("Life:Die", (Argument("Victim", Box(0, 0, 32, 32)),)),), path="x.png")


def test_text_examples_known_answers():
    mention, = tasks.text_examples("text_mention", SENT)
    assert mention.prompt == ["<task:text_mention>", "<sep>", "a", "man", "died", "in", "Lorn"]
    assert mention.target == ["<t:Life:Die>", "died"]
    argument, = tasks.text_examples("text_argument", SENT)
    assert argument.prompt == ["<task:text_argument>", "<t:Life:Die>", "died", "<sep>", "a", "man", "died", "in", "Lorn"]
    assert argument.target == ["<t:Life:Die>", "died", "<r:Victim>", "man", "<r:Place>", "Lorn"]
    die = 1 + list(S.EVENT_TYPES).index("Life:Die")
    assert mention.word_tags == [0, 0, die, 0, 0] and argument.word_tags is None  # one tag per word
    event, = tasks.text_examples("text_event", SENT)
    assert event.word_tags == mention.word_tags


def test_trigger_tags_cover_every_word_of_a_trigger():
    attack, transport = (1 + list(S.EVENT_TYPES).index(t) for t in ("Conflict:Attack", "Movement:Transport"))
    sent = Sentence("d", ("troops", "opened", "fire", "and", "left"),
                    (TextEvent("Conflict:Attack", Span(1, 3)), TextEvent("Movement:Transport", Span(4, 5))))
    assert tasks.trigger_tags(sent) == [0, attack, attack, 0, transport]


def test_image_examples_known_answers():
    mention, = tasks.image_examples("image_mention", IMG)
    assert (mention.prompt, mention.target, mention.image, mention.size) == (["<task:image_mention>"], ["<t:Life:Die>"], "x.png", (64, 32))
    argument, = tasks.image_examples("image_argument", IMG)
    assert argument.prompt == ["<task:image_argument>", "<t:Life:Die>"]
    assert argument.target == ["<t:Life:Die>", "<r:Victim>", "<loc_0>", "<loc_0>", "<loc_31>", "<loc_31>"]


def test_relation_examples_ask_about_one_entity_each():
    words = ("Ben", "and", "Anna", "smile")
    img = Image("m", (64, 64), path="m.png")
    ben, anna = Span(0, 1), Span(2, 3)
    rels = (S.Relation(tasks.PRESENT_IN, anna, Box(0, 0, 32, 64)), S.Relation("/per/per/couple", ben, anna),
            S.Relation("None", anna, Box(32, 0, 64, 64)), S.Relation(tasks.PRESENT_IN, ben, Box(32, 0, 64, 64)))
    about_ben, about_anna = tasks.relation_examples(S.RelationExample("r-0", words, rels, img))
    rel = S.TASK_TOKENS["relation"]
    assert about_ben.prompt == [rel, "<head>", "Ben", "<sep>", *words] and about_ben.image == "m.png"
    assert about_anna.prompt == [rel, "<head>", "Anna", "<sep>", *words]
    # reading order: tail spans before tail boxes, boxes left to right
    assert S.parse(about_ben.target, words, (64, 64)) == [rels[1], rels[3]]
    assert S.parse(about_anna.target, words, (64, 64)) == [rels[0], rels[2]]


def test_the_grounding_target_is_the_first_relation_to_a_figure():
    words = ("Ben", "and", "Anna", "smile")
    img, left, right = Image("m", (64, 64), path="m.png"), Box(0, 0, 32, 64), Box(32, 0, 64, 64)
    ben, anna = Span(0, 1), Span(2, 3)
    couple = S.Relation("/per/per/couple", ben, anna)
    asked = lambda *rels, image=img: [q.present for q in tasks.relation_examples(
        S.RelationExample("r-0", words, rels, image))]
    assert asked(S.Relation(tasks.PRESENT_IN, anna, left), S.Relation("None", anna, right)) == [True]
    assert asked(S.Relation("None", anna, right)) == [False]  # placed against someone else only
    assert asked(couple) == [None]                          # no figure: the target does not say
    assert asked(couple, S.Relation("None", ben, left)) == [False]
    assert asked(couple, image=None) == [None]              # no picture
    # the label the teacher-forced probe reads at the same place
    q, = tasks.relation_examples(S.RelationExample("r-0", words, (S.Relation("None", anna, right),), img))
    assert q.target[0] == S.REL_TOKENS["None"]


def test_a_placed_question_grounds_every_placed_name_of_its_sentence():
    words = ("Ben", "and", "Anna", "and", "Cleo", "smile")
    img, left, right = Image("m", (64, 64), path="m.png"), Box(0, 0, 32, 64), Box(32, 0, 64, 64)
    ben, anna, cleo = Span(0, 1), Span(2, 3), Span(4, 5)
    rels = (S.Relation(tasks.PRESENT_IN, anna, left), S.Relation("None", ben, right),
            S.Relation("/per/per/couple", cleo, anna), S.Relation(tasks.PRESENT_IN, right, ben))
    about_ben, about_anna, about_cleo, about_box = tasks.relation_examples(S.RelationExample("r-0", words, rels, img))
    assert about_ben.grounding == [(("Ben",), False), (("Anna",), True)]
    assert about_anna.grounding == [(("Anna",), True), (("Ben",), False)]
    assert about_cleo.grounding == [(("Cleo",), None)]  # not placed: asked at inference, trains nothing
    assert about_box.grounding == [] and about_box.present is None  # a box is no name
    q = tasks.relation_query("s", words, img, cleo)  # what the grounded link rule asks
    assert q.grounding == [(("Cleo",), None)]
    assert tasks.relation_query("s", words, None, cleo).grounding == []  # no picture


def test_build_tasks_skips_what_the_schema_cannot_write():
    repeated = Sentence("doc_9", ("x",) * 12, (TextEvent("Life:Die", Span(11, 12)),))  # 12th "x": past MAX_OCC
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = tasks.build_tasks(["text_event", "image_event"], [SENT, repeated], [IMG], [])
    assert [len(built[t]) for t in ("text_event", "image_event")] == [1, 1]
    assert len(caught) == 1 and "skipped 1 records" in str(caught[0].message) and "doc_9" in str(caught[0].message)



@pytest.mark.parametrize("sizes, expected", [
    # p_t = sqrt(n_t) / sum sqrt(n): 20, 10, 5 -> 4/7, 2/7, 1/7 (alpha 1 would give 16/21, 4/21, 1/21)
    ({"text_event": 400, "image_event": 100, "relation": 25},
     {"text_event": 4 / 7, "image_event": 2 / 7, "relation": 1 / 7}),
    # 10, 6, 8, 2 -> /26
    ({"text_mention": 100, "image_mention": 36, "text_argument": 64, "image_argument": 4},
     {"text_mention": 10 / 26, "image_mention": 6 / 26, "text_argument": 8 / 26, "image_argument": 2 / 26}),
    ({"text_event": 7, "relation": 7}, {"text_event": 0.5, "relation": 0.5}),  # equal sizes: equal shares
])
def test_task_sampling_weights_are_square_root_tempered(sizes, expected):
    """The method's ALPHA = 0.5, computed by hand: changing the exponent must fail here."""
    weights = tasks.task_sampling_weights({t: [None] * n for t, n in sizes.items()})
    assert weights == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------- the extractor, decoder stubbed
# RMPL.predict with `run` (the decoder) replaced by canned outputs keyed on what each example asks for:
# (task, prompt, image). A prompt the stub does not know is a KeyError, so the test also pins which prompts
# the two-pass extractor writes.
