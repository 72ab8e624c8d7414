"""Typed output: how the output type is asked for (the mode), and its schema, tool definition
and validator, each built once per type.

Building a JSON schema or a validator is the expensive part of a typed call (instructor spends
most of its ~12 ms per request there), so each is built once per output type and reused.
"""

from __future__ import annotations

import json
from enum import StrEnum
from functools import cache
from typing import Any

from pydantic import BaseModel, TypeAdapter


class Mode(StrEnum):
    """How the output type is asked for (instructor's modes, one per provider feature)."""

    TOOLS = "tools"  # a forced function call whose arguments are the object (OpenAI)
    JSON_SCHEMA = "json_schema"  # response_format json_schema (vLLM, LM Studio, Ollama /v1)
    JSON = "json"  # response_format json_object, schema in the prompt (older servers)


@cache
def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


@cache
def schema_text(model: type[BaseModel]) -> str:
    """The schema as JSON for grammar compilers. Key order is kept: it is the order a
    constrained model writes the fields in (the customer's message before the reply)."""
    return json.dumps(schema_of(model), separators=(",", ":"))


@cache
def adapter_of(model: type[BaseModel]) -> TypeAdapter[Any]:
    return TypeAdapter(model)


@cache
def tool_of(model: type[BaseModel]) -> dict[str, Any]:
    schema = schema_of(model)
    return {
        "type": "function",
        "function": {
            "name": model.__name__,
            "description": (model.__doc__ or f"Return a {model.__name__}.").strip(),
            "parameters": schema,
        },
    }
