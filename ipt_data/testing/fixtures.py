"""The tiny synthesizer fixture: where it lives, the synthetic world it is trained on, and how it is built.

`make fixture` builds it with the package's own training command: `python -m ipt_data.testing.fixture_build base DIR`
writes an untrained 2.1M-parameter Mistral-architecture model (2 layers, hidden 64, tied embeddings) with
Mistral-7B-v0.1's real tokenizer, `python -m ipt_data.testing.fixture_build data FILE` writes `synthetic_example`s as
training data, and `ipt-data train-synthesizer --recipe recipes/train-fixture-cpu.yaml` tunes it (CPU,
minutes). Tests, the offline demo and the benchmarks use it in place of the 7B
`instruction-pretrain/instruction-synthesizer`.
"""

from __future__ import annotations

import random
from pathlib import Path

TINY_SYNTHESIZER = str(Path(__file__).parents[1] / "assets" / "tiny-synthesizer")
REAL_SYNTHESIZER = "instruction-pretrain/instruction-synthesizer"

NAMES = [
    "Anna",
    "Ben",
    "Clara",
    "David",
    "Elena",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Kira",
    "Leo",
    "Maya",
    "Nils",
    "Olga",
    "Pedro",
    "Rosa",
    "Sami",
    "Tara",
    "Viktor",
]
CITIES = {
    "Lisbon": "Portugal",
    "Oslo": "Norway",
    "Lyon": "France",
    "Kyoto": "Japan",
    "Quito": "Ecuador",
    "Cairo": "Egypt",
    "Perth": "Australia",
    "Denver": "America",
    "Milan": "Italy",
    "Krakow": "Poland",
    "Dublin": "Ireland",
    "Seoul": "Korea",
}
JOBS = [
    "baker",
    "nurse",
    "pilot",
    "farmer",
    "teacher",
    "painter",
    "doctor",
    "sailor",
    "writer",
    "carpenter",
    "chemist",
    "gardener",
]
FOODS = ["rice", "bread", "apples", "soup", "eggs", "fish", "noodles", "cheese", "beans", "honey"]
ANIMALS = ["cat", "dog", "parrot", "horse", "rabbit", "goat", "turtle", "hamster"]
COLORS = ["red", "blue", "green", "white", "black", "brown", "grey", "yellow"]
PETS = ["Milo", "Luna", "Pip", "Rex", "Daisy", "Otto", "Bella", "Ziggy"]
HOBBIES = ["chess", "music", "hiking", "cooking", "tennis", "reading", "fishing", "dancing"]


def _options(rng: random.Random, answer: str, pool: list[str], k: int = 3) -> list[str]:
    others = rng.sample([x for x in pool if x != answer], k - 1)
    items = [answer, *others]
    rng.shuffle(items)
    return items


def synthetic_example(rng: random.Random) -> tuple[str, list[dict[str, str]]]:
    """One `(text, pairs)` example of the fixture's world: facts about a person, and questions."""
    name, city = rng.choice(NAMES), rng.choice(list(CITIES))
    job, food, animal = rng.choice(JOBS), rng.choice(FOODS), rng.choice(ANIMALS)
    color, pet, hobby, age = rng.choice(COLORS), rng.choice(PETS), rng.choice(HOBBIES), rng.randint(20, 70)
    facts = [
        f"{name} is a {job} who lives in {city}.",
        f"{name} has a {color} {animal} called {pet}.",
        f"Every morning {name} eats {food}.",
        f"{name} is {age} years old and loves {hobby}.",
    ]
    first, rest = facts[0], facts[1:]
    rng.shuffle(rest)
    text = " ".join([first, *rest[: rng.randint(1, 3)]])
    candidates = [
        (f"Where does {name} live?", f"{name} lives in {city}."),
        (f"What is the job of {name}?", f"{name} works as a {job}."),
        (f"What does {name} eat every morning?\nOptions:\n- " + "\n- ".join(_options(rng, food, FOODS)), food),
        (
            f"In which country does {name} live?\nLet's think step by step.",
            f"{name} lives in {city}, and {city} is in {CITIES[city]}.\nTherefore, the answer is {CITIES[city]}",
        ),
    ]
    if f"called {pet}" in text:
        candidates.append((f"What kind of animal is {pet}?", f"{pet} is a {color} {animal}."))
        candidates.append(
            (
                f"What color is {pet}?\nOptions:\n- "
                + "\n- ".join(_options(rng, color, COLORS))
                + "\nLet's think step by step.",
                f"{pet} is a {color} {animal}.\nTherefore, the answer is {color}",
            )
        )
    if "loves" in text:
        candidates.append((f"What does {name} love?", f"{name} loves {hobby}."))
    chosen = rng.sample(candidates, rng.randint(2, min(4, len(candidates))))
    return text, [{"instruction": q, "response": a} for q, a in chosen]


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    """`n` in-distribution raw texts for the fixture (pairs not included)."""
    rng = random.Random(seed)
    return [synthetic_example(rng)[0] for _ in range(n)]
