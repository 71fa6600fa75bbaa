"""Lambda's python3.13 on arm64, on this x86 machine: an aarch64 Debian 13 root run by QEMU user
emulation, AWS's runtime interface client (awslambdaric) and a Runtime API server of our own.

`python -m tests.lambda_arm64 prepare` (run by `make test`) builds what needs the network once,
into a cache outside the repository (~/.cache/lookout-edge/lambda-arm64): the root (debootstrap
--foreign from the Debian mirror apt uses here, every downloaded package extracted; ~1 minute)
with the runtime interface client's aarch64 wheels in /var/runtime and the standard library
byte-compiled. Tests then only read it (tests/integration/test_lambda_arm64.py): each function runs in a
private mount namespace where the root, the package (/var/task) and the SDK directory are
read-only, as Lambda's file system is, with only /tmp writable.

QEMU is started explicitly (the root's /usr/bin/qemu-aarch64-static runs /usr/bin/python3.13), so
no binfmt_misc registration is needed or left behind.
"""

from __future__ import annotations

import compileall
import contextlib
import fcntl
import json
import os
import py_compile
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lookout-edge" / "lambda-arm64"
SUITE = "trixie"  # Debian 13: Python 3.13, like Lambda's python3.13 runtime
PYTHON = "python3.13"
# The runtime interface client and what it imports, pinned (aarch64 cp313 wheels from PyPI).
RUNTIME_CLIENT = ["awslambdaric==4.2.2", "simplejson==4.3.0", "snapshot-restore-py==1.0.0"]
RECIPE = "1"  # bump when what prepare() builds changes: a new cache directory is made
ROOT = CACHE / f"root-{SUITE}-{RECIPE}"
READY = ROOT / ".ready"
# Where the emulated Lambda finds things, as on Lambda: the package, the runtime client, the SDK.
TASK_DIR = "/var/task"
RUNTIME_DIR = "/var/runtime"
SDK_DIR = f"/var/lang/lib/{PYTHON}/site-packages"
PROBE_DIR = "/opt/probe"
REQUIRED_TOOLS = {"debootstrap": "debootstrap", "qemu-aarch64-static": "qemu-user-static"}


class NotPrepared(RuntimeError):
    """The cached root is missing: `make test` (or `python -m tests.lambda_arm64 prepare`) builds it."""


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses (never the security archive)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file() or path.suffix not in ("", ".list", ".sources"):
            continue
        for url in re.findall(r"(https?://\S+)", path.read_text()):
            if re.search(r"/debian/?$", url) and "security" not in url and "snapshot" not in url:
                return url.rstrip("/")
    return "http://deb.debian.org/debian"


def _install_tools() -> None:
    missing = [package for tool, package in REQUIRED_TOOLS.items() if shutil.which(tool) is None]
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def compile_tree(path: Path, shown_as: str, unchecked: bool) -> None:
    """Byte-compile a tree as it will be seen inside the root (`shown_as` in tracebacks)."""
    mode = py_compile.PycInvalidationMode.UNCHECKED_HASH if unchecked else py_compile.PycInvalidationMode.TIMESTAMP
    compileall.compile_dir(str(path), ddir=shown_as, quiet=2, workers=1, invalidation_mode=mode)


def prepare() -> Path:
    """The cached aarch64 root, built once (under a lock: several checkouts may share the cache)."""
    if READY.exists():
        return ROOT
    if sys.version_info[:2] != (3, 13):
        raise RuntimeError(f"the root's bytecode is written by this Python, which must be 3.13, not {sys.version}")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if READY.exists():
            return ROOT
        _install_tools()
        started = time.monotonic()
        building = Path(tempfile.mkdtemp(prefix="building-", dir=CACHE))
        try:
            _build_root(building)
            if ROOT.exists():
                shutil.rmtree(ROOT)
            building.rename(ROOT)
        finally:
            shutil.rmtree(building, ignore_errors=True)
        (READY).write_text(json.dumps({"built_in_seconds": round(time.monotonic() - started, 1)}))
    return ROOT


