#!/usr/bin/env python3
"""Build ferry's test/connector images without any container registry.

    python3 scripts/build_images.py [--engine docker|podman|both] [--force] [NAMES...]
    python3 scripts/build_images.py --list

Every image is assembled from files of this machine (no base image is pulled): a rootfs with
busybox-static and its applet symlinks, for Python images the host's /usr/bin/python3.11 with its
stdlib and the `ldd` closure of every `.so` it loads, the CA bundle, and a venv at /opt/connector
(built at a scratch path with that same python, then relocated: shebangs rewritten, bytecode
compiled with the final paths). The rootfs goes through `tar | docker import --change ...`.

Images are tagged ferry-test/<name>:dev and labelled `ferry.build-hash=<hash of the inputs>`
(the image definition, the pip spec or the repo's sources, host binaries, this script); an image
whose engine already holds that hash is skipped ("cached"). Wheels, the base rootfs and the
installed venvs are cached under ~/.cache/ferry-images/ (FERRY_IMAGES_CACHE), so rebuilding a
changed image costs seconds (ferry's own sources: only ferry is reinstalled), not a download.
Rootfs flavours build in parallel (--jobs); images sharing one are imported from it in parallel.
With --engine both, podman gets Docker's images by `docker save | podman load` (same IDs).

Standard library only, any python3; needs the engines (scripts/engines.sh) and root for them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import glob
import hashlib
import inspect
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve()
CACHE = Path(os.environ.get("FERRY_IMAGES_CACHE", Path.home() / ".cache" / "ferry-images"))
HOST_PYTHON = "/usr/bin/python3.11"
PY_VERSION = "3.11"
STDLIB = f"/usr/lib/python{PY_VERSION}"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
SOCAT = "/usr/bin/socat"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
VENV = "/opt/connector"
REPO_PREFIX = "ferry-test/"
TAG = "dev"
HASH_LABEL = "ferry.build-hash"
NAME_LABEL = "ferry.image"
FAKER_SPEC = os.environ.get("FERRY_FAKER_SPEC", "airbyte-source-faker==6.2.38")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Always shipped: glibc dlopen()s libgcc_s for pthread_cancel/unwinding, ldd cannot see that.
ALWAYS_LIBS = ("libgcc_s.so.1",)
# Parts of the stdlib no connector needs (tests, the static libpython, Debian's apport hook).
STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "__phello__", "config-3.11-x86_64-linux-gnu"}
STDLIB_SKIP_FILES = {"sitecustomize.py", "EXTERNALLY-MANAGED"}
DYNLOAD_SKIP_PREFIXES = ("_test", "xxlimited", "_xxtestfuzz", "_ctypes_test")

HELLO_SH = '#!/bin/sh\necho "Hello $*"\n'
# The bonjour parent's ENTRYPOINT in shell form: Docker stores it as ["/bin/sh", "-c", CMD] and
# a `docker run IMAGE World` passes World as $0 of that shell.
BONJOUR_SHELL_CMD = 'echo Bonjour "$0" "$@"'


class BuildError(Exception):
    pass


# ------------------------------------------------------------------------------------------------
# Image definitions
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Image:
    name: str
    rootfs: str  # rootfs flavour (see populate): images with the same one share its files
    entrypoint: tuple[str, ...] | None = None
    airbyte_entrypoint: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    # bonjour: imported as a parent with a shell-form ENTRYPOINT, then a child built FROM it
    parent_shell_entrypoint: str | None = None

    @property
    def ref(self) -> str:
        return f"{REPO_PREFIX}{self.name}:{TAG}"

    @property
    def parent_ref(self) -> str:
        return f"{REPO_PREFIX}{self.name}-parent:{TAG}"


PY_ENV = (
    ("PATH", f"{VENV}/bin:{BASE_PATH}"),
    ("SSL_CERT_FILE", CA_BUNDLE),
    ("REQUESTS_CA_BUNDLE", CA_BUNDLE),
    ("LANG", "C.UTF-8"),
)
SH_ENV = (("PATH", BASE_PATH), ("SSL_CERT_FILE", CA_BUNDLE))


def _connector(name: str, rootfs: str, airbyte: bool = True) -> Image:
    exe = f"{VENV}/bin/{name if name != 'no-entrypoint' else 'source-faker'}"
    return Image(name, rootfs, (exe,), exe if airbyte else None, PY_ENV)


IMAGES: dict[str, Image] = {
    img.name: img
    for img in (
        Image("sidecar", "sidecar", None, None, SH_ENV),
        # FERRY_IMAGE: python with ferry installed, for the single pod's pump container.
        Image(
            "ferry", "ferry", (f"{VENV}/bin/python", "-m", "ferry.engine.pod_pump"), None, PY_ENV
        ),
        _connector("source-faker", "faker"),
        _connector("destination-null", "ferry"),
        _connector("source-generator", "ferry"),
        _connector("destination-duckdb", "ferry"),
        _connector("no-entrypoint", "faker", airbyte=False),
        Image("hello", "hello", ("/app/hello.sh",), "/app/hello.sh", SH_ENV),
        Image(
            "bonjour",
            "busybox",
            None,
            shlex.join(["/bin/sh", "-c", BONJOUR_SHELL_CMD]),
            SH_ENV,
            parent_shell_entrypoint=BONJOUR_SHELL_CMD,
        ),
    )
}
# Build order when several are requested: what other engineers need first.
PRIORITY = list(IMAGES)


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------

_print_lock = threading.Lock()
T0 = time.monotonic()


def log(msg: str) -> None:
    with _print_lock:
        print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    input: bytes | None = None,
    capture: bool = True,
    check: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        [str(c) for c in cmd],
        input=input,
        capture_output=capture,
        check=False,
        env=env,
        cwd=cwd,
    )
    if check and result.returncode != 0:
        err = (result.stderr or b"").decode(errors="replace").strip()
        out = (result.stdout or b"").decode(errors="replace").strip()
        tail = "\n".join((err or out).splitlines()[-25:])
        raise BuildError(
            f"command failed ({result.returncode}): {shlex.join(map(str, cmd))}\n{tail}"
        )
    return result


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def host_fingerprint(paths: Sequence[str]) -> str:
    """Cheap identity of host binaries (size + mtime): an apt upgrade changes it."""
    parts = []
    for p in paths:
        st = os.stat(p)
        parts.append(f"{p}:{st.st_size}:{int(st.st_mtime)}")
    return ";".join(parts)


def busybox_path() -> str:
    for p in BUSYBOX_CANDIDATES:
        if os.path.exists(p):
            return p
    raise BuildError("busybox not found: apt-get install busybox-static (scripts/engines.sh)")


def ferry_sources() -> list[Path]:
    """The repo files that make up the ferry distribution (what pip would package)."""
    files = [REPO / "pyproject.toml"]
    if (REPO / "README.md").exists():
        files.append(REPO / "README.md")
    for root, dirs, names in os.walk(REPO / "src"):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.endswith(".egg-info"))
        files.extend(Path(root) / n for n in sorted(names) if not n.endswith((".pyc", ".pyo")))
    return files


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------------
# Shared library closure
# ------------------------------------------------------------------------------------------------


def ldd_closure(files: Sequence[str], exclude_under: str | None = None) -> set[str]:
    """Host paths of every shared library the given ELF files need (transitively, per ldd)."""
    libs: set[str] = set()
    files = [f for f in files if os.path.isfile(f)]
    for i in range(0, len(files), 200):
        out = run(["ldd", *files[i : i + 200]], check=False).stdout.decode(errors="replace")
        for line in out.splitlines():
            path = _ldd_library(line)
            if path and not (exclude_under and os.path.realpath(path).startswith(exclude_under)):
                libs.add(path)
    for name in ALWAYS_LIBS:
        for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu"):
            if os.path.exists(f"{d}/{name}"):
                libs.add(f"{d}/{name}")
                break
    return libs


def _ldd_library(line: str) -> str | None:
    """The absolute library path one line of ldd's output names, if any."""
    line = line.strip()
    if "=>" in line:
        target = line.split("=>", 1)[1].strip()
        if target.startswith("not found"):
            return None
        path = target.split(" (", 1)[0].strip()
    elif line.startswith("/") and " (" in line:
        path = line.split(" (", 1)[0].strip()  # the dynamic loader
    else:
        return None
    return path if path.startswith("/") else None


