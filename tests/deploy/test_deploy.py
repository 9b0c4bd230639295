"""deploy/: the images' and the Kubernetes manifest's settings agree with the code they run.

No container runtime is needed: the Dockerfiles are read instruction by instruction, their command,
environment and health check are run as the image would run them (a real `faceaudit serve`), the
manifest is validated against Kubernetes' own schemas (kubernetes-validate) and cross-checked with
the images, and the package is built from exactly the files the images copy.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import faceaudit.demo
from faceaudit.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.gpu"]
MANIFEST = DEPLOY / "kubernetes" / "faceaudit.yaml"
DEMO_MODELS = Path(faceaudit.demo.__file__).parent / "models"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines()
                                           if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in joined.splitlines() if line.strip()]


def final_stage(path: Path) -> list[tuple[str, str]]:
    found = instructions(path)
    last = max(i for i, (op, _) in enumerate(found) if op == "FROM")
    return found[last:]


def exec_form(argument: str) -> list[str]:
    return json.loads(argument)


def environment(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for op, argument in stage:
        if op == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(argument))
    return env


def serve_option(variable: str) -> str:
    """The `faceaudit serve` flag a FACEAUDIT_* variable stands for (cli/serve.py: flag > variable)."""
    return "--" + variable.removeprefix("FACEAUDIT_").lower().replace("_", "-")


def check_serve_variables(env: dict[str, str]) -> None:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # noqa: SLF001 - the real parser
    flags = {flag for action in serve._actions for flag in action.option_strings}  # noqa: SLF001
    for name in env:
        if name.startswith("FACEAUDIT_") and name != "FACEAUDIT_TOKEN":  # the token itself, beside --token-file
            assert serve_option(name) in flags, f"{name} is no `faceaudit serve` setting"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gpu_requirements_are_the_projects_with_the_gpu_runtime():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [line.split("#")[0].strip() for line in (DEPLOY / "requirements-gpu.txt").read_text().splitlines()]
    gpu = [line for line in lines if line]
    assert sorted(gpu) == sorted(d.split("#")[0].strip().replace("onnxruntime>", "onnxruntime-gpu>") for d in project)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_settings_agree_with_the_command_line(dockerfile: Path):
    stage = final_stage(dockerfile)
    ops = dict(stage)  # one of each that matters in the final stage
    argv = exec_form(ops["ENTRYPOINT"]) + exec_form(ops["CMD"])
    assert argv[0] == "faceaudit" and build_parser().parse_args(argv[1:]).command == "serve"
    env = environment(stage)
    check_serve_variables(env)
    assert sorted(int(p) for p in ops["EXPOSE"].split()) == sorted(
        int(env[name]) for name in ("FACEAUDIT_PORT", "FACEAUDIT_METRICS_PORT"))
    health = exec_form(ops["HEALTHCHECK"].split("CMD", 1)[1].strip())
    assert health[0] == "faceaudit" and build_parser().parse_args(health[1:]).command == "health"
    assert ops["USER"] == "10001" and ops["STOPSIGNAL"] == "SIGTERM"
    for op, argument in instructions(dockerfile):  # every file an image copies is in the repository
        if op == "COPY" and not argument.startswith("--from"):
            for source in argument.split()[:-1]:
                assert (ROOT / source).exists(), f"{dockerfile.name} copies {source}, which is not in the repository"


def test_manifest_is_valid_kubernetes_and_matches_the_image():
    documents = list(yaml.safe_load_all(MANIFEST.read_text()))
    for document in documents:
        kubernetes_validate.validate(document, "1.30.0", strict=True)
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    image_env = environment(final_stage(DEPLOY / "Dockerfile"))
    env = {item["name"]: item.get("value") for item in container["env"]}
    check_serve_variables(env)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": int(image_env["FACEAUDIT_PORT"]), "metrics": int(image_env["FACEAUDIT_METRICS_PORT"])}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"]  # grpc.health.v1, open without a token
    assert container["livenessProbe"]["tcpSocket"]["port"] == ports["grpc"]  # draining is not dying
    drain = float(env["FACEAUDIT_DRAIN_NOTICE_S"]) + float(env["FACEAUDIT_GRACE_S"])
    assert pod["spec"]["terminationGracePeriodSeconds"] > drain
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert {image_env["FACEAUDIT_MODEL_REPOSITORY"], image_env["FACEAUDIT_DATASET_REPOSITORY"], "/tmp"} <= mounts
    service = next(d for d in documents if d["kind"] == "Service")
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    claims = {d["metadata"]["name"] for d in documents if d["kind"] == "PersistentVolumeClaim"}
    assert {v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v} == claims


def test_schema_validation_catches_a_misspelt_field():
    deployment = next(iter(yaml.safe_load_all(MANIFEST.read_text())))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.30.0", strict=True)


def test_the_images_command_serves_preloaded_models_answers_its_health_check_and_drains(tmp_path: Path):
    """The CPU image's ENTRYPOINT + CMD with its ENV (ports and folders moved to free ones here) and the
    manifest's environment, then the image's HEALTHCHECK command, then SIGTERM."""
    stage = final_stage(DEPLOY / "Dockerfile")
    ops = dict(stage)
    container = next(iter(yaml.safe_load_all(MANIFEST.read_text())))["spec"]["template"]["spec"]["containers"][0]
    env = {**os.environ, **environment(stage),
           **{item["name"]: item["value"] for item in container["env"] if "value" in item}}
    env.update(FACEAUDIT_PORT=str(free_port()), FACEAUDIT_METRICS_PORT=str(free_port()),
               FACEAUDIT_MODEL_REPOSITORY=str(DEMO_MODELS), FACEAUDIT_DATASET_REPOSITORY=str(tmp_path),
               FACEAUDIT_DRAIN_NOTICE_S="0", MPLCONFIGDIR=str(tmp_path / "mpl"))
    env.pop("FACEAUDIT_TOKEN", None)
    bin_dir = Path(sys.executable).parent
    argv = [str(bin_dir / "faceaudit"), *(exec_form(ops["ENTRYPOINT"]) + exec_form(ops["CMD"]))[1:]]
    server = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        health = exec_form(ops["HEALTHCHECK"].split("CMD", 1)[1].strip())
        check = [str(bin_dir / "faceaudit"), *health[1:], "--wait", "60"]
        assert subprocess.run(check, env=env, capture_output=True, timeout=90).returncode == 0
        listed = subprocess.run([sys.executable, "-c", (
            "import sys; from faceaudit_client import Client; "
            "print(sorted(m.name for m in Client(sys.argv[1]).list_models()))"), f"localhost:{env['FACEAUDIT_PORT']}"],
            capture_output=True, text=True, timeout=60)
        assert listed.stdout.strip() == "['attribute', 'embedding', 'identity']", listed.stderr
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_the_package_builds_from_exactly_the_files_the_images_copy(tmp_path: Path):
    context = tmp_path / "context"
    for op, argument in instructions(DEPLOY / "Dockerfile"):
        if op == "COPY" and not argument.startswith("--from"):
            *sources, destination = argument.split()
            for source in sources:
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, context / destination,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    (context / destination).mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / source, context / destination / Path(source).name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "--wheel-dir", str(tmp_path / "wheels"), str(context)], capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "wheels").glob("faceaudit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"faceaudit/cli/health.py", "faceaudit/v1/faceaudit_pb2.py", "faceaudit_client/client.py",
                *(f"faceaudit/demo/models/{p.name}" for p in DEMO_MODELS.iterdir() if p.suffix != ".py"
                  and p.name != "__pycache__")}
    assert expected <= names, sorted(expected - names)
