"""The deployment files: Dockerfile, compose stack, systemd unit and Kubernetes manifests.

No container engine or cluster runs here, so the files are checked for what would break or
weaken a deployment: every YAML parses; the security settings (non-root, read-only root file
system, no capabilities) are present; port 9825, the config path and the state directory agree
everywhere; the shipped configurations load with tlsprobe's own parser; the PrometheusRule
carries exactly the rules file's groups; the sharded StatefulSet's shell line yields a
`--shard` that tlsprobe accepts and whose shards partition the targets. Where the real tool is
on PATH it gets the last word (systemd-analyze, promtool, kubectl kustomize). The exporter
itself runs once, under the kernel's write-xor-execute memory policy that the unit's
MemoryDenyWriteExecute= imposes, and the image's health check is run against it.
"""

from __future__ import annotations

import fnmatch
import functools
import http.server
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.support.gates import Gate, prometheus_tool, system_tool, unavailable
from tests.support.servers import unused_port
from tlsprobe.alerting.generate import render_kubernetes
from tlsprobe.cli import main as cli
from tlsprobe.cli.commands import _shard
from tlsprobe.exporter.config import Config, parse_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"
HEALTHCHECK = DEPLOY / "docker" / "healthcheck.py"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = COMPOSE_DIR / "compose.yml"
UNIT = DEPLOY / "systemd" / "tlsprobe.service"
K8S = DEPLOY / "kubernetes"
RULES = DEPLOY / "prometheus" / "tlsprobe.rules.yml"

PORT = 9825
CONFIG_PATH = "/etc/tlsprobe/tlsprobe.yml"
STATE_DIR = "/var/lib/tlsprobe"
WORKLOADS = ("Deployment", "StatefulSet")


# --- helpers ----------------------------------------------------------------------------------


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@functools.cache
def k8s_objects() -> tuple[dict[str, Any], ...]:
    objects: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        objects += [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return tuple(objects)


def k8s(kind: str, name: str = "tlsprobe") -> dict[str, Any]:
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = k8s(kind)["spec"]["template"]["spec"]
    return spec


def container(kind: str) -> dict[str, Any]:
    containers = pod_spec(kind)["containers"]
    assert len(containers) == 1
    only: dict[str, Any] = containers[0]
    return only


def configmap_config() -> str:
    text: str = k8s("ConfigMap")["data"]["tlsprobe.yml"]
    return text


def parse(text: str) -> Config:
    return parse_config(yaml.safe_load(text), base_dir=Path("/etc/tlsprobe"))


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = load(COMPOSE)
    return loaded


def service(name: str) -> dict[str, Any]:
    svc: dict[str, Any] = compose()["services"][name]
    return svc


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # also inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).partition(" ")
        instructions.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def dockerfile_args(name: str) -> list[str]:
    return [args for word, args in dockerfile() if word == name]


def exec_form(text: str) -> list[str]:
    loaded = yaml.safe_load(text)  # an exec-form instruction is a JSON array, which YAML reads
    assert isinstance(loaded, list), f"not exec form: {text}"
    return [str(item) for item in loaded]


def unit_directives() -> list[tuple[str, str, str]]:
    """(section, key, value) for every line of the unit; keys may repeat, as systemd allows."""
    section = ""
    directives = []
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a directive: {line!r}"
        directives.append((section, key.strip(), value.strip()))
    return directives


def unit_values(key: str) -> list[str]:
    return [value for section, k, value in unit_directives() if k == key and section == "Service"]


def unit_value(key: str) -> str:
    values = unit_values(key)
    assert len(values) == 1, f"{key}: expected one value, found {values}"
    return values[0]


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def image_tag(image: str) -> str:
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    return last.partition(":")[2] if ":" in last else ("@" + digest if digest else "")


# --- every file parses ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    sorted([*COMPOSE_DIR.glob("*.yml"), *K8S.glob("*.yaml")]),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_yaml_files_parse(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


def test_kubernetes_manifests_are_namespace_agnostic_and_well_formed() -> None:
    objects = k8s_objects()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "Service", "ServiceMonitor", "PrometheusRule", "StatefulSet"]
    )
    for obj in objects:
        assert {"apiVersion", "kind", "metadata"} <= obj.keys()
        assert "namespace" not in obj["metadata"], f"{obj['kind']} pins a namespace"
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tlsprobe"