def rootfs_path(host_path: str) -> str:
    """Where a host library goes in the rootfs: its directory resolved and under /usr (the rootfs
    is usrmerged: /lib -> usr/lib), its name kept (the soname the loader searches for)."""
    directory = os.path.realpath(os.path.dirname(host_path))
    if directory.split("/")[1] in ("lib", "lib64", "bin", "sbin"):
        directory = "/usr" + directory
    return os.path.join(directory, os.path.basename(host_path))


def copy_libs(libs: set[str], root: Path, skip: set[str] | None = None) -> int:
    n = 0
    for lib in sorted(libs):
        dest_rel = rootfs_path(lib).lstrip("/")
        if skip is not None and dest_rel in skip:
            continue
        dest = root / dest_rel
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), dest)
        n += 1
    return n


# ------------------------------------------------------------------------------------------------
# Base rootfs directories (cached)
# ------------------------------------------------------------------------------------------------


def _skeleton(root: Path) -> None:
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "etc/ssl/certs", "proc", "sys",
              "dev", "root", "var/tmp", "run", "app", "opt", "usr/local/bin", "home"):  # fmt: skip
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"),
                         ("lib64", "usr/lib64")):  # fmt: skip
        (root / link).symlink_to(target)
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "var/tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    etc = root / "etc"
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
    (etc / "hostname").write_text("ferry\n")
    shutil.copy2(CA_BUNDLE, etc / "ssl/certs/ca-certificates.crt")
    (etc / "ssl/cert.pem").symlink_to("certs/ca-certificates.crt")
    # busybox and its applets (paths as busybox reports them, under the usrmerged layout)
    bb = busybox_path()
    shutil.copy2(bb, root / "usr/bin/busybox")
    applets = run([bb, "--list-full"]).stdout.decode().split()
    for rel in applets:
        parts = rel.split("/")
        if rel == "linuxrc":
            continue
        if parts[0] in ("bin", "sbin"):
            parts = ["usr", *parts]
        dest = root.joinpath(*parts)
        if dest.exists() or dest.is_symlink():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to("/usr/bin/busybox")
    for lib in ldd_closure([bb]):  # busybox-static: normally nothing
        copy_libs({lib}, root)


