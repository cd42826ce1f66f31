"""salad_eval: measure the text-speech understanding gap of speech-adapted LLMs."""

__version__ = "0.1.0"
