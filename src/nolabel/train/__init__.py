"""End-to-end training: the generic loop, checkpoints, DDP helpers and the SCAN / self-label / SeLa / LSD-C procedures."""
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import ShardedBatches, init_distributed, is_main, rank, world_size
from .end_to_end import (EndToEndModel, lsdc_end_to_end, scan_end_to_end, scan_objective, sela_end_to_end,
                         selflabel_end_to_end)
from .loop import fit

__all__ = [
    "EndToEndModel", "ShardedBatches", "fit", "init_distributed", "is_main", "load_checkpoint", "lsdc_end_to_end",
    "rank", "save_checkpoint", "scan_end_to_end", "scan_objective", "sela_end_to_end", "selflabel_end_to_end",
    "world_size",
]
