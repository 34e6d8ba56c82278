"""The docs' code runs and prints what the docs say it prints.

Every fenced ```python block of the tutorials and READMEs (English and Chinese) is executed
in a fresh namespace; a ```text block right after it is the output the page shows, and the
snippet must print exactly that (numbers may differ in the last printed digit, so a result
rounded differently on another CPU does not fail the test; words, shapes and counts must
match). Blocks marked ```python no-run are only compiled.

The Chinese tutorial is a translation with the same code: its snippets differ from the
English ones only in comments, which this file checks (same syntax tree, same outputs);
README.zh-CN.md must hold every snippet and command of README.md.
A snippet whose syntax tree was already executed reuses that run's output, so each
distinct piece of code runs once even though it is checked against both pages.

The ```bash blocks are checked against the real CLI: every ``reslab`` command line must
parse with the command's own argument parser (nothing is run: the commands' own tests run
them). Relative links must point to existing files and to headings that exist.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import decimal
import importlib
import io
import os
import re
import shlex
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL_EN = "docs/tutorial.md"
TUTORIAL_ZH = "docs/tutorial.zh-CN.md"
README_EN = "README.md"
README_ZH = "README.zh-CN.md"
DOCS = (TUTORIAL_EN, TUTORIAL_ZH, README_EN, README_ZH)

FENCE = re.compile(r"^(`{3,}|~{3,})\s*([^\s`]*)\s*(.*?)\s*$")
NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Block:
    """One fenced block: language, the rest of the info string, first body line, body."""

    lang: str
    options: str
    line: int
    body: str


@dataclass(frozen=True)
class Snippet:
    doc: str
    index: int
    line: int
    code: str
    run: bool
    expected: str | None

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def fenced_blocks(text: str) -> list[tuple[Block, str]]:
    """Fenced blocks in order, each with the text between it and the previous block."""
    blocks, lines = [], text.splitlines()
    i, gap_start = 0, 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, options = m.groups()
        body_start = i + 1
        j = body_start
        while j < len(lines) and not lines[j].startswith(fence):
            j += 1
        if j == len(lines):
            raise AssertionError(f"unclosed code fence opened at line {i + 1}")
        gap = "\n".join(lines[gap_start:i])
        body = "\n".join(lines[body_start:j]) + "\n"
        blocks.append((Block(lang.lower(), options, body_start + 1, body), gap))
        i = gap_start = j + 1
    return blocks


def read_doc(doc: str) -> str:
    path = ROOT / doc
    assert path.is_file(), f"{doc} is missing"
    return path.read_text(encoding="utf-8")


def doc_snippets(doc: str) -> list[Snippet]:
    """The python blocks of ``doc``, each with the ```text block that follows it (if any)."""
    blocks = fenced_blocks(read_doc(doc))
    out = []
    for k, (block, _gap) in enumerate(blocks):
        if block.lang != "python":
            continue
        expected = None
        if k + 1 < len(blocks):
            nxt, gap = blocks[k + 1]
            if nxt.lang == "text" and not gap.strip():
                expected = nxt.body
        run = "no-run" not in block.options.split()
        out.append(Snippet(doc, len(out), block.line, block.body, run, expected))
    return out


def existing_docs() -> list[str]:
    return [d for d in DOCS if (ROOT / d).is_file()]


def all_snippets() -> list[Snippet]:
    return [s for d in existing_docs() for s in doc_snippets(d)]


def code_key(code: str) -> str:
    """Comments never reach the syntax tree: two snippets with equal keys run identically."""
    return ast.dump(ast.parse(code))


def _numbers_match(got: str, expected: str) -> bool:
    """Integers (counts, shapes) exactly; decimals to within one unit of the last digit."""
    g, e = got.replace(",", ""), expected.replace(",", "")
    if not any(c in e + g for c in ".eE"):
        return int(g) == int(e)
    unit = 10.0 ** decimal.Decimal(e).as_tuple().exponent  # "9.37e+03" -> 10, "0.0038" -> 1e-4
    return abs(float(g) - float(e)) <= unit * (1 + 1e-9)


def same_output(got: str, expected: str) -> bool:
    """Equal line by line (trailing spaces ignored); decimals may differ in the last digit."""

    def lines(s):
        return [ln.rstrip() for ln in s.rstrip().splitlines()]

    a, b = lines(got), lines(expected)
    if a == b:
        return True
    if len(a) != len(b):
        return False
    for la, lb in zip(a, b):
        if NUMBER.split(la) != NUMBER.split(lb):
            return False
        for na, nb in zip(NUMBER.findall(la), NUMBER.findall(lb)):
            if not _numbers_match(na, nb):
                return False
    return True


@pytest.fixture(scope="session")
def snippet_runs() -> dict:
    """code_key -> (stdout, exception): each distinct snippet runs once per session."""
    return {}


def run_snippet(snippet: Snippet, cache: dict, workdir: Path) -> str:
    key = code_key(snippet.code)
    if key not in cache:
        buf = io.StringIO()
        error = None
        namespace = {"__name__": "__main__"}
        cwd = os.getcwd()
        os.chdir(workdir)  # a snippet that writes files writes them there
        try:
            with contextlib.redirect_stdout(buf):
                exec(compile(snippet.code, snippet.id, "exec"), namespace)
        except Exception as e:  # re-raised below, for every page that shows this code
            error = e
        finally:
            os.chdir(cwd)
        cache[key] = (buf.getvalue(), error)
    out, error = cache[key]
    if error is not None:
        raise AssertionError(f"the snippet at {snippet.id} raised; it printed:\n{out}") from error
    return out


@pytest.mark.parametrize("snippet", all_snippets(), ids=lambda s: s.id)
def test_snippet_runs_and_prints_what_the_doc_shows(snippet, snippet_runs, tmp_path, one_thread):
    if not snippet.run:
        compile(snippet.code, snippet.id, "exec")  # shown, not run: must still be valid Python
        return
    out = run_snippet(snippet, snippet_runs, tmp_path)
    if snippet.expected is not None:
        assert same_output(out, snippet.expected), (
            f"{snippet.id} prints something else than the page shows.\n"
            f"--- printed ---\n{out}--- on the page ---\n{snippet.expected}"
        )


def test_tutorial_snippets_show_their_output():
    """Every runnable tutorial snippet prints something, and the page shows it."""
    for doc in (TUTORIAL_EN, TUTORIAL_ZH):
        missing = [s.id for s in doc_snippets(doc) if s.run and s.expected is None]
        assert not missing, f"add the printed output (a ```text block) after {missing}"


