"""What hosted training shows goes through here, so the API key never reaches the screen."""

from __future__ import annotations

import re


class Out:
    """Prints to stdout through rich, with the API key scrubbed from anything shown."""

    def __init__(self, key: str) -> None:
        from rich.console import Console

        self.key = key
        self.console = Console(highlight=False, soft_wrap=True)

    def scrub(self, text: str) -> str:
        """One line (server text may hold newlines), never the key."""
        text = re.sub(r"\s*[\r\n]+\s*", " ", str(text)).rstrip()
        # a throwaway key for a local server ("x") must not blank out every "x" shown
        return text.replace(self.key, "***") if len(self.key) >= 8 else text

    def line(self, text: str) -> None:
        self.console.print(self.scrub(text), markup=False)
