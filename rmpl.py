"""RMPL, the method in one file: the two stages, the relation-aware multi-task loss, the extractor.

Stage 1 (unified multi-task learning). Three heterogeneous sources, one target language (schema.py):

    text_event   ACE sentence            -> all its events, triggers and argument spans
    image_event  SWiG image              -> its event and argument boxes (or nothing)
    relation     MNRE sentence + image   -> one named entity's relations, to spans or boxes

Stage 2 (progressive fine-tuning). The same text and image sources recast as the two subtasks of
MEE, mixed in every batch (``--tasks ...,relation`` keeps the relation task, which grounded links
need: without it stage 2 forgets it; README, "Grounded links"):

    text_mention    sentence                         -> event types and triggers       (EMI)
    image_mention   image                            -> event type                     (EMI)
    text_argument   sentence + one event (type, trig) -> that event with its arguments  (ARE)
    image_argument  image + one event type           -> that event with argument boxes (ARE)

The relation-aware multi-task loss. A batch holds examples b of tasks t(b) with target tokens
y_b (eos included, padding excluded). Per task present in the batch,

    L_t = (1 / N_t) * sum_{b: t(b) = t} sum_i  -log p(y_b,i | y_b,<i, x_b)
    L   = sum_t lambda_t * L_t / sum_t lambda_t    (over tasks in the batch)
    N_t = target tokens of task t

so a task's weight does not depend on how long its targets are, and lambda_t (TASK_WEIGHTS, default
1) sets its share. Examples are drawn task first, p_t proportional to n_t ** alpha with n_t the
task's number of examples (ALPHA = 0.5, size-tempered: the small relation source is not drowned by
the large ones, nor repeated until it is memorised). It is "relation-aware" because the relation
task shares the decoder, the span/box vocabulary and the argument slots with the event tasks: an
argument is a typed relation between an event and an entity, and MNRE teaches entity-to-entity
relations grounded in both modalities.

Extraction on M2E2 (``RMPL.extract``): event mention identification per sentence and per image,
argument extraction per predicted event, then multimedia links. A stage-1 checkpoint extracts in one
pass (text_event, image_event). Links: a sentence event and an image event of the same document and
the same predicted type are a candidate. ``links="type"`` (the default, chosen on dev) links every
candidate. ``links="grounded"`` asks the relation task about each participant of the sentence's
event in the image, and links the candidate unless it places participants against the image's
figures and finds none of them there (``grounded``): same type with other people is then no link,
which the type alone cannot tell; it needs a model whose last stage trained the relation task, and
at this budget that task does not learn who is absent (README, "Grounded links"). No decision here
is tuned on any split.

What this file does not do: read files (data.py), define the network (model.py), run the optimiser
(train.py), score (evaluate.py).
"""
from __future__ import annotations

import json
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import torch

import data
import lora
import model as M
import schema as S
import tensors

STAGE_TASKS = {
    1: ("text_event", "image_event", "relation"),
    2: ("text_mention", "image_mention", "text_argument", "image_argument"),
}
ALPHA = 0.5                                   # task sampling: p_t ~ n_t ** ALPHA
TASK_WEIGHTS = {t: 1.0 for t in S.TASKS}      # lambda_t in the loss
LINK_RULES = ("grounded", "type")             # RMPL(links=...): see RMPL._links and grounded()
PRESENT_IN = "/per/misc/present_in"           # MNRE's label for "this name is that figure"

# The run directory {out}/stage{k}/ that train.py writes and RMPL.load reads, file by file.
MODEL_FILE = "model.safetensors"      # base weights with their ModelConfig (model.save_model)
ADAPTER_FILE = "adapter.safetensors"  # LoRA tensors, when the stage trained LoRA
                                      # (model.save_adapter)
TOKENIZER_FILE = "tokenizer.model"    # the sentencepiece model (tensors.Tokenizer)
INFO_FILE = "rmpl.json"               # stage, tasks, step and the TrainConfig of the checkpoint


# ============================================================================= records -> examples
def _text_prompt(task: str, words, extra=()) -> list[str]:
    return [S.TASK_TOKENS[task], *extra, S.SEP, *words]


def _image_example(task, img: S.Image, target, extra=()) -> tensors.Example:
    return tensors.Example(task, [S.TASK_TOKENS[task], *extra], target, image=img.path,
                           size=img.size, meta={"id": img.id})


