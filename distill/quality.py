"""Quality checks beyond the voice rules, for text a teacher wrote: is it in the language the
spec names. The voice rules (regexes) let through fluent nonsense in another language, which
a small teacher writes often ("Nu mens a nie mia, un alte mehr nie zarfai ...")."""

from __future__ import annotations

import re

# The most common English words (function words and a few very frequent verbs): in English
# chat text they are a quarter to a half of all words; in other languages and in gibberish
# they are rare. A cheap, offline, dependency-free check.
COMMON = {
    "en": frozenset(
        """a about after again all also am an and any are as at be because been before being
        but by can could did do does doing don't for from get got had has have having he her
        here hi his how i i'm i've if in into is it it's its just know let me more most my
        need no not now of on one only or our out over please so some than thank thanks that
        the their them then there these they this those to too up us very was we we'll we're
        we've were what when where which while who why will with would yes you you're your
        you'll you've hello sorry help""".split()
    ),
}
# Function words of the languages a small teacher drifts into (German, Dutch, French, Spanish,
# Italian), minus those English shares ("a", "in", "is", "die", "no", ...).
FOREIGN = frozenset(
    """der das und ist nicht ich du wir sie es ein eine mit auf für von den dem des im zu auch
    het een niet ik je wij zijn op te voor maar
    le la les et est je tu nous vous il elle une des du pour pas que qui dans sur avec mais
    el los las y yo nosotros una en con por para pero del al muy estoy mi
    lo gli di da per che non sono ho""".split()
)
MIN_WORDS = 6  # shorter texts say too little to judge
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def language_problem(text: str, language: str) -> str | None:
    """Why `text` does not read as `language` ("" = no check), or None: it has more function
    words of another language than of this one, or (10+ words) almost none of this one's."""
    if not language:
        return None
    common = COMMON.get(language)
    if common is None:  # StyleSpec refuses other codes; a direct caller gets a clear error
        raise ValueError(f"no word list for language {language!r}; built in: {sorted(COMMON)}")
    found = _WORD.findall(text.lower())
    if len(found) < MIN_WORDS:
        return None
    share = sum(1 for w in found if w in common) / len(found)
    other = sum(1 for w in found if w in FOREIGN) / len(found)
    if (other >= 0.15 and other > share) or (len(found) >= 10 and share < 0.05):
        return (
            f"not-{language}: reads as another language or gibberish ({share:.0%} common "
            f"{language} words, {other:.0%} of other languages)"
        )
    return None
