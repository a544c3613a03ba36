"""Every command line the README and the docs show names commands and options that exist.

The README walk (tests/e2e/test_readme_walk.py) runs the README's own blocks; the rest of the
documentation shows many more command lines, in blocks and in running text, that nothing
runs. These checks read them all and hold each against the parsers it names: a
`nanoiot SUBCOMMAND --flag` against the CLI's own command tree, and a
`python -m bench.MODULE --flag` against that module's source and the bench modules it imports
(its parser may be built in another). A renamed or removed flag then
fails here, not in a reader's shell. CHANGELOG.md is left out: it tells of flags that were.
"""

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from nanoiot.cli import app

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "bench" / "README.md",
]
INLINE = re.compile(r"`([^`\n]+)`")
FENCED = re.compile(r"^ *```[a-z]*\n(.*?)^ *```", re.MULTILINE | re.DOTALL)
INDENTED = re.compile(r"^(?: {4}\S.*\n)+", re.MULTILINE)  # bench/README.md's command blocks
# `nanoiot` as a command: at a line's start, after a space, a path or an opening mark.
NANOIOT = re.compile(r"(?:^|(?<=[\s(/'\"]))nanoiot\s+")
BENCH = re.compile(r"(?:-m\s+bench\.([a-z0-9_.]+)|\b([a-z0-9_]+_bench)\.py)\s+(.*)$")
SHELL_ENDS = ("|", "||", "&&", ";", "&", "#")


def command_lines(text: str) -> Iterator[str]:
    """Every line of a code block (continuations joined) and every inline code span."""
    for block in [*FENCED.findall(text), *INDENTED.findall(text)]:
        yield from block.replace("\\\n", " ").splitlines()
    yield from INLINE.findall(text)


def words_of(tail: str) -> list[str]:
    """The words of a command line up to where the shell would end the command."""
    try:
        words = shlex.split(tail, comments=True)
    except ValueError:  # an unclosed quote in running text: plain words will do
        words = tail.split()
    kept: list[str] = []
    for word in words:
        if word in SHELL_ENDS or word.startswith(("<", ">", "2>", "$(")) or word == "...":
            break
        kept.append(word)
    return kept


def option_names(command: Any) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        names.update(param.opts, param.secondary_opts)
    return names


def takes_value(command: Any, option: str) -> bool:
    for param in command.params:
        if option in param.opts:
            return not param.is_flag
    return False


def nanoiot_problems(words: list[str]) -> list[str]:
    """What in `nanoiot WORDS...` the CLI does not have (an empty list: all of it exists)."""
    command: Any = typer.main.get_command(app)
    path, index, problems = "nanoiot", 0, []
    while index < len(words):
        word = words[index]
        index += 1
        if word.startswith("-"):
            option = word.split("=", 1)[0]
            if option not in option_names(command):
                problems.append(f"{path} has no option {option}")
                break  # whether it took a value is unknown: the rest cannot be placed
            if "=" not in word and takes_value(command, option):
                index += 1
            continue
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            continue  # an argument of the command reached
        # `nanoiot keygen server|client`: each alternative must exist.
        names = word.split("|")
        if not all(re.fullmatch(r"[a-z][a-z0-9-]*", name) for name in names):
            break  # a placeholder (NAME, FILE) or prose, not a command
        missing = [name for name in names if name not in subcommands]
        if missing:
            problems.append(f"{path} has no command {' or '.join(missing)}")
            break
        path, command = f"{path} {names[0]}", subcommands[names[0]]
    return problems


def shown_nanoiot_commands() -> Iterator[tuple[str, str]]:
    root = typer.main.get_command(app)
    starts = set(getattr(root, "commands", {})) | option_names(root)
    for document in DOCUMENTS:
        for line in command_lines(document.read_text(encoding="utf-8")):
            for start in NANOIOT.finditer(line):
                words = words_of(line[start.end() :])
                # `docker compose exec nanoiot nanoiot ...` names the service first, and
                # `pg_dump -U nanoiot -Fc` a role: neither is followed by a command.
                if words and words[0] in starts:
                    yield f"{document.relative_to(REPO)}: {line.strip()}", " ".join(words)


def shown_bench_commands() -> Iterator[tuple[str, str, list[str]]]:
    for document in DOCUMENTS:
        for line in command_lines(document.read_text(encoding="utf-8")):
            for found in BENCH.finditer(line):
                module = found.group(1) or found.group(2)
                flags = [w.split("=", 1)[0] for w in words_of(found.group(3)) if w.startswith("--")]
                yield f"{document.relative_to(REPO)}: {line.strip()}", module, flags


def test_the_documents_show_nanoiot_and_bench_commands() -> None:
    """The readers below find what they read: a change of layout must not empty them."""
    assert len(list(shown_nanoiot_commands())) > 50
    assert len(list(shown_bench_commands())) > 20


def test_every_nanoiot_command_shown_exists_with_its_options() -> None:
    problems = [
        f"{where}\n    {problem}"
        for where, command in shown_nanoiot_commands()
        for problem in nanoiot_problems(shlex.split(command))
    ]
    assert not problems, "\n".join(problems)


BENCH_IMPORT = re.compile(r"^from bench(?:\.([a-z0-9_]+))? import ([\w, ]*)", re.MULTILINE)


def with_imported_bench_modules(source: Path) -> str:
    """The module's source and that of the bench modules it imports: a module may take its
    options from a parser another module builds (``bench.cluster_options``)."""
    text = source.read_text(encoding="utf-8")
    names = set()
    for module, imported in BENCH_IMPORT.findall(text):
        names |= {module} if module else {name.strip() for name in imported.split(",")}
    sources = [REPO / "bench" / f"{name}.py" for name in sorted(names)]
    return "\n".join(
        [text, *(path.read_text(encoding="utf-8") for path in sources if path.is_file())]
    )


def test_every_bench_option_shown_is_one_its_module_takes() -> None:
    problems = []
    for where, module, flags in shown_bench_commands():
        source = REPO / "bench" / (module.replace(".", "/") + ".py")
        if not source.is_file():
            problems.append(f"{where}\n    no module bench/{module}.py")
            continue
        text = with_imported_bench_modules(source)
        problems += [
            f"{where}\n    bench.{module} has no {flag}"
            for flag in flags
            if f'"{flag}"' not in text
        ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("line", "problems"),
    [
        ("nanoiot credentials add-token gateway-3 --token-stdin", []),
        ("nanoiot keygen server|client --props FILE", []),
        ("nanoiot keygen --props FILE", ["nanoiot keygen has no option --props"]),
        (
            "nanoiot credentials add-token gw --token T",
            ["nanoiot credentials add-token has no option --token"],
        ),
        ("nanoiot device frobnicate x", ["nanoiot device has no command frobnicate"]),
        ("nanoiot --config conf/x.yaml serve --workers 2", []),
    ],
)
def test_the_check_tells_a_missing_option_or_command(line: str, problems: list[str]) -> None:
    assert nanoiot_problems(words_of(line.removeprefix("nanoiot "))) == problems