# --- configuration, ports and paths agree everywhere -----------------------------------------


@pytest.mark.parametrize("source", ["compose", "configmap"])
def test_shipped_configurations_load_and_match_the_deployment(source: str) -> None:
    text = (COMPOSE_DIR / "tlsprobe.yml").read_text() if source == "compose" else configmap_config()
    config = parse(text)
    assert config.targets, "a configuration that probes nothing"
    assert str(config.state_dir) == STATE_DIR
    assert config.web.listen_port == PORT
    assert config.web.listen_host == "", "must listen on every interface of the container"


def test_port_9825_everywhere() -> None:
    assert dockerfile_args("EXPOSE") == [str(PORT)]
    assert f"127.0.0.1:{PORT}/-/healthy" in " ".join(dockerfile_args("ENV"))
    assert load_module(HEALTHCHECK, "healthcheck").DEFAULT_URL.endswith(f":{PORT}/-/healthy")

    assert service("tlsprobe")["ports"] == [f"127.0.0.1:{PORT}:{PORT}"]
    assert service("tlsprobe")["command"][-1] == f"0.0.0.0:{PORT}"
    prometheus = load(COMPOSE_DIR / "prometheus.yml")
    tlsprobe_jobs = [j for j in prometheus["scrape_configs"] if "tlsprobe" in j["job_name"]]
    assert [t for j in tlsprobe_jobs for s in j["static_configs"] for t in s["targets"]] == [
        f"tlsprobe:{PORT}"
    ]

    for kind in WORKLOADS:
        assert container(kind)["ports"] == [
            {"name": "metrics", "containerPort": PORT, "protocol": "TCP"}
        ]
    assert k8s("Service")["spec"]["ports"][0]["port"] == PORT


def test_config_and_state_paths_agree_everywhere() -> None:
    cmd = exec_form(dockerfile_args("CMD")[-1])
    assert cmd[cmd.index("--config") + 1] == CONFIG_PATH
    assert dockerfile_args("VOLUME") == [f'["{STATE_DIR}"]']

    volumes = service("tlsprobe")["volumes"]
    assert f"./tlsprobe.yml:{CONFIG_PATH}:ro" in volumes
    assert f"tlsprobe-state:{STATE_DIR}" in volumes

    assert f"--config {CONFIG_PATH}" in unit_value("ExecStart")
    assert unit_value("StateDirectory") == Path(STATE_DIR).name
    assert unit_value("ConfigurationDirectory") == Path(CONFIG_PATH).parent.name

    for kind in WORKLOADS:
        mounts = {m["name"]: m for m in container(kind)["volumeMounts"]}
        assert mounts["config"]["mountPath"] == str(Path(CONFIG_PATH).parent)
        assert "subPath" not in mounts["config"], "subPath mounts never see ConfigMap updates"
        assert mounts["state"]["mountPath"] == STATE_DIR
        config_volume = next(v for v in pod_spec(kind)["volumes"] if v["name"] == "config")
        assert config_volume["configMap"]["name"] == k8s("ConfigMap")["metadata"]["name"]
    assert Path(CONFIG_PATH).name in k8s("ConfigMap")["data"]


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(lambda: exec_form(dockerfile_args("CMD")[-1]), id="dockerfile-cmd"),
        pytest.param(lambda: service("tlsprobe")["command"], id="compose-command"),
        pytest.param(lambda: container("Deployment")["args"], id="deployment-args"),
        pytest.param(
            lambda: shlex.split(unit_value("ExecStart").replace(" $TLSPROBE_OPTS", ""))[1:],
            id="systemd-execstart",
        ),
    ],
)
def test_commands_are_accepted_by_the_cli(argv: Any) -> None:
    args = cli.make_parser().parse_args(argv())
    assert args.command in ("serve", "demo")


# --- Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_runs_as_numeric_non_root_user_before_the_entrypoint() -> None:
    words = [word for word, _ in dockerfile()]
    users = dockerfile_args("USER")
    assert users, "no USER: the container would run as root"
    user, _, group = users[-1].partition(":")
    # Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert user.isdigit() and int(user) != 0 and group.isdigit() and int(group) != 0
    last_user = len(words) - 1 - words[::-1].index("USER")
    assert last_user < words.index("ENTRYPOINT")
    assert exec_form(dockerfile_args("ENTRYPOINT")[-1]) == ["tlsprobe"]
    for kind in WORKLOADS:
        assert pod_spec(kind)["securityContext"]["runAsUser"] == int(user)


