"""The extractor: a trained run reads M2E2 documents and writes predictions.

``RMPL.load(run)`` opens what train.py wrote (run.RunDir); ``predict`` runs the stage's tasks
(tasks.py) over sentences and images, in three passes:

    1. event mentions   text_mention per sentence, image_mention per image          (EMI)
    2. arguments        text_argument / image_argument per predicted event          (ARE)
    3. multimedia links a sentence event and an image event of one document and one type

A stage-1 checkpoint extracts in one pass (text_event, image_event). Decoding is greedy and
constrained: the decoder may only write schema tokens and pieces of its own prompt.

``no_event_bias`` (default 0: plain greedy decoding) is subtracted from eos's logit at the first
step of a sentence's mention pass (text_mention, or text_event in one pass), where eos means "this
sentence has no event": > 0 makes the model name an event more often, trading precision for
recall. It exists for data where most training sentences have none (real news text: 85% of M2E2's),
which teaches a greedy decoder to say "nothing" whenever in doubt; choose it on dev. With a bias,
eos is also ruled out right after an event type token (the grammar asks for a trigger there): a
model pushed past its first "nothing" otherwise writes the type, then eos, and the event is lost.
(It may still write a role token there, which parses as no event: on split 1 dev that acts as a
second "no", and ruling roles out too lowered dev F1; experiments/real_text.md.)

Links: a sentence event and an image event of the same document and the same predicted type are a
candidate. ``links="type"`` links every candidate. ``links="grounded"`` asks the grounding head
(model.Grounding, trained on MNRE's relation questions) whether each participant of the sentence's
event is in the image, and links the candidate when one is (probability >= GROUNDING_THRESHOLD),
or on the type alone when no participant is a name the head was trained on (``grounded``): same
type with other people is then no link, which the type alone cannot tell. Any model whose stage 1
trained the relation task has a trained head (stage 2 does not touch it). Which rule is the
default, and the threshold, are chosen on dev (experiments/grounding.md).

``python rmpl.py`` runs the model of runs/stage2 over the toy test split, writes its predictions
(JSON Lines, the format evaluate.load_predictions reads) and prints their score.

What this file does not do: build training examples or the loss (tasks.py), define the network
(model.py), read run files (run.py), score (evaluate.py).
"""
from __future__ import annotations

import json
import math
import sys
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import torch

import data
import evaluate
import model as M
import schema as S
import tensors
from run import RunDir
from tasks import STAGE_TASKS, Example, argument_prompt, image_example, relation_query, text_prompt

LINK_RULES = ("grounded", "type")             # RMPL(links=...): see RMPL._links and grounded()
GROUNDING_THRESHOLD = 0.5  # grounded links: a participant is in the picture from this probability


# ============================================================================= extraction
def event_json(ev: S.TextEvent | S.ImageEvent) -> dict:
    """A record in the prediction format (docs/predictions.md). Boxes keep full float
    precision, so a prediction file scores exactly as the predictions it was written from."""
    out = {"event_type": ev.event_type, "arguments": []}
    if isinstance(ev, S.TextEvent):
        out["trigger"] = {"start": ev.trigger.start, "end": ev.trigger.end}
    for a in ev.arguments:
        t = a.target
        where = ({"start": t.start, "end": t.end} if isinstance(t, S.Span)
                 else {"bbox": [t.x1, t.y1, t.x2, t.y2]})
        out["arguments"].append({"role": a.role, **where})
    return out


