"""Compilers and the build cache: the one compile-and-cache of the project.

Every build of C goes through here: the host library and the sanitizer harness
(:mod:`.host`), the cross builds of each microcontroller target (:class:`CrossCompiler`),
the helpers the emulators need (the simavr runner, the qemu plugin: :func:`host_tool`),
the DDNN gateway library and the fuzz harnesses.  Every C file is compiled with
:data:`ebnn_codegen.cflags.STRICT_CFLAGS`; a build adds optimisation, architecture,
section and sanitizer flags only.

Builds live in ``$EBNN_CACHE`` (default ``~/.cache/ebnn-codegen``), one folder per
build named by the hash of its sources, flags and compiler version; a folder is
filled in a temporary directory and renamed into place, so parallel processes never
see half a build.  :func:`link_overflow` is the only code that reads a linker's
message text; it turns a region overflow into a :class:`~ebnn_codegen.errors.LinkOverflowError`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cflags import STRICT_CFLAGS
from ..errors import LinkOverflowError, ToolError

SECTIONS = ("-ffunction-sections", "-fdata-sections")
"""Cross builds: one section per function and object, so ``--gc-sections`` drops what is unused."""

_VERSIONS: dict[str, str] = {}


def cache_dir(kind: str) -> Path:
    """The cache folder of one kind of build (created)."""
    root = Path(os.environ.get("EBNN_CACHE", Path.home() / ".cache" / "ebnn-codegen"))
    d = root / kind
    d.mkdir(parents=True, exist_ok=True)
    return d


def digest(*parts: Any) -> str:
    """A short hash of ``parts``: dicts (name -> text or bytes) by sorted key, anything else by ``str``."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, dict):
            for k in sorted(p):
                h.update(k.encode())
                h.update(b"\0")
                v = p[k]
                h.update(v.encode() if isinstance(v, str) else bytes(v))
                h.update(b"\1")
        else:
            h.update(str(p).encode())
            h.update(b"\2")
    return h.hexdigest()[:20]


def require_tool(tool: str, package: str) -> str:
    """The path of ``tool``, or a ToolError naming the Debian package that installs it."""
    path = shutil.which(tool)
    if path is None:
        raise ToolError(f"'{tool}' not found", hint=f"install the Debian package {package}")
    return path


def run_tool(cmd: Sequence[str | Path], what: str) -> str:
    """Run a build tool; its stdout, or a ToolError with the command and the end of its output."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        shown = " ".join(str(c) for c in cmd)
        raise ToolError(
            f"{what} failed (exit {proc.returncode}): {shown}\n{(proc.stderr + proc.stdout).strip()[-4000:]}"
        )
    return proc.stdout


def compiler_version(cc: str) -> str:
    """The compiler's version (part of every cache key)."""
    if cc not in _VERSIONS:
        proc = subprocess.run([cc, "-dumpversion"], capture_output=True, text=True)
        _VERSIONS[cc] = proc.stdout.strip()
    return _VERSIONS[cc]


def cached_dir(kind: str, key: str, make: Callable[[Path], None]) -> Path:
    """A build folder of the cache: ``make(tmpdir)`` fills it once, then it is reused."""
    final = cache_dir(kind) / key
    if final.is_dir():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=final.parent))
    try:
        make(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, final)
    except OSError:  # another process published the same build first
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise
    return final