def test_dockerfile_hygiene() -> None:
    instructions = dockerfile()
    health = dockerfile_args("HEALTHCHECK")
    assert len(health) == 1 and "CMD" in health[0] and "NONE" not in health[0]
    assert not dockerfile_args("ADD"), "use COPY; ADD fetches URLs and unpacks archives"
    bases = dockerfile_args("FROM")
    assert len(bases) == 2, "multi-stage: builder and runtime"
    arg_defaults = dict(a.split("=", 1) for a in dockerfile_args("ARG") if "=" in a)
    for base in bases:
        image = base.split()[0]
        match = re.fullmatch(r"\$\{(\w+)\}", image)
        image = arg_defaults[match.group(1)] if match else image
        assert image_tag(image) not in ("", "latest"), f"unpinned base image {image}"
    assert "pip wheel" in next(a for w, a in instructions if w == "RUN")
    # The runtime stage installs from the builder's wheels, not from the network.
    runtime_runs = [
        a for w, a in instructions[instructions.index(("FROM", bases[1])) :] if w == "RUN"
    ]
    assert any("--no-index" in run for run in runtime_runs)


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/").removeprefix("**/")
        if any(
            fnmatch.fnmatchcase(c, glob) or fnmatch.fnmatchcase(c.split("/")[-1], glob)
            for c in candidates
        ):
            verdict = not negate
    return verdict


def test_build_context_holds_every_copied_file() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [args for args in dockerfile_args("COPY") if "--from" not in args]
    sources = [s for args in copies for s in shlex.split(args)[:-1] if not s.startswith("--")]
    assert "tlsprobe/" in sources and "pyproject.toml" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not ignored(source.rstrip("/"), patterns), f"COPY {source}: excluded from context"
    assert not ignored("tlsprobe/probe.py", patterns)
    assert ignored("tlsprobe/__pycache__/probe.cpython-311.pyc", patterns)
    assert ignored("tests/conftest.py", patterns), "the context should carry only what is built"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        codes = {"/ok": 200, "/auth": 401, "/broken": 500}
        self.send_response(codes.get(self.path, 404))
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_accepts_answers_and_rejects_silence(http_server: str) -> None:
    check = load_module(HEALTHCHECK, "healthcheck").check
    assert check(f"{http_server}/ok")[0] is True
    assert check(f"{http_server}/auth")[0] is True  # basic auth on: alive, wants a password
    assert check(f"{http_server}/broken") == (False, "HTTP 500")
    assert check(f"http://127.0.0.1:{unused_port()}/-/healthy", timeout=1)[0] is False
    assert check("file:///etc/passwd")[0] is False


# --- compose ----------------------------------------------------------------------------------


