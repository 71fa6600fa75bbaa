"""`package`: the deployable artifact, small and byte-compiled (what `make package STAGE=prod` runs).

`chalice package` writes the stack template (`sam.json`, with infra/merge-template.json
merged in) and a `deployment.zip` that would bundle whatever pip resolves. This command
keeps Chalice's template and app files and rebuilds the zip:

- the runtime requirements come from this virtualenv (the versions the tests ran), without
  boto3/botocore/s3transfer: the Lambda runtime has its own, and a bundled copy would shadow it;
  each must be the version requirements.lock pins (`make install` installs them), or nothing is built;
- the X-Ray SDK (requirements-tracing.txt) only for a stage with `"xray": true`;
- Powertools without the utilities this code never imports (event handler, parser, ...);
- every module byte-compiled with `--invalidation-mode unchecked-hash`: Lambda cannot write
  bytecode, and zip timestamps (1980) would make timestamp-checked .pyc files stale anyway.

Bytecode is only used by the Python that wrote it, and Chalice names the runtime after the
interpreter it runs on, so the package is built by the runtime's Python (LAMBDA_PYTHON) only.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

from edgectl.cmd_render_policies import MERGE_TEMPLATE, ROOT, render_stage

REQUIREMENTS = ROOT / "requirements.txt"
TRACING_REQUIREMENTS = ROOT / "requirements-tracing.txt"
# The pinned runtime set (`make lock` writes it from the two files above).
RUNTIME_LOCK = ROOT / "requirements.lock"
# The Lambda Python runtime ships these; bundling them would shadow its copies.
RUNTIME_PROVIDED = {"boto3", "botocore", "s3transfer"}
# Powertools parts this code never imports (checked by tests/integration/test_package.py against the sources).
POWERTOOLS_UNUSED = [
    "event_handler",
    "utilities/auth_alpha",
    "utilities/batch",
    "utilities/circuit_breaker",
    "utilities/data_classes",
    "utilities/data_masking",
    "utilities/feature_flags",
    "utilities/idempotency",
    "utilities/kafka",
    "utilities/metadata",
    "utilities/parser",
    "utilities/streaming",
    "utilities/validation",
]
# Every function's runtime (Chalice writes `python<major>.<minor>` of the interpreter it runs on).
LAMBDA_PYTHON = (3, 13)
# Lambda on Graviton (arm64); python3.13 runs on Amazon Linux 2023 (glibc 2.34): any wheel for glibc <= 2.34 fits.
PLATFORM_TAGS = [f"manylinux_2_{minor}_aarch64" for minor in range(34, 16, -1)] + ["manylinux2014_aarch64"]
# Distributions whose C speedups have a pure-Python fallback, used when no arm64 wheel can be fetched.
PURE_FALLBACK = {"wrapt", "protobuf"}
WHEEL_CACHE = ROOT / "build" / "wheels"
SIZE_TARGET_BYTES = 3 * 1024 * 1024


class PackageError(RuntimeError):
    """The artifact cannot be built as asked."""


def requirement_names(path: Path) -> list[str]:
    """Distribution names of a requirements file (`-r` includes followed)."""
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            names += requirement_names(path.parent / line[3:].strip())
        elif line:
            names.append(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0])
    return names


def locked_versions(path: Path) -> dict[str, str]:
    """`name==version` pins of a lock file that apply to this interpreter, by canonical name."""
    pins = {}
    for line in path.read_text().splitlines():
        requirement, _, marker = line.split("#", 1)[0].partition(";")
        name, separator, version = requirement.strip().partition("==")
        if separator and not (marker.strip() and not _marker_applies(marker)):
            pins[_canonical(name)] = version.strip()
    return pins


def check_locked(dists: list[metadata.Distribution], pins: dict[str, str]) -> None:
    """The package is built from the lock: every bundled distribution at its pinned version."""
    wrong = [
        f"{dist.metadata['Name']} {dist.version} (lock: {pins.get(_canonical(dist.metadata['Name']), 'not pinned')})"
        for dist in dists
        if pins.get(_canonical(dist.metadata["Name"])) != dist.version
    ]
    if wrong:
        raise PackageError(f"this virtualenv differs from {RUNTIME_LOCK.name}: {', '.join(wrong)}; run `make install`")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: list[str], exclude: set[str]) -> list[metadata.Distribution]:
    """The installed distributions `names` need, with their dependencies (markers that do not apply skipped)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [_canonical(n) for n in names]
    excluded = {_canonical(n) for n in exclude}
    while todo:
        name = todo.pop()
        if name in seen or name in excluded:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError as error:
            raise PackageError(f"{name} is not installed in this virtualenv: run `make install`") from error
        seen[name] = dist
        for requirement in dist.requires or []:
            spec, _, marker = requirement.partition(";")
            if marker and not _marker_applies(marker):
                continue
            todo.append(_canonical(re.split(r"[<>=!~\[( ]", spec.strip(), maxsplit=1)[0]))
    return list(seen.values())


