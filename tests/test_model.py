"""model.py: shapes, masking, loss, KV-cache generation, LoRA, checkpoints, overfitting one batch."""
import json
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import lora
import model as M
import run

V, PAD, BOS, EOS = 50, 0, 1, 2


def tiny_config(**kw) -> M.ModelConfig:
    cfg = dict(vocab_size=V, pad_id=PAD, bos_id=BOS, eos_id=EOS, d_model=32, n_heads=2, enc_layers=1,
               dec_layers=2, mlp_ratio=2, dropout=0.0, max_text_len=16, max_target_len=12, image_size=16, patch_size=8, vision_width=16,
               grounding_width=16)
    return M.ModelConfig(**{**cfg, **kw})


def tiny_model(seed=0, **kw) -> M.Seq2Seq:
    torch.manual_seed(seed)
    return M.Seq2Seq(tiny_config(**kw)).eval()


def make_batch(has_image=(True, False, True), prompt_lens=(5, 9, 3), target_lens=(4, 2, 7), seed=0, T=10, L=8):
    """Random ids in [3, V); prompts pad-padded to T; targets end in eos, pad-padded to L; zero images where absent."""
    g = torch.Generator().manual_seed(seed)
    B = len(has_image)
    ids, target = torch.full((B, T), PAD), torch.full((B, L), PAD)
    for b in range(B):
        ids[b, :prompt_lens[b]] = torch.randint(3, V, (prompt_lens[b],), generator=g)
        target[b, :target_lens[b] - 1] = torch.randint(3, V, (target_lens[b] - 1,), generator=g)
        target[b, target_lens[b] - 1] = EOS
    has = torch.tensor(has_image)
    images = torch.randn(B, 3, 16, 16, generator=g) * has[:, None, None, None]
    return {"input_ids": ids, "images": images, "has_image": has, "target_ids": target}


