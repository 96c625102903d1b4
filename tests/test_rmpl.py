"""rmpl.py: the loss formula, records -> examples, constrained decoding, the link rule (known answers)."""
import warnings

import pytest
import torch

import rmpl
import schema as S
from schema import Argument, Box, Image, ImageEvent, Sentence, Span, TextEvent

TE, IE = S.TASKS.index("text_event"), S.TASKS.index("image_event")


@pytest.mark.parametrize("weights, expected", [
    (None, (2.5 + 2.0) / 2),                                    # L_t0 = (1*1 + 3*3) / (1 + 3) = 2.5, L_t1 = 2.0
    ({**rmpl.TASK_WEIGHTS, "text_event": 3.0}, (3 * 2.5 + 2.0) / 4),
    ({**rmpl.TASK_WEIGHTS, "image_event": 0.0}, 2.5),            # a zero weight removes the task
])
def test_multitask_loss_known_answer(weights, expected):
    ce_sum, n_tokens = torch.tensor([1.0, 9.0, 4.0]), torch.tensor([1, 3, 2])  # mean CE 1, 3, 2 per token
    task_ids = torch.tensor([TE, TE, IE])
    loss, parts = rmpl.multitask_loss(ce_sum, n_tokens, task_ids, **({"weights": weights} if weights else {}))
    assert loss.item() == pytest.approx(expected)
    assert parts == {"text_event": pytest.approx(2.5), "image_event": pytest.approx(2.0)}


def test_task_length_does_not_set_its_weight():
    """One long-target task and one short one count equally: L_t is a mean over the task's own tokens."""
    loss, _ = rmpl.multitask_loss(torch.tensor([100.0, 3.0]), torch.tensor([100, 1]), torch.tensor([TE, IE]))
    assert loss.item() == pytest.approx(2.0)


SENT = Sentence("doc_1", ("a", "man", "died", "in", "Lorn"),
                (TextEvent("Life:Die", Span(2, 3), (Argument("Victim", Span(1, 2)), Argument("Place", Span(4, 5)))),))
IMG = Image("doc_0", (64, 32), (ImageEvent("Life:Die", (Argument("Victim", Box(0, 0, 32, 32)),)),), path="x.png")


def test_text_examples_known_answers():
    mention, = rmpl.text_examples("text_mention", SENT)
    assert mention.prompt == ["<task:text_mention>", "<sep>", "a", "man", "died", "in", "Lorn"]
    assert mention.target == ["<t:Life:Die>", "died"]
    argument, = rmpl.text_examples("text_argument", SENT)
    assert argument.prompt == ["<task:text_argument>", "<t:Life:Die>", "died", "<sep>", "a", "man", "died", "in", "Lorn"]
    assert argument.target == ["<t:Life:Die>", "died", "<r:Victim>", "man", "<r:Place>", "Lorn"]


def test_image_examples_known_answers():
    mention, = rmpl.image_examples("image_mention", IMG)
    assert (mention.prompt, mention.target, mention.image, mention.size) == (["<task:image_mention>"], ["<t:Life:Die>"], "x.png", (64, 32))
    argument, = rmpl.image_examples("image_argument", IMG)
    assert argument.prompt == ["<task:image_argument>", "<t:Life:Die>"]
    assert argument.target == ["<t:Life:Die>", "<r:Victim>", "<loc_0>", "<loc_0>", "<loc_31>", "<loc_31>"]


