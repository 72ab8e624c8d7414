"""Regenerate distill/prompts/probe.jsonl: the general-skills probe `distill eval` asks base and
student, to see whether fine-tuning cost general skills (catastrophic forgetting).

The hand-written items (ids without the `t-` prefix) are kept as they are; the templated ones
(`t-...`) are rebuilt from the fixed lists and a fixed random seed below, so the file is the
same on every machine. About 400 items in all: enough that the paired drop's 95% interval is
about +-5 points for a small model (the hand-written 55 alone gave +-10).

    python benchmarks/make_probe.py            # rewrites the file in place
"""

from __future__ import annotations

import json
import random
from pathlib import Path

PROBE = Path(__file__).resolve().parent.parent / "distill" / "prompts" / "probe.jsonl"
NUM = "Answer with the number only."

CAPITALS = {
    "Portugal": "Lisbon",
    "Greece": "Athens",
    "Ireland": "Dublin",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Poland": "Warsaw",
    "Austria": "Vienna",
    "Hungary": "Budapest",
    "Czech Republic": "Prague",
    "Russia": "Moscow",
    "China": "Beijing",
    "India": "New Delhi",
    "Thailand": "Bangkok",
    "Vietnam": "Hanoi",
    "Indonesia": "Jakarta",
    "Philippines": "Manila",
    "Mexico": "Mexico City",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Colombia": "Bogot",
    "Cuba": "Havana",
    "Turkey": "Ankara",
    "Iran": "Tehran",
    "Iraq": "Baghdad",
    "Saudi Arabia": "Riyadh",
    "Israel": "Jerusalem",
    "Morocco": "Rabat",
    "Nigeria": "Abuja",
    "Ghana": "Accra",
    "Ethiopia": "Addis Ababa",
    "South Africa": "Pretoria",
    "New Zealand": "Wellington",
    "the United Kingdom": "London",
    "the United States": "Washington",
    "Belgium": "Brussels",
    "the Netherlands": "Amsterdam",
    "Switzerland": "Bern",
    "Ukraine": "Kyiv|Kiev",
    "Romania": "Bucharest",
    "Bulgaria": "Sofia",
    "Croatia": "Zagreb",
    "Serbia": "Belgrade",
    "Iceland": "Reykjavik|Reykjavík",
    "Pakistan": "Islamabad",
    "Bangladesh": "Dhaka",
    "Malaysia": "Kuala Lumpur",
    "Venezuela": "Caracas",
    "Uruguay": "Montevideo",
}
PLANETS = [
    ("closest to the Sun", "Mercury"),
    ("largest in our solar system", "Jupiter"),
    ("with the most famous rings", "Saturn"),
    ("we live on", "Earth"),
]
FACTS = [
    ("How many legs does a spider have?", "8"),
    ("How many legs does an insect have?", "6"),
    ("How many continents are there on Earth?", "7"),
    ("How many days are in a week?", "7"),
    ("How many months are in a year?", "12"),
    ("How many hours are in a day?", "24"),
    ("How many minutes are in an hour?", "60"),
    ("How many sides does a triangle have?", "3"),
    ("How many sides does a hexagon have?", "6"),
    ("How many sides does an octagon have?", "8"),
    ("How many degrees are in a right angle?", "90"),
    ("How many years are in a century?", "100"),
    ("How many players are on a football (soccer) team on the pitch?", "11"),
    ("How many strings does a standard guitar have?", "6"),
    ("How many wheels does a bicycle have?", "2"),
    ("How many cents are in a dollar?", "100"),
    ("How many zeros are in one million?", "6"),
    ("How many weeks are in a year?", "52"),
    ("How many days are in September?", "30"),
    ("How many bones does an adult human have?", "206"),
]
WORDS = [
    "cat",
    "dog",
    "sun",
    "tree",
    "book",
    "lamp",
    "river",
    "green",
    "plant",
    "house",
    "table",
    "music",
    "water",
    "bread",
    "chair",
    "cloud",
    "stone",
    "light",
    "apple",
    "paper",
]
OPPOSITES = [
    ("hot", "cold"),
    ("big", "small|little"),
    ("up", "down"),
    ("fast", "slow"),
    ("happy", "sad"),
    ("day", "night"),
    ("open", "closed?|shut"),
    ("light", "dark|heavy"),
    ("old", "new|young"),
    ("early", "late"),
    ("full", "empty"),
    ("wet", "dry"),
    ("high", "low"),
    ("left", "right"),
    ("win", "lose"),
    ("buy", "sell"),
    ("begin", "end|finish"),
    ("push", "pull"),
    ("inside", "outside"),
    ("summer", "winter"),
]
UNITS = [
    ("metres", "kilometres", 1000),
    ("grams", "kilograms", 1000),
    ("millilitres", "litres", 1000),
    ("minutes", "hours", 60),
    ("seconds", "minutes", 60),
    ("centimetres", "metres", 100),
    ("hours", "days", 24),
    ("days", "weeks", 7),
    ("months", "years", 12),
    ("millimetres", "centimetres", 10),
]