def bash_commands(doc: str) -> list[tuple[int, list[str]]]:
    """(line, argv) for every command line of the ```bash blocks, comments removed."""
    out = []
    for block, _gap in fenced_blocks(read_doc(doc)):
        if block.lang not in ("bash", "sh", "shell", "console"):
            continue
        logical, start = "", block.line
        for offset, raw in enumerate(block.body.splitlines()):
            line = raw.strip()
            if line.startswith("$ "):
                line = line[2:]
            if not logical:
                start = block.line + offset
            if line.endswith("\\"):
                logical += line[:-1] + " "
                continue
            logical += line
            argv = shlex.split(logical, comments=True)
            if argv:
                out.append((start, argv))
            logical = ""
    return out


def test_chinese_tutorial_has_the_same_code_as_the_english_one():
    en, zh = doc_snippets(TUTORIAL_EN), doc_snippets(TUTORIAL_ZH)
    assert len(en) == len(zh), (
        f"{TUTORIAL_EN} has {len(en)} python blocks, {TUTORIAL_ZH} has {len(zh)}"
    )
    for a, b in zip(en, zh):
        assert code_key(a.code) == code_key(b.code), (
            f"{b.id} is not the same code as {a.id} (only comments may be translated)"
        )
        assert a.run == b.run and a.expected == b.expected, f"{b.id} and {a.id} differ in output"
    en_cmds = [argv for _, argv in bash_commands(TUTORIAL_EN)]
    zh_cmds = [argv for _, argv in bash_commands(TUTORIAL_ZH)]
    assert en_cmds == zh_cmds, f"{TUTORIAL_ZH} has other shell commands than {TUTORIAL_EN}"


def test_chinese_readme_mirrors_the_readme():
    """Every snippet and command of README.md is in README.zh-CN.md (which may say more).

    When README.md gains an example, this fails until the Chinese page has it too.
    """
    zh_code = {(code_key(s.code), s.expected) for s in doc_snippets(README_ZH)}
    missing = [
        s.id for s in doc_snippets(README_EN) if (code_key(s.code), s.expected) not in zh_code
    ]
    assert not missing, f"{README_ZH} lacks the snippets at {missing}"
    zh_cmds = [argv for _, argv in bash_commands(README_ZH)]
    missing = [" ".join(argv) for _, argv in bash_commands(README_EN) if argv not in zh_cmds]
    assert not missing, f"{README_ZH} lacks the commands {missing}"


