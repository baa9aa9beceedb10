"""The composed-query head: untrained baseline, adaptive weights, self-supervised targets."""

import pytest
import torch
import torch.nn.functional as F

from hsl_demo.models import load_head, save_head
from hsl_demo.models.composed import ComposedHead, weight_loss, weight_targets


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_untrained_query_is_the_normalised_equal_weight_sum():
    head = ComposedHead(embed_dim=64, hidden=32).eval()
    image, text = _unit(5, 64, seed=1), _unit(5, 64, seed=2)
    q = head(3.0 * image, text)  # inputs are normalised first
    assert torch.allclose(q.embeds, F.normalize(image + text, dim=-1), atol=1e-6)
    assert torch.equal(q.w_image, torch.full((5,), 0.5)) and torch.equal(q.w_text, torch.full((5,), 0.5))


def test_weights_are_per_query_and_sum_to_one_once_trained():
    head = ComposedHead(embed_dim=32, hidden=16).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        head.weigher[-1].weight.normal_(0.0, 0.5)
    q = head(_unit(8, 32, seed=3), _unit(8, 32, seed=4))
    assert torch.allclose(q.w_image + q.w_text, torch.ones(8))
    assert ((q.w_text > 0) & (q.w_text < 1)).all()
    assert q.w_text.std() > 0  # they differ between queries
    assert torch.allclose(q.embeds.norm(dim=-1), torch.ones(8))


def test_weight_targets_follow_the_better_single_modality():
    target = _unit(2, 16, seed=5)
    other = _unit(2, 16, seed=6)
    # query 0: the text is the target, the image is not; query 1: the other way round
    text = torch.stack([target[0], other[1]])
    image = torch.stack([other[0], target[1]])
    w = weight_targets(image, text, target)
    assert w[0] > 0.95 and w[1] < 0.05
    assert weight_targets(target, target, target).tolist() == pytest.approx([0.5, 0.5])


def test_the_weight_loss_pulls_w_text_towards_its_target():
    head = ComposedHead(embed_dim=16, hidden=16, dropout=0.0)
    image, text = _unit(32, 16, seed=7), _unit(32, 16, seed=8)
    targets = torch.full((32,), 0.9)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(60):
        loss = weight_loss(head(image, text), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert head(image, text).w_text.mean().item() == pytest.approx(0.9, abs=0.05)


def test_composed_head_saves_and_loads_the_hub_way(tmp_path):
    head = ComposedHead(embed_dim=16, hidden=16).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        head.residual[-1].weight.normal_()
    save_head(head, tmp_path / "composed")
    loaded = load_head(ComposedHead, tmp_path / "composed")
    image, text = _unit(3, 16, seed=9), _unit(3, 16, seed=10)
    assert torch.allclose(loaded(image, text).embeds, head(image, text).embeds, atol=1e-6)