def _add_python(root: Path) -> None:
    shutil.copy2(HOST_PYTHON, root / f"usr/bin/python{PY_VERSION}")
    for alias in ("python3", "python"):
        (root / "usr/bin" / alias).unlink(missing_ok=True)  # busybox has no python, but be safe
        (root / "usr/bin" / alias).symlink_to(f"python{PY_VERSION}")

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n in STDLIB_SKIP_DIRS or n in STDLIB_SKIP_FILES}
        if os.path.basename(directory) == "__pycache__":
            # keep only the plain bytecode of the stdlib (no opt-1/opt-2): fast interpreter start
            skipped |= {
                n for n in names if not n.endswith(f".cpython-{PY_VERSION.replace('.', '')}.pyc")
            }
        if os.path.basename(directory) == "lib-dynload":
            skipped |= {n for n in names if n.startswith(DYNLOAD_SKIP_PREFIXES)}
        return skipped

    shutil.copytree(STDLIB, root / STDLIB.lstrip("/"), symlinks=True, ignore=ignore)
    sos = [HOST_PYTHON, *glob.glob(f"{root}{STDLIB}/lib-dynload/*.so")]
    copy_libs(ldd_closure(sos, exclude_under=str(root)), root)


_base_locks = {"busybox": threading.Lock(), "python": threading.Lock()}


def base_rootfs(kind: str) -> Path:
    """A cached directory: 'busybox' (skeleton + busybox) or 'python' (+ python, stdlib, libs)."""
    # keyed by the code that builds it (not the whole script: editing anything else keeps it)
    recipe = [inspect.getsource(f) for f in (_skeleton, _add_python, ldd_closure, copy_libs)]
    inputs = [
        *recipe,
        repr(sorted(STDLIB_SKIP_DIRS)),
        kind,
        host_fingerprint([busybox_path(), CA_BUNDLE]),
    ]
    if kind == "python":
        inputs.append(host_fingerprint([HOST_PYTHON, f"{STDLIB}/os.py"]))
    key = digest(*inputs)[:16]
    dest = CACHE / "base" / f"{kind}-{key}"
    with _base_locks[kind], file_lock(CACHE / "locks" / f"base-{kind}.lock"):
        if dest.is_dir():
            return dest
        t = time.monotonic()
        (CACHE / "base").mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=CACHE / "base"))
        try:
            root = tmp / "root"
            root.mkdir()
            _skeleton(root)
            if kind == "python":
                _add_python(root)
            root.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in (CACHE / "base").glob(f"{kind}-*"):
            if old != dest:
                shutil.rmtree(old, ignore_errors=True)
        log(f"base rootfs '{kind}' built in {time.monotonic() - t:.1f}s ({dest})")
        return dest


