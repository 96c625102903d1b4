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


def test_build_tasks_skips_what_the_schema_cannot_write():
    repeated = Sentence("doc_9", ("x",) * 12, (TextEvent("Life:Die", Span(11, 12)),))  # 12th "x": past MAX_OCC
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tasks = rmpl.build_tasks(["text_event", "image_event"], [SENT, repeated], [IMG], [])
    assert [len(tasks[t]) for t in ("text_event", "image_event")] == [1, 1]
    assert len(caught) == 1 and "skipped 1 records" in str(caught[0].message) and "doc_9" in str(caught[0].message)


def test_links_same_document_same_type():
    sents = [Sentence("A_1", ("w",)), Sentence("A_2", ("w",)), Sentence("B_1", ("w",))]
    images = [Image("A_7", (8, 8)), Image("B_7", (8, 8))]
    text = {"A_1": [TextEvent("Life:Die", Span(0, 1))], "A_2": [TextEvent("Contact:Meet", Span(0, 1))],
            "B_1": [TextEvent("Contact:Meet", Span(0, 1))]}
    pics = {"A_7": [ImageEvent("Life:Die")], "B_7": [ImageEvent("Life:Die")]}
    assert rmpl.RMPL._links(sents, images, text, pics) == [S.Link("A_1", "A_7", "Life:Die")]


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
