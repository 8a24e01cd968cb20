"""Static checks of the deployment files under infra/: they parse, and they say what cecq needs.

No Docker, Kubernetes or cloud account is needed: the YAML files are loaded with
``yaml.safe_load_all`` and their structure is checked; the Ray cluster-launcher config is
also validated against the JSON schema that ships with the installed Ray.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
RAY_VERSION = "2.60.0"
TORCH_PIN = "torch==2.13.0"
HEAD_SERVICE_CLIENT = "ray://cecq-head-svc:10001"


def _yaml_files() -> list[Path]:
    return sorted([*INFRA.glob("*.yaml"), *INFRA.glob("*.yml")])


def _load(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def _k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in _yaml_files():
        docs += [d for d in _load(path) if isinstance(d, dict) and "apiVersion" in d and "kind" in d]
    return docs


def _one(kind: str) -> dict[str, Any]:
    found = [d for d in _k8s_docs() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in infra/, found {len(found)}"
    return found[0]


def _containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    return pod_template["spec"]["containers"]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def _dockerfile() -> str:
    return (INFRA / "Dockerfile").read_text(encoding="utf-8")


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    lines: list[str] = []
    pending = ""
    for raw in _dockerfile().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends with a line continuation"
    out = []
    for line in lines:
        instr, _, args = line.partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


# --- every YAML file ---------------------------------------------------------------------


def test_infra_has_the_expected_files():
    for name in ("Dockerfile", "raycluster.yaml", "ray-cluster-launcher.yaml", "README.md"):
        assert (INFRA / name).is_file(), f"infra/{name} is missing"


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: p.name)
def test_yaml_parses(path: Path):
    docs = _load(path)
    assert docs, f"{path.name} has no YAML documents"
    for doc in docs:
        assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"


# --- KubeRay RayCluster ------------------------------------------------------------------


def test_raycluster_kind_version_and_name():
    rc = _one("RayCluster")
    assert rc["apiVersion"] == "ray.io/v1"
    assert rc["metadata"]["name"] == "cecq"  # the head service is then cecq-head-svc
    assert rc["spec"]["rayVersion"] == RAY_VERSION
    assert rc["spec"]["enableInTreeAutoscaling"] is True


def test_raycluster_head_takes_no_work_and_serves_dashboard():
    head = _one("RayCluster")["spec"]["headGroupSpec"]
    params = head["rayStartParams"]
    assert params["num-cpus"] == "0"
    assert params["dashboard-host"] == "0.0.0.0"
    (container,) = _containers(head["template"])
    assert "nvidia.com/gpu" not in container.get("resources", {}).get("limits", {})
    ports = {p["containerPort"] for p in container.get("ports", [])}
    assert {6379, 8265, 10001} <= ports


def test_raycluster_start_params_are_strings():
    spec = _one("RayCluster")["spec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        for key, value in group["rayStartParams"].items():
            assert isinstance(value, str), (
                f"rayStartParams[{key!r}] must be a string (map[string]string), got {value!r}"
            )


def test_raycluster_has_cpu_and_gpu_worker_groups_with_sane_replicas():
    groups = _one("RayCluster")["spec"]["workerGroupSpecs"]
    names = [g["groupName"] for g in groups]
    assert len(names) == len(set(names)), "worker group names must be unique"
    gpu_groups, cpu_groups = [], []
    for g in groups:
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], g["groupName"]
        limits = _containers(g["template"])[0]["resources"]["limits"]
        (gpu_groups if int(limits.get("nvidia.com/gpu", 0)) >= 1 else cpu_groups).append(g)
    assert gpu_groups, "no worker group requests nvidia.com/gpu"
    assert cpu_groups, "no CPU-only worker group"
    for g in gpu_groups:
        assert g["maxReplicas"] >= 1


def test_raycluster_containers_use_the_image_env_and_s3_secret():
    spec = _one("RayCluster")["spec"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        (container,) = _containers(group["template"])
        assert container["image"] == "cecq:latest"
        env = _env(container)
        assert env["RAY_USAGE_STATS_ENABLED"]["value"] == "0"
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            ref = env[key]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "cecq-s3"
            assert not ref.get("optional", False)


# --- Prefect worker ------------------------------------------------------------------------


def test_prefect_worker_deployment_points_at_the_ray_head():
    dep = _one("Deployment")
    assert dep["apiVersion"] == "apps/v1"
    spec = dep["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items())
    (container,) = _containers(spec["template"])
    cmd = " ".join(container.get("command", []) + container.get("args", []))
    assert re.search(r"\bprefect worker start\b.*--pool cecq-k8s\b", cmd), cmd
    env = _env(container)
    assert env["RAY_ADDRESS"]["value"] == HEAD_SERVICE_CLIENT
    assert "PREFECT_API_URL" in env
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "cecq-s3"


def test_raycluster_comment_explains_the_prefect_worker():
    text = (INFRA / "raycluster.yaml").read_text(encoding="utf-8")
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    assert "prefect worker start --pool cecq-k8s" in comments
    assert HEAD_SERVICE_CLIENT in comments


# --- Ray cluster launcher --------------------------------------------------------------------


@pytest.fixture(scope="module")
def launcher() -> dict[str, Any]:
    (doc,) = _load(INFRA / "ray-cluster-launcher.yaml")
    return doc


def test_launcher_basics(launcher):
    assert launcher["cluster_name"] == "cecq"
    assert launcher["provider"]["type"] == "aws"
    assert launcher["provider"]["region"] == "us-east-1"
    assert launcher["docker"]["image"] == "cecq:latest"
    assert launcher.get("setup_commands", []) == []


def test_launcher_node_types(launcher):
    types = launcher["available_node_types"]
    head = types[launcher["head_node_type"]]
    assert head["node_config"]["InstanceType"] == "m5.2xlarge"
    assert head["resources"]["CPU"] == 0
    gpu_types = {name: t for name, t in types.items() if t.get("resources", {}).get("GPU", 0) >= 1}
    assert gpu_types, "no node type with a GPU resource"
    gpu = gpu_types["gpu_worker"]
    assert gpu["node_config"]["InstanceType"] == "g5.xlarge"
    assert gpu["min_workers"] == 0 and gpu["max_workers"] == 4
    run_options = launcher["docker"].get("run_options", []) + gpu.get("docker", {}).get("worker_run_options", [])
    assert "--gpus all" in run_options


def test_launcher_start_commands(launcher):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        cmds = launcher[key]
        assert cmds[0].strip() == "ray stop", key
        assert any("ray start" in c for c in cmds[1:]), key
    head = " ".join(launcher["head_start_ray_commands"])
    assert "--head" in head and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "$RAY_HEAD_IP" in " ".join(launcher["worker_start_ray_commands"])


def test_launcher_matches_rays_schema(launcher):
    """The installed Ray's own schema check, as `ray up` runs it (no cloud access)."""
    util = pytest.importorskip("ray.autoscaler._private.util")
    pytest.importorskip("jsonschema")
    util.validate_config(launcher)
    prepared = util.prepare_config(launcher)  # merges Ray's AWS defaults
    util.validate_config(prepared)
    assert prepared["available_node_types"][launcher["head_node_type"]]["max_workers"] == 0


