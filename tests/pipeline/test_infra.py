"""infra/: the configs parse, run the compress job, and hold no credentials."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
SECRET = re.compile(
    r"(AKIA[0-9A-Z]{12,}|aws_secret_access_key\s*[:=]|AWS_SECRET_ACCESS_KEY\s*[:=]\s*\S)", re.I
)


def test_local_stack_is_valid_bash() -> None:
    script = INFRA / "local-stack"
    assert script.stat().st_mode & 0o111, "infra/local-stack must be executable"
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_cluster_yaml_has_gpu_workers() -> None:
    config = yaml.safe_load((INFRA / "ray-cluster-aws.yaml").read_text())
    workers = config["available_node_types"]["gpu_worker"]
    assert config["provider"]["type"] == "aws" and workers["max_workers"] >= 1
    assert "IamInstanceProfile" in workers["node_config"]  # S3 access through the node's role


def test_rayjob_runs_compress_images_on_gpu_workers() -> None:
    job = yaml.safe_load((INFRA / "kuberay-rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["spec"]["entrypoint"].startswith("ditic compress-images ")
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_no_credentials_in_infra() -> None:
    for path in INFRA.iterdir():
        text = path.read_text()
        assert not SECRET.search(text.replace("AWS_SECRET_ACCESS_KEY=$secret", "")), path
