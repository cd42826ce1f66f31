"""Speech synthesis for spoken tasks: normalization, TTS engines (seeded), voices, the verified
audio store, synthesis, ASR check, and audio exchange between machines; ``recorded``: a task's own
recordings as a voice.

Entry points: ``synth.synthesize(items, voices, seed=0)`` -> ``SynthManifest`` (and its
``speech_prompt(item, voice)``), ``voices.resolve_voices(spec)``, ``tts.synthesize(text, voice,
seed)``, ``exchange.export_clips`` / ``exchange.import_clips``.
"""
