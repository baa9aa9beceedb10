"""The backbone families product teams pick, shrunk so each builds in a fraction of a second:
each image tower gives a region grid (CoCa says it has none), its pooled embedding is open_clip's
own, and text masks follow the tokenizer's pad id."""

import open_clip
import pytest
import torch
from open_clip.coca_model import CoCa
from open_clip.model import CLIP, CustomTextCLIP
from PIL import Image

from hsl_demo.backbone import Backbone, _token_mask

TEXT = {"layers": 1, "width": 64, "heads": 1, "vocab_size": 49408, "context_length": 77}
# family: (open_clip config, overrides that shrink it, the grid it gives at that size)
FAMILIES = {
    "RN50": ("RN50", {"vision_cfg": {"layers": [1, 1, 1, 1], "width": 16, "image_size": 64}}, (2, 2)),
    "convnext_base_w": ("convnext_base_w", {"vision_cfg": {"timm_model_name": "convnext_atto", "image_size": 64}},
                        (2, 2)),
    "MobileCLIP-S2": ("MobileCLIP-S2", {"vision_cfg": {"timm_model_name": "fastvit_t8", "image_size": 64}}, (2, 2)),
    "EVA02-B-16": ("EVA02-B-16", {"vision_cfg": {"timm_model_name": "eva02_tiny_patch14_224"}}, (16, 16)),
    "ViT-B-16-SigLIP": ("ViT-B-16-SigLIP", {"vision_cfg": {"timm_model_name": "vit_tiny_patch16_224"}}, (14, 14)),
    "ViT-B-16": ("ViT-B-16", {"vision_cfg": {"layers": 1, "width": 64, "image_size": 64}}, (4, 4)),
    "coca_ViT-B-32": ("coca_ViT-B-32", {"vision_cfg": {"layers": 1, "width": 64, "image_size": 64, "patch_size": 16},
                                        "multimodal_cfg": {"layers": 1, "width": 64, "heads": 1}}, (1, 1)),
}


def _shrunk(name: str, over: dict) -> Backbone:
    cfg = open_clip.get_model_config(name)
    cfg["embed_dim"] = 32
    cfg["text_cfg"] = {**{k: v for k, v in cfg["text_cfg"].items() if k != "hf_tokenizer_name"}, **TEXT}
    for key, value in over.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    custom = cfg.pop("custom_text", False)
    cls = CoCa if "multimodal_cfg" in cfg else CustomTextCLIP if custom else CLIP
    torch.manual_seed(0)
    model = cls(**cfg)
    size = cfg["vision_cfg"].get("image_size", 224)
    return Backbone(model, open_clip.image_transform(size, is_train=False), open_clip.get_tokenizer("ViT-B-32"),
                    name, torch.device("cpu"))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_tower_gives_its_regions(family):
    name, over, grid = FAMILIES[family]
    backbone = _shrunk(name, over)
    image = Image.new("RGB", (96, 80), (200, 30, 30))
    feats = backbone.image_features([image])
    assert feats.grid == grid
    assert feats.tokens.shape[:2] == (1, grid[0] * grid[1])
    assert feats.tokens.shape[-1] == feats.embeds.shape[-1]  # regions live in the joint space
    assert backbone.has_regions == (grid != (1, 1))
    # the pooled embedding is still open_clip's own
    ref = backbone.model.encode_image(backbone.images_to_tensor([image]), normalize=True)
    assert torch.allclose(feats.embeds, ref, atol=1e-4)


def test_a_cell_token_is_the_projection_the_pooled_output_takes():
    """A uniform photo: every conv cell equals the others, and (ConvNeXt's head being a norm and a
    linear map of the pooled map) the pooled embedding equals a cell's."""
    backbone = _shrunk(*FAMILIES["convnext_base_w"][:2])
    feats = backbone.image_features([Image.new("RGB", (64, 64), (40, 90, 200))])
    cells = torch.nn.functional.normalize(feats.tokens[0], dim=-1)
    assert torch.allclose(cells, cells[:1].expand_as(cells), atol=1e-4)
    assert torch.allclose(cells[0], feats.embeds[0], atol=1e-3)


def test_token_mask_follows_the_pad_id():
    # SigLIP v1 pads with id 1, its end-of-text token: a two-token text keeps 3 positions, not 8
    ids = torch.tensor([[5, 7, 1, 1, 1, 1, 1, 1], [5, 0, 9, 1, 1, 1, 1, 1]])
    assert _token_mask(ids, 1).sum(1).tolist() == [2, 3]
    assert _token_mask(torch.tensor([[49406, 3, 49407, 0, 0]]), 0).sum().item() == 3


