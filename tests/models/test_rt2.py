"""RT-2-style model: action vocabulary, constrained decoding, co-training, save/load, HF backbone."""

import collections
import copy
import itertools

import numpy as np
import pytest
import torch

from vlabench.models.blocks.action_tokenizer import ActionTokenizer
from vlabench.models.rt2 import SPEC, RT2Config, RT2Model, RT2Policy, VQASource, action_prompt
from vlabench.models.rt2.vocab import N_BINS, RT2Vocab
from vlabench.data.vqa import generate_vqa, write_npz
from vlabench.eval.vqa import VQAEvalConfig
from vlabench.eval.vqa import run as vqa_run

STATS = {
    "action": {"q01": [-0.5] * 6 + [-1.0], "q99": [0.5] * 6 + [1.0], "min": [-1.0] * 7, "max": [1.0] * 7,
               "mean": [0.0] * 7, "std": [0.3] * 7},
    "state": {k: [0.0] * 8 for k in ("q01", "q99", "min", "max", "mean", "std")},
}
IMG = 32


def tiny_cfg(**kw) -> RT2Config:
    base = dict(preset="small", text_model_path="tiny", vision_tower="tiny", image_size=IMG, crop_scale=1.0)
    base.update(kw)
    return RT2Config(**base)


def make_batch(B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randint(0, 256, (B, 1, 3, IMG, IMG), dtype=torch.uint8, generator=g),
            "action": torch.rand(B, 1, 7, generator=g) * 2 - 1,
            "instruction": ["pick up the red block", "push the banana to the left side of the table"][:B]}


def write_vqa(path, n=2, seed=0):
    rng = np.random.default_rng(seed)
    qa = [("what color is the banana?", "yellow"), ("how many blocks are there?", "2"),
          ("is the apple left of the mug?", "no")][:n]
    return write_npz(path, {"images": rng.integers(0, 256, (n, IMG, IMG, 3), dtype=np.uint8),
                            "image_index": np.arange(n), "question": np.array([q for q, _ in qa]),
                            "answer": np.array([a for _, a in qa]), "kind": np.array(["x"] * n),
                            "scene_seed": np.arange(n) + 100})


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from vlabench.models.blocks.text_encoder import default_minilm_path

    return AutoTokenizer.from_pretrained(default_minilm_path())


def text_corpus() -> list[str]:
    """Instructions from the benchmark templates, VQA questions/answers, numbers and punctuation."""
    from vlabench.language import TEMPLATES
    from vlabench.sim.library import CATALOG

    names = list(CATALOG)[::3]
    texts = []
    for phr in TEMPLATES.values():
        for tpl in itertools.chain(phr["train"], phr["heldout"]):
            for a, b in zip(names, names[1:] + names[:1]):
                # every other slot (container, base, ref, ...) gets the second object's name
                t = tpl.format_map(collections.defaultdict(lambda: b, obj=a, region="left side", symbol="star"))
                texts += [t, action_prompt(t)]
    rng = np.random.default_rng(0)
    for _ in range(40):
        objs = [{"name": n, "color": CATALOG[n].color, "size": CATALOG[n].size, "kind": CATALOG[n].kind,
                 "categories": list(CATALOG[n].categories), "position": [0.5, float(rng.uniform(-0.3, 0.3)), 0],
                 "symbol": None} for n in rng.choice(list(CATALOG), 4, replace=False)]
        objs.append({"name": "pad", "color": "white", "size": "large", "kind": "pad", "categories": [],
                     "position": [0.6, 0.0, 0.0], "symbol": str(rng.integers(0, 10))})
        texts += [t for qa in generate_vqa({"objects": objs}, rng) for t in qa]
    # A literal "[unused0]" is split by BERT's basic tokenizer, so even it cannot produce an action id.
    # (In "add" mode the literal string "<act_000>" does map to its token, like any added token.)
    texts += [str(i) for i in range(100)] + ["[unused0] ?!.,;:'\"()[]{}-_/"]
    return texts


# -- vocabulary --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["reuse", "add"])
def test_action_ids_disjoint_from_text(minilm_tokenizer, mode):
    tok = copy.deepcopy(minilm_tokenizer)
    vocab = RT2Vocab.build(tok, mode)
    ids = vocab.action_ids
    assert len(set(ids)) == N_BINS and not set(ids) & set(tok.all_special_ids)
    if mode == "reuse":
        assert tok.convert_ids_to_tokens(ids[:2]) == ["[unused0]", "[unused1]"] and max(ids) < tok.vocab_size
    corpus = text_corpus()
    assert len(corpus) > 500
    assert vocab.collisions(corpus) == set()