def test_relation_examples_ask_about_one_entity_each():
    words = ("Ben", "and", "Anna", "smile")
    img = Image("m", (64, 64), path="m.png")
    ben, anna = Span(0, 1), Span(2, 3)
    rels = (S.Relation(rmpl.PRESENT_IN, anna, Box(0, 0, 32, 64)), S.Relation("/per/per/couple", ben, anna),
            S.Relation("None", anna, Box(32, 0, 64, 64)), S.Relation(rmpl.PRESENT_IN, ben, Box(32, 0, 64, 64)))
    about_ben, about_anna = rmpl.relation_examples(S.RelationExample("r-0", words, rels, img))
    rel = S.TASK_TOKENS["relation"]
    assert about_ben.prompt == [rel, "<head>", "Ben", "<sep>", *words] and about_ben.image == "m.png"
    assert about_anna.prompt == [rel, "<head>", "Anna", "<sep>", *words]
    # reading order: tail spans before tail boxes, boxes left to right
    assert S.parse(about_ben.target, words, (64, 64)) == [rels[1], rels[3]]
    assert S.parse(about_anna.target, words, (64, 64)) == [rels[0], rels[2]]


def test_build_tasks_skips_what_the_schema_cannot_write():
    repeated = Sentence("doc_9", ("x",) * 12, (TextEvent("Life:Die", Span(11, 12)),))  # 12th "x": past MAX_OCC
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tasks = rmpl.build_tasks(["text_event", "image_event"], [SENT, repeated], [IMG], [])
    assert [len(tasks[t]) for t in ("text_event", "image_event")] == [1, 1]
    assert len(caught) == 1 and "skipped 1 records" in str(caught[0].message) and "doc_9" in str(caught[0].message)


ANNA, BOX = Span(0, 1), Box(0, 0, 4, 8)
PRESENT = S.Relation(rmpl.PRESENT_IN, ANNA, BOX)
ELSEWHERE = S.Relation("None", ANNA, BOX)          # "Anna is not that figure"


@pytest.mark.parametrize("participants, relations, linked", [
    ([ANNA], [PRESENT], True),                          # a true pair: the participant is in the image
    ([ANNA], [ELSEWHERE], False),                       # a decoy: same type, the participant is not there
    ([ANNA], [ELSEWHERE, PRESENT], True),               # one figure is not Anna, another is
    ([Span(0, 2)], [PRESENT], True),                    # an argument span covering the name
    ([ANNA, Span(3, 4)], [ELSEWHERE, S.Relation(rmpl.PRESENT_IN, Span(3, 4), BOX)], True),
    ([ANNA], [S.Relation(rmpl.PRESENT_IN, Span(5, 6), BOX), ELSEWHERE], False),  # a bystander is there
    ([ANNA], [S.Relation("/per/per/couple", ANNA, Span(2, 3))], True),  # nothing said about figures
    ([ANNA], [], True),                                 # nothing grounded: the type decides
    ([], [S.Relation("None", Span(2, 3), BOX)], True),  # no participant to ground
])
def test_grounded_link_rule_known_answers(participants, relations, linked):
    assert rmpl.grounded(participants, relations) is linked


def test_links_same_document_same_type_then_grounded():
    """Candidates are same-document, same-type pairs; the grounded rule asks the relation task about
    each participant of the sentence's event in each candidate image, and drops the decoy (A_8 shows
    an Attack without Anna)."""
    words = ("Anna", "attacked", "Ben")
    sents = [Sentence("A_1", words), Sentence("A_2", ("w",)), Sentence("B_1", ("w",))]
    images = [Image("A_7", (8, 8), path="A_7.png"), Image("A_8", (8, 8), path="A_8.png"),
              Image("B_7", (8, 8), path="B_7.png")]
    attack = TextEvent("Conflict:Attack", Span(1, 2), (Argument("Attacker", ANNA),))
    text = {"A_1": [attack], "A_2": [TextEvent("Contact:Meet", Span(0, 1))],
            "B_1": [TextEvent("Contact:Meet", Span(0, 1))]}
    pics = {"A_7": [ImageEvent("Conflict:Attack")], "A_8": [ImageEvent("Conflict:Attack")],
            "B_7": [ImageEvent("Conflict:Attack")]}
    prompt = (S.TASK_TOKENS["relation"], "<head>", "Anna", "<sep>", *words)  # about the Attacker
    answers = {("relation", prompt, "A_7.png"): S.linearise([PRESENT], words, (8, 8)),
               ("relation", prompt, "A_8.png"): S.linearise([ELSEWHERE], words, (8, 8))}
    extractor, asked = stub_extractor(answers, tasks=rmpl.STAGE_TASKS[2] + ("relation",))
    extractor.links = "type"
    assert extractor._links(sents, images, text, pics) == [
        S.Link("A_1", "A_7", "Conflict:Attack"), S.Link("A_1", "A_8", "Conflict:Attack")]
    assert asked == []
    extractor.links = "grounded"
    assert extractor._links(sents, images, text, pics) == [S.Link("A_1", "A_7", "Conflict:Attack")]
    assert sorted(asked) == sorted(answers)


