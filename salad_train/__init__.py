"""salad_train: close the text-speech gap with SALAD (distillation + active selection)."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())  # the CLIs set the real handler