def test_vocab_round_trip_and_arithmetic(minilm_tokenizer):
    tok = copy.deepcopy(minilm_tokenizer)
    vocab = RT2Vocab.build(tok, "reuse")
    assert vocab.describe()["tokenizer.vocab_size"] == vocab.describe()["len(tokenizer)"] == vocab.min_rows == 30522
    bins = torch.arange(N_BINS).repeat(7, 1).T[:, :7]  # every bin in every dimension
    ids = vocab.bins_to_ids(bins)
    assert torch.equal(vocab.ids_to_bins(ids), bins)
    # token-level round trip through the tokenizer's own id <-> token table
    assert tok.convert_tokens_to_ids(tok.convert_ids_to_tokens(ids[:, 0].tolist())) == ids[:, 0].tolist()
    with pytest.raises(ValueError, match="not action ids"):
        vocab.ids_to_bins(torch.tensor([[vocab.eos_id]]))
    # env action -> bins -> ids (+EOS) -> bins -> action is exact at bin centers
    at = ActionTokenizer(STATS)
    actions = torch.rand(16, 7) * 2 - 1
    tgt = vocab.action_target(at.encode(actions))
    assert tgt.shape == (16, 8) and (tgt[:, -1] == vocab.eos_id).all()
    back = at.decode(vocab.ids_to_bins(tgt[:, :7]))
    assert np.allclose(back, at.decode(at.encode(actions)))
    # "add": vocab_size excludes added tokens, len(tokenizer) includes them, rows are padded to 64
    tok2 = copy.deepcopy(minilm_tokenizer)
    add = RT2Vocab.build(tok2, "add")
    assert tok2.vocab_size == 30522 and len(tok2) == 30522 + 256 == add.min_rows
    assert add.action_ids == list(range(30522, 30778))
    assert RT2Vocab.build(tok2, "add").action_ids == add.action_ids  # idempotent on a reloaded tokenizer
    assert RT2Model(tiny_cfg(token_mode="add"), STATS).backbone.rows == 30784


def test_tail_mode_for_non_wordpiece(tmp_path):
    from transformers import AutoProcessor

    from vlabench.models.rt2.hf import build_tiny_paligemma

    # A corpus rich enough for > 256 BPE merges, so the base vocabulary has a tail to take.
    path = build_tiny_paligemma(tmp_path / "pg", corpus=text_corpus(), vocab_size=600)
    tok = AutoProcessor.from_pretrained(path).tokenizer
    vocab = RT2Vocab.build(tok, "reuse")
    special = set(tok.all_special_ids) | set(tok.get_added_vocab().values())
    assert not set(vocab.action_ids) & special
    assert max(vocab.action_ids) < tok.vocab_size and len(vocab.action_ids) == N_BINS
    top = [i for i in range(tok.vocab_size) if i not in special][-N_BINS:]
    assert vocab.action_ids == top
    skipped = RT2Vocab.build(tok, "reuse", skip_tail=10).action_ids
    assert max(skipped) < tok.vocab_size - 10 and skipped == [i for i in range(tok.vocab_size - 10) if i not in special][-N_BINS:]


# -- model -------------------------------------------------------------------------------------
def test_config_validation(tmp_path):
    assert SPEC.name == "rt2" and SPEC.config_cls is RT2Config and SPEC.policy_cls is RT2Policy
    assert RT2Config(preset="small").resolved().image_size == 128 and RT2Config().resolved().decoder_layers == 6
    for bad, match in [(dict(preset="huge"), "known: small, base"), (dict(backbone="gpt"), "valid: minilm-pali, hf"),
                       (dict(token_mode="steal"), "valid: reuse, add"), (dict(vision_tower="vit"), "valid: efficientnet"),
                       (dict(cotrain_ratio=0.5), "needs vqa_data"), (dict(vision_tower="open_clip"), "open_clip_weights"),
                       (dict(backbone="hf"), "needs hf_path")]:
        with pytest.raises(ValueError, match=match):
            RT2Model(tiny_cfg(**bad), STATS)


@pytest.mark.parametrize("parallel", [False, True])
def test_constrained_decoding_always_valid(parallel):
    torch.manual_seed(0)
    model = RT2Model(tiny_cfg(parallel_decode=parallel), STATS)
    assert model.data_spec() == {"n_obs": 1, "horizon": 1, "goal_offset": None, "image_keys": ("image",)}
    policy = RT2Policy(model, "cpu")
    policy.reset(3)
    obs = {"image": np.random.default_rng(0).integers(0, 256, (3, IMG, IMG, 3), dtype=np.uint8),
           "instruction": ["pick up the apple", "what is two plus one?", ""], "slot": np.arange(3),
           "is_first": np.ones(3, bool), "state": np.zeros((3, 8), np.float32)}
    actions = policy.act(obs)
    assert actions.shape == (3, 7) and actions.dtype == np.float32 and np.isfinite(actions).all()
    bins = model.predict_bins(torch.from_numpy(obs["image"]), obs["instruction"])
    assert bins.shape == (3, 7) and bins.min() >= 0 and bins.max() < N_BINS
    answers = model.answer(obs["image"], ["what color is the banana?"] * 3)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)


