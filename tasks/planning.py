from __future__ import annotations

from prefect import get_run_logger, task

from cecq.catalog import CorpusManifest
from cecq.pipeline.steps import plan_compression
from cecq.storage import Store
from cecq.targets import CompressionPlan, CompressionTarget
from tasks.retry import retry_unless_bad_input


@task(name="plan-compression", retry_condition_fn=retry_unless_bad_input, retries=1)
def plan_compression_task(
    store_url: str, manifest_path: str, model_keys: list[str], target: CompressionTarget, max_train_rows: int
) -> CompressionPlan:
    """Resolve the compression target for this corpus and these models; log the choice."""
    store = Store(store_url)
    manifest = CorpusManifest.from_dict(store.read_json(manifest_path))
    plan = plan_compression(store, manifest, model_keys, target, max_train_rows)
    get_run_logger().info("compression: %s", plan.describe())
    return plan
