"""skim's generated data sets, deterministic and offline: extractive QA in the official SQuAD JSON layout (the
quickstart: a tiny randomly initialised BERT reaches EM >= 80 within minutes on a CPU) and sentiment classification.

Every QA context (~150-250 tokens) hides one *fact* sentence among *filler* sentences (``n_facts`` may add distractor
facts that only the question tells apart)::

    the <attr> of <key> is <value> .            e.g. "the weapon of the brave owl is spear ."
    the dark bridge stands near the mill in the morning .         (filler)

The question is ``what is the <attr> of <key> ?``, the answer ``<value>`` (1-2 words) at its exact offset. Facts are
drawn per context (no global knowledge base), so the model must read the context, and fillers never hold fact
words, so only the 32-token block(s) with the asked fact are needed: the rest can be skimmed. Every word is one
WordPiece token of bert-base-uncased (tokens == words). Only version-stable ``random.Random`` methods are used and
JSON is written in a fixed key order: the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

SYNTHETIC_VERSION = "synthetic-1.0"

# --- key vocabulary: keys are "the <adjective> <animal>" ------------------------------
_KEY_ADJ: tuple[str, ...] = ["young", "big", "small", "tall", "short", "brave", "happy", "sad", "wild", "calm", "proud", "clever", "lazy", "angry", "gentle", "strong", "weak", "little", "great", "poor", "rich", "kind", "bold", "shy", "silent", "swift", "wise"]
_KEY_ANIMAL: tuple[str, ...] = ["fox", "wolf", "bear", "deer", "horse", "lion", "tiger", "eagle", "owl", "hawk", "rabbit", "mouse", "cat", "dog", "goat", "sheep", "cow", "pig", "duck", "goose", "swan", "crow", "snake", "frog", "whale", "shark", "dolphin", "monkey", "camel", "bull"]

# --- values: one disjoint pool per attribute, so both the attribute word and the answer
# type point to the asked fact (two redundant cues keep it learnable from scratch in minutes).
_CITIES = ["paris", "london", "rome", "berlin", "tokyo", "madrid", "moscow", "vienna", "dublin", "boston", "chicago", "sydney", "cairo", "athens", "lisbon", "prague", "oslo", "warsaw", "denver", "seattle", "toronto", "delhi"] + ["new york", "hong kong", "los angeles", "san diego"]
_NAMES = ["john", "mary", "david", "sarah", "peter", "anna", "james", "emma", "thomas", "lucy", "george", "alice", "henry", "laura", "paul", "maria", "frank", "helen", "oscar", "ruth", "victor", "grace", "simon", "rose"]
_COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown", "gray", "silver", "gold", "violet"] + ["dark blue", "light green"]
_WEAPONS = ["sword", "bow", "spear", "axe", "knife", "hammer", "shield", "rifle", "dagger", "club", "whip", "lance"]
_FOODS = ["apple", "bread", "rice", "cheese", "fish", "meat", "honey", "corn", "milk", "soup", "cake", "salt", "sugar", "beans", "nuts", "eggs"]
_JOBS = ["farmer", "doctor", "teacher", "soldier", "sailor", "baker", "hunter", "driver", "singer", "painter", "writer", "judge", "priest", "miner"]
_INSTRUMENTS = ["piano", "guitar", "drum", "flute", "violin", "harp", "trumpet", "horn", "organ", "banjo", "cello"]
_VEHICLES = ["car", "bus", "train", "truck", "bicycle", "ship", "plane", "wagon", "canoe", "tractor", "taxi", "jeep", "yacht"]

ATTRIBUTES: dict[str, list[str]] = {
    "home": _CITIES,
    "friend": _NAMES,
    "color": _COLORS,
    "weapon": _WEAPONS,
    "food": _FOODS,
    "job": _JOBS,
    "instrument": _INSTRUMENTS,
    "vehicle": _VEHICLES,
}
_ATTR_NAMES: tuple[str, ...] = tuple(ATTRIBUTES)  # fixed order => deterministic sampling

# --- filler vocabulary: disjoint from keys, attributes and values ---------------------
_F_PLACE = ["river", "hill", "road", "tree", "house", "bridge", "field", "lake", "forest", "wall", "garden", "tower", "market", "village", "valley", "mountain", "church", "castle", "harbor", "station", "farm", "shore", "island", "school", "library", "mill", "gate", "path"]
_F_ADJ = ["dark", "bright", "cold", "warm", "empty", "busy", "narrow", "wide", "long", "deep", "high", "low", "distant", "hidden", "open", "crowded", "dry", "wet"]
_F_VERB = ["stands", "sleeps", "waits", "rests", "moves", "turns", "stays", "lies", "shakes"]
_F_TIME = ["morning", "evening", "night", "winter", "summer", "spring", "autumn", "noon", "dawn", "dusk"]
_F_THINGS = ["rocks", "leaves", "flowers", "birds", "trees", "clouds", "boats", "lamps", "stones", "carts", "bells", "windows", "roofs", "fences"]
_F_DAY = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_F_PEOPLE = ["children", "people", "workers", "visitors", "travelers"]
_F_PVERB = ["play", "sing", "talk", "rest", "gather", "wait", "dance", "walk"]
_F_WEATHER = ["rain", "snow", "wind", "fog", "light", "smoke", "water", "dust"]
_F_WVERB = ["falls", "blows", "moves", "settles"]

# Templates never contain "the ... of ... is", so no filler looks like a fact.
_FILLERS: tuple[str, ...] = (
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

LONG_TOKENS: tuple[int, int] = (150, 250)  # target context length (tokens == words here)
# Short "warm-up" contexts for training only. A tiny from-scratch BERT first learns to find
# *a* fact (EM ~25%) and only later to pick the one asked (question conditioning). With long
# contexts alone the question is ~5% of the attention mass and that phase change came late
# or not at all within 1000 steps; mixing 30% short contexts into train brought it forward
# to ~500 steps (measured, see report). Dev contexts are always long.
SHORT_TOKENS: tuple[int, int] = (30, 80)
DEFAULT_TRAIN_SHORT_FRACTION = 0.0
# One fact among fillers by default (the quickstart task). More facts make every other fact a distractor that only
# the question tells apart: much harder for a model trained from scratch (EM stays ~25% for ~500+ steps).
DEFAULT_N_FACTS: tuple[int, int] = (1, 1)
_P_TWO_QUESTIONS = 0.3


def _filler(rng: random.Random) -> str:
    places = [rng.choice(_F_PLACE) for _ in range(3)]
    adjs = [rng.choice(_F_ADJ) for _ in range(2)]
    return rng.choice(_FILLERS).format(
        adj=adjs[0],
        adj2=adjs[1],
        place=places[0],
        place2=places[1],
        place3=places[2],
        verb=rng.choice(_F_VERB),
        time=rng.choice(_F_TIME),
        things=rng.choice(_F_THINGS),
        day=rng.choice(_F_DAY),
        people=rng.choice(_F_PEOPLE),
        pverb=rng.choice(_F_PVERB),
        weather=rng.choice(_F_WEATHER),
        wverb=rng.choice(_F_WVERB),
    )


def _pick_distinct(rng: random.Random, pool: list[str] | tuple[str, ...], k: int, taken: set[str]) -> list[str]:
    """k distinct items from pool, avoiding `taken` (rejection sampling keeps rng use stable)."""
    out: list[str] = []
    while len(out) < k:
        item = rng.choice(pool)
        if item not in taken:
            taken.add(item)
            out.append(item)
    return out


def _make_paragraph(
    rng: random.Random, length: tuple[int, int], n_facts_range: tuple[int, int] = DEFAULT_N_FACTS
) -> tuple[str, list[tuple[str, str, str, int]]]:
    """Return (context, facts) with facts as (attr, key, value, value_char_offset).

    Fillers are added until the context reaches a target drawn from `length` (tokens);
    the facts alone may exceed a short target.
    """
    n_facts = rng.randint(*n_facts_range)
    attrs = _pick_distinct(rng, _ATTR_NAMES, n_facts, set())
    animals = _pick_distinct(rng, _KEY_ANIMAL, n_facts, set())
    used_values: set[str] = set()
    facts: list[tuple[str, str, str]] = []
    for attr, animal in zip(attrs, animals):
        key = f"the {rng.choice(_KEY_ADJ)} {animal}"
        (value,) = _pick_distinct(rng, ATTRIBUTES[attr], 1, used_values)
        facts.append((attr, key, value))

    fact_sents = [f"the {a} of {k} is {v} ." for a, k, v in facts]
    target = rng.randint(*length)
    n_tokens = sum(len(s.split()) for s in fact_sents)
    sentences: list[tuple[str, int]] = [(s, i) for i, s in enumerate(fact_sents)]  # (text, fact index or -1)
    while n_tokens < target:
        f = _filler(rng)
        sentences.append((f, -1))
        n_tokens += len(f.split())
    rng.shuffle(sentences)  # facts land anywhere, so the answer block position is uniform

    parts: list[str] = []
    offsets: dict[int, int] = {}
    pos = 0
    for text, fact_idx in sentences:
        if fact_idx >= 0:
            attr, key, _ = facts[fact_idx]
            offsets[fact_idx] = pos + len(f"the {attr} of {key} is ")
        parts.append(text)
        pos += len(text) + 1  # +1 for the joining space
    context = " ".join(parts)
    return context, [(a, k, v, offsets[i]) for i, (a, k, v) in enumerate(facts)]


def make_synthetic_squad(
    num_examples: int,
    *,
    seed: int,
    title: str = "synthetic",
    short_fraction: float = 0.0,
    exclude_contexts: set[str] | frozenset[str] | None = None,
    n_facts: tuple[int, int] = DEFAULT_N_FACTS,
) -> dict[str, Any]:
    """Build ``num_examples`` questions as an official nested SQuAD JSON dict.

    One paragraph per context with one or two questions (about distinct facts); ids are
    ``syn-<seed>-<n>``. Contexts have :data:`LONG_TOKENS` tokens, except a ``short_fraction``
    of them with :data:`SHORT_TOKENS` (training warm-up). Contexts in ``exclude_contexts``
    are skipped (used to keep the validation split held out from training).
    """
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    if not 0.0 <= short_fraction <= 1.0:
        raise ValueError(f"short_fraction must be in [0, 1], got {short_fraction}")
    rng = random.Random(seed)
    paragraphs: list[dict[str, Any]] = []
    n = 0
    while n < num_examples:
        # Always draw, so the rng stream (hence the data) does not depend on whether it is used.
        short = rng.random() < short_fraction
        context, facts = _make_paragraph(rng, SHORT_TOKENS if short else LONG_TOKENS, tuple(n_facts))
        n_q = 2 if rng.random() < _P_TWO_QUESTIONS else 1
        asked = list(range(len(facts)))
        rng.shuffle(asked)
        if exclude_contexts and context in exclude_contexts:
            continue
        qas: list[dict[str, Any]] = []
        for fact_idx in asked[: min(n_q, num_examples - n)]:
            attr, key, value, start = facts[fact_idx]
            qas.append(
                {
                    "id": f"syn-{seed}-{n}",
                    "question": f"what is the {attr} of {key} ?",
                    "answers": [{"text": value, "answer_start": start}],
                }
            )
            n += 1
        paragraphs.append({"context": context, "qas": qas})
    return {"version": SYNTHETIC_VERSION, "data": [{"title": title, "paragraphs": paragraphs}]}


def synthetic_json_bytes(obj: dict[str, Any]) -> bytes:
    """Canonical serialisation (fixed separators, insertion key order) => byte-identical files."""
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _write_if_changed(path: Path, content: bytes) -> None:
    """Leave a file that already holds exactly ``content`` untouched (its mtime, hence the cache keys, stay put)."""
    if path.is_file() and path.read_bytes() == content:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)  # atomic: concurrent readers (e.g. other DDP ranks) never see a partial file


def write_synthetic_squad(
    out_dir: str | os.PathLike[str],
    *,
    train_size: int = 4000,
    val_size: int = 500,
    seed: int = 1234,
    train_short_fraction: float = DEFAULT_TRAIN_SHORT_FRACTION,
    n_facts: tuple[int, int] | list[int] = DEFAULT_N_FACTS,
) -> dict[str, Path]:
    """Write ``train.json`` and ``dev.json`` under ``out_dir``: ``{"train": <train.json>, "validation": <dev.json>}``.

    ``train_short_fraction`` of the training contexts are short warm-up contexts; all dev contexts are long and none
    is a training context (a different seed, and the exclusion guarantees it), so skimming is evaluated where it matters.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_facts = tuple(n_facts)
    train = make_synthetic_squad(
        train_size, seed=seed, title="synthetic-train", short_fraction=train_short_fraction, n_facts=n_facts
    )
    train_contexts = frozenset(p["context"] for p in train["data"][0]["paragraphs"])
    dev = make_synthetic_squad(
        val_size, seed=seed + 1_000_003, title="synthetic-dev", exclude_contexts=train_contexts, n_facts=n_facts
    )
    paths = {"train": out / "train.json", "validation": out / "dev.json"}
    for split, doc in (("train", train), ("validation", dev)):
        _write_if_changed(paths[split], synthetic_json_bytes(doc))
    return paths


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
        opinion = rng.choice(_OPINION_TEMPLATES).format(subject=rng.choice(_OPINION_SUBJECT), word=word)
        sentences = [opinion]
        target = rng.randint(*length)
        n_tokens = len(opinion.split())
        while n_tokens < target:
            f = _filler(rng)
            sentences.append(f)
            n_tokens += len(f.split())
        rng.shuffle(sentences)
        out.append({"id": f"sent-{seed}-{n}", "text": " ".join(sentences), "label": label})
    return out


def write_synthetic_sentiment(out_dir: str | os.PathLike[str], *, train_size: int = 2000, val_size: int = 500, seed: int = 4321) -> dict[str, Path]:
    """Write ``train.jsonl`` and ``dev.jsonl`` (different seeds: held-out texts); idempotent like the QA set."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n, s in (("train", train_size, seed), ("validation", val_size, seed + 1_000_003)):
        body = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in make_synthetic_sentiment(n, seed=s)).encode()
        path = out / ("train.jsonl" if split == "train" else "dev.jsonl")
        _write_if_changed(path, body)
        paths[split] = path
    return paths
