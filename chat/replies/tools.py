"""Tools Claude may call: a registry of JSON-Schema-described Python functions.

The registry is handed to the reply runner, which runs every `tool_use` block of a response and
returns each result bound to its `tool_use_id`. Unknown tools, invalid inputs and exceptions
become `is_error` results for the model to read, never a crashed reply.
"""

from __future__ import annotations

import ast
import logging
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema

log = logging.getLogger(__name__)

RESULT_MAX_CHARS = 10_000


class ToolError(Exception):
    """A tool's own failure, shown to the model as an error result."""


@dataclass(frozen=True)
class ToolContext:
    user_id: int
    conversation_id: int
    time_zone: str = "UTC"


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_schema: dict
    func: Callable[[dict, ToolContext], str]

    def definition(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
        }


@dataclass(frozen=True)
class ToolResult:
    content: str
    is_error: bool = False

    def block(self, tool_use_id: str) -> dict:
        block = {"type": "tool_result", "tool_use_id": tool_use_id, "content": self.content}
        if self.is_error:
            block["is_error"] = True
        return block


@dataclass
class Registry:
    tools: dict[str, Tool] = field(default_factory=dict)

    def register(self, tool: Tool) -> Tool:
        jsonschema.Draft202012Validator.check_schema(tool.input_schema)
        self.tools[tool.name] = tool
        return tool

    def definitions(self) -> list[dict]:
        return [tool.definition() for tool in self.tools.values()]

    def run(self, name: str, tool_input: object, context: ToolContext) -> ToolResult:
        """Run one call (sync: tools may use the ORM). Never raises for the tool's faults."""
        tool = self.tools.get(name)
        if tool is None:
            return ToolResult(f"Unknown tool {name!r}. Available: {', '.join(self.tools)}.", True)
        try:
            jsonschema.validate(tool_input, tool.input_schema)
        except jsonschema.ValidationError as exc:
            return ToolResult(f"Invalid input for {name}: {exc.message}", True)
        try:
            content = tool.func(tool_input, context)
        except ToolError as exc:
            return ToolResult(str(exc), True)
        except Exception as exc:  # a tool bug must not crash the reply; the model is told
            log.exception("tool %s failed", name)
            return ToolResult(f"The tool {name} failed: {type(exc).__name__}.", True)
        return ToolResult(content[:RESULT_MAX_CHARS])


# --- calculator: arithmetic over a parsed tree, never eval -----------------------------------

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {
    "sqrt": math.sqrt,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}
EXPRESSION_MAX_CHARS = 500
POWER_MAX_EXPONENT = 1000
MAGNITUDE_MAX = 1e300


def evaluate(expression: str) -> float | int:
    """Evaluate arithmetic: numbers, + - * / // % **, parentheses, a few math functions."""
    if len(expression) > EXPRESSION_MAX_CHARS:
        raise ToolError("The expression is too long.")
    try:
        tree = ast.parse(expression.replace("^", "**").replace("×", "*"), mode="eval")
    except SyntaxError:
        raise ToolError(f"Not an arithmetic expression: {expression!r}") from None
    return _eval(tree.body)


def _eval(node: ast.AST) -> float | int:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > POWER_MAX_EXPONENT:
            raise ToolError("The exponent is too large.")
        try:
            value = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolError("Division by zero.") from None
        if isinstance(value, complex) or abs(value) > MAGNITUDE_MAX:
            raise ToolError("The result is out of range.")
        return value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
        and len(node.args) <= 2
    ):
        try:
            return _FUNCTIONS[node.func.id](*(_eval(arg) for arg in node.args))
        except (ValueError, OverflowError) as exc:
            raise ToolError(f"{node.func.id}: {exc}") from None
    raise ToolError("Only numbers, + - * / // % ** ( ) and sqrt, sin, cos, … are allowed.")


def calculator(tool_input: dict, context: ToolContext) -> str:
    value = evaluate(tool_input["expression"])
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return str(value)