def test_pad_id_is_read_from_the_tokenizer(tiny_backbone):
    assert tiny_backbone.pad_id == 0
    def pad_with_one(texts):
        ids = tiny_backbone.tokenizer(texts)
        return torch.where(ids == 0, 1, ids)

    shifted = Backbone(tiny_backbone.model, tiny_backbone.preprocess, pad_with_one, "pad-1", torch.device("cpu"))
    assert shifted.pad_id == 1
    # [start] red cap [end] either way, not the 77 positions a mask of ids != 0 would keep
    assert shifted.text_features(["red cap"]).mask.sum().item() == 4


@pytest.mark.slow
def test_a_tower_without_regions_draws_no_marks_and_ranks_without_object_terms(small_images, tmp_path):
    """CoCa has no grid: Describe marks nothing, ranks as the image-granularity variant, and the
    footer of the app says why."""
    from hsl_demo.catalog import Catalog
    from hsl_demo.indexing import build_catalog
    from hsl_demo.models.hsl import HSLHead
    from hsl_demo.search import Retriever
    from hsl_demo.ui import AppModels, footer

    coca = _shrunk(*FAMILIES["coca_ViT-B-32"][:2])
    torch.manual_seed(1)
    head = HSLHead(embed_dim=coca.embed_dim)
    build_catalog(small_images / "images", tmp_path / "cat", coca, progress=False, heads={"hsl": head})
    retriever = Retriever(coca, Catalog.open(tmp_path / "cat"), hsl=head)
    full = retriever.search_text("red striped t-shirt", k=5)
    assert all(r.marks == [] for r in full)
    image_only = retriever.search_text("red striped t-shirt", k=5, variant="image")
    assert [r.id for r in full] == [r.id for r in image_only]
    assert [r.score for r in full] == pytest.approx([r.score for r in image_only])
    assert "gives no regions" in footer(AppModels.of(retriever))


@pytest.mark.slow
def test_a_pickled_only_folder_names_convert_weights_which_ends_in_safetensors(tiny_backbone, tmp_path):
    from conftest import assert_clean_error, run_cli

    from hsl_demo.backbone import model_config, save_backbone
    from hsl_demo.hub import load_backbone

    pickled = tmp_path / "old-repo"
    save_backbone(tiny_backbone.model, model_config("hsl-demo-tiny"), pickled)
    (pickled / "open_clip_model.safetensors").unlink()
    torch.save(tiny_backbone.model.state_dict(), pickled / "open_clip_pytorch_model.bin")
    assert_clean_error(run_cli("search", "--model", str(pickled), "--text", "red cap"),
                       "hsl-demo convert-weights")
    out = tmp_path / "converted"
    proc = run_cli("convert-weights", str(pickled), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors"]
    converted = load_backbone(str(out), device="cpu")
    assert converted.probe() == pytest.approx(tiny_backbone.probe(), abs=2e-3)


def test_convert_weights_refuses_a_pickle_holding_code(tmp_path):
    import json

    from conftest import assert_clean_error, run_cli

    from hsl_demo.backbone import model_config

    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_config("hsl-demo-tiny")}))
    torch.save({"x": torch.zeros(1), "f": print}, folder / "open_clip_pytorch_model.bin")
    assert_clean_error(run_cli("convert-weights", str(folder), "--out", str(tmp_path / "o")),
                       "not readable as plain tensors")
    assert not (tmp_path / "o").exists()


def test_a_siglip_tokenizer_without_its_packages_is_a_one_line_error(tmp_path):
    """SigLIP-family tokenizers need transformers (the `siglip` extra): without it, loading such
    a model folder names the extra in one line."""
    import importlib.util

    from conftest import assert_clean_error, run_cli

    from hsl_demo.backbone import model_config, save_backbone

    if importlib.util.find_spec("transformers") is not None:
        pytest.skip("transformers is installed: the message is for installs without it")
    name, over, _ = FAMILIES["ViT-B-16-SigLIP"]
    backbone = _shrunk(name, over)
    cfg = model_config(name)
    cfg["embed_dim"] = 32
    cfg["text_cfg"].update(TEXT)
    cfg["vision_cfg"].update(over["vision_cfg"])  # the shrunk model's config, its HF tokenizer named
    save_backbone(backbone.model, cfg, tmp_path / "siglip")
    assert_clean_error(run_cli("search", "--model", str(tmp_path / "siglip"), "--text", "red cap"),
                       "pip install transformers==5.25.0 sentencepiece==0.2.3")
