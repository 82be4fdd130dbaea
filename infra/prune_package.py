"""Drops from the Lambda deployment package what the functions never read (`make package` runs it
after Chalice, before add_bytecode.py): a smaller zip uploads faster and is unpacked faster on a
cold start.

- pip and setuptools (with their metadata), should a dependency bring them: the app never imports
  either.
- Swagger UI's files other than the ones GET /doc serves (`chalicelib.api.docs.ASSETS`, the favicon):
  swagger-ui-bundle also ships source maps, ES-module builds and a standalone preset.

    python infra/prune_package.py PACKAGE_DIR     (holding deployment.zip)
"""
from __future__ import annotations

import pathlib
import re
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
NEVER_IMPORTED = re.compile(r"^(pip|setuptools|_distutils_hack)(/|-[^/]*\.dist-info/)|^distutils-precedence\.pth$")
SWAGGER_FILES = re.compile(r"^swagger_ui_bundle/vendor/[^/]+/(?P<name>[^/]+)$")
FAVICON = "favicon-32x32.png"


def served_assets() -> set[str]:
    """The Swagger UI files the API serves, as the docs module lists them."""
    sys.path.insert(0, str(ROOT))
    from chalicelib.api import docs  # noqa: PLC0415 - the app's own list, read from its source tree

    return set(docs.ASSETS) | {FAVICON}


def unused(name: str, *, assets: set[str]) -> bool:
    if NEVER_IMPORTED.search(name):
        return True
    swagger = SWAGGER_FILES.match(name)
    return swagger is not None and swagger["name"] not in assets


def prune(archive: pathlib.Path, *, assets: set[str]) -> list[str]:
    """Rewrite `archive` without the unused entries; returns their names."""
    rewritten = archive.with_suffix(".tmp")
    dropped = []
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(rewritten, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if unused(info.filename, assets=assets):
                dropped.append(info.filename)
            else:
                target.writestr(info, source.read(info), compress_type=zipfile.ZIP_DEFLATED)
    rewritten.replace(archive)
    return dropped


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    archive = pathlib.Path(argv[0]) / "deployment.zip"
    before = archive.stat().st_size
    dropped = prune(archive, assets=served_assets())
    print(f"{archive}: dropped {len(dropped)} files never read; "
          f"{before / 1e6:.1f} MB -> {archive.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
