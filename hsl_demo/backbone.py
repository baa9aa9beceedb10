"""The open_clip backbone: normalised global embeddings plus token features.

Any open_clip model works: a model folder (local or on the Hub) in open_clip's own format,
or a built-in architecture name with an optional pretrained tag ("ViT-B-32:laion2b_s34b_b79k").
Token features are the ViT's patch tokens and the text transformer's per-token outputs, both
projected into the joint embedding space, so heads can compare them with either side.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer, VisionTransformer, text_global_pool
from PIL import Image

from .defaults import MODEL_CONFIGS_DIR, REPO_ROOT
from .errors import HslDemoError
from .query import shorten, tokens

log = logging.getLogger(__name__)

PROBE_TEXT = "a photo of a product"
VOCABULARY_FILE = "vocabulary.json"  # a model folder's training words (the demo model has one)


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class TextFeatures:
    embeds: torch.Tensor  # (B, D) L2-normalised global embeddings
    tokens: torch.Tensor  # (B, T, D) projected token features (not normalised)
    mask: torch.Tensor  # (B, T) True where a real token is


@dataclass
class ImageFeatures:
    embeds: torch.Tensor  # (B, D) L2-normalised global embeddings
    tokens: torch.Tensor  # (B, P, D) projected patch tokens (not normalised)
    grid: tuple[int, int]  # patch grid (rows, cols); (1, 1) for towers without patch tokens


class Backbone:
    """A loaded open_clip model in eval mode on one device, with its preprocess and tokenizer."""

    def __init__(self, model: torch.nn.Module, preprocess, tokenizer, model_id: str, device: torch.device):
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.device = device
        self.folder: Path | None = None  # the model folder, where heads may sit in subfolders
        self.vocabulary: frozenset[str] | None = None  # the words it was trained on, when its folder says
        # Half precision only where it is fast and safe: on the GPU.
        self.dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.model.to(device=device, dtype=self.dtype)
        # Views of the towers that also return their tokens, made once: flipping `output_tokens`
        # on the shared model per call would race between threads (the app and the API share it).
        self._visual = _with_tokens(getattr(self.model, "visual", None), VisionTransformer)
        self._text = _with_tokens(getattr(self.model, "text", None), TextTransformer)

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, folder: Path, model_id: str | None = None, device: str | None = None,
                    max_params: int | None = None) -> Backbone:
        config = folder / "open_clip_config.json"
        weights = folder / "open_clip_model.safetensors"
        if not config.is_file():
            raise HslDemoError(f"{folder}: no open_clip_config.json, so this is not a backbone folder")
        if not weights.is_file():
            pickled = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth")]
            hint = (f"; its weights are pickled ({pickled[0]}): convert them once with `hsl-demo convert-weights "
                    f"{model_id or folder} --out NEW_FOLDER`") if pickled else ""
            raise HslDemoError(f"{folder}: no open_clip_model.safetensors (only safetensors weights are loaded){hint}")
        check_config(config, max_params)
        dev = pick_device(device)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
            tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        except ModuleNotFoundError as e:  # a Hugging Face tokenizer (SigLIP family) without its libraries
            raise HslDemoError(f"{folder}: its tokenizer needs the {e.name!r} package: pip install "
                               "transformers==5.25.0 sentencepiece==0.2.3 (the siglip extra)") from None
        except Exception as e:  # a config open_clip does not take, weights that are not safetensors
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise HslDemoError(f"{folder}: could not load the backbone ({reason})") from None
        backbone = cls(model, preprocess, tokenizer, model_id or str(folder), dev)
        _note_regions(backbone)
        backbone.folder = folder
        backbone.vocabulary = _read_vocabulary(folder / VOCABULARY_FILE)
        return backbone

    @classmethod
    def from_name(cls, name: str, tag: str | None = None, device: str | None = None,
                  model_id: str | None = None) -> Backbone:
        """An architecture by name (open_clip's, or this package's `hsl-demo-tiny` /
        `hsl-demo-small`) with the weights of pretrained tag or safetensors file `tag`; without
        one, random weights (useful for tests and for training from scratch)."""
        dev = pick_device(device)
        spec = model_id or (f"{name}:{tag}" if tag else name)
        own = name not in open_clip.list_models()
        if tag is None or own:
            if tag is None:
                log.warning("%s: no pretrained tag given, the weights are random", name)
            cfg = model_config(name)
            model, preprocess = build_random(cfg)
            if tag is not None:
                _load_safetensors_file(model, name, tag)
            tokenizer = _plain_tokenizer(cfg) if own else open_clip.get_tokenizer(name)
        else:
            _check_safetensors_tag(name, tag)
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=tag)
            except RuntimeError as e:
                raise HslDemoError(f"model {spec!r}: {e}") from None
            except Exception as e:  # a .safetensors file that is not one: safetensors' own error type
                raise HslDemoError(f"model {spec!r}: the weights could not be read ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0][:120]})") from None
            tokenizer = open_clip.get_tokenizer(name)
        backbone = cls(model, preprocess, tokenizer, spec, dev)
        _note_regions(backbone)
        return backbone

    # ---- facts ---------------------------------------------------------------------------
    def unknown_words_notice(self, text: str) -> list[str]:
        """A notice naming the words of `text` this model was never trained on (none when all
        are known, or when the model folder does not list its training words)."""
        if self.vocabulary is None:
            return []
        unknown = list(dict.fromkeys(w for w in tokens(text) if w not in self.vocabulary))
        if not unknown:
            return []
        return [f"the model was never trained on {', '.join(repr(shorten(w)) for w in unknown[:5])}"
                f"{' and more' if len(unknown) > 5 else ''}: its results for {'them' if len(unknown) > 1 else 'it'} "
                "may mean little"]

    @property
    def portable_id(self) -> str:
        """The model's name as files that travel (catalog manifests, model cards) record it: a
        Hub id or open_clip name as given, a folder inside this repository relative to it, any
        other folder by its name alone (never a builder's absolute path)."""
        if self.folder is None:
            name, _, tag = self.model_id.partition(":")
            return f"{name}:{Path(tag).name}" if tag and Path(tag).expanduser().exists() else self.model_id
        if not Path(self.model_id).expanduser().exists():
            return self.model_id
        folder = self.folder.resolve()
        root = REPO_ROOT.resolve()
        return folder.relative_to(root).as_posix() if folder.is_relative_to(root) else folder.name

    @functools.cached_property
    def embed_dim(self) -> int:
        return int(self.encode_text(["x"]).shape[-1])

    @functools.cached_property
    def pad_id(self) -> int:
        """The tokenizer's padding id (0 for open_clip's own, 1 for SigLIP v1's): the id that
        fills the last position of an empty text."""
        return int(self.tokenizer([""])[0, -1])

    @property
    def has_regions(self) -> bool:
        """False where the image tower gives no spatial grid (CoCa's attention pooler, unknown
        towers): then an image is its only region."""
        return _region_kind(self.model) is not None

    @property
    def regions_note(self) -> str:
        """What a user of this backbone is told about its regions: nothing, or NO_REGIONS."""
        return "" if self.has_regions else NO_REGIONS

    @property
    def context_length(self) -> int:
        return int(getattr(self.tokenizer, "context_length", 77))

    # ---- encoding ------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.device)

    def images_to_tensor(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([self.preprocess(im) for im in images]).to(self.device, self.dtype)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> np.ndarray:
        """(N, D) float32 unit vectors. Text longer than the context is truncated."""
        return self.text_features(texts).embeds.float().cpu().numpy()

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.image_features(images).embeds.float().cpu().numpy()

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> TextFeatures:
        ids = self.tokenize(texts)
        pooled, tokens = _text_forward(self, ids)
        mask = _token_mask(ids, self.pad_id)
        if tokens is None:
            tokens, mask = pooled[:, None], torch.ones(len(texts), 1, dtype=torch.bool, device=ids.device)
        return TextFeatures(F.normalize(pooled.float(), dim=-1), tokens.float(), mask)

    @torch.no_grad()
    def image_features(self, images: list[Image.Image] | torch.Tensor) -> ImageFeatures:
        x = images if isinstance(images, torch.Tensor) else self.images_to_tensor(images)
        pooled, tokens, grid = _image_forward(self, x)
        return ImageFeatures(F.normalize(pooled.float(), dim=-1), tokens.float(), grid)

    def probe(self) -> list[float]:
        """A fingerprint of the weights: the embedding of a fixed text, rounded.

        Stored in catalog manifests so that opening a catalog with another model is caught,
        while the same weights loaded from another place (or on the GPU) still match.
        """
        return [round(float(v), 4) for v in self.encode_text([PROBE_TEXT])[0]]


def is_architecture(name: str) -> bool:
    """Whether `name` is an architecture: open_clip's, or one of this package's configs."""
    return (MODEL_CONFIGS_DIR / f"{name}.json").is_file() or name in open_clip.list_models()


def model_config(name: str) -> dict:
    """The model config of an architecture (this package's configs first, then open_clip's),
    read without registering anything with open_clip."""
    own = MODEL_CONFIGS_DIR / f"{name}.json"
    cfg = json.loads(own.read_text()) if own.is_file() else open_clip.get_model_config(name)
    if cfg is None:
        raise HslDemoError(f"{name!r}: not an open_clip architecture nor one of {MODEL_CONFIGS_DIR}")
    return copy.deepcopy(cfg)


def model_class(cfg: dict) -> tuple[type, dict]:
    """The class open_clip's factory builds for a model config (open_clip/factory.py,
    create_model), and the config as its constructor takes it."""
    cfg = copy.deepcopy(cfg)
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    if "multimodal_cfg" in cfg:
        return open_clip.CoCa, cfg
    if "timm_model_name" in cfg.get("vision_cfg", {}):
        cfg["vision_cfg"]["timm_model_pretrained"] = False
    return (open_clip.CustomTextCLIP if custom else open_clip.CLIP), cfg


def build_random(cfg: dict) -> tuple[torch.nn.Module, object]:
    """A model of config `cfg` with random weights, and its eval preprocessing (open_clip's
    defaults: the OpenAI mean and std), built without open_clip's registry or its logs."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cls, kwargs = model_class(cfg)
    model = cls(**kwargs).eval()
    size = cfg.get("vision_cfg", {}).get("image_size", 224)
    return model, image_transform_v2(PreprocessCfg(size=size), is_train=False)


def _plain_tokenizer(cfg: dict):
    return open_clip.tokenizer.SimpleTokenizer(context_length=cfg.get("text_cfg", {}).get("context_length", 77))


def _load_safetensors_file(model: torch.nn.Module, name: str, path: str) -> None:
    """The weights of safetensors file `path` into `model` (this package's architectures)."""
    if not path.endswith(".safetensors"):
        raise HslDemoError(f"model {name}:{path}: only safetensors weights are loaded, and {Path(path).name} is not "
                           "a .safetensors file (pickled weights are refused)")
    if not Path(path).expanduser().is_file():
        raise HslDemoError(f"model {name}:{path}: no such file")
    from safetensors.torch import load_file

    try:
        model.load_state_dict(load_file(str(Path(path).expanduser())))
    except Exception as e:  # not safetensors, or weights of another architecture
        raise HslDemoError(f"model {name}:{path}: the weights could not be read ({type(e).__name__}: "
                           f"{str(e).strip().splitlines()[0][:120] if str(e).strip() else ''})") from None


def check_config(path: Path, max_params: int | None) -> None:
    """An open_clip_config.json that open_clip can build, of a size within `max_params`, checked
    before anything is allocated (models.check_size builds it on the "meta" device)."""
    from .models import check_size

    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise HslDemoError(f"{path}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise HslDemoError(f"{path}: nested too deeply") from None
    model_cfg = config.get("model_cfg") if isinstance(config, dict) else None
    if not isinstance(model_cfg, dict):
        raise HslDemoError(f"{path}: no \"model_cfg\" object (an open_clip model folder's config)")
    for tower in ("vision_cfg", "text_cfg"):
        if not isinstance(model_cfg.get(tower, {}), dict):
            raise HslDemoError(f"{path}: \"{tower}\" must be a JSON object, not {type(model_cfg[tower]).__name__}")
    if "hf_model_name" in model_cfg.get("text_cfg", {}):  # a Hugging Face text tower: its own config says its size
        return
    try:
        cls, kwargs = model_class(model_cfg)
        check_size(lambda: cls(**kwargs), f"{path}", max_params)
    except HslDemoError:
        raise
    except Exception as e:  # an unknown key, a value of the wrong type: what open_clip would fail on
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise HslDemoError(f"{path}: not a config open_clip can build ({reason})") from None


def _read_vocabulary(path: Path) -> frozenset[str] | None:
    if not path.is_file():
        return None
    try:
        words = json.loads(path.read_text(encoding="utf-8"))["words"]
        if not isinstance(words, list):
            raise TypeError("words is not a list")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, RecursionError):
        log.warning("%s: not a vocabulary file (a JSON object with \"words\"); unknown words go unreported", path.name)
        return None
    return frozenset(w for w in words if isinstance(w, str))


def _with_tokens(tower: torch.nn.Module | None, kind: type) -> torch.nn.Module | None:
    """A shallow copy of an open_clip tower that returns (pooled, tokens): it shares every
    parameter and submodule with `tower`, only its own `output_tokens` flag differs."""
    if not isinstance(tower, kind):
        return None
    view = copy.copy(tower)
    view.output_tokens = True
    return view


def _check_safetensors_tag(name: str, tag: str) -> None:
    """`NAME:TAG` loads safetensors only: a file must be one, and a pretrained tag must have a
    safetensors file on the Hub (open_clip then loads it before any pickled alternative)."""
    if Path(tag).expanduser().exists():
        if not tag.endswith(".safetensors"):
            raise HslDemoError(f"model {name}:{tag}: only safetensors weights are loaded, and "
                               f"{Path(tag).name} is not a .safetensors file (pickled weights are refused)")
        return
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise HslDemoError(f"model {name}:{tag}: no such pretrained tag or file (tags of {name}: {tags})")
    # open_clip's form: "org/name/" (default file) or "org/name/file.bin"
    repo, filename = os.path.split(cfg.get("hf_hub", ""))
    filename = filename or open_clip.constants.HF_WEIGHTS_NAME
    safe = (open_clip.constants.HF_SAFE_WEIGHTS_NAME if filename == open_clip.constants.HF_WEIGHTS_NAME
            else filename if filename.endswith(".safetensors") else str(Path(filename).with_suffix(".safetensors")))
    if not repo:
        raise HslDemoError(f"model {name}:{tag}: its weights are a pickle (not on the Hub as safetensors); "
                           "only safetensors weights are loaded")
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(repo_id=repo, filename=safe)
    except Exception as e:  # not cached offline, no such file, no network
        raise HslDemoError(f"model {name}:{tag}: no safetensors weights could be fetched ({repo}/{safe}: "
                           f"{type(e).__name__}); only safetensors weights are loaded") from None


def _token_mask(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """True up to each text's last non-pad token: where the end token is the pad (SigLIP v1)
    the text still keeps every token before it."""
    real = ids != pad_id
    return real.flip(-1).cummax(-1).values.flip(-1)


def _region_kind(model: torch.nn.Module) -> str | None:
    """How the image tower gives regions: "vit" (open_clip's ViT patch tokens), "timm" (a timm
    trunk's tokens or feature map), "resnet" (ModifiedResNet's last stage), or None."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.timm_model import TimmModel

    visual = getattr(model, "visual", None)
    if isinstance(visual, VisionTransformer):
        # CoCa's attentional pooler outputs are learned queries, not patches: no grid there
        return "vit" if getattr(visual, "attn_pool", None) is None else None
    if isinstance(visual, TimmModel):
        return "timm"
    if isinstance(visual, ModifiedResNet) and visual.attnpool is not None:
        return "resnet"
    return None


NO_REGIONS = ("this image tower gives no regions (each photo is one region): Describe draws no region marks and "
              "ranks without HSL's object terms")


def _note_regions(backbone: Backbone) -> None:
    if not backbone.has_regions:  # said once per load, so marks and object terms are not trusted silently
        log.warning("%s: %s", backbone.model_id, NO_REGIONS)


def _image_forward(backbone: Backbone, x: torch.Tensor):
    """Global embedding and projected region tokens (B, R, D) on a (rows, cols) grid of a batch
    of preprocessed images; towers without regions give the image as its one region."""
    kind = _region_kind(backbone.model)
    visual = backbone.model.visual if kind else None
    if kind == "vit":
        pooled, tokens = backbone._visual(x)
        if visual.proj is not None:
            tokens = tokens @ visual.proj
        return pooled, tokens, tuple(visual.grid_size)
    if kind == "timm":
        return _timm_forward(visual, x)
    if kind == "resnet":
        return _resnet_forward(visual, x)
    pooled = backbone.model.encode_image(x)
    return pooled, pooled[:, None], (1, 1)


def _cells(fmap: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, C, H, W) -> (B*H*W, C) cells and the grid."""
    b, c, h, w = fmap.shape
    return fmap.permute(0, 2, 3, 1).reshape(b * h * w, c), (h, w)


def _timm_forward(visual, x: torch.Tensor):
    """A timm tower: the trunk's tokens (ViT, EVA, SigLIP) or last-stage cells (ConvNeXt,
    FastViT) each taken through the same head the pooled output goes through."""
    trunk = visual.trunk
    feats = trunk.forward_features(x)
    pooled = visual.head(trunk.forward_head(feats))
    b = x.shape[0]
    if feats.ndim == 4:  # a convolutional feature map: each cell pooled and projected alone
        cells, grid = _cells(feats)
        tokens = visual.head(trunk.forward_head(cells[:, :, None, None]))
        return pooled, tokens.reshape(b, grid[0] * grid[1], -1), grid
    patches = feats[:, getattr(trunk, "num_prefix_tokens", 0):]
    p, c = patches.shape[1], patches.shape[2]
    tok = patches.reshape(b * p, 1, c)
    if getattr(trunk, "attn_pool", None) is not None:  # MAP over one token: its value path and MLP
        tok = trunk.attn_pool(tok)
    else:
        tok = tok[:, 0]
    tok = trunk.head(trunk.head_drop(trunk.fc_norm(tok)))
    grid = tuple(trunk.patch_embed.grid_size)
    return pooled, visual.head(tok).reshape(b, p, -1), grid


def _resnet_forward(visual, x: torch.Tensor):
    """ModifiedResNet: the last stage's cells through the attention pool's value and output
    projections (what attention over one cell returns), as in MaskCLIP."""
    fmap = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(x)))))
    pool = visual.attnpool
    pooled = pool(fmap)
    cells, grid = _cells(fmap)
    b = x.shape[0]
    pos = pool.positional_embedding[1:].to(cells.dtype)
    if pos.shape[0] == grid[0] * grid[1]:
        cells = cells + pos.repeat(b, 1)
    tokens = pool.c_proj(pool.v_proj(cells))
    return pooled, tokens.reshape(b, grid[0] * grid[1], -1), grid