def _build_root(root: Path) -> None:
    mirror = debian_mirror()
    print(f"lambda-arm64: debootstrap --foreign {SUITE} arm64 from {mirror} into {root}", flush=True)
    subprocess.run(
        ["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase", f"--include={PYTHON}", SUITE, root, mirror],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # --foreign extracts only the required packages; the rest (Python) is extracted here, unconfigured.
    archives = root / "var" / "cache" / "apt" / "archives"
    for deb in sorted(archives.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
        deb.unlink()
    shutil.copy2(shutil.which("qemu-aarch64-static") or "", root / "usr" / "bin" / "qemu-aarch64-static")
    for directory in (TASK_DIR, RUNTIME_DIR, SDK_DIR, PROBE_DIR):
        (root / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)
    wheels = CACHE / "wheels"
    platforms = [arg for tag in ("manylinux2014_aarch64", "manylinux_2_17_aarch64") for arg in ("--platform", tag)]
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps"),
            *("--only-binary=:all:", *platforms, "--python-version", "3.13", "--implementation", "cp"),
            *("-d", str(wheels), *RUNTIME_CLIENT),
        ],
        check=True,
    )
    runtime = root / RUNTIME_DIR.lstrip("/")
    for requirement in RUNTIME_CLIENT:
        name, version = requirement.split("==")
        pattern = re.compile(rf"^{name.replace('-', '[-_]')}-{re.escape(version)}-.*\.whl$", re.I)
        (wheel,) = [p for p in wheels.iterdir() if pattern.match(p.name)]
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(runtime)
    # Lambda's runtime ships its Python and runtime client compiled; Debian's postinst would have
    # compiled the standard library, which --foreign never runs. Python 3.13.x share one bytecode.
    compile_tree(root / "usr" / "lib" / PYTHON, f"/usr/lib/{PYTHON}", unchecked=False)
    compile_tree(runtime, RUNTIME_DIR, unchecked=True)


def sdk_directory() -> Path:
    """The Lambda runtime's boto3 (the versions of this virtualenv, as `lambda_runtime_site` copies
    them), byte-compiled, cached per version."""
    from importlib import metadata

    from edgectl.cmd_package import lambda_runtime_site

    versions = "-".join(f"{n}{metadata.version(n)}" for n in ("boto3", "botocore", "s3transfer"))
    target = CACHE / f"sdk-{versions}"
    if (target / ".ready").exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".ready").exists():
            shutil.rmtree(target, ignore_errors=True)
            lambda_runtime_site(target)
            compile_tree(target, SDK_DIR, unchecked=True)
            (target / ".ready").write_text("")
    return target


PROBE_SELF_CHECK = f"{PROBE_DIR}/self-check.py"
# A sitecustomize put on the emulated Python's path: it says what runs, and every module compiled
# from source or bytecode file opened for writing (audit hooks see both; Lambda can write neither).
PROBE = """
import os, platform, sys

def _report(line):
    sys.stderr.write("probe: " + line + "\\n")
    sys.stderr.flush()

def _audit(event, args):
    if event == "compile" and isinstance(args[1], str) and args[1].endswith(".py"):
        _report("compiled " + args[1])
    elif event == "open" and isinstance(args[0], str) and ".pyc" in args[0] and args[2] & os.O_WRONLY:
        _report("wrote " + args[0])

_report("python %d.%d %s dont_write_bytecode=%d"
        % (*sys.version_info[:2], platform.machine(), sys.flags.dont_write_bytecode))
sys.addaudithook(_audit)
compile("", SELF_CHECK, "exec")  # the hook's own proof that it sees compiles
""".replace("SELF_CHECK", repr(PROBE_SELF_CHECK))


@dataclass
class Invocation:
    request_id: str
    event: Any
    timeout_s: float  # Lambda's deadline is this long after the runtime picks the invocation up
    done: threading.Event = field(default_factory=threading.Event)
    outcome: str = ""  # "response" or "error"
    body: Any = None