def text_examples(task: str, sent: S.Sentence) -> list[tensors.Example]:
    """The examples one sentence gives to a text task (text_event, text_mention, text_argument)."""
    w = sent.words

    def example(prompt, target):
        return tensors.Example(task, prompt, target,
                               meta={"id": sent.id})  # the id names it in errors

    if task == "text_event":
        return [example(_text_prompt(task, w), S.linearise(sent.events, w))]
    if task == "text_mention":
        return [example(_text_prompt(task, w),
                        S.linearise([S.TextEvent(e.event_type, e.trigger)
                                     for e in sent.events], w))]
    if task == "text_argument":
        return [example(argument_prompt(e, w), S.linearise([e], w)) for e in sent.events]
    raise ValueError(f"{task} is not a text task")


def argument_prompt(event: S.TextEvent, words) -> list[str]:
    return _text_prompt("text_argument", words,
                        S.linearise([S.TextEvent(event.event_type, event.trigger)], words))


def image_examples(task: str, img: S.Image) -> list[tensors.Example]:
    """The examples one image gives to an image task (image_event, image_mention,
    image_argument)."""
    if task == "image_event":
        return [_image_example(task, img, S.linearise(img.events, size=img.size))]
    if task == "image_mention":
        return [_image_example(task, img, [S.TYPE_TOKENS[e.event_type] for e in img.events])]
    if task == "image_argument":
        return [_image_example(task, img, S.linearise([e], size=img.size),
                               [S.TYPE_TOKENS[e.event_type]])
                for e in img.events]
    raise ValueError(f"{task} is not an image task")


def relation_examples(ex: S.RelationExample) -> list[tensors.Example]:
    """The examples one MNRE sentence gives (with its image when it has one): one per head entity,
    asking for that entity's relations, as each MNRE line names its entity pair. The target holds
    them in reading order (tail spans before boxes, relations before "None", then left to right),
    so the first thing said about a figure is whether the entity is in the picture."""
    img = ex.image
    by_head: dict = {}
    for rel in sorted(ex.relations, key=_reading_order):
        by_head.setdefault(rel.head, []).append(rel)
    return [relation_query(ex.id, ex.words, img, head,
                           S.linearise(rels, ex.words, img.size if img else None))
            for head, rels in by_head.items()]


def relation_query(id_, words, img: S.Image | None, head: S.Span | S.Box,
                   target=()) -> tensors.Example:
    """The relation task's question: what relates ``head`` (an entity of the sentence, or a box of
    the image) to the rest of the sentence and to the image's figures?"""
    size = img.size if img else None
    head_tokens = (S.span_to_tokens(head, words) if isinstance(head, S.Span)
                   else S.box_to_tokens(head, size))
    return tensors.Example("relation", _text_prompt("relation", words, [S.HEAD, *head_tokens]),
                           list(target), image=img.path if img else None, size=size,
                           meta={"id": id_})


def _reading_order(rel: S.Relation) -> tuple:
    def where(x):
        return (0, x.start, x.end) if isinstance(x, S.Span) else (1, x.x1, x.y1, x.x2, x.y2)
    tail = where(rel.tail)
    return where(rel.head), tail[0], rel.label == "None", tail


def build_tasks(tasks, sentences, images, relations) -> dict[str, list[tensors.Example]]:
    """Cast the sources of one split into the examples of each of ``tasks`` (e.g. STAGE_TASKS[1]).

    A record the schema cannot write (a span past the MAX_OCC-th occurrence of its words) is
    skipped, counted, and reported in one warning per task."""
    out = {}
    for task in tasks:
        if task == "relation":
            records, make = relations, relation_examples
        elif task.startswith("text"):
            records, make = sentences, lambda s: text_examples(task, s)
        else:
            records, make = images, lambda i: image_examples(task, i)
        out[task], skipped = [], []
        for rec in records:
            try:
                out[task] += make(rec)
            except ValueError as e:
                skipped.append(f"{rec.id}: {e}")
        if skipped:
            warnings.warn(f"{task}: skipped {len(skipped)} records the schema cannot write, "
                          f"e.g. {skipped[0]}")
    return {t: exs for t, exs in out.items() if exs}


def task_sampling_weights(tasks: dict[str, list]) -> dict[str, float]:
    return tensors.tempered_weights({t: len(exs) for t, exs in tasks.items()}, ALPHA)


