"""nolabel: classify images and texts without labels."""
__version__ = "0.1.0"
