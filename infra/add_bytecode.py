"""Adds compiled bytecode to the Lambda deployment package (`make package` runs it after Chalice).

Lambda's file system is read-only and Chalice ships sources only, so without this every cold start
compiles every imported module again: on this project's machine `import app` from the package takes
about 1 s from source and about 0.4 s with the bytecode (bench/cold_start.py). The .pyc files are
"unchecked-hash" ones, used as they are whatever the files' times in the zip. They only serve the
Python version that made them, so this refuses a template whose runtime is another (Chalice sets the
runtime from the Python that runs `chalice package`, which is the one running this).

    python infra/add_bytecode.py PACKAGE_DIR     (holding deployment.zip and sam.yaml / sam.json)
"""
from __future__ import annotations

import compileall
import os
import pathlib
import py_compile
import re
import sys
import tempfile
import zipfile

# Should a dependency bring them, never imported by the app: no bytecode.
NOT_IMPORTED = re.compile(r"[/\\](pip|setuptools)[/\\]")


def runtime_of(package: pathlib.Path) -> str:
    """The functions' `Runtime` (e.g. python3.11), from the packaged template."""
    for name in ("sam.yaml", "sam.json"):
        path = package / name
        if path.exists():
            found = set(re.findall(r"""["']?Runtime["']?\s*:\s*["']?(python3\.\d+)""", path.read_text()))
            if len(found) != 1:
                raise SystemExit(f"{path}: expected one Python runtime, found {sorted(found) or 'none'}")
            return found.pop()
    raise SystemExit(f"no sam.yaml or sam.json in {package}")


def add_bytecode(archive: pathlib.Path) -> tuple[int, int]:
    """Rewrite `archive` with a .pyc beside every .py; returns (modules compiled, failures)."""
    with tempfile.TemporaryDirectory() as scratch:
        root = pathlib.Path(scratch)
        with zipfile.ZipFile(archive) as source:
            for info in source.infolist():
                source.extract(info, root)
                mode = (info.external_attr >> 16) & 0o777
                if mode and not info.is_dir():
                    os.chmod(root / info.filename, mode)
        sources = sum(1 for path in root.rglob("*.py") if not NOT_IMPORTED.search(str(path)))
        compileall.compile_dir(root, quiet=2, workers=0, ddir="/var/task", rx=NOT_IMPORTED,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        compiled = sum(1 for _ in root.rglob("*.pyc"))
        rewritten = archive.with_suffix(".tmp")
        with zipfile.ZipFile(rewritten, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as target:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    target.write(path, path.relative_to(root).as_posix())
        rewritten.replace(archive)
    return compiled, sources - compiled


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    package = pathlib.Path(argv[0])
    runtime, here = runtime_of(package), f"python{sys.version_info.major}.{sys.version_info.minor}"
    if runtime != here:
        print(f"the template's runtime is {runtime} but this is {here}: bytecode would not be used",
              file=sys.stderr)
        return 1
    archive = package / "deployment.zip"
    before = archive.stat().st_size
    compiled, failed = add_bytecode(archive)
    print(f"{archive}: bytecode for {compiled} modules ({failed} not compilable, left as source); "
          f"{before / 1e6:.1f} MB -> {archive.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
