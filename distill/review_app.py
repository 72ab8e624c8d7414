"""The `distill review` terminal UI: a list of examples with status and flags, the selected
conversation, and one key per decision. Every decision is saved the moment it is made."""

from __future__ import annotations

import os
from typing import Any

from distill.errors import require

require("textual", "review", "distill review")

from rich.text import Text  # noqa: E402
from textual.app import App, ComposeResult, SuspendNotSupported  # noqa: E402
from textual.binding import Binding  # noqa: E402
from textual.containers import Horizontal, Vertical, VerticalScroll  # noqa: E402
from textual.screen import ModalScreen, Screen  # noqa: E402
from textual.widgets import DataTable, Footer, Input, Label, Static, TextArea  # noqa: E402

from distill.stages.review import (  # noqa: E402
    FILTERS,
    EditRefused,
    ReviewSession,
    edit_in_editor,
    format_for_edit,
    parse_edit,
)

STATUS_STYLE = {
    "accepted": "green",
    "edited": "cyan",
    "rejected": "red",
    "unreviewed": "dim",
}
ROLE_STYLE = {"system": "dim", "user": "bold blue", "assistant": "bold green"}


class AskScreen(ModalScreen[str | None]):
    """One line of input: Enter returns it, Escape returns None."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = """
    AskScreen { align: center middle; }
    AskScreen > Vertical { width: 70%; height: auto; border: round $accent; padding: 1 2;
                           background: $surface; }
    """

    def __init__(self, prompt: str, value: str = "") -> None:
        super().__init__()
        self.prompt, self.value = prompt, value

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.prompt)
            yield Input(value=self.value, id="ask")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


class EditScreen(ModalScreen[bool]):
    """Edit a conversation as `role: text` lines (or JSON); saved only when it is valid."""

    BINDINGS = [
        Binding("ctrl+s", "save", "save (validated)"),
        Binding("f2", "save", "save", show=False),
        Binding("escape", "cancel", "cancel"),
    ]
    DEFAULT_CSS = """
    EditScreen { align: center middle; }
    EditScreen > Vertical { width: 95%; height: 95%; border: round $accent; background: $surface; }
    EditScreen TextArea { height: 1fr; }
    EditScreen Static { height: auto; padding: 0 1; }
    EditScreen #edit-error { color: $error; height: auto; }
    """

    def __init__(self, session: ReviewSession, example_id: str) -> None:
        super().__init__()
        self.session, self.example_id = session, example_id

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f"[b]Editing {self.example_id}[/b]: one 'role: text' block per message, or JSON.\n"
                "ctrl+s (or F2) saves if the chat format and the style spec allow it; Esc cancels.",
                markup=True,
            )
            flags = self.session.flags[self.example_id]
            if flags:
                yield Static(
                    Text("\n".join(f"! {f.kind}: {f.detail}" for f in flags), style="yellow")
                )
            yield TextArea(format_for_edit(self.session.messages(self.example_id)), id="editor")
            yield Static("", id="edit-error")
            yield Footer()

    def action_save(self) -> None:
        text = self.query_one("#editor", TextArea).text
        error = self.query_one("#edit-error", Static)
        try:
            messages = parse_edit(text)
            if messages == self.session.messages(self.example_id):
                self.notify("no changes; nothing saved")
                self.dismiss(False)
                return
            self.session.decide(self.example_id, "edit", messages=messages)
        except EditRefused as e:
            error.update(f"Refused: {e}")
            self.notify(f"edit refused: {e}", severity="error")
            return
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)


class ReviewScreen(Screen[None]):
    BINDINGS = [
        Binding("a", "accept", "accept"),
        Binding("r", "reject", "reject"),
        Binding("e", "edit", "edit"),
        Binding("E", "external_edit", "$EDITOR", show=False),
        Binding("n", "next", "next"),
        Binding("p", "previous", "prev"),
        Binding("u", "next_unreviewed", "next unreviewed"),
        Binding("f", "cycle_filter", "filter"),
        Binding("slash", "search", "search"),
        Binding("q", "quit", "quit"),
        Binding("j", "scroll_view(4)", "scroll down", show=False),
        Binding("k", "scroll_view(-4)", "scroll up", show=False),
    ]
    DEFAULT_CSS = """
    #counter { height: 1; background: $boost; padding: 0 1; }
    #list { width: 45%; }
    #view-scroll { width: 1fr; padding: 0 1; }
    """

    def __init__(self, session: ReviewSession) -> None:
        super().__init__()
        self.session = session
        self.filter_cycle = list(FILTERS) + [f"topic:{t}" for t in session.topics()]
        self.filter_name = "all"
        self.search_text = ""
        self.shown: list[str] = []
        self.position = {ex.id: i for i, ex in enumerate(session.examples)}

    def compose(self) -> ComposeResult:
        yield Static("", id="counter")
        with Horizontal():
            yield DataTable(id="list", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="view-scroll"):
                yield Static("", id="view")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        self.columns = table.add_columns("#", "status", "flags", "topic")
        first = self.session.first_unreviewed()
        self.refresh_rows(select=self.session.examples[first].id if first is not None else None)
        table.focus()

    # -- drawing ------------------------------------------------------------------------------
    @property
    def current_id(self) -> str | None:
        if not self.shown:
            return None
        row = self.query_one(DataTable).cursor_row
        return self.shown[min(max(row, 0), len(self.shown) - 1)]

    def refresh_rows(self, select: str | None = None, after: str | None = None) -> None:
        """Rebuild the list for the filter and search; put the cursor on `select`, or on the
        first shown example after `after`, or keep it where it was."""
        s = self.session
        keep = self.current_id
        self.shown = [
            ex.id for ex in s.examples if s.matches(ex.id, self.filter_name, self.search_text)
        ]
        table = self.query_one(DataTable)
        table.clear()
        for i in self.shown:
            status = s.status(i)
            table.add_row(
                str(self.position[i] + 1),
                Text(status, style=STATUS_STYLE[status]),
                Text(",".join(s.flag_kinds(i)), style="yellow"),
                s.topic(i),
                key=i,
            )
        row = 0
        if select in self.shown:
            row = self.shown.index(select)
        elif after is not None and self.shown:
            pos = self.position[after]
            row = next(
                (n for n, i in enumerate(self.shown) if self.position[i] > pos), len(self.shown) - 1
            )
        elif keep in self.shown:
            row = self.shown.index(keep)
        if self.shown:
            table.move_cursor(row=row)
        self.show_current()

    def show_current(self) -> None:
        s = self.session
        search = f" · search: {self.search_text!r}" if self.search_text else ""
        self.query_one("#counter", Static).update(
            f"{s.reviewed} / {s.total} reviewed · filter: {self.filter_name}{search} · "
            f"showing {len(self.shown)}"
        )
        view = self.query_one("#view", Static)
        ex_id = self.current_id
        if ex_id is None:
            view.update(
                f"No examples match filter {self.filter_name!r}{search}; press f to change it."
            )
            return
        view.update(render_example(s, ex_id))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_current()

    # -- actions ------------------------------------------------------------------------------
    def _decide(self, decision: str, reason: str | None = None) -> None:
        ex_id = self.current_id
        if ex_id is None:
            return
        self.session.decide(ex_id, decision, reason=reason)
        self.row_decided(ex_id)

    def row_decided(self, ex_id: str) -> None:
        """Update one row after a decision (cheaper than rebuilding the list) and move on."""
        s, table = self.session, self.query_one(DataTable)
        if ex_id not in self.shown:
            self.refresh_rows(after=ex_id)
            return
        row = self.shown.index(ex_id)
        if s.matches(ex_id, self.filter_name, self.search_text):
            status = s.status(ex_id)
            table.update_cell(ex_id, self.columns[1], Text(status, style=STATUS_STYLE[status]))
            table.update_cell(
                ex_id, self.columns[2], Text(",".join(s.flag_kinds(ex_id)), style="yellow")
            )
            row += 1
        else:
            self.shown.remove(ex_id)
            table.remove_row(ex_id)
        if self.shown:
            table.move_cursor(row=min(row, len(self.shown) - 1))
        self.show_current()

    def action_accept(self) -> None:
        self._decide("accept")

    def action_reject(self) -> None:
        if self.current_id is None:
            return

        def done(reason: str | None) -> None:
            if reason is not None:
                self._decide("reject", reason or None)

        self.app.push_screen(
            AskScreen("Reason for rejecting (optional). Enter saves, Esc cancels."), done
        )

    def action_edit(self) -> None:
        ex_id = self.current_id
        if ex_id is None:
            return

        def done(saved: bool | None) -> None:
            if saved:
                self.row_decided(ex_id)

        self.app.push_screen(EditScreen(self.session, ex_id), done)

    def action_external_edit(self) -> None:
        ex_id = self.current_id
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
        if ex_id is None:
            return
        if not editor:
            self.notify("set $EDITOR to edit in your own editor; e edits here", severity="warning")
            return
        try:
            with self.app.suspend():
                messages = edit_in_editor(self.session.messages(ex_id), editor)
        except SuspendNotSupported:
            self.notify("cannot leave the screen for $EDITOR here; e edits here", severity="error")
            return
        except EditRefused as e:
            self.notify(f"edit refused: {e}", severity="error", timeout=10)
            return
        if messages == self.session.messages(ex_id):
            return
        try:
            self.session.decide(ex_id, "edit", messages=messages)
        except EditRefused as e:
            self.notify(f"edit refused: {e}", severity="error", timeout=10)
            return
        self.row_decided(ex_id)

    def _move(self, step: int) -> None:
        if self.shown:
            table = self.query_one(DataTable)
            table.move_cursor(row=min(max(table.cursor_row + step, 0), len(self.shown) - 1))

    def action_next(self) -> None:
        self._move(1)

    def action_previous(self) -> None:
        self._move(-1)

    def action_next_unreviewed(self) -> None:
        """The next unreviewed example after the cursor (wrapping), under any filter."""
        s = self.session
        start = self.position[self.current_id] if self.current_id else -1
        ids = [ex.id for ex in s.examples]
        for i in ids[start + 1 :] + ids[: start + 1]:
            if s.status(i) == "unreviewed":
                if i not in self.shown:
                    self.filter_name, self.search_text = "all", ""
                self.refresh_rows(select=i)
                return
        self.notify("every example is reviewed")

    def action_cycle_filter(self) -> None:
        self.filter_name = self.filter_cycle[
            (self.filter_cycle.index(self.filter_name) + 1) % len(self.filter_cycle)
        ]
        self.refresh_rows()

    def action_search(self) -> None:
        def done(text: str | None) -> None:
            if text is not None:
                self.search_text = text
                self.refresh_rows()

        self.app.push_screen(
            AskScreen("Search (id, text, topic); empty clears.", self.search_text), done
        )

    def action_scroll_view(self, lines: int) -> None:
        """Scroll a long conversation without leaving the list."""
        view = self.query_one("#view-scroll", VerticalScroll)
        view.scroll_relative(y=lines, animate=False)

    def action_quit(self) -> None:
        self.app.exit()


def render_example(s: ReviewSession, ex_id: str) -> Text:
    ex = s.by_id[ex_id]
    status = s.status(ex_id)
    head = Text.assemble(
        (ex_id, "bold"),
        "  ",
        (status, STATUS_STYLE[status]),
        "  ",
        (" · ".join(f"{k}: {v}" for k, v in ex.meta.items() if isinstance(v, (str, int))), "dim"),
    )
    parts: list[Any] = [head]
    d = s.decisions.get(ex_id)
    if d and d.get("reason"):
        parts.append(Text(f"reason: {d['reason']}", style="red"))
    for f in s.flags[ex_id]:
        parts.append(Text(f"! {f.kind}: {f.detail}", style="yellow"))
    for m in s.messages(ex_id):
        role = str(m.get("role", "?"))
        content = m.get("content")
        if not isinstance(content, str):
            content = str({k: v for k, v in m.items() if k != "role"})
        parts.append(Text(""))
        parts.append(Text(role, style=ROLE_STYLE.get(role, "bold")))
        parts.append(Text(content, style="dim" if role == "system" else ""))
    return Text("\n").join(parts)


class ReviewApp(App[None]):
    """`distill review`: accept, reject or edit the run's examples before training."""

    TITLE = "distill review"

    def __init__(self, session: ReviewSession) -> None:
        super().__init__()
        self.session = session

    def get_default_screen(self) -> Screen[Any]:
        return ReviewScreen(self.session)