def test_grounded_links_need_the_relation_task():
    with pytest.raises(ValueError, match="needs a model whose last stage trained the relation task"):
        stub_extractor({}, tasks=rmpl.STAGE_TASKS[2], links="grounded")
    with pytest.raises(ValueError, match="links='nearest'"):
        stub_extractor({}, links="nearest")


def test_allowed_mask_is_schema_eos_and_prompt():
    class Tok:  # the three things RMPL.allowed reads
        eos_id, pad_id = 3, 0

        @staticmethod
        def encode(tokens):
            return list(range(4, 4 + len(tokens)))

    class Net(torch.nn.Module):
        cfg = type("Cfg", (), {"vocab_size": 4 + len(S.SPECIAL_TOKENS) + 10})

    extractor = rmpl.RMPL(Net(), Tok())
    n = 4 + len(S.SPECIAL_TOKENS)  # ids 4 .. n-1 are the schema's; n .. n+9 stand for word pieces
    mask = extractor.allowed(torch.tensor([[4, n, n + 1, 0], [5, n + 2, 0, 0]]))
    assert mask[:, 4:n].all() and mask[:, 3].all() and not mask[:, :3].any()
    assert mask[0, [n, n + 1]].all() and not mask[0, n + 2] and mask[1, n + 2] and not mask[1, [n, n + 1]].any()
    assert not mask[:, n + 3:].any()


# ----------------------------------------------------------------------------- task sampling
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
    weights = rmpl.task_sampling_weights({t: [None] * n for t, n in sizes.items()})
    assert weights == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------- the extractor, decoder stubbed
# RMPL.predict with `run` (the decoder) replaced by canned outputs keyed on what each example asks for:
# (task, prompt, image). A prompt the stub does not know is a KeyError, so the test also pins which prompts
# the two-pass extractor writes.
def _tok(words):
    return tuple(words.split())


