"""A gap run: its options (``spec``), the run itself (``runner``) and its provenance."""