# --- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_installs_pinned_torch_first_then_the_project():
    runs = [args for instr, args in _dockerfile_instructions() if instr == "RUN"]
    torch_idx = [i for i, r in enumerate(runs) if TORCH_PIN in r and "-c constraints.txt" in r]
    project_idx = [i for i, r in enumerate(runs) if re.search(r"pip install -c constraints\.txt \.(\s|$)", r)]
    assert torch_idx, f"no RUN installs {TORCH_PIN} with -c constraints.txt"
    assert project_idx, "no RUN installs the project with `pip install -c constraints.txt .`"
    assert torch_idx[0] < project_idx[0], "torch must be installed before the project"


def test_dockerfile_base_args_env_user_workdir():
    instrs = _dockerfile_instructions()
    args = {a.split("=", 1)[0]: (a.split("=", 1)[1] if "=" in a else None) for i, a in instrs if i == "ARG"}
    assert "TORCH_INDEX" in args
    (base,) = [a for i, a in instrs if i == "FROM"]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1)) or "", base)
    assert base.startswith("python:3.11-slim"), base
    env_text = " ".join(a for i, a in instrs if i == "ENV")
    for pair in (
        "DO_NOT_TRACK=1",
        "PREFECT_SERVER_ANALYTICS_ENABLED=false",
        "RAY_USAGE_STATS_ENABLED=0",
        "HF_HUB_OFFLINE=1",
    ):
        assert re.search(rf"(^|\s){re.escape(pair)}(\s|$)", env_text), pair
    assert [a for i, a in instrs if i == "WORKDIR"][-1] == "/opt/cecq"
    users = [a for i, a in instrs if i == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), "the image must end as a non-root user"


