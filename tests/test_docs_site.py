"""The documentation site builds strictly (`make docs`): a broken link or a page left out of the
navigation fails the build."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mri_recon.config import PROJECT_DIR

MKDOCS = Path(sys.executable).parent / "mkdocs"
# `make install` brings mkdocs (the dev extra); a bare GPU image with the project on PYTHONPATH
# may not have it. `make test` builds the site before the suite either way.
pytestmark = pytest.mark.skipif(not MKDOCS.exists(), reason="mkdocs is not installed")


def build(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(root / "site")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


@pytest.fixture
def site_copy(tmp_path: Path) -> Path:
    """mkdocs.yml and docs/ copied, the package linked beside them (for the API reference)."""
    shutil.copy(PROJECT_DIR / "mkdocs.yml", tmp_path)
    shutil.copytree(PROJECT_DIR / "docs", tmp_path / "docs")
    (tmp_path / "mri_recon").symlink_to(PROJECT_DIR / "mri_recon")
    return tmp_path


def test_the_site_builds_and_every_page_is_in_the_navigation(site_copy: Path) -> None:
    result = build(site_copy)
    assert result.returncode == 0, result.stderr[-3000:]
    docs, site = site_copy / "docs", site_copy / "site"
    pages = [
        p.relative_to(docs).with_suffix("") for p in docs.rglob("*.md") if p.name != "index.md"
    ]
    assert pages and all((site / page / "index.html").is_file() for page in pages)


@pytest.mark.parametrize(
    "planted",
    [
        ("training.md", "\nSee [the missing page](no_such_page.md).\n"),
        ("orphan.md", "# A page no navigation lists\n"),
    ],
)
def test_a_broken_link_or_an_orphan_page_fails_the_build(
    site_copy: Path, planted: tuple[str, str]
) -> None:
    name, text = planted
    page = site_copy / "docs" / name
    page.write_text((page.read_text() if page.exists() else "") + text)
    result = build(site_copy)
    assert result.returncode != 0
    assert "no_such_page.md" in result.stderr or "orphan.md" in result.stderr
