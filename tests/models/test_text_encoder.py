import pytest
import torch

from vlabench.models.blocks.text_encoder import SentenceEncoder, get_sentence_encoder


def test_hash_encoder_is_deterministic_normalized_and_cached():
    a, b = SentenceEncoder("hash"), SentenceEncoder("hash")
    ea = a.embed(["pick up the apple", "stack the blocks", "pick up the apple"])
    eb = b.embed(["pick up the apple", "stack the blocks"])
    assert ea.shape == (3, 384) and a.dim == 384
    assert torch.equal(ea[:2], eb) and torch.equal(ea[0], ea[2])
    assert torch.allclose(ea.norm(dim=-1), torch.ones(3))
    assert not torch.allclose(ea[0], ea[1])
    assert SentenceEncoder("hash:16").embed(["x"]).shape == (1, 16)
    assert get_sentence_encoder("hash") is get_sentence_encoder("hash", "cpu")
    with pytest.raises(ValueError, match="hash:<dim>"):
        SentenceEncoder("hash:abc")


def test_hash_token_states_and_autograd_use():
    enc = SentenceEncoder("hash:8")
    states, mask = enc.token_states(["a b c", "d"], max_len=4)
    assert states.shape == (2, 4, 8) and mask.tolist() == [[True, True, True, False], [True, False, False, False]]
    # Embeddings feed trainable layers: they must not be inference-mode tensors.
    lin = torch.nn.Linear(8, 2)
    lin(enc.embed(["a", "b"])).sum().backward()
    assert lin.weight.grad is not None


@pytest.mark.pretrained
def test_packaged_minilm_has_semantic_transfer():
    enc = get_sentence_encoder(None, "cpu")
    assert enc.dim == 384
    e = enc.embed(["pick up the extinct animal", "pick up the dinosaur", "pick up the apple"])
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    cos_dino, cos_apple = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert cos_dino > cos_apple
    assert cos_dino == pytest.approx(0.61, abs=0.03) and cos_apple == pytest.approx(0.30, abs=0.03)
    states, mask = enc.token_states(["pick up the dinosaur", "go"], max_len=12)
    assert states.shape == (2, 12, 384) and mask.shape == (2, 12)
    assert mask[0].sum() == 6 and mask[1].sum() == 3  # [CLS] ... [SEP]
    lin = torch.nn.Linear(384, 1)
    lin(enc.embed(["pick up the apple"])).sum().backward()
