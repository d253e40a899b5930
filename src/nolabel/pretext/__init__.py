"""Self-supervised training of a backbone on the target data (SimCLR, RotNet).

``train_simclr(dataset, "run/simclr.safetensors", arch="small_cnn", epochs=...)`` writes
a checkpoint that ``nolabel.backbones.get("local:run/simclr.safetensors")`` loads.
"""
from ..data.images import ImageSource, image_source
from .common import PretextTask
from .losses import nt_xent
from .rotnet import rotate_batch, train_rotnet
from .simclr import train_simclr

__all__ = ["ImageSource", "PretextTask", "image_source", "nt_xent", "rotate_batch", "train_rotnet", "train_simclr"]
