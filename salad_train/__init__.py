"""salad_train: close the text-speech gap with the SALAD recipe (distillation + active selection)."""

__version__ = "0.1.0"