class RuntimeApi:
    """Lambda's Runtime API (2018-06-01) for one function: /next hands out queued invocations,
    /response and /error settle them, /init/error records a failed start."""

    def __init__(self, function_arn: str) -> None:
        self.function_arn = function_arn
        self.pending: queue.Queue[Invocation] = queue.Queue()
        self.invocations: dict[str, Invocation] = {}
        self.init_error: Any = None
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path != "/2018-06-01/runtime/invocation/next":
                    return self._answer(404, {"errorType": "NotFound"})
                invocation = api.pending.get()
                deadline_ms = int((time.time() + invocation.timeout_s) * 1000)
                body = json.dumps(invocation.event).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Lambda-Runtime-Aws-Request-Id", invocation.request_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(deadline_ms))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", api.function_arn)
                self.send_header("Lambda-Runtime-Trace-Id", f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                if self.path == "/2018-06-01/runtime/init/error":
                    api.init_error = body
                    return self._answer(202, {"status": "OK"})
                match = re.fullmatch(r"/2018-06-01/runtime/invocation/([^/]+)/(response|error)", self.path)
                if not match or match.group(1) not in api.invocations:
                    return self._answer(404, {"errorType": "InvalidRequestID"})
                invocation = api.invocations[match.group(1)]
                invocation.outcome, invocation.body = match.group(2), body
                invocation.done.set()
                self._answer(202, {"status": "OK"})

            def _answer(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *_: None  # type: ignore[method-assign]  # the client is killed mid-/next
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def submit(self, event: Any, timeout_s: float) -> Invocation:
        """Queue one invocation (handed out by /next in order) with the function's timeout."""
        invocation = Invocation(str(uuid.uuid4()), event, timeout_s)
        self.invocations[invocation.request_id] = invocation
        self.pending.put(invocation)
        return invocation

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class EmulatedFunction:
    """One running function: its Runtime API and the emulated process's output."""

    api: RuntimeApi
    process: subprocess.Popen
    output: Path

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def probe_lines(self) -> list[str]:
        return [line.removeprefix("probe: ") for line in self.log().splitlines() if line.startswith("probe: ")]

    def submit(self, event: Any, timeout_s: float) -> Invocation:
        return self.api.submit(event, timeout_s)

    def settled(self, invocation: Invocation, wait_s: float) -> Invocation:
        """The invocation once answered; fails with the function's output when it is not within `wait_s`."""
        if not invocation.done.wait(wait_s):
            raise AssertionError(
                f"no answer in {wait_s:.0f} s (init error: {self.api.init_error}); output:\n{self.log()[-4000:]}"
            )
        return invocation


@contextlib.contextmanager
def run_function(
    root: Path, task: Path, sdk: Path, handler: str, env: dict[str, str], workdir: Path
) -> Iterator[EmulatedFunction]:
    """Start `handler` of the unzipped package `task` as Lambda would, until the block ends."""
    probe = workdir / "probe"
    probe.mkdir(exist_ok=True)
    (probe / "sitecustomize.py").write_text(PROBE)
    name = env.get("AWS_LAMBDA_FUNCTION_NAME", "function")
    api = RuntimeApi(f"arn:aws:lambda:{env.get('AWS_REGION', 'us-east-1')}:123456789012:function:{name}")
    mounts = [(task, TASK_DIR), (sdk, SDK_DIR), (probe, PROBE_DIR)]
    # A private mount namespace: everything read-only but /tmp, gone when the function exits.
    script = "\n".join(
        [
            "set -e",
            f'mount --bind "{root}" "{root}"',
            *[f'mount --bind "{src}" "{root}{dst}" && mount -o remount,bind,ro "{root}{dst}"' for src, dst in mounts],
            f'mount -t tmpfs -o size=512m tmpfs "{root}/tmp"',
            f'mount -t proc proc "{root}/proc"',
            f'mount -o remount,bind,ro "{root}"',
            f'exec unshare --root="{root}" --wd={TASK_DIR} /usr/bin/qemu-aarch64-static /usr/bin/{PYTHON}'
            f" -m awslambdaric {handler}",
        ]
    )
    lambda_env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": TASK_DIR,
        "LAMBDA_RUNTIME_DIR": RUNTIME_DIR,
        "PYTHONPATH": f"{RUNTIME_DIR}:{SDK_DIR}:{PROBE_DIR}",
        "_HANDLER": handler,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/12/03/[$LATEST]0123456789abcdef",
        **env,
    }
    output = workdir / f"{name}.log"
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            env=lambda_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    function = EmulatedFunction(api, process, output)
    try:
        yield function
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        api.close()


if __name__ == "__main__":
    if sys.argv[1:] != ["prepare"]:
        sys.exit("usage: python -m tests.lambda_arm64 prepare")
    began = time.monotonic()
    path = prepare()
    print(f"lambda-arm64: {path} ready ({time.monotonic() - began:.1f} s)")
