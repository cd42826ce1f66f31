"""Model adapters behind the ``salad_eval.prompt.Model`` interface, and shared-context scoring."""
