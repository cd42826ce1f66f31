"""salad_train: close the text-speech gap with SALAD (distillation + active selection)."""

__version__ = "0.1.0"
