"""mobdistill: video-distilled segmentation students on phones."""

from mobdistill.errors import MobdistillError

__all__ = ["MobdistillError"]
__version__ = "0.1.0"
