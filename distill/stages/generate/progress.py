"""What a generate session has done so far (the progress bar, the summary, the manifest)."""

from __future__ import annotations

from dataclasses import dataclass

from distill.backends.base import Usage


@dataclass
class Progress:
    total: int = 0  # examples asked for (--n)
    generated: int = 0  # accepted, in generated.jsonl
    rejected: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    reasks: int = 0
    calls: int = 0
    cached: int = 0
    prompt_tokens: int = 0  # sent this session
    prompt_cached: int = 0  # of those, served from the provider's prompt cache

    @property
    def cached_share(self) -> float | None:
        """The share of this session's prompt tokens the provider billed as cached."""
        return self.prompt_cached / self.prompt_tokens if self.prompt_tokens else None

    @property
    def planned(self) -> int:
        """Plan points written so far, accepted or rejected."""
        return self.generated + self.rejected

    def count(self, usage: Usage, cached: bool) -> None:
        """One call: replayed from calls.sqlite, or sent and paid for."""
        self.calls += 1
        if cached:
            self.cached += 1
            return
        self.tokens += usage.prompt_tokens + usage.completion_tokens
        self.prompt_tokens += usage.prompt_tokens
        self.prompt_cached += usage.cached_tokens
        self.cost_usd += usage.cost_usd
