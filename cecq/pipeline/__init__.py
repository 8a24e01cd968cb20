"""The embed-corpus pipeline (the write path): sharding a corpus (``corpus``), the per-shard
and per-run steps (``steps``), their fan-out over Ray (``fanout``, through ``ray_pool``, the
only module that imports Ray), and publishing (``publish``). No Prefect here: ``flows/`` and
``tasks/`` compose these steps."""
