"""skim's generated data sets, deterministic and offline: extractive QA in the official SQuAD JSON layout (the
quickstart: a tiny randomly initialised BERT reaches EM >= 80 within minutes on a CPU) and sentiment classification.

A QA context (~150-250 tokens) hides one fact sentence, ``the <attr> of <key> is <value> .`` ("the weapon of the brave
owl is spear ."), among filler sentences; ``n_facts`` adds distractor facts that only the question, ``what is the
<attr> of <key> ?``, tells apart. Facts are drawn per context (no global knowledge base), so the model must read the
context, and fillers never hold fact words, so only the 32-token block(s) with the asked fact are needed. Every word is
one bert-base-uncased WordPiece. Only version-stable ``random.Random`` methods are used and JSON is written in a fixed
key order: the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

SYNTHETIC_VERSION = "synthetic-1.0"

# keys are "the <adjective> <animal>"
_KEY_ADJ = ["young", "big", "small", "tall", "short", "brave", "happy", "sad", "wild", "calm", "proud", "clever", "lazy", "angry", "gentle", "strong", "weak", "little", "great", "poor", "rich", "kind", "bold", "shy", "silent", "swift", "wise"]
_KEY_ANIMAL = ["fox", "wolf", "bear", "deer", "horse", "lion", "tiger", "eagle", "owl", "hawk", "rabbit", "mouse", "cat", "dog", "goat", "sheep", "cow", "pig", "duck", "goose", "swan", "crow", "snake", "frog", "whale", "shark", "dolphin", "monkey", "camel", "bull"]
# one disjoint value pool per attribute, so both the attribute word and the answer type point to the asked fact (two
# redundant cues keep it learnable from scratch in minutes)
ATTRIBUTES: dict[str, list[str]] = {
    "home": ["paris", "london", "rome", "berlin", "tokyo", "madrid", "moscow", "vienna", "dublin", "boston", "chicago", "sydney", "cairo", "athens", "lisbon", "prague", "oslo", "warsaw", "denver", "seattle", "toronto", "delhi"] + ["new york", "hong kong", "los angeles", "san diego"],
    "friend": ["john", "mary", "david", "sarah", "peter", "anna", "james", "emma", "thomas", "lucy", "george", "alice", "henry", "laura", "paul", "maria", "frank", "helen", "oscar", "ruth", "victor", "grace", "simon", "rose"],
    "color": ["red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown", "gray", "silver", "gold", "violet"] + ["dark blue", "light green"],
    "weapon": ["sword", "bow", "spear", "axe", "knife", "hammer", "shield", "rifle", "dagger", "club", "whip", "lance"],
    "food": ["apple", "bread", "rice", "cheese", "fish", "meat", "honey", "corn", "milk", "soup", "cake", "salt", "sugar", "beans", "nuts", "eggs"],
    "job": ["farmer", "doctor", "teacher", "soldier", "sailor", "baker", "hunter", "driver", "singer", "painter", "writer", "judge", "priest", "miner"],
    "instrument": ["piano", "guitar", "drum", "flute", "violin", "harp", "trumpet", "horn", "organ", "banjo", "cello"],
    "vehicle": ["car", "bus", "train", "truck", "bicycle", "ship", "plane", "wagon", "canoe", "tractor", "taxi", "jeep", "yacht"],
}
# filler vocabulary, disjoint from keys, attributes and values; the slots after place and adj are drawn in this order
_F_PLACE = ["river", "hill", "road", "tree", "house", "bridge", "field", "lake", "forest", "wall", "garden", "tower", "market", "village", "valley", "mountain", "church", "castle", "harbor", "station", "farm", "shore", "island", "school", "library", "mill", "gate", "path"]
_F_ADJ = ["dark", "bright", "cold", "warm", "empty", "busy", "narrow", "wide", "long", "deep", "high", "low", "distant", "hidden", "open", "crowded", "dry", "wet"]
_F_SLOTS = {
    "verb": ["stands", "sleeps", "waits", "rests", "moves", "turns", "stays", "lies", "shakes"],
    "time": ["morning", "evening", "night", "winter", "summer", "spring", "autumn", "noon", "dawn", "dusk"],
    "things": ["rocks", "leaves", "flowers", "birds", "trees", "clouds", "boats", "lamps", "stones", "carts", "bells", "windows", "roofs", "fences"],
    "day": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
    "people": ["children", "people", "workers", "visitors", "travelers"],
    "pverb": ["play", "sing", "talk", "rest", "gather", "wait", "dance", "walk"],
    "weather": ["rain", "snow", "wind", "fog", "light", "smoke", "water", "dust"],
    "wverb": ["falls", "blows", "moves", "settles"],
}
# templates never contain "the ... of ... is", so no filler looks like a fact
_FILLERS = (
    "the {adj} {place} {verb} near the {place2} in the {time} .",
    "in the {time} , the {place} was {adj} and the {place2} was {adj2} .",
    "{people} walk from the {place} to the {place2} every {time} .",
    "there are many {things} around the {adj} {place} near the {place2} .",
    "the {weather} {wverb} over the {place} and the {adj} {place2} .",
    "on {day} the {people} {pverb} near the {place} until the {time} .",
    "the road to the {place} goes past a {adj} {place2} and a {place3} .",
    "nobody knows why the {place} looked so {adj} at {time} .",
    "{people} often say that the {place} seems {adj} in the {time} .",
    "a {adj} {place} {verb} beside the {place2} , far from the {place3} .",
    "every {day} the {things} near the {place} look {adj} and {adj2} .",
    "the {people} left the {place} at {time} and reached the {adj} {place2} .",
)

LONG_TOKENS = (150, 250)  # context length (tokens == words here)
# Short training-only contexts: a tiny from-scratch BERT first learns to find *a* fact (EM ~25%), only later the one
# asked. With long contexts alone the question is ~5% of the attention mass and that phase change came late or not at
# all within 1000 steps; 30% short contexts brought it forward to ~500 steps. Dev contexts are always long.
SHORT_TOKENS = (30, 80)
# one fact among fillers (the quickstart task); more facts make every other fact a distractor that only the question
# tells apart: much harder for a model trained from scratch (EM stays ~25% for ~500+ steps)
DEFAULT_N_FACTS = (1, 1)
_P_TWO_QUESTIONS = 0.3


def _filler(rng: random.Random) -> str:
    place, place2, place3 = (rng.choice(_F_PLACE) for _ in range(3))
    adj, adj2 = (rng.choice(_F_ADJ) for _ in range(2))
    template = rng.choice(_FILLERS)
    slots = {name: rng.choice(words) for name, words in _F_SLOTS.items()}
    return template.format(place=place, place2=place2, place3=place3, adj=adj, adj2=adj2, **slots)


def _pick_distinct(rng: random.Random, pool, k: int, taken: set[str]) -> list[str]:
    """k distinct items from pool, avoiding `taken` (rejection sampling keeps rng use stable)."""
    out: list[str] = []
    while len(out) < k:
        item = rng.choice(pool)
        if item not in taken:
            taken.add(item)
            out.append(item)
    return out


def _make_paragraph(rng: random.Random, length: tuple[int, int], n_facts: tuple[int, int]) -> tuple[str, list[tuple]]:
    """(context, facts as (attr, key, value, value char offset)); fillers are added until the context reaches a
    target drawn from ``length`` (tokens): the facts alone may exceed a short target."""
    n = rng.randint(*n_facts)
    attrs, animals, used = _pick_distinct(rng, tuple(ATTRIBUTES), n, set()), _pick_distinct(rng, _KEY_ANIMAL, n, set()), set()
    facts = [(a, f"the {rng.choice(_KEY_ADJ)} {animal}", _pick_distinct(rng, ATTRIBUTES[a], 1, used)[0])
             for a, animal in zip(attrs, animals)]  # fmt: skip
    sentences = [(f"the {a} of {k} is {v} .", i) for i, (a, k, v) in enumerate(facts)]  # (text, fact index or -1)
    target, n_tokens = rng.randint(*length), sum(len(s.split()) for s, _ in sentences)
    while n_tokens < target:
        sentences.append((_filler(rng), -1))
        n_tokens += len(sentences[-1][0].split())
    rng.shuffle(sentences)  # facts land anywhere, so the answer block position is uniform
    offsets, pos = {}, 0
    for text, i in sentences:
        if i >= 0:
            offsets[i] = pos + len(f"the {facts[i][0]} of {facts[i][1]} is ")
        pos += len(text) + 1  # +1 for the joining space
    return " ".join(s for s, _ in sentences), [(*fact, offsets[i]) for i, fact in enumerate(facts)]


def make_synthetic_squad(
    num_examples: int,
    *,
    seed: int,
    title: str = "synthetic",
    short_fraction: float = 0.0,
    exclude_contexts: set[str] | frozenset[str] | None = None,
    n_facts: tuple[int, int] = DEFAULT_N_FACTS,
) -> dict[str, Any]:
    """``num_examples`` questions as an official nested SQuAD JSON dict: one paragraph per context with one or two
    questions about distinct facts, ids ``syn-<seed>-<n>``. A ``short_fraction`` of the contexts have
    :data:`SHORT_TOKENS` tokens, the rest :data:`LONG_TOKENS`; contexts in ``exclude_contexts`` are skipped (a
    validation split held out from training)."""
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    if not 0.0 <= short_fraction <= 1.0:
        raise ValueError(f"short_fraction must be in [0, 1], got {short_fraction}")
    if len(n_facts) != 2 or not all(isinstance(n, int) for n in n_facts) or not 1 <= n_facts[0] <= n_facts[1] <= len(ATTRIBUTES):
        raise ValueError(f"n_facts must be [min, max] with 1 <= min <= max <= {len(ATTRIBUTES)}, got {list(n_facts)}")
    rng, paragraphs, n = random.Random(seed), [], 0
    while n < num_examples:
        # always drawn, so that the rng stream (hence the data) does not depend on whether it is used
        length = SHORT_TOKENS if rng.random() < short_fraction else LONG_TOKENS
        context, facts = _make_paragraph(rng, length, tuple(n_facts))
        n_q = 2 if rng.random() < _P_TWO_QUESTIONS else 1
        asked = list(range(len(facts)))
        rng.shuffle(asked)
        if exclude_contexts and context in exclude_contexts:
            continue
        qas = [{"id": f"syn-{seed}-{n + j}", "question": f"what is the {a} of {k} ?", "answers": [{"text": v, "answer_start": s}]}
               for j, (a, k, v, s) in enumerate(facts[i] for i in asked[: min(n_q, num_examples - n)])]  # fmt: skip
        n += len(qas)
        paragraphs.append({"context": context, "qas": qas})
    return {"version": SYNTHETIC_VERSION, "data": [{"title": title, "paragraphs": paragraphs}]}


def synthetic_json_bytes(obj: dict[str, Any]) -> bytes:
    """Canonical serialisation (fixed separators, insertion key order) => byte-identical files."""
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _check_sizes(train_size: int, val_size: int) -> None:
    if min(train_size, val_size) < 1:
        raise ValueError(f"train_size and val_size must be at least 1, got {train_size} and {val_size}")


def _write(out_dir: str | os.PathLike[str], files: dict[str, tuple[str, bytes]]) -> dict[str, Path]:
    """Write ``{split: (file name, content)}`` under ``out_dir``. A file that already holds exactly its content is left
    untouched (its mtime, hence the cache keys, stay put); others are replaced atomically, so that concurrent readers
    (other DDP ranks) never see a partial file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, (name, content) in files.items():
        paths[split] = path = out / name
        if not (path.is_file() and path.read_bytes() == content):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(content)
            os.replace(tmp, path)
    return paths