# ============================================================================= the loss
def multitask_loss(ce_sum: torch.Tensor, n_tokens: torch.Tensor, task_ids: torch.Tensor,
                   weights=TASK_WEIGHTS, all_reduce=None,
                   world_size: int = 1) -> tuple[torch.Tensor, dict[str, float]]:
    """The formula of the module docstring. ``ce_sum`` (B,) each example's token cross-entropy
    summed over its target tokens, ``n_tokens`` (B,) its target tokens, ``task_ids`` (B,) indices
    into schema.TASKS. Returns the loss and each task's L_t (for logs).

    As a sum over examples: L = sum_b ce_sum_b * w_t(b), with w_t = lambda_t / sum(lambda) / N_t.
    Under DDP (``all_reduce`` = torch.distributed.all_reduce, ``world_size`` processes) the token
    counts N_t and the CE sums are those of the global batch, and the loss returned is this
    process's part of the global loss times ``world_size``: DDP averages the processes' gradients,
    and the average of these parts' gradients is the gradient of the global loss. (An average of
    per-process losses would not be: each process would weigh its own few tokens of a task like
    another's many.)
    """
    stats = ce_sum.new_zeros(2, len(S.TASKS))  # (token count, CE sum) per task
    stats[0].index_add_(0, task_ids, n_tokens.to(stats.dtype))
    stats[1].index_add_(0, task_ids, ce_sum.detach())
    if all_reduce is not None:
        all_reduce(stats)
    count, ce = stats
    # tasks present in the batch
    lam = ce_sum.new_tensor([weights[t] for t in S.TASKS]) * (count > 0)
    token_weight = lam / lam.sum().clamp(min=1e-12) / count.clamp(min=1)  # (T,) w_t
    loss = (ce_sum * token_weight[task_ids]).sum() * world_size
    return loss, {t: (ce[k] / count[k]).item() for k, t in enumerate(S.TASKS) if count[k] > 0}