def documented_reslab_commands() -> list:
    return [
        pytest.param(f"{doc}:{line}", argv, id=f"{doc}:{line}")
        for doc in existing_docs()
        for line, argv in bash_commands(doc)
        if argv[0] == "reslab"
    ]


@pytest.mark.parametrize("where,argv", documented_reslab_commands())
def test_documented_command_parses_with_the_real_cli(where, argv, capsys):
    from reslab.cli.main import COMMANDS

    assert len(argv) > 1 and argv[1] in COMMANDS, f"{where}: unknown command {' '.join(argv)}"
    module = importlib.import_module(COMMANDS[argv[1]][0])
    parser = argparse.ArgumentParser(prog=f"reslab {argv[1]}")
    module.add_arguments(parser)
    try:
        parser.parse_args(argv[2:])
    except SystemExit:
        pytest.fail(f"{where}: `{' '.join(argv)}` does not parse:\n{capsys.readouterr().err}")


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = "".join(
        ch for ch in text
        if ch in "-_ " or unicodedata.category(ch)[0] in ("L", "N", "M")
    )
    return text.replace(" ", "-")


def headings(text: str) -> set[str]:
    outside = []
    in_fence = False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            outside.append(line)
    found = re.finditer(r"^#{1,6}\s+(.*)$", "\n".join(outside), re.M)
    return {github_anchor(m.group(1)) for m in found}


LINK = re.compile(r"\]\(([^)\s]+)\)")


ALL_MARKDOWN = sorted({*DOCS, *(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")),
                       *(str(p.relative_to(ROOT)) for p in ROOT.glob("*.md"))})


@pytest.mark.parametrize("doc", ALL_MARKDOWN)
def test_relative_links_resolve(doc):
    if not (ROOT / doc).is_file():
        pytest.fail(f"{doc} is missing")
    text = read_doc(doc)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (ROOT / doc).parent / path if path else ROOT / doc
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md":
            if anchor not in headings(file.read_text(encoding="utf-8")):
                broken.append(target)
    assert not broken, f"{doc}: broken links {broken}"


# ---- the checker itself, on known inputs -------------------------------------------------


def test_fenced_blocks_pairs_code_with_the_output_block_after_it():
    text = "x\n```python\nprint(1)\n```\n\n```text\n1\n```\n```python no-run\nboom(\n```\n"
    snippets = [b for b, _ in fenced_blocks(text)]
    kinds = [(b.lang, b.options) for b in snippets]
    assert kinds == [("python", ""), ("text", ""), ("python", "no-run")]
    assert snippets[0].body == "print(1)\n" and snippets[0].line == 3
    with pytest.raises(AssertionError, match="unclosed"):
        fenced_blocks("```python\nprint(1)\n")


def test_same_output_tolerates_last_digit_rounding_only():
    assert same_output("ratio 9.37e+03\n", "ratio 9.37e+03")
    assert same_output("ratio 9.38e+03  \n\n", "ratio 9.37e+03")
    assert same_output("lr 0.0039", "lr 0.0038")
    assert same_output("acc 95.1%", "acc 95.2%")
    assert not same_output("lr 0.0040", "lr 0.0038")
    assert not same_output("ratio 9.39e+03", "ratio 9.37e+03")
    assert not same_output("acc 95.0%", "acc 95.2%")
    assert same_output("params 269,722", "params 269,722")
    assert not same_output("params 269,723", "params 269,722")
    assert not same_output("depth 20", "depth 21")
    assert not same_output("resnet56", "resnet57")
    assert not same_output("kernels: [1, 3, 1]", "kernels: [1, 3, 3, 1]")
    assert not same_output("True", "False")
    assert not same_output("a\nb", "a")


def test_code_key_ignores_comments_only():
    assert code_key("x = 1  # one\n") == code_key("# 中文注释\nx = 1  # 一\n")
    assert code_key("x = 1\n") != code_key("x = 2\n")
    assert code_key("print('a')\n") != code_key("print('b')\n")


def test_github_anchor_matches_github_slugs():
    assert github_anchor("1. The residual block") == "1-the-residual-block"
    assert github_anchor("9. Fine-tuning, step by step") == "9-fine-tuning-step-by-step"
    assert github_anchor("2. 基本块（Bottleneck）") == "2-基本块bottleneck"
