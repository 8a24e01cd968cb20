"""Benchmarks behind ``cecq bench``: retrieval quality under compression (``quality``) and
pipeline performance (``perf`` and its ``perf_*`` measurements)."""

DEFAULT_BUDGETS: tuple[int, ...] = (32, 48, 64, 128)  # bytes a document `cecq bench quality` compares at
DEFAULT_FIT_FRACTION = 0.5  # `cecq bench quality` fits on half the documents and reports both halves