def discard(*paths: Path) -> None:
    """Delete directories in the background (unlinking ~20k files is slow on this disk): moved
    into CACHE/trash at once, removed by a detached `rm -rf`."""
    trash = CACHE / "trash"
    trash.mkdir(parents=True, exist_ok=True)
    moved = []
    for path in paths:
        target = Path(tempfile.mkdtemp(prefix=f"{path.name}-", dir=trash))
        try:
            path.rename(target / path.name)
        except OSError:
            target.rmdir()
            continue
        moved.append(str(target))
    if moved:
        subprocess.Popen(
            ["rm", "-rf", *moved],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


def manifest(root: Path) -> set[str]:
    out = set()
    for dirpath, _dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for f in files:
            out.add(os.path.normpath(os.path.join(rel, f)))
    return out


# ------------------------------------------------------------------------------------------------
# pip: wheelhouses and venvs
# ------------------------------------------------------------------------------------------------


def pip_tool() -> Path:
    """pip, unpacked from its wheel under the cache (runs as `python DIR/pip`; its bytecode is
    cached there), so venvs need no pip inside and the host's pip config is never involved."""
    tools = CACHE / "tools"
    found = sorted(tools.glob("pip-*/pip/__main__.py"))
    if found:
        return found[-1].parent
    candidates = sorted(glob.glob("/usr/share/python-wheels/pip-*.whl"))
    candidates += sorted(glob.glob(f"{STDLIB}/ensurepip/_bundled/pip-*.whl"))
    if not candidates:
        raise BuildError(
            "no pip wheel found (/usr/share/python-wheels, ensurepip): apt-get install python3-pip-whl"
        )
    wheel = candidates[-1]
    tools.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".pip-", dir=tools))
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp)
    dest = tools / Path(wheel).name.split("-py")[0]
    with contextlib.suppress(OSError):
        tmp.rename(dest)
    shutil.rmtree(tmp, ignore_errors=True)
    return dest / "pip"


def pip(python: str, subcommand: str, *args: str, net: bool) -> None:
    """Run pip with `python` (installs into that python's environment)."""
    cmd = [python, str(pip_tool()), subcommand, "--isolated", "--disable-pip-version-check"]
    cmd += ["-q", "--cache-dir", str(CACHE / "pip")]
    if net:
        cmd += ["--cert", CA_BUNDLE]
    cmd += args
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env["SSL_CERT_FILE"] = CA_BUNDLE
    run(cmd, env=env)


def wheelhouse(
    key_parts: Sequence[str], requirements: Sequence[str], drop: str | None = None
) -> Path:
    """A directory of wheels for `requirements` (downloaded/built once, then offline); `key_parts`
    identify it (the requirements may name a scratch path)."""
    key = f"{key_parts[0]}-{digest(PY_VERSION, *key_parts)[:16]}"
    wh = CACHE / "wheels" / key
    with file_lock(CACHE / "locks" / f"wheels-{key}.lock"):
        if (wh / ".complete").exists():
            return wh
        t = time.monotonic()
        wh.mkdir(parents=True, exist_ok=True)
        pip(HOST_PYTHON, "wheel", "--wheel-dir", str(wh), *requirements, net=True)
        if drop:
            for f in wh.glob(f"{drop}-*.whl"):
                f.unlink()
        (wh / ".complete").write_text(json.dumps(list(requirements)))
        prune_siblings(wh)
        log(f"wheelhouse {key} filled in {time.monotonic() - t:.1f}s: {' '.join(requirements)}")
        return wh


def prune_siblings(path: Path) -> None:
    """Drop older cache entries of the same kind (`<kind>-<key>`): one per kind is kept."""
    kind = path.name.split("-", 1)[0]
    for old in path.parent.glob(f"{kind}-*"):
        if old != path and old.is_dir():
            discard(old)


def cached_venv(
    key_parts: Sequence[str], requirements: Sequence[str], wh: Path, uninstall: str | None = None
) -> Path:
    """A finished venv (relocated to VENV, bytecode compiled) with `requirements` installed from
    the wheelhouse, cached; `uninstall` removes a package afterwards (keeping its dependencies)."""
    recipe = [inspect.getsource(f) for f in (cached_venv, finish_venv, relocate, prune_venv, pip)]
    key = digest(*recipe, PY_VERSION, host_fingerprint([HOST_PYTHON]), *key_parts)[:16]
    key = f"{key_parts[0]}-{key}"
    dest = CACHE / "venvs" / key
    with file_lock(CACHE / "locks" / f"venv-{key}.lock"):
        if (dest / "bin" / "python").is_symlink():
            return dest
        t = time.monotonic()
        (CACHE / "venvs").mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".venv-", dir=CACHE / "venvs"))
        try:
            venv = tmp / VENV.lstrip("/")
            venv.parent.mkdir(parents=True)
            run([HOST_PYTHON, "-m", "venv", "--without-pip", venv])
            py = str(venv / "bin" / "python")
            pip(py, "install", "--no-index", "--find-links", str(wh), "--no-compile",
                *requirements, net=False)  # fmt: skip
            if uninstall:
                pip(py, "uninstall", "-y", uninstall, net=False)
            prune_venv(venv)
            finish_venv(tmp)
            venv.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        prune_siblings(dest)
        log(f"venv {key} ({' '.join(requirements)}) built in {time.monotonic() - t:.1f}s")
        return dest


