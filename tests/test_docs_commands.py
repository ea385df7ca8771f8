"""Every command, override, option, module and repository file that README.md and docs/*.md name exists as written.

Hydra commands are composed with exactly their overrides (sweeps: their first value); a lone override in the prose
(``data.source.on_bad_rows=skip``) must compose with the train or eval config, alone or beside the option it
needs (``data=fer2013``, ``logger=wandb``, ...), and every ``a|b|c`` alternative must; the options of argparse
commands (fer-predict, fer-export, fer-serve, fer-compare...) must be theirs; fer-train and fer-evaluate compose.
Nothing is run.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import inspect
import re
import shlex
import sys
from importlib.metadata import entry_points

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from fer_lightning import resolvers
from tests.conftest import CONF, ROOT

# Composing takes a while (~0.2-0.9 s per distinct set of group choices); each test is quick, all of them not.
pytestmark = pytest.mark.slow
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HYDRA_CONFIGS = {"train.py": "train", "fer_lightning.train": "train", "fer_lightning.evaluate": "eval"}
HYDRA_CONFIGS["fer_lightning.data.preview"] = "preview"
HYDRA_CONFIGS["fer_lightning.cross_dataset"] = "cross_dataset"
# What a lone override in the prose may need beside it.
CONTEXTS = [
    [],
    ["data=fer2013"],
    ["model=compact"],
    ["data=ferplus"],
    ["data=ckplus"],
    ["data=rafdb"],
    ["data=affectnet"],
    ["data=mixed"],
    ["optimizer=sam"],
    ["hparams_search=optuna"],
    ["logger=many"],
    ["hydra/launcher=submitit_slurm"],
    ["experiment=cpu_speedrun"],  # its wall-clock schedule and EMA, which the Results prose tunes
]
OVERRIDE = re.compile(r"[+~]{0,2}[a-z_][a-z0-9_./]*=\S*")
REPO_PATH = re.compile(
    r"(?:conf|docs|fer_lightning|hydra_plugins|benchmarks|tests|\.ci)/[\w./*-]+|Makefile|pyproject\.toml"
)


def code_lines(text: str) -> list[str]:
    """Lines of fenced code blocks and inline code spans, comments dropped."""
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    lines += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return [re.sub(r"\s+#.*$", "", line).strip() for line in lines if line.strip()]


def all_code() -> list[tuple[str, str]]:
    return [(doc.name, line) for doc in DOCS for line in code_lines(doc.read_text())]


def command_words(line: str) -> list[str] | None:
    """A shell command's words, without environment assignments, ``.venv/bin/``, placeholders and ``...``."""
    line = re.sub(r"<[^>]*>", "x", line).replace("[data=fer2013]", "data=fer2013")
    line = re.sub(r"\[(data\.augment\.rotation=20) \.\.\.\]", r"\1", line)
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]
    words = [w for w in words if w != "..."]
    if words and words[0].startswith(".venv/bin/"):
        words[0] = words[0][len(".venv/bin/") :]
    return words or None


def hydra_overrides(words: list[str]) -> list[str]:
    """The overrides of a Hydra command line; a sweep contributes its first value."""
    parser, out = OverridesParser.create(), []
    for word in words:
        if word.startswith("-"):
            continue
        override = parser.parse_override(word)
        if override.is_sweep_override():
            first = next(override.sweep_string_iterator(), None) if not override.is_interval_sweep() else None
            if first is None:
                continue
            word = f"{override.get_key_element()}={first}"
        out.append(word)
    return out


@functools.cache
def composed(config_name: str, groups: tuple[str, ...]) -> DictConfig | str:
    """The config composed with group choices only (few distinct ones: composing takes a while), or the error."""
    resolvers.register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            return compose(config_name, overrides=list(groups), return_hydra_config=True)
    except Exception as error:  # Hydra's ConfigCompositionException, OverrideParseException, ...
        return f"{type(error).__name__}: {error}"
    finally:
        GlobalHydra.instance().clear()


def is_group(key: str) -> bool:
    return (CONF / key).is_dir() or key.startswith("hydra/")


def composes(config_name: str, overrides: list[str]) -> str | None:
    """None when ``overrides`` apply to the config as Hydra would apply them, else what is wrong.

    Group choices are composed for real; every other override must name a key of the result (``+key`` adds one).
    """
    parsed = [(o, o.partition("=")[0]) for o in overrides]
    groups = tuple(sorted(o for o, key in parsed if is_group(key.lstrip("+~"))))
    cfg = composed(config_name, groups)
    if isinstance(cfg, str):
        return cfg
    missing = object()
    for override, key in parsed:
        if is_group(key.lstrip("+~")) or key.startswith("+"):
            continue
        # The parent, then the key in it: a value the command line must give (``${required:...}``) is never resolved.
        parent, _, leaf = key.lstrip("~").rpartition(".")
        node = OmegaConf.select(cfg, parent, default=missing, throw_on_resolution_failure=False) if parent else cfg
        in_list = isinstance(node, ListConfig) and leaf.isdigit() and int(leaf) < len(node)
        if not in_list and not (isinstance(node, DictConfig) and leaf in node):
            return f"{config_name}.yaml {' '.join(groups)}: no key {key.lstrip('~')!r} for {override!r}"
    return None


class _Parser(Exception):
    pass