def test_dockerfile_copies_what_the_build_needs_and_it_exists():
    copies = [a.split() for i, a in _dockerfile_instructions() if i == "COPY"]
    sources = {src.rstrip("/") for parts in copies for src in parts[:-1] if not src.startswith("--")}
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "cecq", "flows", "tasks", "infra"):
        assert needed in sources, f"Dockerfile does not COPY {needed}"
        assert (REPO_ROOT / needed).exists(), f"Dockerfile COPYs {needed}, which is not in the repository"
    ignore = INFRA / "Dockerfile.dockerignore"
    if ignore.exists():
        lines = {line.strip().rstrip("/") for line in ignore.read_text(encoding="utf-8").splitlines()}
        if "**" in lines or "*" in lines:
            for needed in sources:
                assert f"!{needed}" in lines, f"Dockerfile.dockerignore excludes {needed}"


def test_image_ray_version_matches_the_cluster_definitions():
    m = re.search(r"^ARG RAY_VERSION=(\S+)", _dockerfile(), re.M)
    assert m, "Dockerfile should pin Ray with ARG RAY_VERSION"
    assert m.group(1) == RAY_VERSION == _one("RayCluster")["spec"]["rayVersion"]


# --- infra/prefect.yaml: deployments a new user cannot get wrong ------------------------------


def _deployments(name: str) -> list[dict[str, Any]]:
    [doc] = _load(INFRA / name)
    return doc["deployments"]


def test_the_local_deployments_need_only_the_local_pool():
    """`prefect deploy --all` on infra/prefect.yaml must not need the Kubernetes pool."""
    local = _deployments("prefect.yaml")
    assert {d["work_pool"]["name"] for d in local} == {"cecq-process"}
    assert {d["name"] for d in local} == {"local", "nightly"}
    k8s = _deployments("prefect-k8s.yaml")
    assert {d["work_pool"]["name"] for d in k8s} == {"cecq-k8s"} and {d["name"] for d in k8s} == {"k8s", "k8s-nightly"}


def _run_pull_step(step: dict[str, Any]) -> Any:
    """A pull step as the flow-run process runs it: its inputs templated with the environment
    (Prefect's apply_values), then Prefect's step function called (Prefect variables unused)."""
    import asyncio
    import inspect
    import os

    from prefect.deployments.steps.core import RESERVED_KEYWORDS, _get_function_for_step
    from prefect.utilities.templating import apply_values

    [(fqn, inputs)] = step.items()
    inputs = apply_values({k: v for k, v in inputs.items() if k not in RESERVED_KEYWORDS}, os.environ)
    result = _get_function_for_step(fqn)(**inputs)
    return asyncio.run(result) if inspect.isawaitable(result) else result


@pytest.mark.parametrize("project_dir", [None, "/nonexistent/checkout", str(REPO_ROOT)])
def test_a_missing_project_dir_stops_the_run_with_a_message_that_names_it(project_dir, monkeypatch, tmp_path):
    """The pull steps with CECQ_PROJECT_DIR unset at deploy time (so left templated) and
    unset, wrong or right in the worker's environment."""
    import os

    [doc] = _load(INFRA / "prefect.yaml")
    check, chdir = doc["pull"]
    assert "set_working_directory" in next(iter(chdir))
    monkeypatch.chdir(tmp_path)
    if project_dir is None:
        monkeypatch.delenv("CECQ_PROJECT_DIR", raising=False)
    else:
        monkeypatch.setenv("CECQ_PROJECT_DIR", project_dir)
    if project_dir == str(REPO_ROOT):
        _run_pull_step(check)
        _run_pull_step(chdir)
        assert os.getcwd() == str(REPO_ROOT)
        return
    with pytest.raises(RuntimeError, match="CECQ_PROJECT_DIR is not set to a cecq checkout") as e:
        _run_pull_step(check)
    assert "export CECQ_PROJECT_DIR=" in str(e.value)
