"""README.md and docs/*.md: every shell command is run here or marked illustrative; links resolve.

The language of a fenced block says what it is (docs/README.md tells readers the same):

- ``sh``: run by ``test_sh_blocks_run`` with bash (``-euo pipefail``) from the project folder,
  the venv's bin first on PATH and MLflow tracking pointed at ``tmp_path``. Keep them cheap
  (``--help``, ``lint-imports``): each must succeed within ``SH_DEADLINE`` seconds.
- ``console``: illustrative, not run (whole pipelines, servers, curl, other machines); the
  end-to-end, team and fault tests cover those paths.
- ``json``, ``text``, ``ini``, ``yaml``, ``toml``: answers and file contents; ``python`` blocks
  must parse. Any other language, ``bash``/``shell``/``zsh`` or none at all, fails
  ``test_every_fenced_block_says_whether_it_runs``, so no shell command slips through unmarked.

Also: the README fits in ``README_MAX_LINES`` lines, every relative link points at a file that
exists, every project path named in backquotes (``bench/x.py``, ``tests/test_x.py::test_y``)
exists, every ``python -m <module>`` names a module that can be imported, and
docs/architecture.md's layout table names every module of the package.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200
SH_DEADLINE = 120

RUN, ILLUSTRATIVE = "sh", "console"
NOT_SHELL = {"json", "text", "ini", "yaml", "toml", "python"}

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*?)\s*$")
INLINE_LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*(?P<target>\S+)", re.MULTILINE)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
PROJECT_PATH = re.compile(
    r"^(?P<path>(?:bench|tests|recflow|steps|docs)/[\w./-]+\.(?:py|yaml|md))(?:::(?P<name>\w+))?$"
)
PYTHON_M = re.compile(r"python -m (?P<module>[\w.]+)(?=[\s`]|$)", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def closes(line: str, fence: str) -> bool:
    """Whether ``line`` closes a block opened with ``fence`` (same character, at least as long)."""
    closing = FENCE.match(line)
    return (
        closing is not None
        and closing["fence"][0] == fence[0]
        and len(closing["fence"]) >= len(fence)
        and not closing["info"]
    )


def fenced_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, indented ones (in lists) included."""
    blocks: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        lang = opening["info"].split()[0] if opening["info"] else ""
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            if closes(lines[j], fence):
                break
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        else:
            raise AssertionError(f"{page.relative_to(ROOT)}:{i + 1}: a fence that never closes")
        blocks.append(Block(page, i + 1, lang, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def prose(page: Path) -> str:
    """The page without its fenced blocks (links and names in code are not links)."""
    kept: list[str] = []
    inside: str | None = None  # the fence of the block we are in
    for line in page.read_text().splitlines():
        opening = FENCE.match(line)
        if inside is None and opening:
            inside = opening["fence"]
        elif inside is not None and closes(line, inside):
            inside = None
        elif inside is None:
            kept.append(line)
    return "\n".join(kept)


BLOCKS = [block for page in PAGES for block in fenced_blocks(page)]
SH_BLOCKS = [block for block in BLOCKS if block.lang == RUN]


def test_the_pages_exist_and_the_readme_fits_in_200_lines() -> None:
    assert (ROOT / "docs" / "README.md").exists(), "docs/README.md is the index of the docs"
    assert len(PAGES) > 2, PAGES
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_every_fenced_block_says_whether_it_runs() -> None:
    unmarked = [
        f"{block.where}: ```{block.lang or '(no language)'}"
        for block in BLOCKS
        if block.lang not in {RUN, ILLUSTRATIVE, *NOT_SHELL}
    ]
    assert not unmarked, (
        "fence shell commands as ```sh (run by this test) or ```console (illustrative), "
        f"anything else as one of {sorted(NOT_SHELL)}: {unmarked}"
    )


def test_the_docs_have_commands_that_run() -> None:
    # Without this, a page whose every block became ```console would leave nothing to run.
    assert any(block.page.name == "README.md" and block.page.parent == ROOT for block in SH_BLOCKS)
    assert len(SH_BLOCKS) >= 4, [block.where for block in SH_BLOCKS]


@pytest.mark.parametrize("block", SH_BLOCKS, ids=[block.where for block in SH_BLOCKS])
def test_sh_blocks_run(block: Block, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "RECFLOW_DATA_DIR": str(tmp_path / "data"),
    }
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.text],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=SH_DEADLINE,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.where} ran over {SH_DEADLINE} s; ```sh blocks must be cheap")
    assert done.returncode == 0, (
        f"{block.where} failed:\n{block.text}\n{done.stdout}\n{done.stderr}"
    )


def test_python_blocks_parse() -> None:
    python = [block for block in BLOCKS if block.lang == "python"]
    for block in python:
        try:
            ast.parse(block.text)
        except SyntaxError as error:
            pytest.fail(f"{block.where}: {error}")


def test_every_relative_link_points_at_a_file() -> None:
    broken = []
    for page in PAGES:
        text = CODE_SPAN.sub("", prose(page))
        targets = [m["target"] for m in INLINE_LINK.finditer(text)]
        targets += [m["target"] for m in REFERENCE_LINK.finditer(text)]
        for target in targets:
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_every_project_path_named_exists() -> None:
    missing = []
    for page in PAGES:
        for span in CODE_SPAN.findall(prose(page)):
            for word in span.replace(",", " ").split():
                named = PROJECT_PATH.match(word)
                if not named:
                    continue
                path = ROOT / named["path"]
                if not path.exists():
                    missing.append(f"{page.relative_to(ROOT)}: {named['path']}")
                elif named["name"] and not re.search(
                    rf"^\s*def {named['name']}\(", path.read_text(), re.MULTILINE
                ):
                    missing.append(f"{page.relative_to(ROOT)}: {word}")
    assert not missing, missing


def test_every_python_m_module_exists() -> None:
    unknown = []
    for page in PAGES:
        for named in PYTHON_M.finditer(page.read_text()):
            module = named["module"].rstrip(".")
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:  # a parent package is missing
                found = False
            if not found:
                unknown.append(f"{page.relative_to(ROOT)}: python -m {module}")
    assert not unknown, unknown


def test_the_architecture_table_names_every_module() -> None:
    # A newcomer finds their way by docs/architecture.md's layout: a module left out of it is
    # one they have to discover by reading the tree.
    # Rows name a module by its path, or by its file name under the last section row that names
    # a folder (`recflow/hpo/`): hpo's sampling.py is not testing's.
    listed, folder = set(), ""
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        first = line.split("|")[1] if line.startswith("|") else ""
        if section := re.fullmatch(r"\s*\*\*(?:`([\w/]+/)`)?.*\*\*\s*", first):
            folder = section[1] or ""
        for name in re.findall(r"`([\w/]+\.py)`", first):
            listed.add(name if "/" in name else folder + name)
    modules = [
        path.relative_to(ROOT).as_posix() for path in sorted((ROOT / "recflow").rglob("*.py"))
        if path.name != "__init__.py"
    ]  # fmt: skip
    assert not [m for m in modules if m not in listed]