def test_cotraining_batch_composition(tmp_path):
    model = RT2Model(tiny_cfg(cotrain_ratio=0.5, vqa_data=str(write_vqa(tmp_path / "v.npz"))), STATS)
    drawn = []
    sample = model._vqa().sample
    model.vqa_source.sample = lambda n: drawn.append(n) or sample(n)
    loss, metrics = model.compute_loss(make_batch(B=2))
    loss.backward()
    assert drawn == [1] and torch.isfinite(loss)
    assert set(metrics) >= {"loss", "action_loss", "vqa_loss", "action_token_acc", "vqa_token_acc"}
    assert metrics["loss"] == pytest.approx(metrics["action_loss"] + 0.5 * metrics["vqa_loss"], rel=1e-5)
    model.eval()  # validation: action loss only, comparable with robot-only runs
    assert set(model.compute_loss(make_batch(B=2))[1]) == {"loss", "action_loss", "action_token_acc"}
    robot_only = RT2Model(tiny_cfg(), STATS)
    assert "vqa_loss" not in robot_only.compute_loss(make_batch(B=2))[1]


def test_save_load_round_trip(tmp_path):
    from vlabench.train.checkpoint import save_checkpoint

    torch.manual_seed(1)
    model = RT2Model(tiny_cfg(), STATS)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # move away from init so a failed load would show
    save_checkpoint(tmp_path / "ckpt", model, "rt2", model.cfg, {}, STATS, {"manifest_hash": "x"})
    torch.manual_seed(2)
    policy = RT2Policy.from_checkpoint(tmp_path / "ckpt", "cpu")
    obs = {"image": make_batch(B=2)["image"][:, 0].permute(0, 2, 3, 1).numpy(),
           "instruction": make_batch(B=2)["instruction"]}
    model.eval()
    assert np.array_equal(policy.act(obs), RT2Policy(model, "cpu").act(obs))
    for k, v in model.state_dict().items():
        assert torch.equal(v, policy.model.state_dict()[k]), k


def _overfit(model, vqa_path, steps, lr):
    """Train on one fixed action batch + both VQA samples until greedy decoding reproduces all of them."""
    src = VQASource.from_file(vqa_path)
    model._vqa().sample = lambda n: (src.images, src.questions, src.answers)  # every sample, every step
    batch = make_batch(B=2)
    target = model.action_tokenizer.encode(batch["action"][:, 0])

    def solved() -> bool:
        model.eval()
        ok = torch.equal(model.predict_bins(batch["image"][:, 0], batch["instruction"]), target)
        ok = ok and model.answer(src.images, src.questions) == src.answers
        model.train()
        return ok

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        loss, m = model.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9 and m["action_token_acc"] == 1.0 and m["vqa_token_acc"] == 1.0 and solved():
            return step, m
    raise AssertionError(f"no overfit in {steps} steps: {m}")