class RMPL:
    """A trained model that reads M2E2 documents and writes predictions (docs/predictions.md)."""

    def __init__(self, net: M.Seq2Seq, tokenizer: tensors.Tokenizer, tasks=STAGE_TASKS[2],
                 batch_size: int = 64, links: str = "type", no_event_bias: float = 0.0):
        if links not in LINK_RULES:
            raise ValueError(f"links={links!r}: expected one of {LINK_RULES}")
        if links == "grounded" and not net.grounding.targets_seen:
            raise ValueError("links='grounded' needs a model whose grounding head was trained: "
                             "this one's never saw a grounding target (train stage 1 with the "
                             "relation task, as its default tasks do)")
        self.net, self.tok, self.tasks, self.batch_size, self.links = (
            net.eval(), tokenizer, tuple(tasks), batch_size, links)
        self.no_event_bias, self.threshold = no_event_bias, GROUNDING_THRESHOLD
        # each image is read by two passes (mention, then arguments)
        self.images = tensors.ImageCache()
        self.special_ids = tokenizer.encode(list(S.SPECIAL_TOKENS))

    @classmethod
    def load(cls, checkpoint, device="cpu", **kw) -> "RMPL":
        """A run directory train.py wrote; an adapter is merged into the weights (explicitly:
        inference runs on plain weights)."""
        run = RunDir(checkpoint)
        return cls(*run.open(device, lora="merged"), run.info()["tasks"], **kw)

    def batches(self, examples: list[Example]):
        """The examples encoded and collated, ``batch_size`` at a time, on the network's device;
        prompts longer than the model's max_text_len are cut (nothing past the cut can be
        extracted): one warning says how many."""
        cfg, cut = self.net.cfg, Counter()
        device = next(self.net.parameters()).device
        for i in range(0, len(examples), self.batch_size):
            enc = [tensors.encode_example(e, self.tok, cfg.image_size, cfg.max_text_len,
                                          cfg.max_target_len, self.images)
                   for e in examples[i:i + self.batch_size]]
            cut += tensors.cuts(enc)
            yield {k: v.to(device) for k, v in tensors.collate(enc, self.tok.pad_id).items()}
        if cut["input_truncated"]:
            task = examples[0].task if len({e.task for e in examples}) == 1 else "mixed"
            warnings.warn(f"{task}: {cut['input_truncated']} of {cut['examples']} prompts were cut "
                          f"to max_text_len={cfg.max_text_len}; words past the cut cannot be "
                          f"extracted")

    def run(self, examples: list[Example], eos_bias: torch.Tensor | None = None
            ) -> list[list[str]]:
        """Greedy-decode every example -> its output tokens (``eos_bias``:
        model.Seq2Seq.generate's)."""
        out, device = [], next(self.net.parameters()).device
        for batch in self.batches(examples):
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                ids = self.net.generate(batch, self.net.cfg.max_target_len,
                                        allowed=self.allowed(batch["input_ids"]),
                                        eos_bias=eos_bias)
            out += [self.tok.decode(row) for row in ids]
        return out

    @torch.no_grad()
    def presence(self, questions: list[Example]) -> list[float]:
        """The grounding head's probability that each relation question's entity (its first
        grounding name) is in the question's picture (model.Seq2Seq.presence); NaN where the name
        has a piece the head was never trained on (model.Grounding.knows)."""
        out = []
        for batch in self.batches(questions):
            known = self.net.grounding.knows(batch["name_ids"])[:, 0]
            p = self.net.presence(batch)[:, 0].sigmoid()
            out += p.masked_fill(~known, float("nan")).tolist()
        return out

    def allowed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Constrained decoding, (B, V) bool: schema tokens, eos, and the ids of the example's
        own prompt.

        Every word of a target is copied from the sentence, so a word piece the prompt does not
        contain can only be a hallucination; forbidding it costs nothing and keeps spans
        alignable."""
        mask = torch.zeros(input_ids.size(0), self.net.cfg.vocab_size, dtype=torch.bool,
                           device=input_ids.device)
        mask[:, self.special_ids] = True
        mask[:, self.tok.eos_id] = True
        mask = mask.scatter(1, input_ids, True)
        mask[:, self.tok.pad_id] = False  # prompts are padded; pad is never an output
        return mask

    def mention_eos_bias(self) -> torch.Tensor | None:
        """generate's eos_bias for the mention pass: -no_event_bias after bos, "never" (-1e9,
        finite so that eos stays a last resort) after an event type; None without a bias."""
        if not self.no_event_bias:
            return None
        bias = torch.zeros(self.net.cfg.vocab_size)
        bias[self.tok.bos_id] = -self.no_event_bias
        bias[self.tok.encode(list(S.TYPE_TOKENS.values()))] = -1e9
        return bias

    def predict(self, sentences: list[S.Sentence], images: list[S.Image]) -> S.Predictions:
        """Events of the given sentences and images (one or many documents), and the links
        between them."""
        text, pics = self._text_events(sentences), self._image_events(images)
        return S.Predictions(text, pics, self._links(sentences, images, text, pics))

    def extract(self, sentences: list[S.Sentence], images: list[S.Image]) -> list[dict]:
        """``predict``, as the JSON Lines objects of the prediction format (docs/predictions.md)."""
        return prediction_lines(self.predict(sentences, images))

    def _text_events(self, sentences) -> dict[str, list[S.TextEvent]]:
        one_pass = "text_mention" not in self.tasks
        task = "text_event" if one_pass else "text_mention"
        outputs = self.run([Example(task, text_prompt(task, s.words), [])
                            for s in sentences], eos_bias=self.mention_eos_bias())
        found = {s.id: [r for r in S.parse(o, s.words) if isinstance(r, S.TextEvent)]
                 for s, o in zip(sentences, outputs)}
        if one_pass:
            return found
        # ARE: one prompt per predicted event
        todo = [(s, e) for s in sentences for e in found[s.id]]
        outputs = self.run([Example("text_argument", argument_prompt(e, s.words), [])
                            for s, e in todo])
        full = {s.id: [] for s in sentences}
        for (s, e), o in zip(todo, outputs):
            same = [r for r in S.parse(o, s.words) if isinstance(r, S.TextEvent)
                    and r.trigger == e.trigger and r.event_type == e.event_type]
            full[s.id].append(S.TextEvent(e.event_type, e.trigger,
                                          same[0].arguments if same else ()))
        return full

    def _image_events(self, images) -> dict[str, list[S.ImageEvent]]:
        one_pass = "image_mention" not in self.tasks
        task = "image_event" if one_pass else "image_mention"
        outputs = self.run([image_example(task, i, []) for i in images])
        found = {i.id: [r for r in S.parse(o, size=i.size) if isinstance(r, S.ImageEvent)]
                 for i, o in zip(images, outputs)}
        if one_pass:
            return found
        todo = [(i, e) for i in images for e in found[i.id]]
        outputs = self.run([image_example("image_argument", i, [], [S.TYPE_TOKENS[e.event_type]])
                            for i, e in todo])
        full = {i.id: [] for i in images}
        for (i, e), o in zip(todo, outputs):
            same = [r for r in S.parse(o, size=i.size) if isinstance(r, S.ImageEvent)
                    and r.event_type == e.event_type]
            full[i.id].append(S.ImageEvent(e.event_type, same[0].arguments if same else ()))
        return full

    def _links(self, sentences, images, text, pics) -> list[S.Link]:
        """Candidates: a sentence and an image of one document with an event of the same
        predicted type. ``links="type"`` links every candidate; ``"grounded"`` asks the grounding
        head about each participant of the sentence's event (its argument spans) in the image, and
        keeps what ``grounded`` says."""
        in_doc = defaultdict(list)
        for i in images:
            in_doc[i.doc_id].append(i)
        pairs = [(s, i, t) for s in sentences
                 for t in dict.fromkeys(e.event_type for e in text[s.id])
                 for i in in_doc[s.doc_id] if any(e.event_type == t for e in pics[i.id])]
        if self.links == "type":
            return [S.Link(s.id, i.id, t) for s, i, t in pairs]
        def participants(s, t):  # the argument spans of the sentence's events of type t
            return [a.target for e in text[s.id] if e.event_type == t for a in e.arguments]
        asked = {(s.id, i.id, span): relation_query(s.id, s.words, i, span)
                 for s, i, t in pairs for span in participants(s, t)}
        presence = dict(zip(asked, self.presence(list(asked.values()))))
        return [S.Link(s.id, i.id, t) for s, i, t in pairs
                if grounded([presence[(s.id, i.id, span)] for span in participants(s, t)],
                            self.threshold)]


def grounded(presence: list[float], threshold: float) -> bool:
    """The grounded link rule for one candidate (a sentence event and an image of its type):
    ``presence`` holds, for each participant of the sentence event (its argument spans), the
    grounding head's probability that it is in the image, NaN for a name the head does not know.
    Linked when a known participant is there (probability >= ``threshold``); not linked when the
    head knows participants and finds none there; linked on the type alone when it knows none."""
    known = [p for p in presence if not math.isnan(p)]
    return not known or max(known) >= threshold


def prediction_lines(pred: S.Predictions) -> list[dict]:
    """Predictions -> the JSON Lines objects of the prediction format (one per sentence, one per
    image, one per link)."""
    return ([{"sentence_id": k, "events": [event_json(e) for e in evs]}
             for k, evs in pred.sentences.items()]
            + [{"image_id": k, "events": [event_json(e) for e in evs]}
               for k, evs in pred.images.items()]
            + [{"sentence_id": l.sentence_id, "image_id": l.image_id, "event_type": l.event_type}
               for l in pred.links])


def predict_file(checkpoint, gold: data.M2E2, out: Path, device: str = "auto",
                 links: str = "type", no_event_bias: float = 0.0) -> S.Predictions:
    """Run the trained model of ``checkpoint`` over every sentence and image of ``gold``; write
    the JSON Lines to ``out`` and return the predictions (``links``, ``no_event_bias``: RMPL's)."""
    images = [i for i in gold.images.values() if i.path is not None]
    if len(images) < len(gold.images):
        warnings.warn(f"{len(gold.images) - len(images)} of {len(gold.images)} images have no "
                      f"file: nothing is predicted for them")
    model = RMPL.load(checkpoint, M.pick_device(device), links=links,
                      no_event_bias=no_event_bias)
    pred = model.predict(list(gold.sentences.values()), images)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(line) + "\n" for line in prediction_lines(pred)))
    return pred


