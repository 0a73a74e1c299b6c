"""Lightning modules and callbacks of the Lumiere stages."""

from lumiere.training.base import DiffusionModule, load_module_from_checkpoint
from lumiere.training.ema import ExponentialMovingAverage
from lumiere.training.stages import TextToImageModule, TextToVideoModule

__all__ = [
    "DiffusionModule",
    "ExponentialMovingAverage",
    "TextToImageModule",
    "TextToVideoModule",
    "load_module_from_checkpoint",
]