def write_synthetic_squad(
    out_dir: str | os.PathLike[str],
    *,
    train_size: int = 4000,
    val_size: int = 500,
    seed: int = 1234,
    train_short_fraction: float = 0.0,
    n_facts: tuple[int, int] | list[int] = DEFAULT_N_FACTS,
) -> dict[str, Path]:
    """``train.json`` and ``dev.json`` under ``out_dir``, as ``{"train": path, "validation": path}``.

    ``train_short_fraction`` of the training contexts are short warm-up contexts; dev contexts are all long and none is
    a training context (another seed, and excluded), so skimming is evaluated where it matters."""
    _check_sizes(train_size, val_size)
    n_facts = tuple(n_facts)
    train = make_synthetic_squad(train_size, seed=seed, title="synthetic-train", short_fraction=train_short_fraction,
                                 n_facts=n_facts)  # fmt: skip
    held_out = frozenset(p["context"] for p in train["data"][0]["paragraphs"])
    dev = make_synthetic_squad(val_size, seed=seed + 1_000_003, title="synthetic-dev", exclude_contexts=held_out,
                               n_facts=n_facts)  # fmt: skip
    return _write(out_dir, {"train": ("train.json", synthetic_json_bytes(train)),
                            "validation": ("dev.json", synthetic_json_bytes(dev))})  # fmt: skip