def quick_score(net, tok, tasks, gold: data.M2E2 | None, n_docs: int) -> dict[str, float]:
    """Strict F1 of the six cells on the first ``n_docs`` M2E2 dev documents (a progress signal, not
    a result): train.py's quick dev score."""
    if gold is None or n_docs <= 0:
        return {}
    docs = sorted({S.doc_id(k) for k in gold.sentences})[:n_docs]
    sub = data.M2E2({k: s for k, s in gold.sentences.items() if S.doc_id(k) in docs},
                    {k: i for k, i in gold.images.items() if S.doc_id(k) in docs},
                    [l for l in gold.links if S.doc_id(l.sentence_id) in docs])
    was_training = net.training  # RMPL puts the network in eval mode
    pred = RMPL(net, tok, tasks).predict(list(sub.sentences.values()),
                                         list(sub.images.values()))
    net.train(was_training)
    cells = evaluate.score(sub, pred)
    return {k: v["f1"] for k, v in cells.items() if isinstance(v, dict)}


# ============================================================================= command line
def default_pred_out(checkpoint, gold_dir: Path) -> Path:
    """CHECKPOINT/predictions_toy_m2e2_test.jsonl for data/toy/m2e2/test: one file per gold
    directory, so scoring another data root does not overwrite the toy predictions."""
    return Path(checkpoint) / f"predictions_{'_'.join(gold_dir.resolve().parts[-3:])}.jsonl"


