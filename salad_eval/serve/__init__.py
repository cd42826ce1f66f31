"""``salad-eval serve``: any salad model behind an OpenAI-compatible HTTP API (vLLM's dialect).

A team exposes its SALAD checkpoint, an HF speech-LLM family or a text LLM to other harnesses
(VoiceBench, AU-Harness, lmms-eval) and to salad on another machine (``models/endpoint.py``),
with exact log-likelihoods through vLLM's ``prompt_logprobs``:

- ``protocol``  the wire format: pydantic request models, response bodies, OpenAI-style errors
- ``render``    messages and prompts -> salad prompts (clips decoded into 16 kHz wav files)
- ``logprobs``  scored tokens -> vLLM's ``prompt_logprobs`` and the legacy ``echo`` logprobs
- ``batcher``   concurrent requests share model calls, one call at a time
- ``app``       the FastAPI app (``make_app``): routes, bearer token, body bound, errors
- ``server``    loading the model ``--model`` names and running uvicorn
"""
