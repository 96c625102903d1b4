"""The tasks and the loss: how RMPL turns heterogeneous sources into one multi-task problem.

Every source is cast into the target language of schema.py: an example is a prompt (a task token,
maybe an event or an entity to ask about, the words) plus maybe an image, and a target (records).

Stage 1 (unified multi-task learning): three sources, one target language.

    text_event   ACE sentence            -> all its events, triggers and argument spans
    image_event  SWiG image              -> its event and argument boxes (or nothing)
    relation     MNRE sentence + image   -> one named entity's relations, to spans or boxes

Stage 2 (progressive fine-tuning): the same text and image sources recast as the two subtasks of
MEE, mixed in every batch (``--tasks ...,relation`` keeps the relation task, which grounded links
need: without it stage 2 forgets it):

    text_mention    sentence                          -> event types and triggers       (EMI)
    image_mention   image                             -> event type                     (EMI)
    text_argument   sentence + one event (type, trig) -> that event with its arguments  (ARE)
    image_argument  image + one event type            -> that event with argument boxes (ARE)

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

A text_event or text_mention example also carries its words' trigger tags (``trigger_tags``), which
a network with a tagger (train.py --tag-weight) learns beside the target: tag_weight times the mean
cross-entropy over the words counts as one more prediction of the example (model.Seq2Seq).

What this file does not do: read files (data.py), turn tokens into ids and pictures into tensors
(tensors.py), define the network (model.py), run the optimiser (train.py), extract events from
M2E2 documents (rmpl.py).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

import schema as S

STAGE_TASKS = {
    1: ("text_event", "image_event", "relation"),
    2: ("text_mention", "image_mention", "text_argument", "image_argument"),
}
# The source a task's examples are cast from: a data directory's subdirectory (docs/real_data.md)
TASK_SOURCE = {"text_event": "ace", "image_event": "swig", "relation": "mnre",
               "text_mention": "ace", "image_mention": "swig",
               "text_argument": "ace", "image_argument": "swig"}
ALPHA = 0.5                                   # task sampling: p_t ~ n_t ** ALPHA
PRESENT_IN = "/per/misc/present_in"           # MNRE's label for "this name is that figure"
TASK_WEIGHTS = {t: 1.0 for t in S.TASKS}      # lambda_t in the loss


@dataclass
class Example:
    """One item of any task: the encoder reads `prompt` (+ the image), the decoder writes `target`.

    prompt and target are lists of schema tokens and words (target as schema.linearise writes it);
    image is a file path or None, size its (W, H) when known (box tokens are in that frame; a file
    of another size is refused); meta carries ids for inference (sentence id, image id, event ...).
    grounding (relation task with a picture only): the (name words, in the picture?) pairs the
    grounding head is asked about, the asked entity's first; the answer None where unknown.
    """
    task: str
    prompt: list[str]
    target: list[str]
    image: str | None = None
    size: tuple[int, int] | None = None
    meta: dict = field(default_factory=dict)
    grounding: list[tuple[tuple[str, ...], bool | None]] = field(default_factory=list)
    word_tags: list[int] | None = None

    def __post_init__(self):
        if self.task not in S.TASKS:
            raise ValueError(f"Example task {self.task!r} is not one of {S.TASKS}")

    @property
    def present(self) -> bool | None:
        """Is the asked entity in the picture? None where unknown or not asked."""
        return self.grounding[0][1] if self.grounding else None


# ============================================================================= records -> examples
def text_prompt(task: str, words, extra=()) -> list[str]:
    """A text task's prompt: its task token, what it asks about (``extra``), then the words."""
    return [S.TASK_TOKENS[task], *extra, S.SEP, *words]


def image_example(task, img: S.Image, target, extra=()) -> Example:
    return Example(task, [S.TASK_TOKENS[task], *extra], target, image=img.path,
                           size=img.size, meta={"id": img.id})


def text_examples(task: str, sent: S.Sentence) -> list[Example]:
    """The examples one sentence gives to a text task (text_event, text_mention, text_argument)."""
    w = sent.words

    def example(prompt, target, word_tags=None):
        return Example(task, prompt, target, word_tags=word_tags,
                               meta={"id": sent.id})  # the id names it in errors

    if task in ("text_event", "text_mention"):
        events = (sent.events if task == "text_event"
                  else [S.TextEvent(e.event_type, e.trigger) for e in sent.events])
        return [example(text_prompt(task, w), S.linearise(events, w), trigger_tags(sent))]
    if task == "text_argument":
        return [example(argument_prompt(e, w), S.linearise([e], w)) for e in sent.events]
    raise ValueError(f"{task} is not a text task")


def trigger_tags(sent: S.Sentence) -> list[int]:
    """Per word of the sentence: 0 outside every trigger, 1 + k inside a trigger of the k-th event
    type of schema.EVENT_TYPES (the encoder's trigger tagging, model.Seq2Seq.tagger)."""
    tags, types = [0] * len(sent.words), list(S.EVENT_TYPES)
    for e in sent.events:
        span = range(e.trigger.start, e.trigger.end)
        tags[span.start:span.stop] = [1 + types.index(e.event_type)] * len(span)
    return tags