def prune_venv(venv: Path) -> None:
    """Drop the packages' own test suites (pandas, numpy, ...: ~60 MB nobody imports)."""
    site = venv / "lib" / f"python{PY_VERSION}" / "site-packages"
    for tests in sorted(site.glob("*/**/tests")):
        if tests.is_dir() and (tests.parent / "__init__.py").exists():
            shutil.rmtree(tests)


def finish_venv(root: Path) -> None:
    """Make root/VENV position-independent of the build dir: relocate, compile bytecode with the
    final paths (mtime-validated, so it stays valid through cp -a and tar | import)."""
    venv = root / VENV.lstrip("/")
    relocate(venv, str(venv), VENV)
    run([HOST_PYTHON, "-m", "compileall", "-q", "-j", "0", "-s", str(root), "-p", "/",
         str(venv / "lib")], check=False)  # fmt: skip


def ferry_source_copy(dest: Path) -> Path:
    """A clean copy of the distribution's files (building in the shared tree would litter it)."""
    for f in ferry_sources():
        target = dest / f.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    if not (dest / "README.md").exists():
        (dest / "README.md").write_text("ferry\n")
    return dest


def venv_into(root: Path, cached: Path) -> Path:
    """Hard-link a cached venv to root/VENV. What comes next only adds files or replaces them
    by rename (relocate, compileall, pip installing a new package), never writes in place."""
    venv = root / VENV.lstrip("/")
    venv.parent.mkdir(parents=True, exist_ok=True)
    run(["cp", "-al", str(cached), str(venv)])
    return venv


def relocate(venv: Path, old: str, new: str) -> None:
    """Rewrite the absolute build path baked into scripts and pyvenv.cfg (into new files: the
    venv may hard-link a cached one)."""
    old_b, new_b = old.encode(), new.encode()
    targets = [p for p in (venv / "bin").iterdir() if p.is_file() and not p.is_symlink()]
    targets.append(venv / "pyvenv.cfg")
    for p in targets:
        data = p.read_bytes()
        if old_b in data:
            tmp = p.with_name(p.name + ".relocate")
            tmp.write_bytes(data.replace(old_b, new_b))
            shutil.copymode(p, tmp)
            tmp.replace(p)


def venv_libs(root: Path, base: Path) -> int:
    """Add the host libraries the venv's compiled extensions need (not already in base)."""
    sos = [
        os.path.join(d, f)
        for d, _dirs, files in os.walk(root / VENV.lstrip("/"))
        for f in files
        if f.endswith(".so") or ".so." in f
    ]
    if not sos:
        return 0
    return copy_libs(ldd_closure(sos, exclude_under=str(root)), root, skip=manifest(base))


# ------------------------------------------------------------------------------------------------
# Rootfs flavours (faker, ferry, sidecar, hello, busybox): a cached base + their own files
# ------------------------------------------------------------------------------------------------


def rootfs_inputs(name: str) -> tuple[str, str]:
    """(base kind, digest of this rootfs's own inputs) — cheap: no build happens here."""
    if name == "faker":
        return "python", digest(FAKER_SPEC)
    if name == "ferry":
        parts = [f"{f.relative_to(REPO)}:{sha256_file(f)}" for f in ferry_sources()]
        return "python", digest(*parts)
    if name == "sidecar":
        return "busybox", digest(host_fingerprint([SOCAT]))
    if name == "hello":
        return "busybox", digest(HELLO_SH)
    if name == "busybox":
        return "busybox", ""
    raise BuildError(f"unknown rootfs {name}")


