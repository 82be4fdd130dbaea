"""The documentation stays usable: every relative link and #anchor resolves, the README stays a
front door, and every setting is documented. Reads files only (no app, no network), so it is fast."""
from __future__ import annotations

import pathlib
import re
import urllib.parse

import pytest

from chalicelib import config

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
README_MAX_LINES = 300

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) or [text](target "title"); images too. Targets with spaces are not used here.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, …


def markdown_files() -> list[pathlib.Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (links and headings in code are not Markdown)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    """Every anchor a heading of `path` defines; repeated headings get -1, -2, … as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: pathlib.Path) -> list[str]:
    links = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        line = INLINE_CODE.sub("", line)  # `[x](y)` inside code is not a link
        links.extend(target for target in LINK.findall(line) if not EXTERNAL.match(target))
    return links


def broken_links(path: pathlib.Path) -> list[str]:
    problems = []
    for target in relative_links(path):
        file_part, _, fragment = target.partition("#")
        destination = (path.parent / urllib.parse.unquote(file_part)).resolve() if file_part else path
        if not destination.exists():
            problems.append(f"{target}: no file {file_part} next to {path.name}")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            problems.append(f"{target}: no heading with anchor #{fragment} in {destination.name}")
    return problems


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(path):
    assert broken_links(path) == []


def test_the_checker_finds_broken_links(tmp_path):
    (tmp_path / "other.md").write_text(
        "# Other page\n\n## Retries: `JOB_MAX_ATTEMPTS` → error\n## Retries\n## Retries\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md) [ok](other.md#other-page) [ok](other.md#retries-job_max_attempts--error)\n"
        "[ok](other.md#retries-1) [ok](#page) [ok](https://example.com/x#y) `[code](nowhere.md)`\n"
        "[bad](missing.md) [bad](other.md#nowhere) [bad](#nothing)\n"
        "```\n[in a code block](also-missing.md)\n```\n")
    problems = broken_links(page)
    assert len(problems) == 3, problems
    assert [p.split(":")[0] for p in problems] == ["missing.md", "other.md#nowhere", "#nothing"]


def test_slug_matches_github():
    assert slug("Submit: `POST /sdapi/v1/txt2img`, `POST /sdapi/v1/img2img` → 202") == \
        "submit-post-sdapiv1txt2img-post-sdapiv1img2img--202"
    assert slug("Larger deployment: `docker-compose.yml`") == "larger-deployment-docker-composeyml"
    assert slug("Where to look") == "where-to-look"


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def setting_names() -> list[str]:
    """The environment variable of every Settings field: its alias when it has one, else its name."""
    names = []
    for name, field in config.Settings.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
        names.append((alias or name).upper())
    return names


def test_every_setting_is_in_the_configuration_page():
    text = CONFIGURATION.read_text(encoding="utf-8")
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]*)`", text))
    missing = [name for name in setting_names() if name not in documented]
    assert len(setting_names()) > 40  # read from the class, not an empty list
    assert missing == []
