"""End to end through real services: a Prefect server, the deployments of infra/prefect.yaml,
a process worker, and an S3 endpoint (moto).

What a user does, command for command (see the "Deployments" section of the README):

    prefect server start --host 127.0.0.1 --port PORT
    prefect work-pool create cecq-process --type process
    prefect work-pool create cecq-k8s --type kubernetes
    CECQ_PROJECT_DIR=$PWD CECQ_CORPUS=s3://... CECQ_STORE=s3://... \
        prefect --no-prompt deploy --all --prefect-file infra/prefect.yaml
    prefect worker start --pool cecq-process
    prefect deployment run 'embed-corpus/local' --param corpus=... --param store=... ...
    cecq sql --store s3://... "SELECT count(*) FROM documents"
    prefect deployment run 'reindex/nightly' --param decoder_policy=reuse

The worker runs in a scratch folder, not the repository, so the deployments' pull step
(set_working_directory to CECQ_PROJECT_DIR) is what makes the entrypoints resolve. Each
process gets its own PREFECT_HOME; no developer profile or server is touched.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.e2e import (
    REPO_ROOT,
    TERMINAL_STATES,
    Background,
    PrefectAPI,
    exe,
    free_port,
    jsonl,
    quiet_env,
    run_cli,
    topical_corpus,
    wait_until,
)

pytestmark = pytest.mark.slow

BUCKET = "cecq-e2e"
SECRET_KEY = "cecq-e2e-secret-7d41c9b2"  # must never reach a stored object or a log
CORPUS_URL = f"s3://{BUCKET}/corpus/docs.jsonl"
STORE_URL = f"s3://{BUCKET}/store"
PREFECT_FILE = "infra/prefect.yaml"
K8S_FILE = "infra/prefect-k8s.yaml"
DOCS_PER_TOPIC = 10  # 4 topics: 40 documents
RUN_TIMEOUT = 240


# --- services ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-prefect")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with an empty bucket; yields its endpoint URL."""
    pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 endpoint")
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_client(s3_endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


@pytest.fixture(scope="module")
def prefect_server(workdir: Path) -> Iterator[str]:
    """``prefect server start`` on a free port with its own PREFECT_HOME; yields the API URL."""
    home = workdir / "prefect-home"
    home.mkdir()
    server = None
    for _attempt in range(3):  # a free port can be taken between free_port() and the bind
        port = free_port()
        env = quiet_env(
            PREFECT_HOME=str(home), PREFECT_SERVER_UI_ENABLED="false", PREFECT_SERVER_LOGGING_LEVEL="WARNING"
        )
        server = Background(
            "prefect server",
            [exe("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env,
            workdir / f"server-{port}.log",
            cwd=workdir,
        )
        api = PrefectAPI(f"http://127.0.0.1:{port}/api")

        def up_or_exited(server: Background = server, api: PrefectAPI = api) -> bool:
            return not server.alive() or api.healthy()

        try:
            wait_until(up_or_exited, 120, 0.5, "the Prefect server's /api/health", on_timeout=server.describe)
        finally:
            api.close()
        if server.alive():
            break
        server.stop()
    else:
        pytest.fail(f"the Prefect server did not start\n{server.describe() if server else ''}")
    try:
        yield f"http://127.0.0.1:{port}/api"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api(prefect_server: str) -> Iterator[PrefectAPI]:
    client = PrefectAPI(prefect_server)
    yield client
    client.close()


@pytest.fixture(scope="module")
def client_env(workdir: Path, prefect_server: str, s3_endpoint: str) -> dict[str, str]:
    """The environment of every Prefect/cecq client process: the server, S3 credentials and endpoint."""
    return quiet_env(
        PREFECT_HOME=str(workdir / "prefect-home"),
        PREFECT_API_URL=prefect_server,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION="us-east-1",
        CECQ_S3_ENDPOINT_URL=s3_endpoint,
    )


@pytest.fixture(scope="module")
def corpus_docs(s3_client) -> list[dict]:
    docs = topical_corpus(DOCS_PER_TOPIC)
    s3_client.put_object(Bucket=BUCKET, Key="corpus/docs.jsonl", Body=jsonl(docs))
    return docs


@pytest.fixture(scope="module")
def deployed(client_env: dict[str, str], api: PrefectAPI) -> dict[str, dict]:
    """Every deployment of infra/prefect.yaml with only the local pool (a user who never
    uses Kubernetes), then the Kubernetes pool and infra/prefect-k8s.yaml; returns them by name."""
    prefect = exe("prefect")
    run_cli([prefect, "work-pool", "create", "cecq-process", "--type", "process"], client_env)
    deploy_env = {**client_env, "CECQ_PROJECT_DIR": str(REPO_ROOT), "CECQ_CORPUS": CORPUS_URL, "CECQ_STORE": STORE_URL}
    run_cli([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", PREFECT_FILE], deploy_env, timeout=180)
    run_cli([prefect, "work-pool", "create", "cecq-k8s", "--type", "kubernetes"], client_env)
    run_cli([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", K8S_FILE], deploy_env, timeout=180)
    names = ["embed-corpus/local", "reindex/nightly", "embed-corpus/k8s", "reindex/k8s-nightly"]
    return {name: api.deployment(*name.split("/")) for name in names}


@pytest.fixture(scope="module")
def worker(workdir: Path, client_env: dict[str, str], deployed, models: list[str]) -> Iterator[Background]:
    """``prefect worker start --pool cecq-process``, started in a scratch folder (not the repo).
    The store is on S3, so its reindex runs load the local model folder only because the
    worker allows it (``CECQ_ALLOWED_MODELS``), as a deployment reindexing a shared bucket would."""
    scratch = workdir / "worker-cwd"
    scratch.mkdir()
    # Flow runs start a local Ray. Ray's own temp folder (short: it holds unix sockets) keeps
    # them from attaching to a `ray start` cluster that happens to run on this machine, which
    # ray.init() without an address would otherwise join.
    ray_tmp = tempfile.mkdtemp(prefix="cecq-e2e-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    env = {
        **client_env,
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "RAY_TMPDIR": ray_tmp,
        "CECQ_ALLOWED_MODELS": ",".join(models),
    }
    proc = Background(
        "prefect worker",
        [exe("prefect"), "worker", "start", "--pool", "cecq-process", "--name", "e2e-worker"],
        env,
        workdir / "worker.log",
        cwd=scratch,
    )
    try:
        yield proc
    finally:
        proc.stop(timeout=20)
        shutil.rmtree(ray_tmp, ignore_errors=True)


# --- running deployments ---------------------------------------------------------------------------


def deployment_run(env: dict[str, str], name: str, *params: str) -> str:
    """``prefect deployment run NAME --param ...``; returns the new flow run's id."""
    args = [exe("prefect"), "deployment", "run", name]
    for p in params:
        args += ["--param", p]
    out = run_cli(args, env, timeout=60)
    m = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout)
    assert m, f"no flow run id in the output of {' '.join(args)}:\n{out.stdout}"
    return m.group(1)


def wait_for_run(api: PrefectAPI, worker: Background, flow_run_id: str, timeout: float = RUN_TIMEOUT) -> dict:
    """Poll the flow run until it is in a terminal state; fail with the worker's log unless Completed."""

    def report() -> str:
        try:
            logs = api.logs_of(flow_run_id)
        except Exception as exc:
            logs = f"(could not read logs: {exc!r})"
        return f"{worker.describe()}\n--- flow run logs from the API\n{logs[-6000:]}"

    def terminal() -> dict | None:
        if not worker.alive():
            raise AssertionError(f"the worker exited\n{report()}")
        run = api.flow_run(flow_run_id)
        return run if run["state_type"] in TERMINAL_STATES else None

    run = wait_until(terminal, timeout, 1.0, f"flow run {flow_run_id}", on_timeout=report)
    assert run["state_type"] == "COMPLETED", (
        f"flow run {flow_run_id} ended {run['state_type']}: {run['state'].get('message')}\n{report()}"
    )
    return run


def sql(env: dict[str, str], query: str) -> list[dict[str, Any]]:
    out = run_cli([exe("cecq"), "sql", "--json", "--store", STORE_URL, query], env, timeout=120)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def models(tiny_model_dir: Path) -> list[str]:
    """Two base models: the corpus-fitted lexical one, and a tiny random BERT from a local
    folder (loaded in the worker's Ray actors through the same path as a real model)."""
    return ["lexical", str(tiny_model_dir)]


@pytest.fixture(scope="module")
def embedded(client_env, api, worker, corpus_docs, models) -> dict:
    """One run of `embed-corpus/local` over the S3 corpus into the S3 store; returns the flow run."""
    run_id = deployment_run(
        client_env,
        "embed-corpus/local",
        f"corpus={CORPUS_URL}",
        f"store={STORE_URL}",
        f"models={json.dumps(models)}",
        "shard_rows=15",
        "dims=16",
        "bits=2",
        "max_epochs=3",
    )
    return wait_for_run(api, worker, run_id)


# --- tests -----------------------------------------------------------------------------------------


def test_embed_corpus_deployment_publishes_catalog_on_s3(embedded, client_env, corpus_docs, deployed, models):
    # the run belongs to the deployment, and the --param values overrode its (empty) defaults
    assert embedded["deployment_id"] == deployed["embed-corpus/local"]["id"]
    params = embedded["parameters"]
    assert params["corpus"] == CORPUS_URL and params["store"] == STORE_URL
    assert params["models"] == models
    assert (params["shard_rows"], params["dims"], params["bits"], params["max_epochs"]) == (15, 16, 2, 3)

    n = len(corpus_docs)
    [counts] = sql(client_env, "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM documents")
    assert counts == {"n": n, "ids": n}
    ids = {r["id"] for r in sql(client_env, "SELECT id FROM documents")}
    assert ids == {d["_id"] for d in corpus_docs}

    [run] = sql(client_env, "SELECT status, models, dims, bits, shards, catalog_version FROM runs")
    assert run == {
        "status": "published",
        "models": models,
        "dims": 16,
        "bits": 2,
        "shards": -(-n // 15),
        "catalog_version": 1,
    }
    shards = sql(client_env, "SELECT name, rows, status FROM shards ORDER BY name")
    assert [s["rows"] for s in shards] == [15, 15, 10]
    assert {s["status"] for s in shards} == {"committed"}


def test_credentials_appear_in_no_artifact_or_log(embedded, s3_client, worker, api):
    stored = [
        o["Key"]
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="store/")
        for o in page.get("Contents", [])
    ]
    assert any(k.endswith("run.json") for k in stored) and any(k.startswith("store/catalog/") for k in stored)
    for key in stored:
        assert SECRET_KEY.encode() not in s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read(), key
    assert SECRET_KEY not in worker.log.read_text(errors="replace")
    assert SECRET_KEY not in api.logs_of(embedded["id"])


def test_reindex_nightly_is_scheduled_and_never_overlaps(deployed, api):
    dep = deployed["reindex/nightly"]
    assert dep["work_pool_name"] == "cecq-process"
    # parameters filled from CECQ_CORPUS / CECQ_STORE when `prefect deploy` ran
    assert dep["parameters"]["corpus"] == CORPUS_URL and dep["parameters"]["store"] == STORE_URL
    # the pull step was resolved from CECQ_PROJECT_DIR at deploy time
    check, chdir = dep["pull_steps"]
    assert chdir == {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}
    assert (
        f'test -f "{REPO_ROOT}/flows/embed_corpus.py"' in check["prefect.deployments.steps.run_shell_script"]["script"]
    )
    [schedule] = dep["schedules"]
    assert schedule["active"] is True
    assert schedule["schedule"]["cron"] == "0 3 * * *" and schedule["schedule"]["timezone"] == "UTC"
    # concurrency limit 1, runs that would overlap wait for the slot
    assert dep["global_concurrency_limit"]["limit"] == 1
    assert dep["concurrency_options"]["collision_strategy"] == "ENQUEUE"

    # the server's scheduler creates the upcoming runs by itself
    runs = wait_until(lambda: api.flow_runs_of(dep["id"], ["SCHEDULED"]), 90, 1.0, "scheduled runs of reindex/nightly")
    first = runs[0]
    assert first["auto_scheduled"] is True
    start = dt.datetime.fromisoformat(first["expected_start_time"].replace("Z", "+00:00")).astimezone(dt.timezone.utc)
    assert (start.hour, start.minute, start.second) == (3, 0, 0)
    now = dt.datetime.now(dt.timezone.utc)
    assert now < start <= now + dt.timedelta(days=1, minutes=1)


def _time(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_reindex_deployment_runs_add_only_new_documents_one_at_a_time(
    embedded, client_env, api, worker, s3_client, corpus_docs
):
    """After the corpus grows, two `reindex/nightly` runs started together (its default
    corpus/store, one with a parameter overridden) run one after the other, and the catalog
    then holds every document."""
    extra = [
        {"_id": f"new-{i}", "title": "comet", "text": f"a new comet orbit telescope report number {i}"}
        for i in range(5)
    ]
    s3_client.put_object(Bucket=BUCKET, Key="corpus/docs.jsonl", Body=jsonl([*corpus_docs, *extra]))
    first_id = deployment_run(client_env, "reindex/nightly", "decoder_policy=reuse")
    second_id = deployment_run(client_env, "reindex/nightly")
    first, second = wait_for_run(api, worker, first_id), wait_for_run(api, worker, second_id)
    assert first["parameters"]["decoder_policy"] == "reuse" and second["parameters"]["decoder_policy"] == "auto"
    assert first["parameters"]["store"] == second["parameters"]["store"] == STORE_URL

    # concurrency limit 1: the runs did not overlap, and the later one waited for the slot
    earlier, later = sorted([first, second], key=lambda r: _time(r["start_time"]))
    history = {r["id"]: [(st["timestamp"], st["name"]) for st in api.state_history(r["id"])] for r in (earlier, later)}
    why = f"state histories: {json.dumps(history, indent=1)}\n{worker.describe()}"
    assert _time(earlier["end_time"]) <= _time(later["start_time"]), why
    if (_time(earlier["end_time"]) - _time(later["created"])).total_seconds() > 5:
        # the worker (polling every 2 s) saw the later run while the earlier one held the slot
        assert "AwaitingConcurrencySlot" in [name for _, name in history[later["id"]]], why

    n = len(corpus_docs) + len(extra)
    [counts] = sql(client_env, "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM documents")
    assert counts == {"n": n, "ids": n}
    runs = sql(client_env, "SELECT catalog_version, compressor_id, documents FROM runs ORDER BY catalog_version")
    assert [(r["catalog_version"], r["documents"]) for r in runs] == [(1, len(corpus_docs)), (2, n), (3, n)]
    # few documents changed: both re-indexes publish with the first run's compressor
    assert {r["compressor_id"] for r in runs} == {runs[0]["compressor_id"]}


def test_k8s_deployments_target_the_image(deployed, api):
    assert api.work_pool("cecq-k8s")["type"] == "kubernetes"
    for name in ("embed-corpus/k8s", "reindex/k8s-nightly"):
        dep = deployed[name]
        assert dep["work_pool_name"] == "cecq-k8s"
        assert dep["job_variables"]["image"] == "cecq:latest"
        assert dep["job_variables"]["env"]["RAY_ADDRESS"] == "ray://cecq-head-svc:10001"
        assert dep["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/cecq"}}]
    nightly = deployed["reindex/k8s-nightly"]
    assert nightly["global_concurrency_limit"]["limit"] == 1
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 3 * * *"]


def test_deployment_run_without_required_parameters_is_refused(deployed, client_env):
    out = run_cli([exe("prefect"), "deployment", "run", "embed-corpus/local"], client_env, check=False, timeout=60)
    assert out.returncode != 0
    assert "'corpus' is a required property" in " ".join((out.stdout + out.stderr).split()), out.stdout + out.stderr
