"""salad_eval: measure the text-speech understanding gap of speech-adapted LLMs."""

import logging

from salad_eval.api import evaluate

__version__ = "0.1.0"
__all__ = ["evaluate"]

logging.getLogger(__name__).addHandler(logging.NullHandler())  # the CLIs set the real handler
