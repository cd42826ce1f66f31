"""salad_eval: measure the text-speech understanding gap of speech-adapted LLMs."""

from salad_eval.api import evaluate

__version__ = "0.1.0"
__all__ = ["evaluate"]