def test_compose_services_are_wired_and_pinned() -> None:
    services = compose()["services"]
    assert set(services) == {"tlsprobe", "prometheus", "alertmanager", "grafana"}
    for name, svc in services.items():
        if "build" in svc:
            build = svc["build"]
            assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert image_tag(svc["image"]) not in ("", "latest"), f"{name}: unpinned image"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"

    prometheus = load(COMPOSE_DIR / "prometheus.yml")
    mounted = {
        Path(v.split(":")[1]).name: v.split(":")[0] for v in service("prometheus")["volumes"]
    }
    for rule_file in prometheus["rule_files"]:
        assert (COMPOSE_DIR / mounted[rule_file]).resolve() == RULES
    managers = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert [m.split(":")[0] for m in managers] == ["alertmanager"]

    grafana = service("grafana")
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    dashboards = next(v for v in grafana["volumes"] if v.split(":")[1] == str(home.parent))
    assert (COMPOSE_DIR / dashboards.split(":")[0] / home.name).is_file()
    datasource = load(ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_compose_tlsprobe_is_locked_down() -> None:
    svc = service("tlsprobe")
    assert svc["read_only"] is True
    assert any(t.startswith("/tmp") for t in svc["tmpfs"])
    assert svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    assert not svc["user"].startswith("0")
    # The state volume is the only persistent writable mount; the config is read-only.
    writable = [v for v in svc["volumes"] if not v.endswith(":ro")]
    assert writable == [f"tlsprobe-state:{STATE_DIR}"]


def test_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = prometheus_tool("promtool")
    # Inside the container the rules sit beside prometheus.yml; rebuild that layout.
    shutil.copy(COMPOSE_DIR / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(RULES, tmp_path / "tlsprobe.rules.yml")
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


# --- systemd ----------------------------------------------------------------------------------


def test_systemd_unit_is_hardened() -> None:
    assert unit_values("DynamicUser") == ["yes"] or unit_values("User") not in ([], ["root"])
    required = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "MemoryDenyWriteExecute": "yes",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure",
    }
    for key, value in required.items():
        assert unit_value(key) == value, key
    assert "@system-service" in unit_values("SystemCallFilter")
    assert not unit_values("ReadWritePaths"), "the state directory must be the only writable path"
    assert {"2", "3"} <= set(unit_value("RestartPreventExitStatus").split())


def test_start_up_errors_exit_with_statuses_the_unit_does_not_restart(tmp_path: Path) -> None:
    broken = tmp_path / "tlsprobe.yml"
    broken.write_text("web: {listen: nowhere}\n")
    assert cli.main(["serve", "--config", str(broken)]) == 2
    assert cli.main(["serve", "--config", str(tmp_path / "missing.yml")]) == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["serve", "--config", str(broken), "--shard", "3/3"])
    assert exc.value.code == 3  # usage errors exit 3 (Nagios UNKNOWN), also not restarted
    prevented = unit_value("RestartPreventExitStatus").split()
    assert "2" in prevented and "3" in prevented


def unit_for_this_host(tmp_path: Path) -> Path:
    """The unit with ExecStart's binary swapped for one that exists here (verify checks it)."""
    text = UNIT.read_text(encoding="utf-8")
    binary = shlex.split(unit_value("ExecStart"))[0]
    path = tmp_path / UNIT.name
    path.write_text(text.replace(binary, sys.executable), encoding="utf-8")
    return path


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = system_tool("systemd-analyze", Gate.SYSTEMD)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit_for_this_host(tmp_path))],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    # Unknown or malformed directives are only warned about ("..., ignoring"): none allowed.
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_systemd_analyze_security_rates_the_unit_ok(tmp_path: Path) -> None:
    analyze = system_tool("systemd-analyze", Gate.SYSTEMD)
    unit = unit_for_this_host(tmp_path)
    # --threshold counts in tenths: 20 is an exposure of 2.0, the top of systemd's "OK" band.
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=20", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if "Unknown option" in result.stderr or "unrecognized option" in result.stderr:
        unavailable(Gate.SYSTEMD, "this systemd-analyze has no offline security analysis")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