A1, A2, B1 = _tok("troops attacked the town and killed a man"), _tok("the man died"), _tok("nothing happened")
ATTACK, DIE = S.TYPE_TOKENS["Conflict:Attack"], S.TYPE_TOKENS["Life:Die"]
TM, TA = S.TASK_TOKENS["text_mention"], S.TASK_TOKENS["text_argument"]
IM, IA = S.TASK_TOKENS["image_mention"], S.TASK_TOKENS["image_argument"]
ANSWERS = {
    # mention pass: two events in A_1, one in A_2, none in B_1
    ("text_mention", (TM, "<sep>", *A1), None): [ATTACK, "attacked", DIE, "killed"],
    ("text_mention", (TM, "<sep>", *A2), None): [DIE, "died"],
    ("text_mention", (TM, "<sep>", *B1), None): [],
    # argument pass: type and trigger agree -> the arguments are kept
    ("text_argument", (TA, ATTACK, "attacked", "<sep>", *A1), None):
        [ATTACK, "attacked", "<r:Attacker>", "troops", "<r:Target>", "the", "town"],
    # the type disagrees (Attack for the Die prompt) -> the mention stays, without arguments
    ("text_argument", (TA, DIE, "killed", "<sep>", *A1), None): [ATTACK, "killed", "<r:Attacker>", "troops"],
    # the first event's trigger disagrees ("man" for "died"); the second agrees and gives the arguments
    ("text_argument", (TA, DIE, "died", "<sep>", *A2), None):
        [DIE, "man", "<r:Victim>", "the", DIE, "died", "<r:Victim>", "the", "man"],
    ("image_mention", (IM,), "A_7.png"): [ATTACK],
    ("image_mention", (IM,), "B_7.png"): [DIE],
    # A_7 is 64 x 32: one bin is one pixel, so the boxes read back exactly
    ("image_argument", (IA, ATTACK), "A_7.png"):
        [ATTACK, "<r:Attacker>", "<loc_0>", "<loc_0>", "<loc_31>", "<loc_31>",
         "<r:Target>", "<loc_32>", "<loc_8>", "<loc_63>", "<loc_31>"],
    ("image_argument", (IA, DIE), "B_7.png"): [ATTACK, "<r:Attacker>", "<loc_0>", "<loc_0>", "<loc_1>", "<loc_1>"],
}
EXPECTED_LINES = [
    {"sentence_id": "A_1", "events": [
        {"event_type": "Conflict:Attack", "trigger": {"start": 1, "end": 2},
         "arguments": [{"role": "Attacker", "start": 0, "end": 1}, {"role": "Target", "start": 2, "end": 4}]},
        {"event_type": "Life:Die", "trigger": {"start": 5, "end": 6}, "arguments": []}]},
    {"sentence_id": "A_2", "events": [
        {"event_type": "Life:Die", "trigger": {"start": 2, "end": 3},
         "arguments": [{"role": "Victim", "start": 0, "end": 2}]}]},
    {"sentence_id": "B_1", "events": []},
    {"image_id": "A_7", "events": [
        {"event_type": "Conflict:Attack", "arguments": [{"role": "Attacker", "bbox": [0.0, 0.0, 32.0, 32.0]},
                                                       {"role": "Target", "bbox": [32.0, 8.0, 64.0, 32.0]}]}]},
    {"image_id": "B_7", "events": [{"event_type": "Life:Die", "arguments": []}]},
    {"sentence_id": "A_1", "image_id": "A_7", "event_type": "Conflict:Attack"},  # same document, same type
]


def stub_extractor(answers, **kw):
    """An RMPL whose decoder is a lookup table; `asked` records every example it was given."""
    class Tok:  # what RMPL.__init__ reads
        eos_id, pad_id = 3, 0

        @staticmethod
        def encode(tokens):
            return list(range(4, 4 + len(tokens)))

    class Net(torch.nn.Module):
        cfg = type("Cfg", (), {"vocab_size": 4 + len(S.SPECIAL_TOKENS)})

    extractor, asked = rmpl.RMPL(Net(), Tok(), **kw), []

    def run(examples):
        keys = [(e.task, tuple(e.prompt), e.image) for e in examples]
        asked.extend(keys)
        return [list(answers[k]) for k in keys]

    extractor.run = run
    return extractor, asked


def test_predict_two_passes_with_stubbed_decoder():
    extractor, asked = stub_extractor(ANSWERS)
    sentences = [Sentence("A_1", A1), Sentence("A_2", A2), Sentence("B_1", B1)]
    images = [Image("A_7", (64, 32), path="A_7.png"), Image("B_7", (64, 64), path="B_7.png")]
    pred = extractor.predict(sentences, images)
    # every sentence and image once in the mention pass; one argument prompt per predicted event, no more
    assert sorted(asked, key=repr) == sorted(ANSWERS, key=repr)
    assert rmpl.prediction_lines(pred) == EXPECTED_LINES
    args = (Argument("Attacker", Span(0, 1)), Argument("Target", Span(2, 4)))
    attack = TextEvent("Conflict:Attack", Span(1, 2), args)
    assert pred.sentences["A_1"][0] == attack
    assert pred.images["A_7"][0].arguments[1] == Argument("Target", Box(32, 8, 64, 32))