def argument_prompt(event: S.TextEvent, words) -> list[str]:
    return text_prompt("text_argument", words,
                        S.linearise([S.TextEvent(event.event_type, event.trigger)], words))


def image_examples(task: str, img: S.Image) -> list[Example]:
    """The examples one image gives to an image task (image_event, image_mention,
    image_argument)."""
    if task == "image_event":
        return [image_example(task, img, S.linearise(img.events, size=img.size))]
    if task == "image_mention":
        return [image_example(task, img, [S.TYPE_TOKENS[e.event_type] for e in img.events])]
    if task == "image_argument":
        return [image_example(task, img, S.linearise([e], size=img.size),
                               [S.TYPE_TOKENS[e.event_type]])
                for e in img.events]
    raise ValueError(f"{task} is not an image task")


def relation_examples(ex: S.RelationExample) -> list[Example]:
    """The examples one MNRE sentence gives (with its image when it has one): one per head entity,
    asking for that entity's relations, as each MNRE line names its entity pair. The target holds
    them in reading order (tail spans before boxes, relations before "None", then left to right),
    so the first thing said about a figure is whether the entity is in the picture.

    A question whose entity the target places in or out of the picture (``present_label``) also
    trains the grounding head, on that entity and on every other name of the sentence so placed:
    one name per question trained the head worse (experiments/grounding.md, section 7i)."""
    img = ex.image
    by_head: dict = {}
    for rel in sorted(ex.relations, key=_reading_order):
        by_head.setdefault(rel.head, []).append(rel)
    out = [relation_query(ex.id, ex.words, img, head,
                          S.linearise(rels, ex.words, img.size if img else None))
           for head, rels in by_head.items()]
    placed = {}  # name words -> in the picture?, for each entity the target places
    for head, rels in by_head.items():
        label = present_label(rels) if img and isinstance(head, S.Span) else None
        if label is not None:
            placed[ex.words[head.start:head.end]] = label
    for q, head in zip(out, by_head):
        own = ex.words[head.start:head.end] if isinstance(head, S.Span) else None
        if own in placed:
            q.grounding = [(own, placed[own]), *((n, p) for n, p in placed.items() if n != own)]
    return out


def present_label(rels: list[S.Relation]) -> bool | None:
    """Is the head of these relations (one entity's, in reading order) in the picture? Its first
    relation to a figure says: PRESENT_IN (it is that figure) or another label (that figure is
    someone else, as MNRE's "None" lines say). None when no relation reaches a figure."""
    to_figure = [r for r in rels if isinstance(r.tail, S.Box)]
    return to_figure[0].label == PRESENT_IN if to_figure else None


def relation_query(id_, words, img: S.Image | None, head: S.Span | S.Box,
                   target=()) -> Example:
    """The relation task's question: what relates ``head`` (an entity of the sentence, or a box of
    the image) to the rest of the sentence and to the image's figures? An entity of the sentence
    is also the grounding head's question: is it in the picture?"""
    size = img.size if img else None
    head_tokens = (S.span_to_tokens(head, words) if isinstance(head, S.Span)
                   else S.box_to_tokens(head, size))
    q = Example("relation", text_prompt("relation", words, [S.HEAD, *head_tokens]),
                list(target), image=img.path if img else None, size=size, meta={"id": id_})
    if img and isinstance(head, S.Span):
        q.grounding = [(tuple(words[head.start:head.end]), None)]
    return q


def _reading_order(rel: S.Relation) -> tuple:
    def where(x):
        return (0, x.start, x.end) if isinstance(x, S.Span) else (1, x.x1, x.y1, x.x2, x.y2)
    tail = where(rel.tail)
    return where(rel.head), tail[0], rel.label == "None", tail


def build_tasks(tasks, sentences, images, relations) -> dict[str, list[Example]]:
    """Cast the sources of one split into the examples of each of ``tasks`` (e.g. STAGE_TASKS[1]).

    A record the schema cannot write (a span past the MAX_OCC-th occurrence of its words) is
    skipped, counted, and reported in one warning per task."""
    out = {}
    for task in tasks:
        records = {"ace": sentences, "swig": images, "mnre": relations}[TASK_SOURCE[task]]
        if task == "relation":
            make = relation_examples
        elif task.startswith("text"):
            make = lambda s: text_examples(task, s)
        else:
            make = lambda i: image_examples(task, i)
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


# ============================================================================= task sampling
def tempered_weights(sizes: dict[str, int], alpha: float = ALPHA) -> dict[str, float]:
    """Task probabilities p_t ∝ n_t ** alpha: alpha = 1 is proportional to size (every example
    equally often), alpha = 0 is uniform over tasks; in between, small tasks are seen more without
    dominating."""
    raw = {t: float(n) ** alpha if n > 0 else 0.0 for t, n in sizes.items()}
    total = sum(raw.values())
    if total <= 0:
        raise ValueError(f"tempered_weights: no task has examples ({sizes})")
    return {t: v / total for t, v in raw.items()}


def task_sampling_weights(tasks: dict[str, list]) -> dict[str, float]:
    """The sampling probability of each task of a stage, from its number of examples."""
    return tempered_weights({t: len(exs) for t, exs in tasks.items()})


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


