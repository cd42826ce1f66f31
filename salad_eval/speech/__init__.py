"""Speech synthesis for spoken tasks: normalization, TTS engines, voices, audio store, ASR check.

Entry points: ``synth.synthesize(items, voices)`` -> ``SynthManifest`` (and its
``speech_prompt(item, voice)``), ``voices.resolve_voices(spec)``, ``tts.synthesize(text, voice)``.
"""