def current_time(tool_input: dict, context: ToolContext) -> str:
    zone_name = tool_input.get("time_zone") or context.time_zone
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"Unknown time zone {zone_name!r}.") from None
    now = datetime.now(zone)
    return f"{now.strftime('%A %d %B %Y, %H:%M:%S')} ({zone_name}, UTC{now.strftime('%z')})"


SEARCH_RESULTS = 5
SNIPPET_BEFORE, SNIPPET_AFTER = 80, 160


def search_conversations(tool_input: dict, context: ToolContext) -> str:
    """What the user's own search box finds for the query
    (chat.conversations.search.search_conversations:
    the same indexed query; never a deleted conversation nor anyone else's), this conversation
    left out, in the list's order; each with its newest matching message."""
    from django.contrib.auth import get_user_model
    from django.db.models import OuterRef, Subquery

    from chat.conversations import search
    from chat.models import Message

    query = search.search_query(tool_input["query"])
    owner = get_user_model()(pk=context.user_id)
    newest_hit = (
        search.matching_messages(query).filter(conversation=OuterRef("pk")).order_by("-id")
        if query
        else Message.objects.none()
    )
    conversations = list(
        search.search_conversations(owner, query, archived=None)
        .exclude(pk=context.conversation_id)
        .annotate(hit_id=Subquery(newest_hit.values("pk")[:1]))[:SEARCH_RESULTS]
    )
    hits = Message.objects.in_bulk([c.hit_id for c in conversations if c.hit_id])
    found = []
    for conversation in conversations:
        title = conversation.display_title
        message = hits.get(conversation.hit_id)
        if message is None:  # its title matches
            found.append(f'- "{title}" ({conversation.updated_at:%Y-%m-%d}): the title matches.')
            continue
        snippet = _snippet(message.text, query)
        found.append(f'- "{title}" ({message.created_at:%Y-%m-%d}, {message.role}): …{snippet}…')
    if not found:
        return f"No earlier conversations mention {query!r}."
    return "Earlier conversations that mention it:\n" + "\n".join(found)


def _snippet(text: str, query: str) -> str:
    """The text around the query's first appearance (or of its first word that appears: the
    full-text search matches words, not the phrase); the start when none does literally."""
    lower = text.lower()
    at = -1
    for needle in [query, *query.split()]:
        at = lower.find(needle.lower())
        if at >= 0:
            break
    at = max(at, 0)
    return text[max(at - SNIPPET_BEFORE, 0) : at + SNIPPET_AFTER].replace("\n", " ")


def default_registry() -> Registry:
    registry = Registry()
    registry.register(
        Tool(
            name="calculator",
            description="Evaluate an arithmetic expression exactly, e.g. '(3 + 4) * 2 ** 10'. "
            "Supports + - * / // % ** and sqrt, sin, cos, tan, log, exp, abs, round, pi, e.",
            input_schema={
                "type": "object",
                "properties": {"expression": {"type": "string", "maxLength": 500}},
                "required": ["expression"],
                "additionalProperties": False,
            },
            func=calculator,
        )
    )
    registry.register(
        Tool(
            name="current_time",
            description="The current date and time, in the user's time zone unless another "
            "IANA time zone (e.g. 'Europe/Paris') is given.",
            input_schema={
                "type": "object",
                "properties": {"time_zone": {"type": "string", "maxLength": 64}},
                "additionalProperties": False,
            },
            func=current_time,
        )
    )
    registry.register(
        Tool(
            name="search_conversations",
            description="Search the user's own earlier conversations for a word or phrase.",
            input_schema={
                "type": "object",
                "properties": {"query": {"type": "string", "minLength": 2, "maxLength": 200}},
                "required": ["query"],
                "additionalProperties": False,
            },
            func=search_conversations,
        )
    )
    return registry


REGISTRY = default_registry()