# ----------------------------------------------------------------------------- shapes and masking
def test_module_shapes():
    m, cfg = tiny_model(), tiny_config()
    x = torch.randn(3, 7, 32)
    assert m.encoder[0].attn(x).shape == (3, 7, 32)
    assert m.decoder[0].cross_attn(x, context=torch.randn(3, 5, 32)).shape == (3, 7, 32)
    assert m.encoder[0].mlp(x).shape == (3, 7, 32)
    memory, memory_mask = torch.randn(3, 5, 32), torch.ones(3, 1, 1, 5, dtype=torch.bool)
    assert m.decoder[0](x, memory=memory, memory_mask=memory_mask).shape == (3, 7, 32)
    assert m.vision(torch.randn(3, 3, 16, 16)).shape == (3, (16 // 8) ** 2, cfg.d_model)


@pytest.mark.parametrize("S, P, width", [(16, 8, 16), (64, 8, 64), (32, 4, 32), (64, 16, 64)])
def test_vision_tower_shapes(S, P, width):
    """One token per cell of the stem's last (S/P x S/P) map: log2(P) halving blocks, then one more."""
    cfg = tiny_config(image_size=S, patch_size=P, vision_width=width)
    tower = M.VisionTower(cfg).train()
    fmap = tower.stem(torch.randn(2, 3, S, S))
    assert fmap.shape == (2, width, S // P, S // P)
    assert len(tower.stem) == P.bit_length() - 1 + 1  # the last block keeps the resolution
    assert tower(torch.randn(2, 3, S, S)).shape == (2, (S // P) ** 2, cfg.d_model)


@pytest.mark.parametrize("has_image, S", [((True, False, True), 10 + 4), ((False, False, False), 10)])
def test_encode_decode_forward_shapes(has_image, S):
    m, batch = tiny_model(), make_batch(has_image=has_image)
    memory, mask = m.encode(batch)
    assert memory.shape == (3, S, 32) and mask.shape == (3, S) and mask.dtype == torch.bool
    assert mask[:, :10].sum(1).tolist() == [5, 9, 3]  # text first, then the image patches
    assert m.decode(batch["target_ids"], memory, mask).shape == (3, 8, V)
    logits, loss = m(batch)
    assert logits.shape == (3, 8, V) and loss.shape == ()
    assert m(batch, reduction="sum")[1].shape == (3,)


def test_loss_by_hand():
    m, batch = tiny_model(), make_batch()
    logits, loss = m(batch)
    _, ce_sum = m(batch, reduction="sum")
    target, n = batch["target_ids"], (4, 2, 7)
    by_hand = [F.cross_entropy(logits[b, :n[b]], target[b, :n[b]]) for b in range(3)]  # the pad tail is ignored
    torch.testing.assert_close(ce_sum, torch.stack([l * k for l, k in zip(by_hand, n)]))
    torch.testing.assert_close(loss, sum(l * k for l, k in zip(by_hand, n)) / sum(n))  # token mean


def test_the_tagging_loss_is_one_more_prediction_by_hand():
    """tag_weight x each tagged example's mean tag cross-entropy, read from its encoder states; an untagged
    example, or a model without the weight, gets nothing (and has no tagger)."""
    batch = make_batch()
    batch["tags"] = torch.full((3, 10), -1)
    batch["tags"][0, 1:5], batch["tags"][2, 2] = torch.tensor([0, 3, 3, 0]), 0   # row 1 untagged
    plain, tagged = tiny_model(), tiny_model(tag_weight=2.0)
    assert not hasattr(plain, "tagger") and tagged.tagger.out_features == 9      # "no event" + 8 types
    torch.testing.assert_close(tagged(batch, reduction="sum")[1] - plain(batch, reduction="sum")[1],
                               2.0 * torch.stack([F.cross_entropy(
                                   tagged.tagger(tagged.encode(batch)[0][b, :10])[batch["tags"][b] >= 0],
                                   batch["tags"][b][batch["tags"][b] >= 0]) if b != 1 else torch.tensor(0.0)
                                   for b in range(3)]))
    _, mean = tagged(batch)
    torch.testing.assert_close(mean, tagged(batch, reduction="sum")[1].sum() / (4 + 2 + 7 + 2))  # 2 tagged rows
    torch.testing.assert_close(plain(batch)[1], plain(batch, reduction="sum")[1].sum() / 13)


# ----------------------------------------------------------------------------- the grounding head
NAN = float("nan")


def grounding_batch():
    """Three relation questions with pictures and one text-only example. Names (ids): row 0 asks about 20 and
    22 23, row 1 about 20 21, row 2 about 20 in row 0's picture with other prompt words; answers 1 0 / 0 / 1."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, V, (4, 7), generator=g)
    has = torch.tensor([True, True, True, False])
    images = torch.randn(4, 3, 16, 16, generator=g) * has[:, None, None, None]
    images[2] = images[0]
    target = torch.tensor([[11, 12, EOS], [13, EOS, PAD], [11, 12, EOS], [14, EOS, PAD]])
    name_ids = torch.tensor([[[20, PAD], [22, 23]], [[20, 21], [PAD, PAD]], [[20, PAD], [PAD, PAD]],
                             [[PAD, PAD], [PAD, PAD]]])
    present = torch.tensor([[1.0, 0.0], [0.0, NAN], [1.0, NAN], [NAN, NAN]])
    return {"input_ids": ids, "images": images, "has_image": has, "target_ids": target,
            "name_ids": name_ids, "present": present}


def test_the_grounding_head_by_hand():
    """presence = mean of the name's vectors . pooled CNN features / sqrt(W) + bias: it reads the name and the
    picture, not the prompt; NaN where there is no name or no picture. Its name table starts at unit scale, the
    rest of the network at 0.02."""
    m, batch = tiny_model(), grounding_batch()
    with torch.no_grad():
        m.grounding.bias.fill_(0.25)
        got = m.presence(batch)
        e, pooled = m.grounding.names.weight, m.grounding.stem(batch["images"][:3]).mean((2, 3))
        names = torch.stack([e[20], (e[22] + e[23]) / 2, (e[20] + e[21]) / 2, e[20]])
        want = (names * pooled[[0, 0, 1, 2]]).sum(-1) / 16 ** 0.5 + 0.25
    torch.testing.assert_close(got[[0, 0, 1, 2], [0, 1, 0, 0]], want)
    assert got[1:, 1].isnan().all() and got[3].isnan().all()
    torch.testing.assert_close(got[0, 0], got[2, 0])  # same name, same picture, other prompt words
    assert pooled.shape == (3, 16) and m.grounding.stem(torch.zeros(1, 3, 64, 64)).shape == (1, 16, 4, 4)  # 64 -> 32 -> 4
    assert 0.9 < e.std().item() < 1.1 and m.tok_emb.weight.std().item() < 0.03


def test_a_grounding_target_is_one_more_prediction_of_its_example():
    m, batch = tiny_model(), grounding_batch()
    _, with_target = m(batch, reduction="sum")
    _, without = m({k: v for k, v in batch.items() if k != "present"}, reduction="sum")
    scores = m.presence(batch)
    bce = F.binary_cross_entropy_with_logits(scores[:3, 0], batch["present"][:3, 0], reduction="none")
    bce[0] += F.binary_cross_entropy_with_logits(scores[0, 1], batch["present"][0, 1])
    torch.testing.assert_close(with_target - without, torch.cat([bce, torch.zeros(1)]))
    _, mean = m(batch)
    torch.testing.assert_close(mean, with_target.sum() / (10 + 4))  # 10 target tokens, 4 grounding targets
    assert M.grounding_targets(batch).sum(1).tolist() == [2, 1, 1, 0]
    items = [{"input_ids": batch["input_ids"][b], "target_ids": batch["target_ids"][b], "image": batch["images"][b],
              "has_image": bool(batch["has_image"][b]), "task_id": 2,
              "names": [n[n != PAD] for n in batch["name_ids"][b] if (n != PAD).any()],
              "present": batch["present"][b].tolist()} for b in range(4)]
    ce_sum, counted, _ = M.example_losses(m, items, "cpu")  # text-only first, then the pictures
    assert counted.tolist() == [2, 3 + 2, 2 + 1, 3 + 1]
    torch.testing.assert_close(ce_sum, with_target[[3, 0, 1, 2]])
    m.train()
    m(batch)
    assert m.grounding.targets_seen.item() == 4  # counted in training only (rmpl's grounded links ask)
    assert m.grounding.known.nonzero().flatten().tolist() == [20, 21, 22, 23]  # the trained names' pieces
    names = torch.tensor([[[20, 23], [20, 24], [PAD, PAD], [21, PAD]]])
    assert m.grounding.knows(names).tolist() == [[True, False, False, True]]  # 24 untrained; no pieces
    with pytest.raises(ValueError, match="name of no pieces"):
        m({**batch, "present": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, NAN], [NAN, NAN]])})


def test_decoder_input_is_shifted_target():
    """Position t is predicted from [bos, target[:t]]: changing target[t] must not change logits[:, :t+1]."""
    m, batch = tiny_model(), make_batch()
    logits = m(batch)[0]
    batch["target_ids"][:, 3] = 7
    logits2 = m(batch)[0]
    torch.testing.assert_close(logits[:, :4], logits2[:, :4])
    assert not torch.allclose(logits[:, 4:], logits2[:, 4:])


def test_padding_and_absent_images_are_masked():
    m, batch = tiny_model(), make_batch()
    logits = m(batch)[0]
    wider = dict(batch, input_ids=torch.cat([batch["input_ids"], torch.full((3, 4), PAD)], 1))
    torch.testing.assert_close(m(wider)[0], logits)        # more padding, same answer
    noisy = dict(batch, images=batch["images"] + 5 * (~batch["has_image"])[:, None, None, None])
    torch.testing.assert_close(m(noisy)[0], logits)        # pixels of an image-less example are never seen
    alone = {k: v[1:2] for k, v in batch.items()}          # the text-only example alone: no patch slots at all
    torch.testing.assert_close(m(alone)[0], logits[1:2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("change, message", [
    (dict(input_ids=torch.zeros(3, 10, dtype=torch.long)), r"examples \[1\] have no prompt tokens and no image"),
    (dict(input_ids=torch.ones(3, 17, dtype=torch.long)), "max_text_len=16"),
    (dict(target_ids=torch.full((3, 13), EOS)), "max_target_len=12"),
    (dict(images=torch.zeros(3, 3, 32, 32)), r"expected \(B, 3, 16, 16\)"),
])
def test_bad_batches_raise_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        tiny_model()({**make_batch(), **change})


def test_config_checks_divisibility():
    with pytest.raises(ValueError, match="d_model=30 is not divisible by 4"):
        tiny_config(d_model=30, n_heads=4)


def test_runs_under_bf16_autocast():
    m, batch = tiny_model(), make_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m(batch)[1]
        out = m.generate(batch, 5)
    assert torch.isfinite(loss) and len(out) == 3


# ----------------------------------------------------------------------------- generation
@pytest.mark.parametrize("has_image", [(True, False, True), (False, False, False), (True, True, True)])
def test_kv_cache_generation_matches_full_recompute(overfit, has_image):
    """Unseen inputs to the model of test_overfits_one_batch: a random-init model repeats one token forever,
    this one answers with sequences of different lengths (2 to 7 tokens, when the batch has images), so per-row
    stopping is exercised: the first unseen batch whose three rows answer with different lengths is the one
    checked (text-only rows may all answer alike)."""
    m = overfit[0]
    answered = ((b, m.generate(b, 12)) for b in (make_batch(has_image=has_image, seed=s) for s in range(10, 60)))
    batch, with_cache = next(((b, out) for b, out in answered
                              if len({len(r) for r in out}) > 1 or not any(has_image)), (None, None))
    assert batch is not None, "no unseen batch makes rows of different lengths"
    assert with_cache == m.generate(batch, 12, use_cache=False)
    # generate strips eos, so checking the rows for eos says nothing. Instead: every row stopped on its own eos
    # before the 12-token cap, at different steps, and teacher forcing the row + eos through forward() gives
    # back the same greedy tokens, eos included (the row stopped exactly where the model writes eos).
    lengths = [len(row) for row in with_cache]
    assert max(lengths) < 12, lengths
    target = torch.full((3, max(lengths) + 1), PAD)
    for b, row in enumerate(with_cache):
        target[b, :len(row) + 1] = torch.tensor(row + [EOS])
    greedy = m({**batch, "target_ids": target})[0].argmax(-1)
    for b, row in enumerate(with_cache):
        assert greedy[b, :len(row) + 1].tolist() == row + [EOS]


@pytest.mark.parametrize("use_cache", [True, False])
def test_allowed_mask_constrains_each_row(use_cache):
    m, batch = tiny_model(), make_batch()
    allowed = torch.zeros(3, V, dtype=torch.bool)
    allowed[:, EOS] = True
    allowed[0, 5], allowed[1, 6], allowed[2, [5, 7]] = True, True, True
    rows = m.generate(batch, 6, allowed=allowed, use_cache=use_cache)
    assert set(rows[0]) <= {5} and set(rows[1]) <= {6} and set(rows[2]) <= {5, 7}
    only_eos = torch.zeros(3, V, dtype=torch.bool)
    only_eos[:, EOS] = True
    assert m.generate(batch, 6, allowed=only_eos, use_cache=use_cache) == [[], [], []]


@pytest.mark.parametrize("after, expected", [
    ({}, []),                        # no bias: eos leads by 1.0, nothing is written
    ({BOS: -0.5}, []),               # not enough to overturn the lead
    ({BOS: -1.5}, [5]),              # enough: token 5 first, then eos (which leads afterwards)
    ({BOS: -1e9}, [5]),              # eos can never come first; later steps are not biased
    ({BOS: -1.5, 5: -1e9}, [5, 6]),  # and after token 5 eos is barred: 6 comes next, then eos
    ({BOS: 1e9}, []),                # eos always comes first
])
def test_eos_bias_follows_the_token_written_before(after, expected):
    """A stubbed decoder, tokens EOS, 5 and 6 allowed: at the first step (after bos) eos scores
    2.0, token 5 1.0, token 6 0; after that eos 2.0, token 5 0, token 6 0.5. eos_bias[t] is added
    to eos's logit at the step after t."""
    m, batch = tiny_model(), make_batch()

    def decode(tgt, memory, memory_mask, cache):
        first = (tgt[:, -1:] == BOS).float()              # (B, 1)
        logits = torch.zeros(tgt.size(0), tgt.size(1), V)
        logits[:, :, EOS], logits[:, :, 5], logits[:, :, 6] = 2.0, first, 0.5 * (1 - first)
        return logits

    m.decode = decode
    allowed = torch.zeros(3, V, dtype=torch.bool)
    allowed[:, [EOS, 5, 6]] = True
    bias = torch.zeros(V)
    for token, b in after.items():
        bias[token] = b
    assert m.generate(batch, 6, allowed=allowed, eos_bias=bias if after else None) == [expected] * 3


def test_generation_is_capped_by_max_target_len():
    m, batch = tiny_model(), make_batch()
    no_eos = torch.ones(3, V, dtype=torch.bool)
    no_eos[:, EOS] = False
    assert [len(r) for r in m.generate(batch, 100, allowed=no_eos)] == [12] * 3


# ----------------------------------------------------------------------------- LoRA
def lora_model(seed=0, r=4):
    m = lora.add_lora(tiny_model(seed), r=r, lora_alpha=8, lora_dropout=0.0)
    torch.manual_seed(seed + 100)
    for layer in lora.lora_layers(m).values():  # a trained-looking adapter: B no longer zero
        nn.init.normal_(layer.lora_B, std=0.1)
    return m


# y = x W^T + b + (x A^T B^T) * lora_alpha / r, by hand. W = [[1, 0, 2], [0, 1, -1]], b = [0.5, -1],
# A = [[1, 0, 0], [0, 1, 1]] (r = 2), B = [[1, 0], [0, 2]], x = [1, 2, 3]:
#   x W^T + b = [7.5, -2],  x A^T = [1, 5],  x A^T B^T = [1, 10],  B A = [[1, 0, 0], [0, 2, 2]].
# lora_alpha != r, so a scaling of lora_alpha (or 1, or r / lora_alpha) gives other numbers.
@pytest.mark.parametrize("lora_alpha, y, merged_weight", [
    (6.0, [7.5 + 3 * 1, -2 + 3 * 10], [[4, 0, 2], [0, 7, 5]]),           # scaling 6 / 2 = 3
    (1.0, [7.5 + 0.5 * 1, -2 + 0.5 * 10], [[1.5, 0, 2], [0, 2, 0]]),     # scaling 1 / 2
])
def test_lora_linear_known_answer(lora_alpha, y, merged_weight):
    base = nn.Linear(3, 2)
    with torch.no_grad():
        base.weight.copy_(torch.tensor([[1.0, 0, 2], [0, 1, -1]]))
        base.bias.copy_(torch.tensor([0.5, -1.0]))
    layer = lora.LoRALinear(base, r=2, lora_alpha=lora_alpha, lora_dropout=0.0)
    with torch.no_grad():
        layer.lora_A.copy_(torch.tensor([[1.0, 0, 0], [0, 1, 1]]))
        layer.lora_B.copy_(torch.tensor([[1.0, 0], [0, 2]]))
    x = torch.tensor([[1.0, 2, 3]])
    torch.testing.assert_close(layer(x), torch.tensor([y]))
    net = nn.Sequential(base)  # the same numbers through the public helpers: add_lora, then merge_lora
    lora.add_lora(net, targets=("0",), r=2, lora_alpha=lora_alpha, lora_dropout=0.0)
    with torch.no_grad():
        net[0].lora_A.copy_(layer.lora_A)
        net[0].lora_B.copy_(layer.lora_B)
    torch.testing.assert_close(net(x), torch.tensor([y]))
    lora.merge_lora(net)
    merged = torch.tensor(merged_weight, dtype=torch.float32)
    torch.testing.assert_close(net[0].weight, merged)  # W + B A * lora_alpha / r
    torch.testing.assert_close(net(x), torch.tensor([y]))


def test_add_lora_wraps_the_attention_projections():
    m = lora.add_lora(tiny_model())
    names = lora.lora_layers(m)
    # encoder 1 x 4, decoder 2 x (4 self + 4 cross); the vision tower is convolutional
    assert len(names) == 4 + 16 and "decoder.1.cross_attn.o" in names
    assert all(l.lora_A.shape == (8, 32) for l in names.values())
    assert lora.lora_layers(lora.add_lora(tiny_model(), targets=("fc1",))).keys() == {
        "encoder.0.mlp.fc1", "decoder.0.mlp.fc1", "decoder.1.mlp.fc1"}
    with pytest.raises(ValueError, match="already has LoRA"):
        lora.add_lora(m)


def test_fresh_adapter_changes_nothing():
    batch = make_batch()
    before = tiny_model()(batch)[0]
    after = lora.add_lora(tiny_model())(batch)[0]
    assert torch.equal(before, after)


def test_merge_equals_unmerged_and_is_idempotent():
    m, batch = lora_model(), make_batch()
    unmerged = m(batch)[0]
    weights = {k: v.clone() for k, v in m.state_dict().items()}
    lora.merge_lora(m)
    merged_once = {k: v.clone() for k, v in m.state_dict().items()}
    torch.testing.assert_close(m(batch)[0], unmerged, atol=1e-5, rtol=0)
    lora.merge_lora(m)
    assert all(torch.equal(v, merged_once[k]) for k, v in m.state_dict().items())
    m.train().eval()
    assert all(l.merged for l in lora.lora_layers(m).values())  # switching modes neither merges nor unmerges
    lora.unmerge_lora(m)
    lora.unmerge_lora(m)
    torch.testing.assert_close(m(batch)[0], unmerged, atol=1e-5, rtol=0)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, weights[k], atol=1e-6, rtol=0)


def test_only_lora_parameters_get_gradients():
    m = lora_model().train()
    lora.mark_only_lora_as_trainable(m)
    m(make_batch())[1].backward()
    for name, p in m.named_parameters():
        assert (p.grad is not None) == ("lora_" in name), name
    assert set(lora.lora_state_dict(m)) == {n for n, _ in m.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("size, r, line", [
    (4, 2, "trainable params: 16 || all params: 36 || trainable%: 44.4444"),        # 20 base + 2*4 + 4*2
    (100, 1, "trainable params: 200 || all params: 10,300 || trainable%: 1.9417"),  # 10,100 base + 200
])
def test_trainable_parameters_line(size, r, line):
    net = lora.add_lora(nn.Sequential(nn.Linear(size, size)), targets=("0",), r=r)
    lora.mark_only_lora_as_trainable(net)
    assert lora.trainable_parameters(net) == line


# ----------------------------------------------------------------------------- checkpoints
def test_save_load_is_bit_exact(tmp_path):
    m, batch = tiny_model(), make_batch()
    run.save_model(m, tmp_path / "base.safetensors")
    assert os.listdir(tmp_path) == ["base.safetensors"]  # the temp file was renamed, not left behind
    with safe_open(str(tmp_path / "base.safetensors"), "pt") as f:
        assert "head.weight" not in f.keys()              # the tied copy is not stored twice
    loaded = run.load_model(tmp_path / "base.safetensors").eval()
    assert loaded.cfg == m.cfg and loaded.head.weight is loaded.tok_emb.weight
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in m.state_dict().items())
    assert torch.equal(loaded(batch)[0], m(batch)[0])
    assert loaded.generate(batch, 8) == m.generate(batch, 8)


def test_a_config_field_this_code_does_not_know_is_named(tmp_path):
    """A file of another version (e.g. one with the vision transformer blocks' fields) is refused by name,
    not with a TypeError from the dataclass."""
    path = tmp_path / "m.safetensors"
    run.save_model(tiny_model(), path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    config = {**json.loads(meta["config"]), "vision_layers": 1}
    save_file(load_file(str(path)), str(path), metadata={**meta, "config": json.dumps(config)})
    with pytest.raises(run.CheckpointError, match="fields this code does not know .vision_layers."):
        run.load_model(path)


def test_load_names_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "m.safetensors"
    run.save_model(tiny_model(), path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    saved = load_file(str(path))
    state = {**saved, "extra.weight": torch.zeros(2)}
    del state["ln_dec.bias"]
    save_file(state, str(path), metadata=meta)
    with pytest.raises(run.CheckpointError, match=r"missing keys \['ln_dec.bias'\]; unexpected keys \['extra.weight'\]"):
        run.load_model(path)
    save_file(state, str(path), metadata={**meta, "format": "something"})
    with pytest.raises(run.CheckpointError, match="not an rmpl-mini/model file"):
        run.load_model(path)
    # a file from before the grounding head: the module named once, not each of its tensors
    n = sum(k.startswith("grounding.") for k in saved)
    save_file({k: v for k, v in saved.items() if not k.startswith("grounding.")}, str(path), metadata=meta)
    with pytest.raises(run.CheckpointError, match=rf"missing keys \['grounding.\* \(the whole module, {n} keys\)'\];"):
        run.load_model(path)


def test_adapter_round_trip_and_base_check(tmp_path):
    batch = make_batch()
    run.save_model(tiny_model(), tmp_path / "base.safetensors")
    m = lora_model()  # same seed: the same base weights
    run.save_adapter(m, tmp_path / "ad.safetensors", base_ref="base.safetensors")
    with safe_open(str(tmp_path / "ad.safetensors"), "pt") as f:
        assert all("lora_" in k for k in f.keys()) and f.metadata()["base_ref"] == "base.safetensors"
    loaded = run.load_adapter(run.load_model(tmp_path / "base.safetensors").eval(), tmp_path / "ad.safetensors")
    assert lora.lora_layers(loaded).keys() == lora.lora_layers(m).keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in m.state_dict().items())
    assert torch.equal(loaded(batch)[0], m(batch)[0])
    with pytest.raises(run.CheckpointError, match=r"trained on another base \(base.safetensors, weights hash"):
        run.load_adapter(tiny_model(seed=5), tmp_path / "ad.safetensors")
    assert lora.lora_layers(run.load_adapter(tiny_model(seed=5), tmp_path / "ad.safetensors", check_base=False))


def test_a_bad_adapter_leaves_the_model_as_it_was(tmp_path):
    run.save_adapter(lora_model(), tmp_path / "ad.safetensors", base_ref="base")
    with safe_open(str(tmp_path / "ad.safetensors"), "pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    state.pop(sorted(state)[0])
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=meta)
    model, batch = tiny_model().eval(), make_batch()
    before = model(batch)[0]
    with pytest.raises(run.CheckpointError, match="missing keys"):
        run.load_adapter(model, tmp_path / "bad.safetensors")
    assert not lora.lora_layers(model) and all(type(m) is not lora.LoRALinear for m in model.modules())
    assert torch.equal(model(batch)[0], before)
    assert lora.lora_layers(run.load_adapter(model, tmp_path / "ad.safetensors"))  # and it can take a good one


def test_save_refuses_unmerged_lora_and_saves_merged(tmp_path):
    m, batch = lora_model(), make_batch()
    with pytest.raises(run.CheckpointError, match="unmerged LoRA"):
        run.save_model(m, tmp_path / "x.safetensors")
    expected = m(batch)[0]
    lora.merge_lora(m)
    run.save_model(m, tmp_path / "x.safetensors")
    plain = run.load_model(tmp_path / "x.safetensors").eval()
    assert not lora.lora_layers(plain)
    torch.testing.assert_close(plain(batch)[0], expected, atol=1e-5, rtol=0)
    with pytest.raises(run.CheckpointError, match="unmerge_lora"):
        run.save_adapter(m, tmp_path / "a.safetensors", base_ref="x")


# ----------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def overfit():
    """A tiny model trained 300 steps on one batch of 4 random examples (3 with images): ~5 s on 2 cores."""
    torch.manual_seed(0)
    m = M.Seq2Seq(tiny_config(d_model=64, n_heads=4, enc_layers=2, dec_layers=2)).train()
    batch = make_batch(has_image=(True, True, False, True), prompt_lens=(6, 4, 8, 5), target_lens=(8, 5, 3, 6))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(300):
        loss = m(batch)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval(), batch, loss.item()


def test_overfits_one_batch(overfit):
    m, batch, loss = overfit
    assert loss < 0.05
    wanted = [row[:row.tolist().index(EOS)].tolist() for row in batch["target_ids"]]  # 7, 4, 2, 5 tokens
    assert m.generate(batch, 12) == wanted
    assert m.generate(batch, 12, use_cache=False) == wanted


def test_frozen_batchnorm_keeps_its_statistics_under_lora():
    """With LoRA on a frozen base the tower's BatchNorm statistics stay as they were: they belong to the
    base weights (an adapter records their hash) and are not saved with the adapter."""
    m = tiny_model().train()
    lora.mark_only_lora_as_trainable(lora.add_lora(m, r=2))
    bns = [b for b in m.vision.modules() if isinstance(b, nn.BatchNorm2d)]
    before = run.weights_hash(m), [b.running_mean.clone() for b in bns]
    m(make_batch())
    assert run.weights_hash(m) == before[0] and all(torch.equal(a, b.running_mean) for a, b in zip(before[1], bns))
    trainable = tiny_model().train()
    trainable(make_batch())
    assert trainable.vision.stem[0][1].num_batches_tracked == 1  # not frozen: statistics as usual
