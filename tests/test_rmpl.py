"""rmpl.py: the extractor. Constrained decoding, the link rule, the passes with a stubbed decoder (known
answers)."""
import pytest
import torch

import rmpl
import schema as S
import tasks
from schema import Argument, Box, Image, ImageEvent, Sentence, Span, TextEvent


ANNA, NAN = Span(0, 1), float("nan")


@pytest.mark.parametrize("presence, linked", [
    ([0.9], True),        # a true pair: the participant is in the image
    ([0.1], False),       # a decoy: same type, the participant is not there
    ([0.1, 0.7], True),   # one participant of two is there
    ([0.5], True),        # the threshold itself counts as there
    ([0.49, 0.2], False),
    ([], True),           # no participant to ask about: the type decides
    ([NAN], True),        # a name the head was not trained on: the type decides
    ([NAN, 0.1], False),  # the one it knows is not there
    ([NAN, 0.9], True),
])
def test_grounded_link_rule_known_answers(presence, linked):
    assert rmpl.grounded(presence, threshold=0.5) is linked


def test_links_same_document_same_type_then_grounded():
    """Candidates are same-document, same-type pairs; the grounded rule asks the grounding head about
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
    answers = {("relation", prompt, "A_7.png"): 0.9, ("relation", prompt, "A_8.png"): 0.2}
    extractor, asked = stub_extractor(answers, tasks=tasks.STAGE_TASKS[2] + ("relation",))
    extractor.links = "type"
    assert extractor._links(sents, images, text, pics) == [
        S.Link("A_1", "A_7", "Conflict:Attack"), S.Link("A_1", "A_8", "Conflict:Attack")]
    assert asked == []
    extractor.links = "grounded"
    assert extractor._links(sents, images, text, pics) == [S.Link("A_1", "A_7", "Conflict:Attack")]
    assert sorted(asked) == sorted(answers)


def test_grounded_links_need_a_trained_grounding_head():
    with pytest.raises(ValueError, match="needs a model whose grounding head was trained"):
        stub_extractor({}, grounding_targets=0, links="grounded")
    stub_extractor({}, grounding_targets=3, tasks=tasks.STAGE_TASKS[2], links="grounded")  # stage 2 alone is fine


def test_allowed_mask_is_schema_eos_and_prompt():
    class Tok:  # the three things RMPL.allowed reads
        bos_id, eos_id, pad_id = 2, 3, 0

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


def stub_extractor(answers, grounding_targets=1, **kw):
    """An RMPL whose decoder and grounding head are lookup tables; `asked` records every example it was
    given."""
    class Tok:  # what RMPL.__init__ reads
        bos_id, eos_id, pad_id = 2, 3, 0

        @staticmethod
        def encode(tokens):
            return list(range(4, 4 + len(tokens)))

    class Net(torch.nn.Module):
        cfg = type("Cfg", (), {"vocab_size": 4 + len(S.SPECIAL_TOKENS)})
        grounding = type("Grounding", (), {"targets_seen": torch.tensor(grounding_targets)})

    extractor, asked = rmpl.RMPL(Net(), Tok(), **kw), []
    extractor.biases = {}  # task -> the eos_bias it was decoded with

    def run(examples, eos_bias=None):
        keys = [(e.task, tuple(e.prompt), e.image) for e in examples]
        asked.extend(keys)
        extractor.biases.update({e.task: eos_bias for e in examples})
        return [list(answers[k]) for k in keys]

    def presence(questions):  # the grounding head: a probability per question
        keys = [(e.task, tuple(e.prompt), e.image) for e in questions]
        asked.extend(keys)
        return [answers[k] for k in keys]

    extractor.run, extractor.presence = run, presence
    return extractor, asked


@pytest.mark.parametrize("bias", [0.0, 2.5, -1.0])
def test_no_event_bias_reaches_the_text_mention_pass_only(bias):
    """The bias is subtracted from eos's logit after bos in a sentence's mention pass, and eos is
    barred after an event type there; the argument and image passes decode as before."""
    extractor, _ = stub_extractor(ANSWERS, no_event_bias=bias)
    sentences = [Sentence("A_1", A1), Sentence("A_2", A2), Sentence("B_1", B1)]
    extractor.predict(sentences, [Image("A_7", (64, 32), path="A_7.png")])
    mention = extractor.biases.pop("text_mention")
    assert extractor.biases == {"text_argument": None, "image_mention": None, "image_argument": None}
    if not bias:  # plain greedy decoding
        assert mention is None
        return
    types = extractor.tok.encode(list(S.TYPE_TOKENS.values()))
    assert mention[extractor.tok.bos_id] == -bias and (mention[types] == -1e9).all()
    assert mention.count_nonzero() == 1 + len(types)


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
