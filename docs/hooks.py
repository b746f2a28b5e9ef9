"""mkdocs hooks (mkdocs.yml `hooks:`): the generated parts of the docs.

- `<!-- cli: COMMAND -->` becomes `guard COMMAND --help`, produced by the `guard` command itself: the
  console script's entry point (whatever module it names today) is called with `COMMAND --help` in a
  child process, so the options are the ones its settings models give (server/settings.py,
  unlearning/config.py, benchmarks/suites.py through cli/flags.py), and the docs build imports
  neither torch nor vLLM.
- `<!-- cli-env: serve|proxy -->` becomes the table of the command's environment variables, one per
  field of its settings model (server/settings.py, read in the child process), each checked against
  the option `--help` lists for it.
- `<!-- results: FILE -->` (every table of `docs/results/FILE.yaml`) or `<!-- results: FILE#ID -->`
  (one table) becomes the result table(s) with their date, commit and machine.
- A fenced block opened with ```` ```bash example ```` or ```` ```bash gpu ```` (the marks the
  examples test reads; GitHub shows them as bash) becomes ```` ``` { .bash .example } ```` or
  ```` ``` { .bash .gpu } ```` for Python-Markdown, which takes one word after the fence only.

Checks, each failing the build (mkdocs build --strict):
- README.md is at most README_MAX_LINES lines;
- README.md's headline table (between `<!-- results: FILE#ID -->` and `<!-- /results -->`) is the
  one rendered from its results file: `python docs/hooks.py` prints the block to paste.

Run as a script, `python docs/hooks.py [FILE#ID]` prints a rendered results block (default: the
README's) and `python docs/hooks.py --cli COMMAND` a command's help.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import yaml

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
RESULTS = DOCS / "results"
README = ROOT / "README.md"
README_MAX_LINES = 250
COMMANDS = ("serve", "proxy", "unlearn", "bench", "model-path")
HELP_COLUMNS = "100"  # argparse wraps its help to $COLUMNS: the same page on every terminal

_CLI = re.compile(r"<!--\s*cli:\s*([\w-]+)\s*-->")
_CLI_ENV = re.compile(r"<!--\s*cli-env:\s*([\w-]+)\s*-->")
_RESULTS = re.compile(r"<!--\s*results:\s*([\w-]+)(?:#([\w.-]+))?\s*-->")
_README_BLOCK = re.compile(r"<!--\s*results:\s*([\w-]+)#([\w.-]+)\s*-->\n(.*?)<!--\s*/results\s*-->", re.S)
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})bash[ \t]+(?P<mark>example|gpu)[ \t]*$", re.M)


class DocsError(Exception):
    """A generated part that cannot be generated: the build stops, naming it."""


def _fail(message: str):
    try:
        from mkdocs.exceptions import PluginError
    except ImportError:  # run as a script
        raise DocsError(message) from None
    raise PluginError(message)


# -- the CLI reference ----------------------------------------------------------------------------
# Run in a child process, through the console script's entry point (pyproject.toml [project.scripts]):
# no import path of this project is written here, so a module that moves moves with the entry point.
_ENTRY = """
import sys
from importlib.metadata import entry_points
scripts = [ep for ep in entry_points(group="console_scripts") if ep.name == "guard"]
if not scripts:
    sys.exit("no `guard` console script is installed: run `make setup`")
main = scripts[0].load()
"""
_HELP = _ENTRY + """
try:
    code = main(sys.argv[1:])
except SystemExit as done:
    code = done.code
sys.exit(code or 0)
"""
# The environment variables of serve and proxy, from their settings models (server/settings.py): every
# field is GUARD_ and its name (pydantic-settings), a flag wins over it, and a field that cli.flags keeps
# off the command line (json_schema_extra {"flag": None}: a secret) comes from the environment only.
_ENV = """
import json, sys
from server.settings import ProxySettings, Settings
model = {"serve": Settings, "proxy": ProxySettings}[sys.argv[1]]
prefix = model.model_config.get("env_prefix", "")
rows = []
for name, field in model.model_fields.items():
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    flag = extra.get("flag", "--" + name.replace("_", "-"))
    default = field.get_default(call_default_factory=True)
    if flag is not None and field.annotation is bool and default is True and flag == "--" + name.replace("_", "-"):
        flag = "--no-" + name.replace("_", "-")
    shown = ("(required)" if field.is_required() else "" if default in (None, [], {}, "")
             else str(default).lower() if isinstance(default, bool) else str(default))
    rows.append([(prefix + name).upper(), flag, shown, field.description or ""])
