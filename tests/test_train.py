import json

import torch

from hsl_demo.backbone import Backbone
from hsl_demo.data.attributes import Attributes
from hsl_demo.train import BackboneTrainConfig, mentions_match, multi_positive_infonce, train_backbone


def test_attribute_sharing_products_are_positives():
    red_striped = Attributes("t-shirt", "red", "striped")
    red_plain = Attributes("t-shirt", "red", "plain")
    assert mentions_match(red_plain, red_striped, (True, False))  # "red t-shirt" fits both
    assert not mentions_match(red_plain, red_striped, (True, True))
    assert mentions_match(red_plain, Attributes("t-shirt", "blue", "dotted"), (False, False))  # "a t-shirt"
    assert not mentions_match(Attributes("cap", "red", "plain"), red_plain, (False, False))


def _grad(logits, positives):
    logits = logits.clone().requires_grad_(True)
    multi_positive_infonce(logits, positives).backward()
    return logits.grad


def test_multi_positive_infonce_does_not_push_positives_apart():
    logits = torch.tensor([[5.0, 5.0, -5.0], [5.0, 5.0, -5.0], [-5.0, -5.0, 5.0]])
    shared = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)  # items 0 and 1 share attributes
    identity = torch.eye(3, dtype=torch.bool)
    # Plain InfoNCE pushes the (0, 1) score down (positive gradient); ours leaves it alone.
    assert _grad(logits, identity)[0, 1] > 0.1
    assert abs(_grad(logits, shared)[0, 1]) < 1e-3
    # with one positive per row it is exactly the symmetric InfoNCE
    plain = torch.nn.functional.cross_entropy(logits, torch.arange(3))
    sym = 0.5 * (plain + torch.nn.functional.cross_entropy(logits.t(), torch.arange(3)))
    assert torch.isclose(multi_positive_infonce(logits, identity), sym)


def test_a_few_training_steps_write_a_loadable_backbone(tmp_path):
    cfg = BackboneTrainConfig(steps=20, batch_size=32, variants=2, limit_combos=40, eval_every=20, warmup=5)
    info = train_backbone(tmp_path / "model", cfg, log=lambda m: None)
    assert info["losses"][-1] < info["losses"][0]
    config = json.loads((tmp_path / "model/open_clip_config.json").read_text())
    assert config["model_cfg"]["embed_dim"] == 128 and config["hsl_demo"]["config"]["steps"] == 20
    assert 0.0 <= config["hsl_demo"]["history"][-1]["R@10"] <= 1.0
    backbone = Backbone.load(str(tmp_path / "model"), device="cpu")
    assert backbone.encode_text(["red cap"]).shape == (1, 128)
