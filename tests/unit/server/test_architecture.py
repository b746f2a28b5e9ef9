"""The server's shape, checked on its source: only the protocol edge tells chat from text, and each
OpenAI route is defined once (the import arrows are import-linter's, in pyproject.toml)."""

import ast
from pathlib import Path

import server

SERVER = Path(server.__file__).parent
KINDS = {"chat", "text"}


def _kind_branches(tree: ast.AST) -> list[int]:
    """Lines that compare something with "chat" or "text", or pass either as an argument (but a key)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Call) and not (isinstance(node.func, ast.Attribute) and node.func.attr == "get"):
            operands = [*node.args, *(k.value for k in node.keywords)]
        else:
            continue
        if any(isinstance(o, ast.Constant) and o.value in KINDS for o in operands):
            lines.append(node.lineno)
    return sorted(lines)


def test_only_the_protocol_edge_branches_on_chat_or_text():
    found = {str(path.relative_to(SERVER)): lines for path in SERVER.rglob("*.py")
             if path.parent.name != "protocol" and (lines := _kind_branches(ast.parse(path.read_text())))}
    assert found == {}


def test_the_branch_finder_finds_a_branch():  # the check above can fail
    tree = ast.parse('x = 1 if kind == "chat" else 2\nif body.kind != "text": pass\nanswer(request, "chat")')
    assert _kind_branches(tree) == [1, 2, 3]


def test_each_openai_route_is_defined_once():
    routes = []
    for path in SERVER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "post"):
                if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str) \
                        and node.args[0].value.startswith(("/v1/", "/health", "/metrics")):
                    routes.append((node.func.attr, node.args[0].value))
    assert sorted(routes) == sorted(set(routes))
    assert {("post", "/v1/chat/completions"), ("post", "/v1/completions"), ("get", "/v1/models"), ("get", "/health"),
            ("get", "/metrics")} <= set(routes)