print(json.dumps({"model": model.__module__ + "." + model.__qualname__, "rows": rows}))
"""


def _child(script: str, *args: str, what: str = "") -> str:
    what = what or f"`guard {' '.join(args)}`"
    env = {**os.environ, "COLUMNS": HELP_COLUMNS, "PYTHONDONTWRITEBYTECODE": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("GUARD_") or k == "GUARD_HOME"}
    try:
        done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
        _fail(f"{what} took over 120 s")
    if done.returncode != 0:
        _fail(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


@lru_cache(maxsize=None)
def cli_help(command: str) -> str:
    if command not in COMMANDS:
        _fail(f"<!-- cli: {command} -->: not a guard command ({', '.join(COMMANDS)})")
    text = _child(_HELP, command, "--help").rstrip()
    if not text.startswith(f"usage: guard {command}"):
        _fail(f"`guard {command} --help` printed no usage line: {text[:200]!r}")
    return text


@lru_cache(maxsize=None)
def cli_env(command: str) -> str:
    if command not in ("serve", "proxy"):
        _fail(f"<!-- cli-env: {command} -->: only serve and proxy read the environment")
    found = json.loads(_child(_ENV, command, what=f"reading `guard {command}`'s settings model (server/settings.py)"))
    usage = cli_help(command)
    lines = [f"From `{found['model']}`:", "", "| environment variable | option | default | what |", "|---|---|---|---|"]
    for variable, flag, default, what in found["rows"]:
        if flag is not None and not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", usage):
            _fail(f"`guard {command} --help` lists no {flag}, which its settings model's field {variable} gives")
        option = f"`{flag}`" if flag else "(environment only: a secret)"
        lines.append(f"| `{variable}` | {option} | {_cell(default)} | {_cell(what)} |")
    return "\n".join(lines)


def _fenced(text: str) -> str:
    return "```text\n" + text + "\n```"


# -- result tables --------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def results_file(name: str) -> dict:
    path = RESULTS / f"{name}.yaml"
    if not path.exists():
        _fail(f"<!-- results: {name} -->: no file {path.relative_to(ROOT)}")
    data = yaml.safe_load(path.read_text())
    for i, table in enumerate(data.get("tables", [])):
        where = f"{path.relative_to(ROOT)}: tables[{i}] ({table.get('id', '?')})"
        for key in ("id", "date", "commit", "machine", "columns", "rows"):
            if key not in table:
                _fail(f"{where}: no {key!r}")
        for j, row in enumerate(table["rows"]):
            if len(row) != len(table["columns"]):
                _fail(f"{where}: row {j} has {len(row)} cells for {len(table['columns'])} columns")
    return data


def _cell(value) -> str:
    if value is None:
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_table(table: dict) -> str:
    status = table.get("status", "current")
    where = [f"**{table['date']}**", f"commit {_commit(table['commit'])}", table["machine"]]
    if status != "current":
        where.append(f"*{status}*")
    lines = [" · ".join(where), ""]
    lines.append("| " + " | ".join(_cell(c) for c in table["columns"]) + " |")
    lines.append("|" + "---|" * len(table["columns"]))
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table["rows"]]
    return "\n".join(lines)


def _commit(commit: str) -> str:
    return f"`{commit}`" if re.fullmatch(r"[0-9a-f]{7,40}", str(commit)) else str(commit)


def render_results(name: str, table_id: str | None = None, with_notes: bool = True) -> str:
    data = results_file(name)
    tables = data.get("tables", [])
    if table_id is not None:
        tables = [t for t in tables if t["id"] == table_id]
        if not tables:
            _fail(f"<!-- results: {name}#{table_id} -->: no table {table_id!r} in docs/results/{name}.yaml")
    parts = []
    if table_id is None:
        if data.get("command"):
            parts.append("```bash\n" + data["command"].strip() + "\n```")
        if data.get("setup"):
            parts.append(data["setup"].strip())
    for table in tables:
        block = []
        if table_id is None and table.get("title"):
            block.append(f"**{table['title']}**\n")
        block.append(render_table(table))
        if with_notes and table.get("notes"):
            block.append("\n" + "\n".join(f"- {note.strip()}" for note in table["notes"]))
        parts.append("\n".join(block))
    return "\n\n".join(parts)


# -- checks ---------------------------------------------------------------------------------------
def check_readme() -> None:
    text = README.read_text()
    lines = text.count("\n")
    if lines > README_MAX_LINES:
        _fail(f"README.md has {lines} lines, more than {README_MAX_LINES}: move the rest into docs/")
    for name, table_id, block in _README_BLOCK.findall(text):
        expected = render_results(name, table_id, with_notes=False).strip()
        if block.strip() != expected:
            _fail(f"README.md's table <!-- results: {name}#{table_id} --> is not docs/results/{name}.yaml's: "
                  f"print it with `python docs/hooks.py {name}#{table_id}` and paste it in")


# -- mkdocs events --------------------------------------------------------------------------------
def on_pre_build(config, **kwargs) -> None:
    check_readme()


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    markdown = _FENCE.sub(lambda m: f"{m['indent']}{m['fence']} {{ .bash .{m['mark']} }}", markdown)
    markdown = _CLI.sub(lambda m: _fenced(cli_help(m[1])), markdown)
    markdown = _CLI_ENV.sub(lambda m: cli_env(m[1]), markdown)
    return _RESULTS.sub(lambda m: render_results(m[1], m[2]), markdown)


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["--cli"]:
            print(cli_help(argv[1]))
            return 0
        if argv:
            name, _, table_id = argv[0].partition("#")
        else:
            name, table_id, _ = _README_BLOCK.findall(README.read_text())[0]
        print(f"<!-- results: {name}#{table_id} -->")
        print(render_results(name, table_id or None, with_notes=False))
        print("<!-- /results -->")
    except DocsError as exc:
        print(f"docs/hooks.py: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
