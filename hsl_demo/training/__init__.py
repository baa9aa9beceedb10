"""Training, apart from the runtime package's search path (the app never imports it), as
open_clip keeps `open_clip_train` apart: one loop (`loop.fit`) and one short trainer per
model, each a `hsl-demo train ...` command.
"""

from .backbone import BackboneTrainConfig, train_backbone
from .common import mentions_match, multi_positive_infonce
from .composed import ComposedTrainConfig, DatasetTriplets, DemoTriplets, train_composed
from .hmrn import HMRNTrainConfig, train_hmrn
from .hsl import HSLTrainConfig, train_hsl
from .loop import TrainConfig, fit

__all__ = [
    "BackboneTrainConfig", "ComposedTrainConfig", "DatasetTriplets", "DemoTriplets", "HMRNTrainConfig",
    "HSLTrainConfig", "TrainConfig", "fit", "mentions_match", "multi_positive_infonce", "train_backbone",
    "train_composed", "train_hmrn", "train_hsl",
]