def test_freeze_vision_trains_everything_but_the_tower():
    torch.manual_seed(0)
    model = RT2Model(tiny_cfg(freeze_vision=True), STATS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss, _ = model.compute_loss(make_batch())
    loss.backward()
    opt.step()
    after = model.state_dict()
    vision = [k for k in after if k.startswith("backbone.vision.")]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    assert not torch.equal(before["backbone.projector.0.weight"], after["backbone.projector.0.weight"])
    with pytest.raises(ValueError, match="freeze_vision applies to backbone='minilm-pali' only"):
        RT2Config(backbone="hf", hf_path="x", freeze_vision=True).resolved()


def test_overfit_actions_and_vqa(tmp_path):
    torch.manual_seed(0)
    model = RT2Model(tiny_cfg(cotrain_ratio=1.0, vqa_data=str(write_vqa(tmp_path / "v.npz"))), STATS)
    _overfit(model, tmp_path / "v.npz", 300, lr=5e-3)


def test_vqa_eval_run(tmp_path):
    from vlabench.train.checkpoint import save_checkpoint

    train = write_vqa(tmp_path / "train.npz", n=2)
    model = RT2Model(tiny_cfg(cotrain_ratio=0.5, vqa_data=str(train)), STATS)
    save_checkpoint(tmp_path / "ckpt", model, "rt2", model.cfg, {}, STATS, {})
    held_out = write_vqa(tmp_path / "eval.npz", n=3, seed=1)
    with np.load(held_out) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["scene_seed"] = arrays["scene_seed"] + 1000  # scenes the VQA training data never used
    write_npz(held_out, arrays)
    res = vqa_run(VQAEvalConfig(checkpoint=str(tmp_path / "ckpt"), data=str(held_out), out=str(tmp_path / "r.json")))
    assert res["n"] == 3 and 0.0 <= res["accuracy"] <= 1.0 and (tmp_path / "r.json").is_file()
    assert set(res["per_kind"]) == {"x"}
    # Baseline: the training data's most common answer of kind "x" ("yellow"/"2" tie: the first) scores 1 of 3.
    assert res["majority_baseline"]["correct"] == 1 and res["majority_baseline"]["n"] == 3
    with pytest.raises(ValueError, match="disjoint"):  # scoring on the training scenes is refused
        vqa_run(VQAEvalConfig(checkpoint=str(tmp_path / "ckpt"), data=str(train)))
    with pytest.raises(FileNotFoundError, match="baseline data"):  # a named baseline file must exist
        vqa_run(VQAEvalConfig(checkpoint=str(tmp_path / "ckpt"), data=str(held_out), baseline_data=str(tmp_path / "x.npz")))


# -- Hugging Face backbone ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    from vlabench.models.rt2.hf import build_tiny_paligemma

    corpus = [action_prompt("pick up the red block"), "what color is the banana? yellow", "how many blocks are there? 2"]
    return str(build_tiny_paligemma(tmp_path_factory.mktemp("hf") / "tiny-paligemma", corpus=corpus))


@pytest.mark.parametrize("kw", [dict(), dict(parallel_decode=True), dict(lora_rank=4)])
def test_hf_backbone_loss_act_answer(tiny_hf, tmp_path, kw):
    torch.manual_seed(0)
    cfg = RT2Config(backbone="hf", hf_path=tiny_hf, token_mode="add", crop_scale=1.0, cotrain_ratio=0.5,
                    vqa_data=str(write_vqa(tmp_path / "v.npz")), **kw)
    model = RT2Model(cfg, STATS)
    tok = model.vocab.tokenizer
    assert model.backbone.rows >= len(tok) >= tok.vocab_size + N_BINS  # added tokens are not in vocab_size
    loss, metrics = model.compute_loss(make_batch(B=2))
    loss.backward()
    assert torch.isfinite(loss) and "vqa_loss" in metrics
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    if kw.get("lora_rank"):  # adapters and the action/EOS embedding rows learn, the base stays frozen
        assert any("lora_" in n for n in grads) and any("trainable_tokens" in n for n in grads)
        assert not any("lora_" not in n and "trainable_tokens" not in n for n in grads)
    else:
        emb = model.backbone.model.get_input_embeddings().weight.grad
        assert emb[model.vocab.action_ids].abs().sum() > 0
    actions = RT2Policy(model, "cpu").act({"image": make_batch(B=2)["image"][:, 0].permute(0, 2, 3, 1).numpy(),
                                           "instruction": ["pick up the red block", "lift the apple"]})
    assert actions.shape == (2, 7) and actions.dtype == np.float32
    assert len(model.answer(make_batch(B=2)["image"][:, 0], ["what color is the banana?"] * 2)) == 2


def test_hf_backbone_overfits_actions_and_vqa(tiny_hf, tmp_path):
    torch.manual_seed(0)
    model = RT2Model(RT2Config(backbone="hf", hf_path=tiny_hf, token_mode="add", crop_scale=1.0, cotrain_ratio=1.0,
                               vqa_data=str(write_vqa(tmp_path / "v.npz"))), STATS)
    _overfit(model, tmp_path / "v.npz", 300, lr=1e-2)


# -- packaged weights ----------------------------------------------------------------------------
@pytest.mark.pretrained
def test_packaged_minilm_and_lite0_build():
    torch.manual_seed(0)
    model = RT2Model(RT2Config(preset="small", decoder_layers=1), STATS)
    bb = model.backbone
    # the decoder is warm-started from MiniLM's first layer (self-attention), cross-attention is new
    enc0, dec0 = bb.encoder.encoder.layer[0], bb.decoder.encoder.layer[0]
    assert torch.equal(enc0.attention.self.query.weight, dec0.attention.self.query.weight)
    assert hasattr(dec0, "crossattention") and bb.decoder.embeddings.word_embeddings is None
    # EfficientNet-Lite0 tower: 16 tokens at 128 px, BatchNorm statistics stay frozen in train mode
    model.train()
    bns = [m for m in bb.vision.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    loss, _ = model.compute_loss({"image": torch.randint(0, 256, (2, 1, 3, 128, 128), dtype=torch.uint8),
                                  "action": torch.zeros(2, 1, 7), "instruction": ["pick up the apple"] * 2})
    assert torch.isfinite(loss)
    model.eval()
    assert model.predict_bins(torch.zeros(1, 3, 128, 128, dtype=torch.uint8), ["lift the apple"]).shape == (1, 7)