def main(argv: list[str] | None = None) -> None:
    p = evaluate.command_line(
        "Run a trained model over M2E2 documents, write its predictions and score them "
        "(python evaluate.py --pred FILE scores a prediction file alone).")
    p.add_argument("--checkpoint", default="runs/stage2",
                   help="a train.py run directory (default %(default)s)")
    p.add_argument("--pred-out",
                   help="where the predictions go (default: CHECKPOINT/predictions_<last three "
                        "parts of the gold directory>.jsonl)")
    p.add_argument("--device", default="auto",
                   help="auto (cuda, then mps, then cpu), cpu, cuda or mps")
    p.add_argument("--links", default="type", choices=LINK_RULES,
                   help="how sentence and image events are linked: type (same type, same "
                        "document) or grounded (also asks the grounding head whether the "
                        "sentence event's participants are in the image; needs a model whose "
                        "stage 1 trained the relation task); default %(default)s")
    p.add_argument("--no-event-bias", type=float, default=0.0,
                   help="subtracted from the 'no event' logit where a sentence's mention pass "
                        "starts: > 0 names events more often (more recall, less precision); "
                        "choose it on dev (default %(default)s)")
    args = p.parse_args(argv)
    gold_dir = evaluate.gold_dir(args)
    out = Path(args.pred_out) if args.pred_out else default_pred_out(args.checkpoint, gold_dir)

    def extract() -> tuple[data.M2E2, S.Predictions]:
        if not (RunDir(args.checkpoint) / RunDir.INFO).exists():
            raise ValueError(f"{args.checkpoint}: no trained model here (run `python train.py "
                             f"--stage 1` and `--stage 2` first, or pass --checkpoint DIR)")
        gold = data.read_m2e2(gold_dir, images=True)
        return gold, predict_file(args.checkpoint, gold, out, args.device, args.links,
                                  args.no_event_bias)

    try:
        with evaluate.warnings_as_lines():
            gold, pred = extract()
    except (OSError, ValueError) as e:  # DataError, CheckpointError, a missing file
        evaluate.fail(e)
    print(f"predictions: {out}", file=sys.stderr)
    evaluate.report(gold, pred, args)


if __name__ == "__main__":
    evaluate.run_command(main)
