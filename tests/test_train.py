import json

import pytest
import torch

from hsl_demo.data.attributes import Attributes
from hsl_demo.hub import load_backbone
from hsl_demo.training import BackboneTrainConfig, mentions_match, multi_positive_infonce, train_backbone


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


@pytest.mark.slow
def test_a_few_training_steps_write_a_loadable_backbone(tmp_path):
    # the recipe of the next demo model: the phrasing grammar, category-hard negatives, look crops
    cfg = BackboneTrainConfig(steps=20, batch_size=32, variants=2, limit_combos=40, eval_every=20, warmup=5,
                              texts="grammar", hard_negatives=0.5, look_crops=4)
    info = train_backbone(tmp_path / "model", cfg, log=lambda m: None)
    assert info["losses"][-1] < info["losses"][0]
    words = set(json.loads((tmp_path / "model/vocabulary.json").read_text())["words"])
    assert {"crimson", "navy", "tee"} <= words  # the grammar's synonyms are the model's to know
    config = json.loads((tmp_path / "model/open_clip_config.json").read_text())
    assert config["model_cfg"]["embed_dim"] == 128 and config["hsl_demo"]["config"]["steps"] == 20
    assert [h["step"] for h in config["hsl_demo"]["history"]] == [20]  # evaluated every eval_every steps
    backbone = load_backbone(str(tmp_path / "model"), device="cpu")
    assert backbone.encode_text(["red cap"]).shape == (1, 128)


def test_extra_negative_columns_count_in_the_query_direction_only():
    logits = torch.tensor([[4.0, 0.0], [0.0, 4.0]])
    identity = torch.eye(2, dtype=torch.bool)
    square = multi_positive_infonce(logits, identity)
    no_pos = torch.zeros(2, 1, dtype=torch.bool)
    # a far-off negative changes nothing; a close one (a look-alike) raises the loss
    far = multi_positive_infonce(torch.cat([logits, torch.full((2, 1), -30.0)], 1), torch.cat([identity, no_pos], 1))
    near = multi_positive_infonce(torch.cat([logits, torch.full((2, 1), 3.9)], 1), torch.cat([identity, no_pos], 1))
    assert torch.isclose(far, square, atol=1e-6) and torch.isfinite(near) and near > square + 0.2


def test_demo_triplets_bring_look_alike_negatives_into_the_gallery():
    import random

    from hsl_demo.training import DemoTriplets

    attrs = [Attributes(c, col, p) for c in ("t-shirt", "gloves", "cap") for col in ("red", "blue")
             for p in ("plain", "striped") for _ in range(2)]
    batch = DemoTriplets(attrs, ("color+pattern",)).sample(6, random.Random(0))
    assert len(batch.refs) == 6 and len(batch.gallery) == 6 * 4
    for q in range(6):
        target = attrs[batch.gallery[q]]
        assert batch.positives[q, q]  # its own target
        for j, g in enumerate(batch.gallery):
            assert bool(batch.positives[q, j]) == (attrs[g] == target)
        same_look = attrs[batch.gallery[6 + 3 * q]]  # the target's colour and pattern on some product
        assert (same_look.color, same_look.pattern) == (target.color, target.pattern)
        assert batch.gallery[6 + 3 * q + 2] == batch.refs[q]  # the reference is a negative
        assert not batch.positives[q, 6 + 3 * q + 2]
    plain = DemoTriplets(attrs, ("color",), hard_negatives=False).sample(4, random.Random(0))
    assert len(plain.gallery) == 4


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    """The one training loop checkpoints (safetensors + JSON: weights, optimizer, schedule and
    random states) and `resume` continues exactly: killed at step 3 of 4, checkpointed at
    step 2, resumed, it ends with the weights of an uninterrupted run."""
    from safetensors.torch import load_file

    from hsl_demo.training import HSLTrainConfig, train_hsl

    cfg = HSLTrainConfig(steps=4, batch_size=16, variants=1, limit_combos=40, warmup=1, dim=32, checkpoint_every=2,
                         log_every=1)
    straight_info = train_hsl(tmp_path / "straight", "hsl-demo-tiny", cfg, log=lambda m: None)

    def killed_at_step_3(message: str) -> None:
        if "step 3/4" in message:
            raise KeyboardInterrupt

    try:
        train_hsl(tmp_path / "resumed", "hsl-demo-tiny", cfg, log=killed_at_step_3)
    except KeyboardInterrupt:
        pass
    state = tmp_path / "resumed" / ".checkpoint" / "hsl" / "train_state.safetensors"
    from safetensors import safe_open

    with safe_open(str(state), "pt") as f:
        assert json.loads(f.metadata()["state"])["step"] == 2
    from hsl_demo.errors import HslDemoError

    with pytest.raises(HslDemoError, match="is of another run \\(it differs in dim\\)"):
        train_hsl(tmp_path / "resumed", "hsl-demo-tiny", HSLTrainConfig(**{**cfg.__dict__, "dim": 16}),
                  log=lambda m: None, resume=True)
    assert not (tmp_path / "resumed" / "hsl").exists()
    seen = []
    info = train_hsl(tmp_path / "resumed", "hsl-demo-tiny", cfg, log=seen.append, resume=True)
    assert any("resuming at step 3/4" in m for m in seen)
    straight = load_file(tmp_path / "straight" / "hsl" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "hsl" / "model.safetensors")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert info["losses"] == straight_info["losses"]  # the loss history is carried over the restart
    assert not (tmp_path / "resumed" / ".checkpoint").exists()  # removed once the run has finished