def populate(name: str, root: Path, base: Path) -> None:
    """Add rootfs `name`'s own files to `root` (which already holds a copy of `base`)."""
    if name == "faker":
        wh = wheelhouse(["faker", FAKER_SPEC], [FAKER_SPEC])
        venv_into(root, cached_venv(["faker", FAKER_SPEC], [FAKER_SPEC], wh))
        venv_libs(root, base)
    elif name == "ferry":
        # ferry's dependencies (and setuptools, its build backend) come from a venv cached per
        # pyproject.toml; only ferry itself is installed fresh, without build isolation.
        pyproject_hash = sha256_file(REPO / "pyproject.toml")
        src = ferry_source_copy(root.parent / "src-copy")
        wh = wheelhouse(["ferry", pyproject_hash], ["setuptools>=68", str(src)], drop="ferry")
        deps = cached_venv(["ferry", pyproject_hash], ["setuptools>=68", str(src)], wh,
                           uninstall="ferry")  # fmt: skip
        venv = venv_into(root, deps)
        t = time.monotonic()
        pip(str(venv / "bin" / "python"), "install", "--no-index", "--find-links", str(wh),
            "--no-deps", "--no-build-isolation", "--no-compile", str(src), net=False)  # fmt: skip
        finish_venv(root)
        venv_libs(root, base)
        log(f"ferry installed into the venv in {time.monotonic() - t:.1f}s")
    elif name == "sidecar":
        (root / "usr/bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(SOCAT, root / "usr/bin/socat")
        copy_libs(ldd_closure([SOCAT]), root, skip=manifest(base))
    elif name == "hello":
        (root / "app").mkdir(parents=True, exist_ok=True)
        (root / "app/hello.sh").write_text(HELLO_SH)
        os.chmod(root / "app/hello.sh", 0o755)
    elif name == "busybox":
        pass
    else:
        raise BuildError(f"unknown rootfs {name}")


# ------------------------------------------------------------------------------------------------
# Engines
# ------------------------------------------------------------------------------------------------


def engine_ok(engine: str) -> bool:
    if shutil.which(engine) is None:
        return False
    return run([engine, "info"], check=False).returncode == 0


def image_hashes(engine: str, refs: Sequence[str]) -> dict[str, tuple[str, str]]:
    """ref -> (build-hash label, image id), for the refs that exist in the engine."""
    if not refs:
        return {}
    out = run([engine, "image", "inspect", *refs], check=False).stdout
    found: dict[str, tuple[str, str]] = {}
    try:
        items = json.loads(out or b"[]")
    except json.JSONDecodeError:
        items = []
    for ref in refs:
        # match by tag (docker: RepoTags ferry-test/x:dev, podman: localhost/ferry-test/x:dev)
        for item in items or []:
            tags = item.get("RepoTags") or []
            if any(t == ref or t.endswith("/" + ref) for t in tags):
                labels = (item.get("Config") or {}).get("Labels") or {}
                found[ref] = (labels.get(HASH_LABEL, ""), item.get("Id", ""))
    return found


def changes_for(img: Image, build_hash: str) -> list[str]:
    ch = [f"ENV {k}={v}" for k, v in img.env]
    if img.airbyte_entrypoint is not None:
        ch.append(f"ENV AIRBYTE_ENTRYPOINT={img.airbyte_entrypoint}")
    if img.entrypoint is not None:
        ch.append(f"ENTRYPOINT {json.dumps(list(img.entrypoint))}")
    elif img.parent_shell_entrypoint is None:
        ch.append('ENTRYPOINT ["/bin/sh"]')
    ch.append(f"LABEL {NAME_LABEL}={img.name}")
    ch.append(f"LABEL {HASH_LABEL}={build_hash}")
    return ch


def dockerfile_quote(value: str) -> str:
    """A double-quoted Dockerfile ENV value: no $-expansion, quotes and backslashes kept."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def engine_import(engine: str, root: Path, changes: Sequence[str], ref: str) -> None:
    """`tar -C root . | ENGINE import --change ... - REF` (streamed: no tarball on disk)."""
    # --warning=no-file-changed, exit 1 accepted: a parallel `cp -al` of the same base changes
    # the files' ctime (link count), never their content
    tar = subprocess.Popen(
        ["tar", "-c", "--numeric-owner", "--owner=0", "--group=0", "--warning=no-file-changed",
         "-C", str(root), "."],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert tar.stdout is not None
    cmd = [engine, "import"]
    for c in changes:
        cmd += ["--change", c]
    try:
        result = subprocess.run(
            [*cmd, "-", ref], stdin=tar.stdout, capture_output=True, check=False
        )
    finally:
        tar.stdout.close()
        tar.wait()
    if tar.returncode not in (0, 1) or result.returncode != 0:
        err = result.stderr.decode(errors="replace").strip()
        raise BuildError(f"{engine} import {ref} failed (tar exit {tar.returncode}): {err}")


def import_image(engine: str, root: Path, img: Image, build_hash: str) -> None:
    if img.parent_shell_entrypoint is None:
        engine_import(engine, root, changes_for(img, build_hash), img.ref)
        return
    # parent: imported with a shell-form ENTRYPOINT; child: only adds ENV AIRBYTE_ENTRYPOINT
    parent_changes = [f"ENV {k}={v}" for k, v in img.env]
    parent_changes.append(f"ENTRYPOINT {img.parent_shell_entrypoint}")
    parent_changes.append(f"LABEL {NAME_LABEL}={img.name}-parent {HASH_LABEL}={build_hash}")
    engine_import(engine, root, parent_changes, img.parent_ref)
    with tempfile.TemporaryDirectory(prefix="ferry-bonjour-") as ctx:
        assert img.airbyte_entrypoint is not None
        dockerfile = (
            f"FROM {img.parent_ref}\n"
            f"ENV AIRBYTE_ENTRYPOINT={dockerfile_quote(img.airbyte_entrypoint)}\n"
            f"LABEL {NAME_LABEL}={img.name} {HASH_LABEL}={build_hash}\n"
        )
        Path(ctx, "Dockerfile").write_text(dockerfile)
        env = dict(os.environ, DOCKER_BUILDKIT="0")
        run([engine, "build", "-q", "-t", img.ref, ctx], env=env)


def transfer_docker_to_podman(refs: Sequence[str]) -> None:
    """`docker save | podman load`: same image IDs, labels and parent layers."""
    save = subprocess.Popen(["docker", "save", *refs], stdout=subprocess.PIPE)
    assert save.stdout is not None
    try:
        load = subprocess.run(
            ["podman", "load", "-q"], stdin=save.stdout, capture_output=True, check=False
        )
    finally:
        save.stdout.close()
        save.wait()
    if save.returncode != 0 or load.returncode != 0:
        raise BuildError(
            f"docker save | podman load failed: {load.stderr.decode(errors='replace')}"
        )


# ------------------------------------------------------------------------------------------------
# Orchestration
# ------------------------------------------------------------------------------------------------


def image_hash(img: Image, rootfs_digest: str, base_kind: str) -> str:
    return digest(
        SCRIPT.read_text(),
        json.dumps(dataclasses.asdict(img), sort_keys=True),
        img.rootfs,
        rootfs_digest,
        base_kind,
        host_fingerprint([busybox_path(), CA_BUNDLE]),
        host_fingerprint([HOST_PYTHON]) if base_kind == "python" else "",
    )[:20]


def build_rootfs_group(
    rootfs: str,
    imgs: list[Image],
    hashes: dict[str, str],
    engines: list[str],
    todo: dict[str, list[str]],
) -> float:
    """Assemble one rootfs, import it for each image/engine in `todo` (engine -> image names)."""
    t = time.monotonic()
    base_kind, _ = rootfs_inputs(rootfs)
    base = base_rootfs(base_kind)
    build_dir = Path(tempfile.mkdtemp(prefix=f"{rootfs}-", dir=CACHE / "build"))
    try:
        # the base, hard-linked (cheap; nothing below rewrites a base file in place), + this rootfs
        root = build_dir / "root"
        run(["cp", "-al", str(base), str(root)])
        populate(rootfs, root, base)
        log(f"rootfs '{rootfs}' ready in {time.monotonic() - t:.1f}s")

        def one(img: Image, engine: str) -> None:
            ti = time.monotonic()
            import_image(engine, root, img, hashes[img.name])
            log(f"{img.ref} [{engine}] built (import {time.monotonic() - ti:.1f}s)")

        jobs = [(img, e) for img in imgs for e in engines if img.name in todo.get(e, [])]
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            for fut in [pool.submit(one, img, e) for img, e in jobs]:
                fut.result()
    finally:
        discard(build_dir)
    return time.monotonic() - t


def build(
    names: Sequence[str], engines: list[str], force: bool = False, jobs: int = 2
) -> dict[str, str]:
    """Build the named images into the engines; returns image name -> 'cached' | 'built'."""
    for engine in engines:
        if not engine_ok(engine):
            raise BuildError(
                f"{engine} does not answer (`{engine} info` failed): run scripts/engines.sh"
            )
    (CACHE / "build").mkdir(parents=True, exist_ok=True)
    imgs = [IMAGES[n] for n in PRIORITY if n in names]
    hashes = image_hashes_of(imgs)
    todo = stale_images(imgs, engines, hashes, force)
    # podman can take docker's image (when docker has the right one, or is about to build it)
    via_docker: list[str] = []
    if "docker" in engines and "podman" in engines:
        via_docker = list(todo["podman"])
        todo["podman"] = []
    status: dict[str, str] = {}
    for img in imgs:
        if not any(img.name in todo[e] for e in engines) and img.name not in via_docker:
            status[img.name] = "cached"
            log(f"{img.ref} cached (hash {hashes[img.name]})")
    groups: dict[str, list[Image]] = {}
    for img in imgs:
        if any(img.name in todo[e] for e in engines):
            groups.setdefault(img.rootfs, []).append(img)
    errors, failed = build_groups(groups, hashes, engines, todo, status, jobs)
    copy_to_podman([n for n in via_docker if n not in failed], status)
    for engine in engines:
        remove_superseded(engine)
    if errors:
        raise BuildError("; ".join(errors))
    return status


def copy_to_podman(names: Sequence[str], status: dict[str, str]) -> None:
    """Load the named images (and their shell-entrypoint parents) from docker into podman."""
    if not names:
        return
    t = time.monotonic()
    refs = [IMAGES[n].ref for n in names]
    refs += [IMAGES[n].parent_ref for n in names if IMAGES[n].parent_shell_entrypoint]
    transfer_docker_to_podman(refs)
    for n in names:
        status.setdefault(n, "copied to podman")
    log(f"[podman] loaded from docker in {time.monotonic() - t:.1f}s: {' '.join(refs)}")


def image_hashes_of(imgs: Sequence[Image]) -> dict[str, str]:
    """Each image's content hash (its rootfs inputs read once per rootfs)."""
    rootfs_digests: dict[str, tuple[str, str]] = {}
    for img in imgs:
        if img.rootfs not in rootfs_digests:
            rootfs_digests[img.rootfs] = rootfs_inputs(img.rootfs)
    return {
        img.name: image_hash(img, rootfs_digests[img.rootfs][1], rootfs_digests[img.rootfs][0])
        for img in imgs
    }


def stale_images(
    imgs: Sequence[Image], engines: list[str], hashes: dict[str, str], force: bool
) -> dict[str, list[str]]:
    """Per engine, the images it lacks or has from other inputs (all of them with `force`)."""
    todo: dict[str, list[str]] = {}
    for engine in engines:
        have = image_hashes(engine, [img.ref for img in imgs])
        todo[engine] = [
            img.name for img in imgs if force or have.get(img.ref, ("", ""))[0] != hashes[img.name]
        ]
    return todo


def build_groups(
    groups: dict[str, list[Image]],
    hashes: dict[str, str],
    engines: list[str],
    todo: dict[str, list[str]],
    status: dict[str, str],
    jobs: int,
) -> tuple[list[str], set[str]]:
    """Build each rootfs group (in parallel); the errors and the images that failed."""
    errors: list[str] = []
    failed: set[str] = set()
    if not groups:
        return errors, failed
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {
            pool.submit(build_rootfs_group, rootfs, group, hashes, engines, todo): rootfs
            for rootfs, group in groups.items()
        }
        for fut in concurrent.futures.as_completed(futures):
            rootfs = futures[fut]
            try:
                log(f"rootfs '{rootfs}' done: {fut.result():.1f}s")
                for img in groups[rootfs]:
                    status[img.name] = "built"
            except Exception as exc:  # report every group's failure, not just the first
                errors.append(f"{rootfs}: {exc}")
                failed.update(img.name for img in groups[rootfs])
                log(f"FAILED rootfs '{rootfs}': {exc}")
    return errors, failed


def remove_superseded(engine: str) -> None:
    """Remove this script's images that lost their tag to a newer build (untagged, labelled
    ferry.build-hash), in the background (slow on this disk); one still used by a container
    stays (rmi without force fails)."""
    out = run([engine, "images", "-q", "--no-trunc", "-f", "dangling=true", "-f",
               f"label={HASH_LABEL}"], check=False).stdout.decode()  # fmt: skip
    ids = sorted(set(out.split()))
    if ids:
        subprocess.Popen(
            [engine, "rmi", *ids],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "names", nargs="*", help=f"images to build (default: all): {', '.join(IMAGES)}"
    )
    parser.add_argument("--engine", choices=["docker", "podman", "both"], default="docker")
    parser.add_argument("--force", action="store_true", help="ignore the build-hash cache")
    parser.add_argument("--jobs", type=int, default=2, help="rootfs builds in parallel (default 2)")
    parser.add_argument("--list", action="store_true", help="print the image references and exit")
    args = parser.parse_args(argv)
    if args.list:
        for img in IMAGES.values():
            print(img.ref)
        return 0
    unknown = [n for n in args.names if n not in IMAGES]
    if unknown:
        parser.error(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(IMAGES)}")
    engines = ["docker", "podman"] if args.engine == "both" else [args.engine]
    try:
        status = build(args.names or list(IMAGES), engines, force=args.force, jobs=args.jobs)
    except BuildError as exc:
        print(f"build_images: ERROR: {exc}", file=sys.stderr)
        return 1
    summary = ", ".join(f"{n}={s}" for n, s in status.items())
    log(f"done in {time.monotonic() - T0:.1f}s ({', '.join(engines)}): {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
