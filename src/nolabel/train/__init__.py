"""THE training loop (:mod:`.loop`), its checkpoints (:mod:`.checkpoint`) and DDP helpers (:mod:`.distributed`)."""
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import ShardedBatches, init_distributed, is_main, rank, world_size
from .loop import fit, make_optimizer, make_scheduler, train_one_epoch

__all__ = [
    "ShardedBatches", "fit", "init_distributed", "is_main", "load_checkpoint", "make_optimizer", "make_scheduler",
    "rank", "save_checkpoint", "train_one_epoch", "world_size",
]