def test_category_hard_batches_pair_each_photo_with_another_product_of_its_colour_and_pattern():
    import random

    from hsl_demo.data.demo import all_combinations
    from hsl_demo.training.common import hard_batch, lookalike_index

    attrs = all_combinations()
    idx = hard_batch(attrs, lookalike_index(attrs), 64, random.Random(0), keys=("op",), share=0.5)
    first, hard = [attrs[i] for i in idx[:32]], [attrs[i] for i in idx[32:]]
    assert len(idx) == 64
    for h in hard:  # each hard one shares colour and pattern with a random one of the batch
        assert any((h.color, h.pattern) == (a.color, a.pattern) for a in first)
    assert sum(h.category not in {a.category for a in first if (a.color, a.pattern) == (h.color, h.pattern)}
               for h in hard) >= 16  # mostly another product (the index also holds the photo's own)


@pytest.mark.slow
def test_every_head_trains_on_the_phrasing_grammar(tmp_path):
    """`texts="grammar"` reaches every head trainer: a few steps each give a loadable head,
    and the grammar gives far more sentence shapes than the first templates."""
    import random

    from hsl_demo.data.attributes import Attributes
    from hsl_demo.data.triplets import modify
    from hsl_demo.models import load_head
    from hsl_demo.models.composed import ComposedHead
    from hsl_demo.models.hmrn import HMRNHead
    from hsl_demo.models.hsl import HSLHead
    from hsl_demo.training import (
        ComposedTrainConfig,
        HMRNTrainConfig,
        HSLTrainConfig,
        train_composed,
        train_hmrn,
        train_hsl,
    )
    from hsl_demo.training.common import text_writer

    quiet = lambda m: None  # noqa: E731
    train_hsl(tmp_path, "hsl-demo-tiny", HSLTrainConfig(steps=2, batch_size=16, variants=1, limit_combos=30,
                                                         warmup=1, dim=32, texts="grammar"), log=quiet)
    train_composed(tmp_path, "hsl-demo-tiny", ComposedTrainConfig(stage="domain", steps=2, batch_size=16, variants=1,
                                                                 limit_combos=300, warmup=1, hidden=16,
                                                                 texts="grammar"), log=quiet)
    train_hmrn(tmp_path, "hsl-demo-tiny", HMRNTrainConfig(steps=2, batch_size=8, looks=8, warmup=1, dim=32, sim_dim=8,
                                                           texts="grammar"), log=quiet)
    for name, cls in (("hsl", HSLHead), ("composed", ComposedHead), ("hmrn", HMRNHead)):
        load_head(cls, tmp_path / name)
        assert json.loads((tmp_path / name / "training.json").read_text())["config"]["texts"] == "grammar"
    red_tee = Attributes("t-shirt", "red", "striped")
    region = text_writer("grammar", random.Random(1), region=True)
    templates = text_writer("templates", random.Random(1))
    assert len({region(red_tee, (True, False)) for _ in range(60)}) > 2 * len(
        {templates(red_tee, (True, False)) for _ in range(60)})
    assert modify(red_tee, "color", random.Random(2), grammar=True)[1] != modify(red_tee, "color", random.Random(2))[1]
