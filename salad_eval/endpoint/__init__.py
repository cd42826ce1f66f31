"""Models behind OpenAI-compatible endpoints (vLLM, llama.cpp, OpenAI, Gemini, ``salad-eval
serve``): ``protocol`` maps salad's requests onto the APIs, ``client`` sends them concurrently
with retries, ``model`` is the ``Model`` adapter the gap run uses."""
