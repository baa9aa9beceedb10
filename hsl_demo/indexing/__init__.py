"""`hsl-demo index`: photos (a folder, Parquet files, WebDataset tars) encoded into a catalog
folder, one file per stage as clip-retrieval lays out its own:

- reader (hsl_demo/reader.py): what the input holds, planned as shards;
- mapper (`mapper.py`): a shard's images decoded a batch ahead and encoded by the backbone;
- shards (`shards.py`): the resumable shard folder, stage timings, the output folder's safety;
- writer (`writer.py`): the catalog from the finished shards, written aside and renamed;
- index policy (`policy.py`): which FAISS index (a `faiss.index_factory` spec), its nprobe;
- runner (`runner.py`): the whole run, here; distributor (`ray.py`): the shards encoded by a
  Ray Data pool of backbones instead.

hsl_demo/catalog.py reads what this writes.
"""

from .mapper import encode_images, encode_shard, encode_shards
from .policy import (
                     NPROBE_RECALL,
                     IndexLimits,
                     build_index,
                     build_index_from_shards,
                     build_region_index,
                     default_index_spec,
                     region_index_spec,
                     tune_nprobe,
                     tune_nprobe_on_shards,
)
from .runner import build_catalog
from .shards import SHARD_SIZE, EncodedImages, ShardFolder, StageTimes, check_output_folder
from .writer import stored_heads, write_catalog

__all__ = ["NPROBE_RECALL", "SHARD_SIZE", "EncodedImages", "IndexLimits", "ShardFolder", "StageTimes", "build_catalog",
           "build_index", "build_index_from_shards", "build_region_index", "check_output_folder",
           "default_index_spec", "encode_images", "encode_shard", "encode_shards", "region_index_spec",
           "stored_heads", "tune_nprobe", "tune_nprobe_on_shards", "write_catalog"]