def compile_c(
    cc: str,
    flags: Sequence[str],
    sources: Sequence[Path],
    out: Path,
    includes: Sequence[Path] = (),
    libs: Sequence[str] = (),
    what: str = "",
    strict: bool = True,
) -> Path:
    """Compile and link ``sources`` into ``out`` with the strict flags plus ``flags`` (not cached).

    ``strict=False`` only for the host helpers built against system headers (libsimavr, qemu's
    plugin API), which are not clean under the strict flags; the project's C always is."""
    cmd = [
        require_tool(cc, cc),
        *(STRICT_CFLAGS if strict else ()),
        *flags,
        *(f"-I{p}" for p in includes),
        *map(str, sources),
        "-o",
        str(out),
        *libs,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(f"{cc} failed to compile {what or 'the generated C'}:\n{proc.stderr.strip()[-4000:]}")
    return out


def build_c(
    kind: str,
    files: dict[str, str],
    sources: Sequence[str],
    out_name: str,
    flags: Sequence[str],
    cc: str = "cc",
    libs: Sequence[str] = (),
    what: str = "",
    strict: bool = True,
) -> Path:
    """Write ``files`` (name -> text) into a cache folder and compile ``sources`` (names among
    them) into ``out_name`` there, once per content, flags and compiler; returns its path."""
    strict_flags = list(STRICT_CFLAGS) if strict else []
    key = digest(files, strict_flags, list(flags), list(libs), cc, compiler_version(cc), out_name)

    def make(d: Path) -> None:
        for fname, text in files.items():
            (d / fname).write_text(text)
        compile_c(cc, flags, [d / s for s in sources], d / out_name, [d], libs, what, strict)

    return cached_dir(kind, key, make) / out_name


def host_tool(source: Path, out_name: str, flags: Sequence[str], libs: Sequence[str], what: str) -> Path:
    """Compile a host helper (the simavr runner, the qemu plugin) once into the cache."""
    require_tool("cc", "gcc")
    files = {source.name: source.read_text()}
    return build_c("host-tools", files, [source.name], out_name, flags, "cc", libs, what, strict=False)


_OVERFLOW = re.compile(r"region [`']?([\w.]+)'? overflowed by (\d+) bytes")
_NOT_FIT = re.compile(r"will not fit in region [`']?([\w.]+)'?")
_NOT_WITHIN = re.compile(r"is not within region [`']?([\w.]+)'?")


def link_overflow(text: str) -> LinkOverflowError | None:
    """The one parser of linker messages: a region overflow as a typed error, else None."""
    found = _OVERFLOW.search(text)
    if found:
        region, over = found.group(1), int(found.group(2))
        return LinkOverflowError(f"region '{region}' overflowed by {over} bytes", region, over)
    found = _NOT_FIT.search(text) or _NOT_WITHIN.search(text)
    if found:
        return LinkOverflowError(f"a section does not fit in region '{found.group(1)}'", found.group(1), None)
    return None


@dataclass(frozen=True)
class CrossCompiler:
    """A cross toolchain (``prefix`` + gcc/nm/size) and the flags of every object it builds."""

    prefix: str  # e.g. "avr-", "arm-none-eabi-"
    packages: str  # Debian packages of the toolchain (named in errors)
    cflags: tuple[str, ...]  # architecture and optimisation

    @property
    def cc(self) -> str:
        return self.prefix + "gcc"

    def tool(self, name: str) -> str:
        """The path of ``nm``, ``size``, ... of this toolchain."""
        return require_tool(self.prefix + name, self.packages)

    def key(self) -> list[Any]:
        """What every object's cache key includes: flags and the compiler's version."""
        return [list(self.cflags), list(STRICT_CFLAGS), list(SECTIONS), compiler_version(self.cc)]

    def compile(self, src: Path, obj: Path, includes: Sequence[Path], what: str) -> None:
        inc = [f"-I{p}" for p in includes]
        run_tool([self.cc, *self.cflags, *SECTIONS, *STRICT_CFLAGS, *inc, "-c", str(src), "-o", str(obj)], what)

    def link(self, objs: Sequence[Path], link_flags: Sequence[str], elf: Path, what: str) -> LinkOverflowError | None:
        """Link ``objs`` into ``elf``.  On a region overflow the link is repeated with
        ``--noinhibit-exec``, so the ELF exists for measuring its symbols, and the overflow is
        returned (the ELF cannot run); any other failure raises ToolError."""
        cmd = [self.cc, *self.cflags, *link_flags, "-Wl,--gc-sections", *map(str, objs), "-o", str(elf)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            return None
        text = proc.stderr + proc.stdout
        overflow = link_overflow(text)
        if overflow is None:
            raise ToolError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{text.strip()[-4000:]}")
        kept = subprocess.run([*cmd[:-2], "-Wl,--noinhibit-exec", "-o", str(elf)], capture_output=True, text=True)
        if kept.returncode != 0 or not elf.exists():
            raise overflow
        return overflow
