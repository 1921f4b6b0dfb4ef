"""Student models: JITNet, MobileVOS, DeepLabV3-MobileNetV2.

Import as `mobdistill.models`. `registry.get(name)` gives a model's `ModelEntry`.
"""

from .memory_queue import MemoryQueue
from .registry import check_resolution, configure, get, names, parse_resolution

__all__ = ["MemoryQueue", "check_resolution", "configure", "get", "names", "parse_resolution"]
