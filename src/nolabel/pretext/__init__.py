"""Self-supervised training of a backbone on the target data (SimCLR, RotNet).

``train_pretext("simclr", dataset, "run/simclr.safetensors", arch="small_cnn", epochs=...)``
(or ``train_simclr``/``train_rotnet``) writes
a checkpoint that ``nolabel.backbones.get("local:run/simclr.safetensors")`` loads.
"""
from ..data.images import ImageSource, image_source
from .common import PretextTask, pretext_tasks, train_pretext
from .losses import nt_xent
from .rotnet import rotate_batch, train_rotnet
from .simclr import train_simclr

__all__ = ["ImageSource", "PretextTask", "image_source", "nt_xent", "pretext_tasks", "rotate_batch", "train_pretext",
           "train_rotnet", "train_simclr"]
