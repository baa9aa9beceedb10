import numpy as np
import pytest
import torch
from PIL import Image

from hsl_demo.backbone import save_backbone
from hsl_demo.errors import HslDemoError
from hsl_demo.hub import load_backbone


def test_text_embeddings_are_unit_vectors_with_token_features(tiny_backbone):
    feats = tiny_backbone.text_features(["red striped t-shirt", "cap"])
    assert feats.embeds.shape == (2, 128)
    assert torch.allclose(feats.embeds.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert feats.tokens.shape == (2, tiny_backbone.context_length, 128)
    # [start] red striped t - shirt [end] vs [start] cap [end]
    assert feats.mask.sum(1).tolist() == [7, 3]
    # the global embedding is the (normalised) token feature at the end-of-text position
    end = feats.mask[0].nonzero().max()
    assert torch.allclose(torch.nn.functional.normalize(feats.tokens[0, end], dim=-1), feats.embeds[0], atol=1e-5)


def test_global_embeddings_match_open_clip(tiny_backbone):
    ids = tiny_backbone.tokenize(["green dotted scarf"])
    ref = tiny_backbone.model.encode_text(ids, normalize=True).detach().numpy()
    assert np.allclose(tiny_backbone.encode_text(["green dotted scarf"]), ref, atol=1e-5)
    image = Image.new("RGB", (120, 90), (200, 30, 30))
    ref_img = tiny_backbone.model.encode_image(tiny_backbone.images_to_tensor([image]), normalize=True)
    assert np.allclose(tiny_backbone.encode_images([image]), ref_img.detach().numpy(), atol=1e-5)


def test_text_longer_than_the_context_is_truncated_not_an_error(tiny_backbone):
    long = "red striped t-shirt " * 50
    emb = tiny_backbone.encode_text([long])
    assert emb.shape == (1, 128) and np.isfinite(emb).all()
    # everything past the context is cut, so two texts differing only there embed the same
    assert np.allclose(emb, tiny_backbone.encode_text([long + " blue dotted"]), atol=1e-6)


def test_image_features_give_a_patch_grid(tiny_backbone):
    feats = tiny_backbone.image_features([Image.new("RGB", (80, 80)), Image.new("RGB", (300, 200), "white")])
    assert feats.embeds.shape == (2, 128)
    assert feats.grid == (8, 8) and feats.tokens.shape == (2, 64, 128)


def test_vit_b_32_architecture_loads_without_pretrained_weights(vit_b32_random, caplog):
    load_backbone("hsl-demo-tiny", device="cpu")  # any architecture without a tag: said once, at load
    assert "hsl-demo-tiny: no pretrained tag given, the weights are random" in caplog.text
    bb = vit_b32_random
    assert bb.embed_dim == 512 and bb.context_length == 77
    feats = bb.image_features([Image.new("RGB", (224, 224), "blue")])
    assert feats.grid == (7, 7) and feats.tokens.shape == (1, 49, 512)
    text = bb.text_features(["a photo of a red dress"])
    assert text.tokens.shape == (1, 77, 512) and text.mask.sum() == 8


def test_saved_backbone_reloads_with_the_same_scores(tiny_backbone, tmp_path):
    model_cfg = {"embed_dim": 128, "vision_cfg": {"image_size": 80, "layers": 3, "width": 128, "patch_size": 10,
                 "head_width": 32}, "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 128,
                 "heads": 4, "layers": 3}}
    save_backbone(tiny_backbone.model, model_cfg, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["open_clip_config.json",
                                                                  "open_clip_model.safetensors"]
    loaded = load_backbone(str(tmp_path / "m"), device="cpu")
    texts = ["red striped t-shirt", "white sneaker"]
    # weights are stored as float16, so scores agree to float16 precision
    assert np.allclose(loaded.encode_text(texts), tiny_backbone.encode_text(texts), atol=2e-2)
    again = tmp_path / "again"
    save_backbone(loaded.model, model_cfg, again)
    assert np.array_equal(load_backbone(str(again), device="cpu").encode_text(texts), loaded.encode_text(texts))


def test_only_safetensors_are_loaded(tmp_path, tiny_backbone):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text('{"model_cfg": {}}')
    torch.save(tiny_backbone.model.state_dict(), folder / "open_clip_pytorch_model.bin")
    with pytest.raises(HslDemoError, match="only safetensors"):
        load_backbone(str(folder))


def test_bad_model_specs_are_clear_errors(tmp_path):
    with pytest.raises(HslDemoError, match="no such folder"):
        load_backbone(str(tmp_path / "nope" / "deeper"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HslDemoError, match="not a backbone folder"):
        load_backbone(str(empty))