# The child forbids itself writable+executable memory (the kernel's PR_SET_MDWE, what the unit's
# MemoryDenyWriteExecute= enforces with seccomp) before importing tlsprobe, so every extension
# module (cryptography, bcrypt, aiohttp, yaml, sqlite3) loads and runs under the policy.
UNDER_MDWE = """
import ctypes, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0):
    sys.exit(77)  # kernel older than 6.3
from tlsprobe.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_exporter_runs_under_write_xor_execute_and_passes_the_image_healthcheck() -> None:
    port = unused_port()
    url = f"http://127.0.0.1:{port}"
    demo = ["demo", "--listen", f"127.0.0.1:{port}", "--interval", "2s", "--log-level", "error"]
    child = subprocess.Popen(
        [sys.executable, "-c", UNDER_MDWE, *demo],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        metrics = wait_for_probes(url, child)
        assert "tlsprobe_probe_success{" in metrics
        env = {**os.environ, "TLSPROBE_HEALTHCHECK_URL": f"{url}/-/healthy"}
        health = subprocess.run(
            [sys.executable, str(HEALTHCHECK)],
            env=env,
            capture_output=True,
            timeout=10,
            check=False,
        )
        assert health.returncode == 0, health.stderr
    finally:
        child.terminate()
        _, stderr = child.communicate(timeout=10)
    assert child.returncode == 0, stderr.decode(errors="replace")


def wait_for_probes(url: str, child: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if child.poll() is not None:
            if child.returncode == 77:
                unavailable(Gate.MDWE, "the kernel has no PR_SET_MDWE (Linux 6.3+)")
            raise AssertionError(
                f"demo exited {child.returncode}: {child.stderr and child.stderr.read()!r}"
            )
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=2) as response:
                text: str = response.read().decode()
            if "tlsprobe_probe_success{" in text:
                return text
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("the demo exporter published no probe result within 20 s")


# --- Kubernetes -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", WORKLOADS)
def test_workload_security_context(kind: str) -> None:
    spec = pod_spec(kind)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0 and pod["runAsGroup"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    box = container(kind)["securityContext"]
    assert box["allowPrivilegeEscalation"] is False
    assert box["readOnlyRootFilesystem"] is True
    assert box["capabilities"]["drop"] == ["ALL"]
    assert "add" not in box["capabilities"]


@pytest.mark.parametrize("kind", WORKLOADS)
def test_workload_probes_resources_and_writable_paths(kind: str) -> None:
    box = container(kind)
    assert box["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "metrics"}
    assert box["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "metrics"}
    assert {"cpu", "memory"} <= box["resources"]["requests"].keys()
    assert "memory" in box["resources"]["limits"]
    writable = {m["mountPath"] for m in box["volumeMounts"] if not m.get("readOnly")}
    assert writable == {STATE_DIR, "/tmp"}


def test_service_and_servicemonitor_select_the_workloads() -> None:
    svc = k8s("Service")
    assert svc["spec"]["clusterIP"] == "None", "headless: every replica is its own target"
    for kind in WORKLOADS:
        labels = k8s(kind)["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items()
        assert k8s(kind)["spec"]["selector"]["matchLabels"].items() <= labels.items()
    monitor = k8s("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selected = [
        o
        for o in k8s_objects()
        if o["kind"] == "Service"
        and monitor["spec"]["selector"]["matchLabels"].items() <= o["metadata"]["labels"].items()
    ]
    assert selected == [svc]
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in port_names
    # The operator names the job after the Service; TlsprobeExporterDown matches on it.
    assert "tlsprobe" in svc["metadata"]["name"]
    assert k8s("StatefulSet")["spec"]["serviceName"] == svc["metadata"]["name"]


def test_prometheusrule_carries_the_rules_file_unchanged() -> None:
    rule = k8s("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == load(RULES)["groups"]
    committed = (K8S / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert committed == render_kubernetes(), (
        "prometheusrule.yaml is stale: tlsprobe rules --format kubernetes > "
        "deploy/kubernetes/prometheusrule.yaml"
    )


def sharded_argv(ordinal: int, tmp_path: Path) -> list[str]:
    """What the StatefulSet's container runs in pod tlsprobe-ORDINAL (a fake tlsprobe echoes)."""
    box = container("StatefulSet")
    assert box["command"][0] == "/bin/sh"
    fake = tmp_path / "tlsprobe"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    env = {e["name"]: e.get("value", "") for e in box["env"]}
    env |= {"POD_NAME": f"tlsprobe-{ordinal}", "PATH": f"{tmp_path}:/usr/bin:/bin"}
    result = subprocess.run(
        [*box["command"], *box["args"]], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.splitlines()


def test_sharded_statefulset_partitions_the_targets(tmp_path: Path) -> None:
    sts = k8s("StatefulSet")
    env = {e["name"]: e for e in container("StatefulSet")["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    count = int(env["SHARD_COUNT"]["value"])
    assert sts["spec"]["replicas"] == count, "SHARD_COUNT must equal replicas"
    assert sts["metadata"]["name"] == "tlsprobe"  # pods are tlsprobe-0 .. tlsprobe-(N-1)
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"

    config = parse(configmap_config())
    owned: list[tuple[str, str]] = []
    for ordinal in range(count):
        argv = sharded_argv(ordinal, tmp_path)
        args = cli.make_parser().parse_args(argv)
        assert args.command == "serve" and args.config == CONFIG_PATH
        assert args.shard == _shard(f"{ordinal}/{count}") == (ordinal, count)
        owned += [t.key for t in config.shard(*args.shard).targets]
    assert sorted(owned) == sorted(t.key for t in config.targets), "not a partition"


def test_kustomization_lists_the_single_exporter_set() -> None:
    kustomization = load(K8S / "kustomization.yaml")
    resources = kustomization["resources"]
    assert all((K8S / r).is_file() for r in resources)
    assert "deployment.yaml" in resources and "statefulset-sharded.yaml" not in resources


def test_kustomize_renders_the_single_exporter_set() -> None:
    kubectl = system_tool("kubectl", Gate.KUBECTL)
    rendered = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=30, check=True
    )
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(rendered.stdout) if d)
    assert kinds == ["ConfigMap", "Deployment", "PrometheusRule", "Service", "ServiceMonitor"]


def test_deploy_doc_names_only_files_that_exist() -> None:
    doc = (DEPLOY / "DEPLOY.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(deploy/[\w./-]+)`", doc))
    assert {"deploy/docker/Dockerfile", "deploy/compose/compose.yml"} <= named
    missing = [p for p in named if not (ROOT / p).exists()]
    assert not missing