def _marker_applies(marker: str) -> bool:
    from packaging.markers import Marker

    return Marker(marker).evaluate({"extra": ""})


def _is_native(relative: Path) -> bool:
    return relative.suffix == ".so" or ".so." in relative.name


def copy_distribution(dist: metadata.Distribution, site: Path, wheels: Path | None) -> str:
    """Put one distribution into the package: the installed files when pure Python, else the
    same version's Linux arm64 wheel (pip download into `wheels`; None: never download, use
    the pure-Python fallback). Returns what went in."""
    name = _canonical(dist.metadata["Name"])
    files = [Path(str(f)) for f in dist.files or []]
    if any(_is_native(f) for f in files):
        wheel = platform_wheel(name, dist.version, wheels) if wheels else None
        if wheel is not None:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
            return f"{name}=={dist.version} ({wheel.name.rsplit('-', 1)[-1].removesuffix('.whl')})"
        if name not in PURE_FALLBACK:
            raise PackageError(f"{name} has compiled code and no Linux aarch64 wheel could be fetched")
    for relative in files:
        if relative.parts[0] == ".." or "__pycache__" in relative.parts or relative.suffix == ".pyc":
            continue
        source = Path(str(dist.locate_file(relative)))
        if _is_native(relative) or not source.is_file():
            continue
        target = site / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return f"{name}=={dist.version}"