def templated(rng: random.Random) -> list[dict]:
    out: list[dict] = []

    def add(skill: str, prompt: str, answer: object, check: str, **extra: object) -> None:
        out.append(
            {
                "id": f"t-{skill}-{len(out) + 1:03d}",
                "skill": skill,
                "prompt": prompt,
                "answer": answer,
                "check": check,
                **extra,
            }
        )

    for _ in range(40):
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        add("arithmetic", f"What is {a} + {b}? {NUM}", a + b, "number")
    for _ in range(25):
        a, b = rng.randint(20, 99), rng.randint(1, 19)
        add("arithmetic", f"What is {a} minus {b}? {NUM}", a - b, "number")
    for _ in range(35):
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        add("arithmetic", f"What is {a} times {b}? {NUM}", a * b, "number")
    for _ in range(20):
        b, q = rng.randint(2, 10), rng.randint(2, 12)
        add("arithmetic", f"What is {b * q} divided by {b}? {NUM}", q, "number")
    for small, big, factor in UNITS:
        for k in rng.sample(range(2, 10), 4):
            add("units", f"How many {small} are in {k} {big}? {NUM}", k * factor, "number")
    for country, city in CAPITALS.items():
        add(
            "capitals",
            f"What is the capital city of {country}? Answer in one word or name.",
            f"(?i){city}",
            "regex",
            example=city.split("|")[0],
        )
    for what, planet in PLANETS:
        add("general", f"Which planet is the one {what}? Answer in one word.", planet, "contains")
    for question, n in FACTS:
        add("general", f"{question} {NUM}", int(n), "number")
    for word in WORDS:
        add(
            "format",
            f"Write the word '{word}' in all capital letters and nothing else.",
            f"\\b{word.upper()}\\b",
            "regex",
            example=word.upper(),
        )
    for word in WORDS:
        add(
            "format",
            f"Spell the word '{word}' backwards.",
            f"(?i)\\b{word[::-1]}\\b",
            "regex",
            example=word[::-1],
        )
    for word, opposite in OPPOSITES:
        add(
            "general",
            f"What is the opposite of '{word}'? Answer in one word.",
            f"(?i)\\b({opposite})\\b",
            "regex",
            example=opposite.split("|")[0],
        )
    for _ in range(20):
        start, step = rng.randint(1, 20), rng.randint(2, 9)
        seq = [start + i * step for i in range(4)]
        add(
            "general",
            f"What is the next number in the sequence {', '.join(map(str, seq))}? {NUM}",
            start + 4 * step,
            "number",
        )
    for word in WORDS:
        add("general", f"How many letters are in the word '{word}'? {NUM}", len(word), "number")
    return out


def main() -> None:
    kept = [
        json.loads(line)
        for line in PROBE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not json.loads(line)["id"].startswith("t-")
    ]
    items = kept + templated(random.Random(20261129))
    PROBE.write_text(
        "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8"
    )
    print(f"{PROBE}: {len(kept)} hand-written + {len(items) - len(kept)} templated items")


if __name__ == "__main__":
    main()
