"""train.jsonl and eval.jsonl as token ids: validated first (the `distill validate` rules),
rendered with the model's own chat template, labels on the assistant replies only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.errors import InputError
from distill.runs import read_jsonl

IGNORE = -100  # label of a token the loss skips
MIN_TRAIN_EXAMPLES = 10  # the same floor OpenAI applies; fewer cannot teach a style
SPLIT_HINT = "run `distill split` first"


def load_examples(path: Path, *, is_train: bool) -> list[list[dict[str, Any]]]:
    """The messages of every example, after the file passes validation (one-line error if not)."""
    from distill.validation.scan import validate_file

    report = validate_file(path, model="local:student")
    errors = [p for p in report.errors if is_train or p.code != "too-few-examples"]
    if errors:
        more = report.error_count - 1
        tail = f" (and {more} more; `distill validate {path}` lists them)" if more > 0 else ""
        raise InputError(f"{errors[0].format(str(path))}{tail}")
    from pydantic import ValidationError

    from distill.records import Conversation

    out: list[list[dict[str, Any]]] = []
    for lineno, obj in enumerate(read_jsonl(path), 1):
        try:
            conv = Conversation.model_validate({"messages": obj.get("messages")})
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise InputError(f"{path}:{lineno}: {where}: {first['msg']}; fix the line") from None
        if not any(m.role == "assistant" for m in conv.messages):
            raise InputError(f"{path}:{lineno}: no assistant message; nothing to learn from")
        out.append([m.to_chat() for m in conv.messages])
    if is_train and len(out) < MIN_TRAIN_EXAMPLES:
        raise InputError(
            f"{path}: {len(out)} example(s); local training needs at least "
            f"{MIN_TRAIN_EXAMPLES} (50 to 100 is a good start): generate more, then {SPLIT_HINT}"
        )
    return out


class TemplateMismatch(ValueError):
    """The chat template does not render a conversation as a growing prefix."""


def encode_conversation(tok: Any, messages: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """(input ids, labels) with labels = ids on assistant replies (weight != 0) and IGNORE
    elsewhere, rendered with the tokenizer's own chat template.

    Works for any template without {% generation %} markers: render the prefix up to each
    message (with the generation prompt before an assistant reply), check that every render
    extends the previous one, and tokenize the pieces one by one, which is also how the model
    meets them at inference: prompt tokens first, then the reply it generates. The reply's end
    token (<|im_end|>, </s>, ...) is supervised so the model learns to stop; trailing
    whitespace after it is not.
    """

    def render(msgs: list[dict[str, Any]], gen: bool) -> str:
        if not msgs and not gen:
            return ""
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    plain = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
    pieces: list[tuple[str, bool]] = []  # (text, supervised)
    done = ""
    for i, msg in enumerate(messages):
        if msg["role"] == "assistant":
            prompt = render(plain[:i], True)
            if not prompt.startswith(done):
                raise TemplateMismatch(f"the prompt before message {i + 1} rewrites earlier text")
            pieces.append((prompt[len(done) :], False))
            done = prompt
        full = render(plain[: i + 1], False)
        if not full.startswith(done):
            raise TemplateMismatch(f"message {i + 1} rewrites earlier text")
        text = full[len(done) :]
        if msg["role"] == "assistant" and msg.get("weight", 1) != 0:
            body = text.rstrip()
            pieces.append((body, True))
            pieces.append((text[len(body) :], False))
        else:
            pieces.append((text, False))
        done = full
    ids: list[int] = []
    labels: list[int] = []
    for text, supervised in pieces:
        if not text:
            continue
        piece = tok(text, add_special_tokens=False)["input_ids"]
        if supervised and tok.decode(piece).strip() != text.strip():
            raise TemplateMismatch(f"a reply does not survive tokenize/decode: {text[:40]!r}")
        ids += piece
        labels += piece if supervised else [IGNORE] * len(piece)
    return ids, labels


@dataclass
class Encoded:
    ids: list[int]
    labels: list[int]

    @property
    def n_supervised(self) -> int:
        return sum(1 for x in self.labels[1:] if x != IGNORE)


def encode_all(
    tok: Any, examples: list[list[dict[str, Any]]], max_seq_len: int
) -> tuple[list[Encoded], list[tuple[int, str]]]:
    """Encoded examples and (index, reason) for those that cannot be trained on."""
    kept: list[Encoded] = []
    dropped: list[tuple[int, str]] = []
    for i, msgs in enumerate(examples):
        try:
            ids, labels = encode_conversation(tok, msgs)
        except TemplateMismatch as e:
            dropped.append((i, f"chat template: {e}"))
            continue
        except Exception as e:  # a template that raises on this conversation (tool calls, ...)
            dropped.append((i, f"chat template failed: {type(e).__name__}: {e}"))
            continue
        enc = Encoded(ids[:max_seq_len], labels[:max_seq_len])
        if enc.n_supervised == 0:
            reason = (
                f"no assistant tokens within --max-seq-len {max_seq_len}"
                if len(ids) > max_seq_len
                else "every assistant message has weight 0"
            )
            dropped.append((i, reason))
            continue
        kept.append(enc)
    return kept, dropped
