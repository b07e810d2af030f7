"""Stage 1: suite, policy, training and run specs (pydantic models loaded from YAML)."""