def platform_wheel(name: str, version: str, wheels: Path) -> Path | None:
    """The Lambda arm64 wheel of `name==version` (cached in `wheels`), or None when pip cannot get it."""
    python = f"{sys.version_info.major}{sys.version_info.minor}"
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    for tag in PLATFORM_TAGS:
        command += ["--platform", tag]
    command += ["--python-version", python, "--implementation", "cp", "-d", str(wheels), f"{name}=={version}"]
    wheels.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)  # noqa: S603 - pip of this venv
    if done.returncode != 0:
        print(f"package: no arm64 wheel for {name}=={version}: {done.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    pattern = re.compile(rf"^{re.escape(name).replace('-', '[-_]')}-{re.escape(version)}-.*aarch64.*\.whl$", re.I)
    found = sorted(p for p in wheels.iterdir() if pattern.match(p.name))
    return found[-1] if found else None


def slim_powertools(site: Path) -> int:
    """Remove the Powertools parts listed in POWERTOOLS_UNUSED; return the bytes saved."""
    saved = 0
    for part in POWERTOOLS_UNUSED:
        path = site / "aws_lambda_powertools" / part
        if path.exists():
            saved += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
    return saved


def byte_compile(root: Path) -> None:
    """Compile every module next to its source, as Lambda's read-only file system needs."""
    import py_compile

    ok = compileall.compile_dir(
        str(root), quiet=1, workers=0, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
    )
    if not ok:
        raise PackageError("byte-compiling the package failed")


def write_zip(root: Path, zip_path: Path) -> tuple[int, int]:
    """A reproducible zip of `root` (sorted, fixed timestamps); returns (bytes, files)."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in files:
            info = zipfile.ZipInfo(str(path.relative_to(root)), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes(), compresslevel=9)
    return zip_path.stat().st_size, len(files)


def chalice_package(stage: str, out: Path) -> Path:
    """`chalice package` of a clean copy of the project (no requirements: the zip is rebuilt here)."""
    project = Path(tempfile.mkdtemp(prefix="lookout-edge-chalice-"))
    try:
        shutil.copy(ROOT / "app.py", project / "app.py")
        shutil.copytree(ROOT / "chalicelib", project / "chalicelib", ignore=shutil.ignore_patterns("__pycache__"))
        (project / ".chalice").mkdir()
        shutil.copy(ROOT / ".chalice" / "config.json", project / ".chalice" / "config.json")
        (project / "requirements.txt").write_text("")
        render_stage(project / ".chalice", stage, cloudformation=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.setdefault("AWS_DEFAULT_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
        chalice = Path(sys.executable).parent / "chalice"
        done = subprocess.run(  # noqa: S603 - the virtualenv's own chalice
            [str(chalice), "package", "--stage", stage, "--merge-template", str(MERGE_TEMPLATE), str(out)],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise PackageError(f"chalice package failed:\n{done.stderr or done.stdout}")
        finish_template(out / "sam.json")
    finally:
        shutil.rmtree(project, ignore_errors=True)
    return out / "deployment.zip"


# The alias SAM publishes for the edge (`AutoPublishAlias: live` in infra/chalice-overrides.json):
# CodeDeploy shifts a release's traffic on it, so every door must call it, not the function.
# SAM names the alias resource <function>Alias<alias> and resolves `APIHandler.Alias` only in a
# Ref, not inside the Swagger body's Fn::Sub, so the body names the resource.
EDGE_FUNCTION_REF = "${APIHandler.Arn}"
EDGE_ALIAS_REF = "${APIHandlerAliaslive}"


def route_rest_api_through_alias(template: dict[str, Any]) -> int:
    """Point the REST API's integrations at the edge's alias; returns how many were changed.

    Chalice writes `${APIHandler.Arn}` (the unqualified function, $LATEST) into every route of
    its Swagger body, which no merge template can reach route by route. Calls to it would skip
    the canary: a bad release would answer all REST traffic at once and its rollback would not
    take it back."""
    api = template["Resources"].get("RestAPI")
    if api is None:
        return 0
    changed = 0
    for operations in api["Properties"]["DefinitionBody"]["paths"].values():
        for operation in operations.values():
            uri = operation.get("x-amazon-apigateway-integration", {}).get("uri", {})
            if isinstance(uri, dict) and EDGE_FUNCTION_REF in uri.get("Fn::Sub", ""):
                uri["Fn::Sub"] = uri["Fn::Sub"].replace(EDGE_FUNCTION_REF, EDGE_ALIAS_REF)
                changed += 1
    return changed


def finish_template(path: Path) -> None:
    """What `chalice package --merge-template` cannot do to sam.json: REST routes to the alias."""
    template = json.loads(path.read_text())
    route_rest_api_through_alias(template)
    path.write_text(json.dumps(template, indent=2) + "\n")


def lambda_runtime_site(dest: Path) -> Path:
    """What the Lambda Python runtime offers beside the standard library (boto3 and what it
    needs), copied from this virtualenv into `dest`: the other half of a Lambda-like sys.path."""
    for dist in closure(["boto3"], exclude=set()):
        copy_distribution(dist, dest, None)
    return dest


def stage_tracing(stage: str) -> bool:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    if stage not in config.get("stages", {}):
        raise PackageError(f"no stage {stage!r} in .chalice/config.json")
    return bool(config["stages"][stage].get("xray", config.get("xray", False)))


def build(stage: str, out: Path, tracing: bool | None = None, platform_wheels: bool = True) -> dict[str, Any]:
    """Template + rebuilt deployment.zip in `out`; returns what went in. Without `platform_wheels`
    nothing is downloaded and C speedups are left out (their pure-Python fallbacks run)."""
    if sys.version_info[:2] != LAMBDA_PYTHON:
        wanted = "{}.{}".format(*LAMBDA_PYTHON)
        raise PackageError(
            f"the functions run on python{wanted}; this is Python {sys.version.split()[0]}, whose bytecode "
            f"and runtime name would not match: make install PYTHON=<a {wanted} interpreter>"
        )
    tracing = stage_tracing(stage) if tracing is None else tracing
    out.mkdir(parents=True, exist_ok=True)
    zip_path = chalice_package(stage, out)
    with tempfile.TemporaryDirectory(prefix="lookout-edge-package-") as tmp:
        root = Path(tmp) / "package"
        with zipfile.ZipFile(zip_path) as chalice_zip:
            chalice_zip.extractall(root)
        names = requirement_names(REQUIREMENTS) + (requirement_names(TRACING_REQUIREMENTS) if tracing else [])
        dists = closure(names, exclude=RUNTIME_PROVIDED)
        check_locked(dists, locked_versions(RUNTIME_LOCK))
        wheels = WHEEL_CACHE if platform_wheels else None
        bundled = [copy_distribution(dist, root, wheels) for dist in dists]
        saved = slim_powertools(root)
        for cache in list(root.rglob("__pycache__")):
            shutil.rmtree(cache)
        byte_compile(root)
        size, files = write_zip(root, zip_path)
    return {
        "stage": stage,
        "tracing": tracing,
        "zip": str(zip_path),
        "bytes": size,
        "files": files,
        "distributions": sorted(bundled),
        "powertools_bytes_left_out": saved,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out or ROOT / "dist" / args.stage)
    tracing = {"auto": None, "on": True, "off": False}[args.tracing]
    try:
        result = build(args.stage, out, tracing)
    except PackageError as error:
        print(f"package: {error}", file=sys.stderr)
        return 1
    size_mb = result["bytes"] / 1024 / 1024
    print(f"{result['zip']}: {size_mb:.2f} MB ({result['bytes']:,} bytes), {result['files']} files")
    print(f"  python {result['python']} bytecode (unchecked-hash); X-Ray SDK {'in' if result['tracing'] else 'out'}")
    print(f"  bundled: {', '.join(result['distributions'])} (boto3/botocore: the Lambda runtime's)")
    print(f"  template: {out / 'sam.json'}  (deploy: docs/deploy.md)")
    if result["bytes"] > SIZE_TARGET_BYTES:
        print(f"package: over the {SIZE_TARGET_BYTES / 1024 / 1024:.0f} MB target", file=sys.stderr)
        return 1
    return 0


def register(subparsers: Any) -> None:
    package = subparsers.add_parser("package", help="build dist/STAGE/{sam.json,deployment.zip} (make package)")
    package.add_argument("--stage", default="prod")
    package.add_argument("--out", help="output directory (default dist/STAGE)")
    package.add_argument(
        "--tracing", choices=["auto", "on", "off"], default="auto", help="bundle the X-Ray SDK (auto: the stage's xray)"
    )
    package.set_defaults(run=_run)
