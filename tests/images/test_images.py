"""The images scripts/build_images.py builds without a registry, run for real in Docker and Podman.

Also: the build cache (an unchanged image is skipped), and the builder's and engines.sh's pure
helpers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from imagekit import BUILD_SCRIPT, REPO, run_build

pytestmark = pytest.mark.slow

PY_CONNECTORS = ["source-faker", "destination-null", "source-generator", "destination-duckdb"]
ALL_IMAGES = [*PY_CONNECTORS, "no-entrypoint", "sidecar", "ferry", "hello", "bonjour"]
GREETINGS = {"hello": "Hello World", "bonjour": "Bonjour World"}
FAKER_CONFIG = {"count": 5, "seed": 1}


def ref(name: str) -> str:
    return f"ferry-test/{name}:dev"


def engine(
    cli: str, *args: str, input: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cli, *args], input=input, capture_output=True, text=True, timeout=timeout, check=False
    )


def docker(
    *args: str, input: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return engine("docker", *args, input=input, timeout=timeout)


def inspect(name: str, cli: str = "docker") -> dict[str, Any]:
    result = engine(cli, "image", "inspect", ref(name))
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)[0]
    return data


def env_of(config: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in config.get("Env") or [])


def messages(stdout: str) -> list[dict[str, Any]]:
    out = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ferry_build_images", BUILD_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses needs the module registered
    spec.loader.exec_module(module)
    return module


# --- Docker --------------------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine", "docker_images")
class TestDockerImages:
    def test_every_image_is_tagged_and_labelled(self) -> None:
        for name in ALL_IMAGES:
            labels = inspect(name)["Config"]["Labels"] or {}
            assert labels.get("ferry.image") == name
            assert len(labels.get("ferry.build-hash", "")) >= 16

    @pytest.mark.parametrize("name", [*PY_CONNECTORS, "no-entrypoint"])
    def test_connector_answers_spec_offline(self, name: str) -> None:
        result = docker("run", "--rm", "--network", "none", ref(name), "spec")
        assert result.returncode == 0, result.stderr
        specs = [m for m in messages(result.stdout) if m.get("type") == "SPEC"]
        assert len(specs) == 1, result.stdout[-2000:]
        assert "connectionSpecification" in specs[0]["spec"]

    @pytest.mark.parametrize("name", PY_CONNECTORS)
    def test_airbyte_entrypoint_is_the_console_script(self, name: str) -> None:
        config = inspect(name)["Config"]
        exe = f"/opt/connector/bin/{name}"
        assert config["Entrypoint"] == [exe]
        env = env_of(config)
        assert env["AIRBYTE_ENTRYPOINT"] == exe
        assert (
            env["SSL_CERT_FILE"]
            == env["REQUESTS_CA_BUNDLE"]
            == "/etc/ssl/certs/ca-certificates.crt"
        )
        assert env["PATH"].startswith("/opt/connector/bin:")

    def test_no_entrypoint_image_lacks_only_airbyte_entrypoint(self) -> None:
        faker, bare = inspect("source-faker"), inspect("no-entrypoint")
        assert bare["Config"]["Entrypoint"] == faker["Config"]["Entrypoint"]
        assert "AIRBYTE_ENTRYPOINT" not in env_of(bare["Config"])
        # the same rootfs tarball: identical layer
        assert bare["RootFS"]["Layers"] == faker["RootFS"]["Layers"]

    def test_source_faker_discover_with_copied_config(self) -> None:
        script = "cat > /tmp/c.json && exec /opt/connector/bin/source-faker discover --config /tmp/c.json"
        result = docker(
            "run", "--rm", "-i", "--network", "none", "--entrypoint", "sh",
            ref("source-faker"), "-c", script,
            input=json.dumps(FAKER_CONFIG),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        catalogs = [m for m in messages(result.stdout) if m.get("type") == "CATALOG"]
        assert len(catalogs) == 1
        names = {s["name"] for s in catalogs[0]["catalog"]["streams"]}
        assert {"users", "products", "purchases"} <= names

    def test_source_faker_reads_records_offline(self) -> None:
        catalog = {
            "streams": [
                {
                    "stream": {
                        "name": "users",
                        "json_schema": {},
                        "supported_sync_modes": ["full_refresh", "incremental"],
                    },
                    "sync_mode": "full_refresh",
                    "destination_sync_mode": "overwrite",
                }
            ]
        }
        # config and catalog on stdin, one JSON document per line (sh `read` does not over-read)
        script = (
            "IFS= read -r c; printf '%s' \"$c\" > /tmp/c.json; cat > /tmp/cat.json; "
            "exec source-faker read --config /tmp/c.json --catalog /tmp/cat.json"
        )
        result = docker(
            "run", "--rm", "-i", "--network", "none", "--entrypoint", "sh",
            ref("source-faker"), "-c", script,
            input=json.dumps(FAKER_CONFIG) + "\n" + json.dumps(catalog) + "\n",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        records = [m for m in messages(result.stdout) if m.get("type") == "RECORD"]
        assert len(records) == FAKER_CONFIG["count"]
        assert {r["record"]["stream"] for r in records} == {"users"}

    def test_python_images_have_a_working_tls_stack(self) -> None:
        code = (
            "import ssl, os, sqlite3, ctypes, decimal, lzma, bz2, zlib, uuid;"
            "ctx = ssl.create_default_context(cafile=os.environ['SSL_CERT_FILE']);"
            "print(len(ctx.get_ca_certs()) > 0)"
        )
        for name in ("source-faker", "destination-duckdb"):
            result = docker(
                "run", "--rm", "--network", "none", "--entrypoint", "python3", ref(name), "-c", code
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert result.stdout.strip() == "True"

    @pytest.mark.parametrize("name", ["hello", "bonjour"])
    def test_eval_airbyte_entrypoint_greets(self, name: str) -> None:
        result = docker(
            "run", "--rm", "--entrypoint", "/bin/sh", ref(name), "-c", 'eval "$AIRBYTE_ENTRYPOINT World"'
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == GREETINGS[name]

    @pytest.mark.parametrize("name", ["hello", "bonjour"])
    def test_plain_run_greets(self, name: str) -> None:
        result = docker("run", "--rm", ref(name), "World")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == GREETINGS[name]

    def test_hello_has_an_exec_form_script_entrypoint(self) -> None:
        config = inspect("hello")["Config"]
        assert config["Entrypoint"] == ["/app/hello.sh"]
        assert env_of(config)["AIRBYTE_ENTRYPOINT"] == "/app/hello.sh"

    def test_bonjour_inherits_a_shell_form_entrypoint(self) -> None:
        child, parent = inspect("bonjour"), inspect("bonjour-parent")
        entrypoint = child["Config"]["Entrypoint"]
        assert entrypoint[:2] == ["/bin/sh", "-c"]
        assert len(entrypoint) == 3
        assert parent["Config"]["Entrypoint"] == entrypoint
        assert "AIRBYTE_ENTRYPOINT" not in env_of(parent["Config"])
        # a child built FROM the parent (not a re-import): the parent is among its ancestors
        ids = docker("history", "--no-trunc", "--format", "{{.ID}}", ref("bonjour")).stdout.split()
        assert parent["Id"] in ids
        assert ids[0] == child["Id"]
        history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", ref("bonjour"))
        own = [line for line in history.stdout.splitlines() if "#(nop)" in line]
        assert any("AIRBYTE_ENTRYPOINT" in line for line in own)
        assert not any("ENTRYPOINT [" in line for line in own)

    def test_sidecar_has_socat_and_busybox_tools(self) -> None:
        script = (
            "for t in sh mkfifo cat sleep kill timeout wget; do command -v $t >/dev/null || exit 9; done;"
            "mkfifo /tmp/f && "
            "(socat -b262144 TCP-LISTEN:7777,reuseaddr SYSTEM:'echo pong' &) && sleep 0.5 && "
            "echo ping | timeout 5 socat - TCP:127.0.0.1:7777"
        )
        result = docker("run", "--rm", ref("sidecar"), "-c", script)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "pong"

    def test_unchanged_image_is_cached(self) -> None:
        result = run_build("--engine", "docker", "hello", "sidecar", "source-faker")
        for name in ("hello", "sidecar", "source-faker"):
            assert f"{ref(name)} cached" in result.stdout, result.stdout
        assert " built" not in result.stdout
        assert "=built" not in result.stdout


# --- Podman --------------------------------------------------------------------------------------


@pytest.mark.podman
@pytest.mark.usefixtures("podman_engine", "podman_images")
class TestPodmanImages:
    def test_every_image_resolves_by_its_short_name(self) -> None:
        for name in ALL_IMAGES:
            result = engine("podman", "image", "exists", ref(name))
            assert result.returncode == 0, f"{ref(name)} missing in podman"
            labels = inspect(name, "podman")["Config"].get("Labels") or {}
            assert labels.get("ferry.image") == name

    @pytest.mark.parametrize("name", ["hello", "bonjour"])
    def test_plain_run_greets(self, name: str) -> None:
        result = engine("podman", "run", "--rm", ref(name), "World")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == GREETINGS[name]

    def test_source_faker_spec(self) -> None:
        result = engine("podman", "run", "--rm", "--network", "none", ref("source-faker"), "spec")
        assert result.returncode == 0, result.stderr
        assert any(m.get("type") == "SPEC" for m in messages(result.stdout))

    def test_podman_image_matches_docker(self, docker_available: bool) -> None:
        if not docker_available:
            pytest.skip("no Docker engine to compare with")
        for name in ALL_IMAGES:
            d, p = inspect(name), inspect(name, "podman")
            assert (
                d["Config"]["Labels"]["ferry.build-hash"]
                == p["Config"]["Labels"]["ferry.build-hash"]
            )


# --- pure helpers ----------------------------------------------------------------------------


def test_image_hashes_are_stable_and_distinct() -> None:
    builder = load_builder()
    hashes = {}
    for name, img in builder.IMAGES.items():
        kind, digest = builder.rootfs_inputs(img.rootfs)
        first = builder.image_hash(img, digest, kind)
        assert first == builder.image_hash(img, digest, kind)
        hashes[name] = first
    assert len(set(hashes.values())) == len(hashes)
    assert set(hashes) == set(ALL_IMAGES)


def test_ferry_sources_cover_the_distribution() -> None:
    builder = load_builder()
    files = {str(p.relative_to(REPO)) for p in builder.ferry_sources()}
    assert "pyproject.toml" in files
    assert "src/ferry_connectors/__init__.py" in files
    assert not any("__pycache__" in f or ".egg-info" in f for f in files)


def test_rootfs_paths_follow_usrmerge() -> None:
    builder = load_builder()
    lib = "/lib/x86_64-linux-gnu/libc.so.6"
    assert builder.rootfs_path(lib) == "/usr/lib/x86_64-linux-gnu/libc.so.6"
    assert builder.rootfs_path("/lib64/ld-linux-x86-64.so.2").startswith("/usr/lib64/")


def test_dockerfile_quote_keeps_dollars_and_quotes() -> None:
    builder = load_builder()
    value = """/bin/sh -c 'echo Bonjour "$0" "$@"' \\x"""
    assert (
        builder.dockerfile_quote(value)
        == '"/bin/sh -c \'echo Bonjour \\"\\$0\\" \\"\\$@\\"\' \\\\x"'
    )


def test_cli_lists_every_image() -> None:
    result = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--list"], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == [ref(n) for n in load_builder().IMAGES]


ENGINES_SH = REPO / "scripts" / "engines.sh"


def edit_conf(tmp_path: Path, content: str | None) -> str:
    conf = tmp_path / "containers.conf"
    if content is not None:
        conf.write_text(content)
    subprocess.run(["bash", str(ENGINES_SH), "--edit-conf", str(conf)], check=True, timeout=30)
    return conf.read_text()


def test_containers_conf_written_from_scratch(tmp_path: Path) -> None:
    assert edit_conf(tmp_path, None) == (
        "[containers]\ndefault_ulimits = []\n\n[engine]\n"
        'cgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
    )


def test_containers_conf_keeps_other_content(tmp_path: Path) -> None:
    before = (
        '# mine\n[containers]\nlog_driver = "k8s-file"\ndefault_ulimits = [\n'
        '  "nofile=1024:2048",\n]\nnetns = "private"\n\n[engine]\nevents_logger = "journald"\n'
    )
    after = edit_conf(tmp_path, before)
    assert after == (
        '# mine\n[containers]\nlog_driver = "k8s-file"\ndefault_ulimits = []\n'
        'netns = "private"\n\n[engine]\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\n'
    )
    assert edit_conf(tmp_path, after) == after  # idempotent


@pytest.mark.docker
@pytest.mark.podman
def test_engines_sh_is_fast_when_everything_is_there(
    docker_engine: None, podman_engine: None
) -> None:
    if os.geteuid() != 0 or shutil.which("dpkg-query") is None:
        pytest.skip("engines.sh runs as root on Debian")
    result = subprocess.run(["bash", str(ENGINES_SH)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "are ready" in result.stderr
    # Nothing to do: no install, no engine start, no config rewrite.
    for busy in ("installing:", "starting dockerd", "dockerd is up", "wrote "):
        assert busy not in result.stderr, result.stderr