# ============================================================================= extraction
def event_json(ev: S.TextEvent | S.ImageEvent) -> dict:
    """A record in the prediction format (README, "Scoring M2E2 predictions"). Boxes keep full float
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
    """A trained model that reads M2E2 documents and writes predictions (README, "Scoring M2E2
    predictions")."""

    def __init__(self, net: M.Seq2Seq, tokenizer: tensors.Tokenizer, tasks=STAGE_TASKS[2],
                 batch_size: int = 64, links: str = "type"):
        if links not in LINK_RULES:
            raise ValueError(f"links={links!r}: expected one of {LINK_RULES}")
        if links == "grounded" and "relation" not in tasks:
            raise ValueError(f"links='grounded' needs a model whose last stage trained the "
                             f"relation task (this one: {', '.join(tasks)}; train stage 2 with "
                             f"--tasks {','.join(STAGE_TASKS[2])},relation)")
        self.net, self.tok, self.tasks, self.batch_size, self.links = (
            net.eval(), tokenizer, tuple(tasks), batch_size, links)
        # each image is read by two passes (mention, then arguments)
        self.images = tensors.ImageCache()
        self.special_ids = tokenizer.encode(list(S.SPECIAL_TOKENS))

    @classmethod
    def load(cls, checkpoint, device="cpu", **kw) -> "RMPL":
        """A run directory train.py wrote: MODEL_FILE, TOKENIZER_FILE, INFO_FILE, maybe
        ADAPTER_FILE."""
        d = Path(checkpoint)
        net = M.load_model(d / MODEL_FILE, device)
        if (d / ADAPTER_FILE).exists():
            M.load_adapter(net, d / ADAPTER_FILE)
            lora.merge_lora(net)  # explicit: inference runs on merged weights
        info = json.loads((d / INFO_FILE).read_text())
        return cls(net, tensors.Tokenizer.load(d / TOKENIZER_FILE), info["tasks"], **kw)

    def run(self, examples: list[tensors.Example]) -> list[list[str]]:
        """Greedy-decode every example (in batches) -> its output tokens. Prompts longer than the
        model's max_text_len are cut (nothing past the cut can be extracted): one warning says how
        many."""
        cfg, out, cut = self.net.cfg, [], Counter()
        device = next(self.net.parameters()).device
        for i in range(0, len(examples), self.batch_size):
            enc = [tensors.encode_example(e, self.tok, cfg.image_size, cfg.max_text_len,
                                          cfg.max_target_len, self.images, counts=cut)
                   for e in examples[i:i + self.batch_size]]
            batch = {k: v.to(device) for k, v in tensors.collate(enc, self.tok.pad_id).items()}
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                ids = self.net.generate(batch, cfg.max_target_len,
                                        allowed=self.allowed(batch["input_ids"]))
            out += [self.tok.decode(row) for row in ids]
        if cut["input_truncated"]:
            task = examples[0].task if len({e.task for e in examples}) == 1 else "mixed"
            warnings.warn(f"{task}: {cut['input_truncated']} of {cut['examples']} prompts were cut "
                          f"to max_text_len={cfg.max_text_len}; words past the cut cannot be "
                          f"extracted")
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

    def predict(self, sentences: list[S.Sentence], images: list[S.Image]) -> S.Predictions:
        """Events of the given sentences and images (one or many documents), and the links
        between them."""
        text, pics = self._text_events(sentences), self._image_events(images)
        return S.Predictions(text, pics, self._links(sentences, images, text, pics))

    def extract(self, sentences: list[S.Sentence], images: list[S.Image]) -> list[dict]:
        """``predict``, written as the JSON Lines objects of the prediction format (README)."""
        return prediction_lines(self.predict(sentences, images))

    def _text_events(self, sentences) -> dict[str, list[S.TextEvent]]:
        one_pass = "text_mention" not in self.tasks
        task = "text_event" if one_pass else "text_mention"
        outputs = self.run([tensors.Example(task, _text_prompt(task, s.words), [])
                            for s in sentences])
        found = {s.id: [r for r in S.parse(o, s.words) if isinstance(r, S.TextEvent)]
                 for s, o in zip(sentences, outputs)}
        if one_pass:
            return found
        # ARE: one prompt per predicted event
        todo = [(s, e) for s in sentences for e in found[s.id]]
        outputs = self.run([tensors.Example("text_argument", argument_prompt(e, s.words), [])
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
        outputs = self.run([_image_example(task, i, []) for i in images])
        found = {i.id: [r for r in S.parse(o, size=i.size) if isinstance(r, S.ImageEvent)]
                 for i, o in zip(images, outputs)}
        if one_pass:
            return found
        todo = [(i, e) for i in images for e in found[i.id]]
        outputs = self.run([_image_example("image_argument", i, [], [S.TYPE_TOKENS[e.event_type]])
                            for i, e in todo])
        full = {i.id: [] for i in images}
        for (i, e), o in zip(todo, outputs):
            same = [r for r in S.parse(o, size=i.size) if isinstance(r, S.ImageEvent)
                    and r.event_type == e.event_type]
            full[i.id].append(S.ImageEvent(e.event_type, same[0].arguments if same else ()))
        return full

    def _links(self, sentences, images, text, pics) -> list[S.Link]:
        """Candidates: a sentence and an image of one document with an event of the same
        predicted type. ``links="type"`` links every candidate; ``"grounded"`` asks the relation
        task about each participant of the sentence's event (its argument spans) in the image, and
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
        asked = {(s.id, i.id, span): (s, i, span) for s, i, t in pairs
                 for span in participants(s, t)}
        outputs = self.run([relation_query(s.id, s.words, i, span)
                            for s, i, span in asked.values()])
        read = defaultdict(list)  # (sentence, image) -> what the relation task said
        for (s, i, _), o in zip(asked.values(), outputs):
            read[(s.id, i.id)] += [r for r in S.parse(o, s.words, i.size)
                                   if isinstance(r, S.Relation)]
        return [S.Link(s.id, i.id, t) for s, i, t in pairs
                if grounded(participants(s, t), read[(s.id, i.id)])]


def grounded(participants: list[S.Span], relations: list[S.Relation]) -> bool:
    """The grounded link rule for one candidate (a sentence event and an image of its type):
    ``participants`` are the sentence event's argument spans, ``relations`` what the relation
    task reads in the sentence and the image. Linked when a participant is present in the image
    (PRESENT_IN to a figure); not linked when the relation task matches participants against the
    figures (names it can ground) and finds none present; linked on the type alone when it grounds
    no participant either way (none is a name it knows)."""
    def touches(heads):
        return any(p.start < h.end and h.start < p.end for p in participants for h in heads)
    to_figures = [r for r in relations
                  if isinstance(r.head, S.Span) and isinstance(r.tail, S.Box)]
    if touches([r.head for r in to_figures if r.label == PRESENT_IN]):
        return True
    return not touches([r.head for r in to_figures])


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
                 links: str = "type") -> S.Predictions:
    """Run the trained model of ``checkpoint`` over every sentence and image of ``gold``; write
    the JSON Lines to ``out`` and return the predictions (what ``python evaluate.py --checkpoint``
    scores)."""
    images = [i for i in gold.images.values() if i.path is not None]
    if len(images) < len(gold.images):
        warnings.warn(f"{len(gold.images) - len(images)} of {len(gold.images)} images have no "
                      f"file: nothing is predicted for them")
    model = RMPL.load(checkpoint, M.pick_device(device), links=links)
    pred = model.predict(list(gold.sentences.values()), images)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(line) + "\n" for line in prediction_lines(pred)))
    return pred