def _project_text(tokens: torch.Tensor, projection) -> torch.Tensor:
    if projection is None:
        return tokens
    if isinstance(projection, torch.nn.Linear):
        return projection(tokens)
    return tokens @ projection


def _text_forward(backbone: Backbone, ids: torch.Tensor):
    """Global text embedding and projected token features (None where the tower hides them)."""
    model, text = backbone.model, backbone._text
    if text is not None:  # CustomTextCLIP
        pooled, tokens = text(ids)
        return pooled, _project_text(tokens, text.text_projection)
    if hasattr(model, "token_embedding"):  # CLIP with the text tower inlined
        cast = model.transformer.get_cast_dtype()
        x = model.token_embedding(ids).to(cast) + model.positional_embedding.to(cast)
        x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
        tokens = _project_text(x, model.text_projection)
        eos = getattr(model, "text_eos_id", None)
        pooled = text_global_pool(tokens, ids, model.text_pool_type, eos_token_id=eos)
        return pooled, tokens
    return model.encode_text(ids), None


def save_backbone(model: torch.nn.Module, model_cfg: dict, folder: str | Path, info: dict | None = None) -> None:
    """Write a backbone in open_clip's Hub format: open_clip_config.json and
    open_clip_model.safetensors (float16 on disk to keep the repo small; loads as float32).
    The preprocessing is the model's own (`visual.preprocess_cfg`), else OpenAI's."""
    from safetensors.torch import save

    from .fileio import atomic_file, write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    visual = model_cfg.get("vision_cfg", {})
    own = getattr(getattr(model, "visual", None), "preprocess_cfg", None) or {}
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {
            "mean": list(own.get("mean", open_clip.OPENAI_DATASET_MEAN)),
            "std": list(own.get("std", open_clip.OPENAI_DATASET_STD)),
            "interpolation": own.get("interpolation", "bicubic"),
            "resize_mode": own.get("resize_mode", "shortest"),
            "size": visual.get("image_size", 224),
        },
    }
    if info:
        config["hsl_demo"] = info
    tensors = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    with atomic_file(folder / "open_clip_model.safetensors", "wb") as f:
        f.write(save(tensors, metadata={"format": "pt"}))
    write_json(folder / "open_clip_config.json", config)