# --- synthetic sentiment classification (the Transkimmer quickstart) ----------------------------------------------
_OPINION_SUBJECT = ["film", "movie", "story", "show", "play", "book", "song", "concert", "meal", "trip"]
_POSITIVE = ["wonderful", "great", "excellent", "lovely", "brilliant", "superb", "delightful", "perfect"]
_NEGATIVE = ["awful", "terrible", "boring", "dreadful", "horrible", "poor", "dull", "bad"]
_OPINION_TEMPLATES = (
    "overall the {subject} was {word} .",
    "i thought the {subject} was really {word} .",
    "honestly , the {subject} felt {word} from start to end .",
)


def make_synthetic_sentiment(num_examples: int, *, seed: int, length: tuple[int, int] = (80, 160)) -> list[dict[str, Any]]:
    """Records ``{"id", "text", "label"}``: ONE opinion sentence (label 1 positive / 0 negative) hidden among filler
    sentences that carry no sentiment, so a token-skimming model can drop almost everything but that sentence."""
    rng = random.Random(seed)
    out = []
    for n in range(num_examples):
        label = rng.randrange(2)
        word = rng.choice(_POSITIVE if label else _NEGATIVE)
        sentences = [rng.choice(_OPINION_TEMPLATES).format(subject=rng.choice(_OPINION_SUBJECT), word=word)]
        target, n_tokens = rng.randint(*length), len(sentences[0].split())
        while n_tokens < target:
            sentences.append(_filler(rng))
            n_tokens += len(sentences[-1].split())
        rng.shuffle(sentences)
        out.append({"id": f"sent-{seed}-{n}", "text": " ".join(sentences), "label": label})
    return out


def write_synthetic_sentiment(out_dir: str | os.PathLike[str], *, train_size: int = 2000, val_size: int = 500, seed: int = 4321) -> dict[str, Path]:
    """``train.jsonl`` and ``dev.jsonl`` (different seeds: held-out texts), written like the QA set."""
    _check_sizes(train_size, val_size)

    def jsonl(n: int, s: int) -> bytes:
        return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in make_synthetic_sentiment(n, seed=s)).encode()

    return _write(out_dir, {"train": ("train.jsonl", jsonl(train_size, seed)),
                            "validation": ("dev.jsonl", jsonl(val_size, seed + 1_000_003))})  # fmt: skip
