"""`ferry spec|check|discover`, `ferry connectors list`, `ferry gc`, flags and entry points."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from clikit import Ferry, WriteConfig

MakeWheel = Callable[[str, str, dict[str, str]], Path]
GOOD = '{"api_key": "key-1234", "count": 2}'


def test_spec_prints_the_spec_as_json(ferry: Ferry, protocol_sh: str) -> None:
    result = ferry("spec", protocol_sh)
    assert result.code == 0
    spec = json.loads(result.out)
    assert spec["connectionSpecification"]["required"] == ["api_key", "count"]
    assert result.out.startswith("{\n  ")  # indented for people
    assert result.err == ""  # connector logs only with -v


def test_spec_json_is_one_line(ferry: Ferry, protocol_sh: str) -> None:
    result = ferry("spec", protocol_sh, "--json")
    assert result.out.count("\n") == 1
    assert json.loads(result.out)["documentationUrl"] == "https://example.com/protocol-sh"


def test_verbose_shows_connector_logs_with_its_name(ferry: Ferry, protocol_sh: str) -> None:
    result = ferry("spec", protocol_sh, "-v")  # the flag works after the command too
    assert result.code == 0
    assert "protocol.sh | protocol.sh starting (not JSON)" in result.err.splitlines()
    assert "protocol.sh | printing the spec" in result.err.splitlines()


def test_check_succeeded(ferry: Ferry, protocol_sh: str, write_config: WriteConfig) -> None:
    result = ferry("check", protocol_sh, "--config", write_config(GOOD))
    assert (result.code, result.out) == (0, "SUCCEEDED\n")


def test_check_failed_exits_1_with_the_connectors_message(
    ferry: Ferry, protocol_sh: str, write_config: WriteConfig
) -> None:
    config = write_config("api_key: key-1234\ncount: 2\nmode: fail\n", ".yaml")
    result = ferry("check", protocol_sh, "--config", config)
    assert (result.code, result.out) == (1, "FAILED: the service refused the api key\n")
    as_json = ferry("check", protocol_sh, "--config", config, "--json")
    assert as_json.code == 1
    assert json.loads(as_json.out) == {
        "status": "FAILED",
        "message": "the service refused the api key",
    }


def test_discover_prints_a_table_of_streams(
    ferry: Ferry, protocol_sh: str, write_config: WriteConfig
) -> None:
    result = ferry("discover", protocol_sh, "--config", write_config(GOOD))
    assert result.code == 0
    assert result.out.splitlines() == [
        "STREAM      SYNC MODES                 CURSOR                       PRIMARY KEY",
        "users       full_refresh, incremental  updated_at (source-defined)  id",
        "app.events  full_refresh               -                            -",
    ]


def test_discover_json_is_the_catalog(
    ferry: Ferry, protocol_sh: str, write_config: WriteConfig
) -> None:
    result = ferry("discover", protocol_sh, "--config", write_config(GOOD), "--json")
    catalog = json.loads(result.out)
    assert [s["name"] for s in catalog["streams"]] == ["users", "events"]
    assert catalog["streams"][0]["source_defined_primary_key"] == [["id"]]


def test_connectors_list_when_nothing_is_installed(ferry: Ferry, ferry_home: Path) -> None:
    result = ferry("connectors", "list")
    assert (
        result.out
        == f"no connectors installed in {ferry_home / 'connectors'} (ferry connectors install NAME)\n"
    )
    assert json.loads(ferry("connectors", "list", "--json").out) == []


def test_gc_dry_run_runs(ferry: Ferry) -> None:
    result = ferry("gc", "--dry-run")
    assert result.code == 0, result.err
    assert result.out.strip() != ""


def test_no_command_prints_help_and_exits_2(ferry: Ferry) -> None:
    result = ferry()
    assert result.code == 2
    assert "usage: ferry" in result.err


def test_a_usage_error_exits_2(ferry: Ferry) -> None:
    result = ferry("check", "source-x")  # --config is required
    assert result.code == 2
    assert "the following arguments are required: --config" in result.err


def test_help_exits_0(ferry: Ferry) -> None:
    result = ferry("--help")
    assert result.code == 0
    for command in ("spec", "check", "discover", "connectors", "gc", "sync"):
        assert command in result.out


def test_python_dash_m_ferry(ferry_process: Ferry, protocol_sh: str) -> None:
    result = ferry_process("spec", protocol_sh, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["connectionSpecification"]["type"] == "object"


def test_the_ferry_console_script(protocol_sh: str) -> None:
    script = Path(sys.executable).parent / "ferry"
    result = subprocess.run([str(script), "spec", protocol_sh], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr
    assert b'"connectionSpecification"' in result.stdout


def test_connectors_install_and_list(ferry: Ferry, ferry_home: Path, make_wheel: MakeWheel) -> None:
    wheel = make_wheel("tiny-connector", "1.2.3", {"source-tiny": "main"})
    result = ferry("connectors", "install", str(wheel))
    assert result.code == 0, result.err
    executable = ferry_home / "connectors" / "source-tiny" / "bin" / "source-tiny"
    assert result.out == f"installed source-tiny 1.2.3 (tiny-connector): {executable}\n"
    listing = ferry("connectors", "list")
    assert listing.out.splitlines() == [
        "NAME         VERSION  EXECUTABLE",
        f"source-tiny  1.2.3    {executable}",
    ]
    assert json.loads(ferry("connectors", "list", "--json").out) == [
        {
            "name": "source-tiny",
            "package": "tiny-connector",
            "version": "1.2.3",
            "executable": str(executable),
        }
    ]
    assert json.loads(ferry("spec", "source-tiny").out) == {
        "connectionSpecification": {"type": "object"}
    }


def test_connectors_install_failure_exits_2_with_pips_reason(
    ferry: Ferry, tmp_path: Path, ferry_home: Path
) -> None:
    broken = tmp_path / "broken_connector-1.0-py3-none-any.whl"
    broken.write_bytes(b"not a zip")
    result = ferry("connectors", "install", str(broken))
    assert result.code == 2
    assert f"ferry: error: pip install {broken} failed (exit code 1):" in result.err
    assert [p.name for p in (ferry_home / "connectors").iterdir()] == []


def test_a_local_prefix_wins_over_the_runtime_option(ferry: Ferry, protocol_sh: str) -> None:
    result = ferry("spec", f"local:{protocol_sh}", "--runtime", "docker", "--json")
    assert result.code == 0, result.err