# --- the scrape's instance label in Kubernetes ---------------------------------------------------

_RELABEL_KEYS = {
    "sourceLabels": "source_labels",
    "targetLabel": "target_label",
    "regex": "regex",
    "replacement": "replacement",
    "separator": "separator",
    "action": "action",
}


def _discovered(pod: str, statefulset: bool) -> dict[str, Any]:
    """A static target carrying the labels Kubernetes endpoint discovery gives a tlsprobe pod
    (its address stands for the pod's IP:port, which a new pod does not keep)."""
    labels = {
        "__meta_kubernetes_namespace": "monitoring",
        "__meta_kubernetes_service_name": "tlsprobe",
        "__meta_kubernetes_pod_name": pod,
    }
    if statefulset:
        labels["__meta_kubernetes_pod_label_statefulset_kubernetes_io_pod_name"] = pod
    return {"targets": [f"127.0.0.1:{unused_port()}"], "labels": labels}


def test_servicemonitor_gives_each_exporter_an_instance_that_survives_a_new_pod(
    tmp_path: Path,
) -> None:
    """Every alert carries `instance`; by default that is the pod's IP:port, which a replaced
    pod (a Deployment's Recreate rollout, a StatefulSet pod rescheduled) does not keep, so
    every firing page would resolve and page again as a new alert, and every pending `for:`
    would start over. The ServiceMonitor's relabelings, run here by a real Prometheus on the
    labels endpoint discovery gives, name the exporter instead: namespace/pod for a StatefulSet
    shard, namespace/Service for the one pod of the Deployment."""
    endpoints = k8s("ServiceMonitor")["spec"]["endpoints"]
    relabel = [
        {_RELABEL_KEYS[key]: value for key, value in step.items()}
        for step in endpoints[0].get("relabelings", [])
    ]
    pods = [
        _discovered("tlsprobe-1", statefulset=True),
        _discovered("tlsprobe-1", statefulset=True),  # the same shard, rescheduled
        _discovered("tlsprobe-7d9f8c6b5-x2x4q", statefulset=False),
        _discovered("tlsprobe-6c5b4a398-k7m2p", statefulset=False),  # after a rollout
    ]
    # One job each: within one job, targets whose labels end up equal are merged.
    jobs = [
        {"job_name": f"tlsprobe-{i}", "static_configs": [pod], "relabel_configs": relabel}
        for i, pod in enumerate(pods)
    ]
    path = tmp_path / "prometheus.yml"
    config = {"global": {"scrape_interval": "1h"}, "scrape_configs": jobs}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = unused_port()
    child = subprocess.Popen(
        [
            prometheus_tool("prometheus"),
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        active: list[dict[str, Any]] = []
        while len(active) < len(jobs):
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
            try:
                url = f"http://127.0.0.1:{port}/api/v1/targets"
                with urllib.request.urlopen(url, timeout=5) as response:
                    active = yaml.safe_load(response.read())["data"]["activeTargets"]
            except OSError:
                continue
    finally:
        child.terminate()
        child.wait(timeout=10)
    instances = {t["labels"]["job"]: t["labels"]["instance"] for t in active}
    assert [instances[job["job_name"]] for job in jobs] == [
        "monitoring/tlsprobe-1",
        "monitoring/tlsprobe-1",
        "monitoring/tlsprobe",
        "monitoring/tlsprobe",
    ]
