"""`hsl-demo space ORG/NAME`: the app over a model and catalogs, as a Hugging Face Space."""

from __future__ import annotations

import argparse
from pathlib import Path

from .args import warn_token_on_command_line

NAME = "space"


def add_parser(sub) -> None:
    p = sub.add_parser("space", help="publish the app over a model and catalogs as a Hugging Face Space",
                       description="Build the folder a Space needs (app.py, this package, the pinned "
                       "requirements, a README, the catalogs with their photos, the model folder unless it is a Hub "
                       "id) and upload it to Space ORG/NAME, created if needed; a re-run updates it. "
                       "See docs/space.md.")
    p.add_argument("repo", metavar="ORG/NAME", help="the Space to create (if needed) and upload to")
    p.add_argument("--model", help="model folder (uploaded) or Hub repo id (loaded by the Space) (default: embedded)")
    p.add_argument("--catalog", help="products catalog for Describe and Modify: name or folder (default: products)")
    p.add_argument("--looks-catalog", help="looks catalog for Drill down: name or folder (default: looks)")
    p.add_argument("--private", action="store_true", help="create the Space as private")
    p.add_argument("--hardware", metavar="FLAVOR", help="request this hardware, e.g. cpu-basic, cpu-upgrade, zero-a10g "
                   "(ZeroGPU), t4-small, a10g-small (default: the Space's, cpu-basic when new)")
    p.add_argument("--dry-run", metavar="DIR", help="write the Space's folder to DIR (new or empty) and upload nothing")
    p.add_argument("--token", help="Hugging Face token (default: $HF_TOKEN or the `hf auth login` token)")


def run(args: argparse.Namespace) -> None:
    import tempfile

    from ..space import build_space, check_hardware, hub_token, publish_space

    if args.dry_run is not None:
        folder = build_space(args.dry_run, args.repo, args.model, args.catalog, args.looks_catalog, args.hardware)
        print(f"wrote the Space folder {folder.path} ({folder.summary()}); nothing uploaded")
        return
    check_hardware(args.hardware)
    warn_token_on_command_line(args.token)
    token = hub_token(args.token)  # before the folder is built: a missing token fails at once
    with tempfile.TemporaryDirectory(prefix="hsl-demo-space-") as tmp:
        folder = build_space(Path(tmp) / "space", args.repo, args.model, args.catalog, args.looks_catalog,
                             args.hardware)
        url = publish_space(folder, private=args.private, hardware=args.hardware, token=token)
    print(f"published {url} ({folder.summary()}; variables: "
          + ", ".join(f"{k}={v}" for k, v in folder.variables.items()) + ")")