def argparse_options(entry, monkeypatch) -> argparse.ArgumentParser:
    """The ArgumentParser a command's ``main(argv)`` builds, caught when it parses."""

    def capture(self, args=None, namespace=None):
        raise _Parser(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(sys, "argv", ["command", "--help"])
    with pytest.raises(_Parser) as caught:
        entry(["--help"]) if inspect.signature(entry).parameters else entry()
    return caught.value.args[0]


@functools.cache
def scripts() -> dict[str, str]:
    """The console scripts this package installs (pyproject's [project.scripts])."""
    return {e.name: e.value for e in entry_points(group="console_scripts") if e.value.startswith("fer_lightning")}


def commands() -> list[tuple[str, str, list[str]]]:
    out = []
    for doc, line in all_code():
        words = command_words(line)
        if not words:
            continue
        if words[0] == "python" and len(words) > 1:
            out.append((doc, line, words[1:]))
        elif words[0] in scripts() or words[0] == "make":
            out.append((doc, line, words))
    return out


@pytest.mark.parametrize(("doc", "line", "words"), commands(), ids=lambda v: v if isinstance(v, str) else None)
def test_every_documented_command_is_valid(doc, line, words, monkeypatch):
    if words[0] == "make":
        targets = re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M)
        assert len(words) == 1 or words[1] in targets, f"{doc}: {line}: no make target {words[1]}"
        return
    if words[0] == "-m":
        module, args = words[1], words[2:]
        assert importlib.util.find_spec(module), f"{doc}: {line}: no module {module}"
    elif words[0] in scripts():
        module, args = scripts()[words[0]], words[1:]
    else:  # a script file
        module, args = words[0], words[1:]
        assert (ROOT / module).is_file(), f"{doc}: {line}: no file {module}"
    if module.partition(":")[0] in HYDRA_CONFIGS:  # fer-train, fer-evaluate: fer_lightning.train:main, ...
        problem = composes(HYDRA_CONFIGS[module.partition(":")[0]], hydra_overrides(args))
        assert problem is None, f"{doc}: {line}:\n{problem}"
        return
    name, _, function = module.partition(":")
    entry = getattr(importlib.import_module(name), function or "main", None)
    if entry is None:  # a module run for its side effect (python -m benchmarks)
        return
    parser = argparse_options(entry, monkeypatch)
    args = [word.strip("[]") for word in args]  # usage notation: [--ckpt PATH]
    for i, word in enumerate(args):
        if not word.startswith("--"):
            continue
        option = word.split("=")[0]
        assert option in parser._option_string_actions, f"{doc}: {line}: {words[0]} has no option {option}"
        action = parser._option_string_actions[option]
        value = word.split("=", 1)[1] if "=" in word else (args[i + 1] if i + 1 < len(args) else None)
        if action.choices and value is not None:
            assert value in action.choices, f"{doc}: {line}: {option} {value} is not one of {action.choices}"


def prose_overrides() -> list[tuple[str, str]]:
    """Inline ``key=value`` spans that are no command: Hydra overrides (Python's ``x=True`` is not one)."""
    out = []
    for doc, line in all_code():
        words = command_words(line)
        if not words or words[0] == "python" or words[0] in scripts() or words[0] == "make":
            continue
        spans = line.split() if all("=" in w for w in line.split()) else [line]
        for span in spans:
            if OVERRIDE.fullmatch(span) and not re.search(r"=(True|False|None)$", span):
                out.append((doc, span))
    return sorted(set(out))


@pytest.mark.parametrize(("doc", "span"), prose_overrides(), ids=lambda v: v)
def test_every_documented_override_composes(doc, span):
    key, _, value = span.partition("=")
    for alternative in value.split("|") if "|" in value and "[" not in value else [value]:
        override = hydra_overrides([f"{key}={alternative}"])
        tries = [("train", [*context, *override]) for context in CONTEXTS] + [("eval", override)]
        problems = []
        for config_name, overrides in tries:  # until one composes
            problems.append(composes(config_name, overrides))
            if problems[-1] is None:
                break
        assert problems[-1] is None, f"{doc}: `{span}` composes with no config:\n{problems[0]}"


def named_paths() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        text = doc.read_text()
        spans = [*re.findall(r"`([^`\n]+)`", text), *re.findall(r"\]\(([^)#\s]+)\)", text)]
        for span in spans:
            out += [(doc.name, m) for m in REPO_PATH.findall(span) if not m.endswith("/")]
            out += [(doc.name, m) for m in re.findall(r"^fer_lightning(?:\.\w+)+$", span)]
    return sorted(set(out))


@pytest.mark.parametrize(("doc", "path"), named_paths(), ids=lambda v: v)
def test_every_named_file_and_module_exists(doc, path):
    if "/" not in path and path.startswith("fer_lightning."):
        module, _, attribute = path.rpartition(".")
        # A class or function first: find_spec raises for a name inside a module that is not a package.
        found = hasattr(importlib.import_module(module), attribute) or importlib.util.find_spec(path)
        assert found, f"{doc} names {path}, which does not exist"
        return
    target = (ROOT / "docs" / path) if (ROOT / "docs" / path).exists() and not (ROOT / path).exists() else ROOT / path
    assert target.exists() or any(ROOT.glob(path)), f"{doc} names {path}, which does not exist"
