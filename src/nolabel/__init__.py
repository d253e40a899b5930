"""nolabel: classify images and texts without labels.

The Python API mirrors the CLI: ``nolabel.Pipeline(data=..., backbone=..., methods=[...],
k=...)`` is ``nolabel run``; ``.fit()``, ``.predict(items)``, ``.report()``; and
``nolabel.load_run(folder)`` reopens a finished run.
"""
__version__ = "0.1.0"


def __getattr__(name: str):
    """``Pipeline``, ``RunConfig`` and ``load_run`` are imported on first use (the CLI starts fast)."""
    if name in ("Pipeline", "RunConfig", "load_run"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'nolabel' has no attribute {name!r}")


__all__ = ["Pipeline", "RunConfig", "load_run", "__version__"]
