"""`python -m edgectl package`: a small, byte-compiled deployment.zip that runs on the Lambda runtime's boto3."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from edgectl import cmd_package
from edgectl.cmd_package import POWERTOOLS_UNUSED, SIZE_TARGET_BYTES, PackageError, build, lambda_runtime_site
from edgectl.cmd_render_policies import ROOT

RUNTIME_PROVIDED_TOP = ("boto3/", "botocore/", "s3transfer/")


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The prod artifact, built without downloads (tests stay on 127.0.0.1): C speedups are
    left out then, as they are for a platform whose wheel cannot be fetched."""
    out = tmp_path_factory.mktemp("dist")
    result = build("prod", out, platform_wheels=False)
    with zipfile.ZipFile(result["zip"]) as archive:
        result["names"] = archive.namelist()
        result["unzipped"] = out / "unzipped"
        archive.extractall(result["unzipped"])
    return result


def test_the_artifact_is_small_and_bundles_no_sdk(packaged: dict[str, Any]) -> None:
    assert packaged["bytes"] <= SIZE_TARGET_BYTES
    names = packaged["names"]
    assert "app.py" in names and "chalicelib/edge/gateways.py" in names and "chalice/app.py" in names
    assert not [n for n in names if n.startswith(RUNTIME_PROVIDED_TOP)]
    assert not [n for n in names if n.startswith(("aws_xray_sdk/", "wrapt/"))]  # prod has tracing off
    assert not [n for n in names if n.endswith(".so")]  # no x86_64 code from this machine


def test_every_function_runs_python_3_13_on_arm64(packaged: dict[str, Any]) -> None:
    template = json.loads((Path(packaged["zip"]).parent / "sam.json").read_text())
    functions = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]
    assert len(functions) == 4
    assert {(f["Runtime"], tuple(f["Architectures"])) for f in functions} == {("python3.13", ("arm64",))}
    assert packaged["python"] == "3.13"


def test_only_the_runtimes_python_builds_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Another interpreter's bytecode would be ignored by Lambda, and Chalice would name its runtime."""
    monkeypatch.setattr(cmd_package, "LAMBDA_PYTHON", (3, 12))
    with pytest.raises(PackageError, match=r"run on python3\.12"):
        build("prod", tmp_path, platform_wheels=False)
    assert not (tmp_path / "deployment.zip").exists()


def test_every_module_ships_unchecked_hash_bytecode_for_python_3_13(packaged: dict[str, Any]) -> None:
    """Lambda cannot write bytecode, and zip timestamps (1980) would make timestamp-checked .pyc stale."""
    root: Path = packaged["unzipped"]
    tag = "cpython-313"
    sources = [p for p in root.rglob("*.py")]
    assert len(sources) > 100
    for source in sources:
        compiled = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        header = compiled.read_bytes()[:8]
        assert header[:4] == importlib.util.MAGIC_NUMBER, compiled
        assert int.from_bytes(header[4:8], "little") == 0b01, compiled  # hash-based, source not checked


def test_left_out_powertools_parts_are_never_imported(packaged: dict[str, Any]) -> None:
    code = "\n".join(p.read_text() for p in [ROOT / "app.py", *(ROOT / "chalicelib").rglob("*.py")])
    for part in POWERTOOLS_UNUSED:
        dotted = "aws_lambda_powertools." + part.replace("/", ".")
        assert not re.search(rf"{re.escape(dotted)}\b", code), f"{dotted} is imported: keep it in the package"
        assert not (packaged["unzipped"] / "aws_lambda_powertools" / part).exists()


def test_the_unzipped_artifact_runs_on_a_runtime_with_only_boto3(packaged: dict[str, Any], tmp_path: Path) -> None:
    """As Lambda runs it: the package first on sys.path, then the runtime's boto3, nothing else
    (no site-packages), and no bytecode written."""
    runtime = lambda_runtime_site(tmp_path / "runtime")
    program = """
import json, sys
from app import app
health = app({"version": "2.0", "rawPath": "/health", "requestContext": {"http": {"method": "GET"}}}, None)
refused = app({"version": "2.0", "rawPath": "/api/ingest", "headers": {"content-type": "application/json"},
               "body": "{}", "requestContext": {"http": {"method": "POST", "sourceIp": "203.0.113.9"}}}, None)
import chalicelib.forward.handler, chalicelib.keysync.job, pymysql
from aws_lambda_powertools.utilities.parameters import SSMProvider
import botocore
print(json.dumps({"health": health["statusCode"], "refused": refused["statusCode"], "botocore": botocore.__file__,
                  "app": sys.modules["app"].__file__}))
"""
    done = subprocess.run(
        [sys.executable, "-S", "-c", program],
        cwd=tmp_path,  # `-c` puts the working directory first on sys.path
        env={
            "PYTHONPATH": f"{packaged['unzipped']}:{runtime}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert (seen["health"], seen["refused"]) == (200, 401)
    assert seen["botocore"].startswith(str(runtime)) and seen["app"].startswith(str(packaged["unzipped"]))


def test_tracing_stages_get_the_xray_sdk(tmp_path: Path) -> None:
    result = build("prod", tmp_path, tracing=True, platform_wheels=False)
    with zipfile.ZipFile(result["zip"]) as archive:
        names = archive.namelist()
    assert "aws_xray_sdk/core/__init__.py" in names and "wrapt/__init__.py" in names
    assert not [n for n in names if n.startswith(RUNTIME_PROVIDED_TOP)]
