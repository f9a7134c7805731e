"""The HotpotQA and MRQA layouts (skim/data/qa_sources.py) on small files generated in the published formats.

There is no copy of either data set here. The files follow the published formats exactly: HotpotQA's distractor JSON
(a list of {"_id", "answer", "question", "supporting_facts": [[title, sent_id]], "context": [[title, [sentences]]],
"type", "level"}) and the MRQA shared task's .jsonl.gz (a {"header": {"dataset", "split"}} line, then one line per
context with its "qas" and their "detected_answers" char spans, end inclusive). The Hub rows are built from the same
records the way the Hub datasets' loading scripts built them (hotpot_qa.py, mrqa.py of huggingface/datasets), with
their Features, and served through a patched ``datasets.load_dataset``.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path
from typing import Any

import datasets
import pytest

from skim.data import sources
from skim.data.qa_datamodule import QADataModule
from skim.data.qa_sources import QA_FEATURES, load_qa
from skim.errors import ConfigError, DataError

# --------------------------------------------------------------------------- HotpotQA (distractor)

FILLER = [[f"Filler {k}", [f"Filler paragraph {k} is about topic {k}.", f" It has a second sentence {k}."]] for k in range(3)]
HOTPOT = [
    {  # bridge: the answer occurs first in a distractor paragraph, then in a supporting-fact sentence
        "_id": "5a8b57f25542995d1e6f1371",
        "answer": "Tim Burton",
        "question": "Which director of Ed Wood was born in Burbank?",
        "supporting_facts": [["Ed Wood (film)", 1], ["Tim Burton", 1], ["Tim Burton", 7]],  # sent_id 7 does not exist
        "context": [
            ["Batman (1989 film)", ["Batman is a 1989 film directed by Tim Burton.", " It stars Michael Keaton."]],
            ["Ed Wood (film)", ["Ed Wood is a 1994 American biographical film.", " It was directed and produced by Tim Burton."]],
            *FILLER,
            ["Tim Burton", ["Timothy Walter Burton is an American filmmaker.", " He was born in Burbank, California."]],
        ],
        "type": "bridge",
        "level": "hard",
    },
    {
        "_id": "5a8c7595554299585d9e36b6",
        "answer": "yes",
        "question": "Were Scott Derrickson and Ed Wood of the same nationality?",
        "supporting_facts": [["Scott Derrickson", 0], ["Ed Wood", 0]],
        "context": [
            ["Scott Derrickson", ["Scott Derrickson is an American director."]],
            ["Ed Wood", ["Edward Davis Wood Jr. was an American filmmaker."]],
        ],
        "type": "comparison",
        "level": "medium",
    },
    {
        "_id": "5a85ea095542994775f606a8",
        "answer": "no",
        "question": "Are Batman and Ed Wood both documentaries?",
        "supporting_facts": [["Batman (1989 film)", 0], ["Ed Wood (film)", 0]],
        "context": [
            ["Batman (1989 film)", ["Batman is a 1989 superhero film."]],
            ["Ed Wood (film)", ["Ed Wood is a 1994 biographical film."]],
        ],
        "type": "comparison",
        "level": "easy",
    },
    {  # the answer is no span of the paragraphs: dropped and counted
        "_id": "5ab3b0bf5542992ade7c6e39",
        "answer": "Helena Bonham Carter",
        "question": "Who starred in Big Fish?",
        "supporting_facts": [["Big Fish", 0]],
        "context": [["Big Fish", ["Big Fish is a 2003 fantasy drama film."]]],
        "type": "bridge",
        "level": "medium",
    },
]
BRIDGE_CONTEXT = (
    "Batman is a 1989 film directed by Tim Burton. It stars Michael Keaton. Ed Wood is a 1994 American biographical "
    "film. It was directed and produced by Tim Burton. Filler paragraph 0 is about topic 0. It has a second sentence 0. "
    "Filler paragraph 1 is about topic 1. It has a second sentence 1. Filler paragraph 2 is about topic 2. It has a "
    "second sentence 2. Timothy Walter Burton is an American filmmaker. He was born in Burbank, California."
)
# the Hub's hotpot_qa (distractor), as its loading script declared and produced it
HOTPOT_HUB_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "type": datasets.Value("string"),
        "level": datasets.Value("string"),
        "supporting_facts": datasets.Sequence({"title": datasets.Value("string"), "sent_id": datasets.Value("int32")}),
        "context": datasets.Sequence({"title": datasets.Value("string"), "sentences": datasets.Sequence(datasets.Value("string"))}),
    }
)


def _struct(pairs: list, *keys: str) -> dict[str, list]:
    """A Sequence of dicts as the Hub stores (and ``datasets`` returns) it: a dict of lists."""
    return {key: [p[i] for p in pairs] for i, key in enumerate(keys)}


def _hotpot_hub(examples: list[dict]) -> datasets.Dataset:
    rows = [
        {"id": ex["_id"], "question": ex["question"], "answer": ex["answer"], "type": ex["type"], "level": ex["level"],
         "supporting_facts": _struct(ex["supporting_facts"], "title", "sent_id"),
         "context": _struct(ex["context"], "title", "sentences")}
        for ex in examples
    ]  # fmt: skip
    return datasets.Dataset.from_list(rows, features=HOTPOT_HUB_FEATURES)


def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def _load(source: Path | None, layout: str, tmp_path: Path, split: str = "validation", **options: Any) -> datasets.Dataset:
    return load_qa(str(source) if source else None, layout=layout, split=split, require_answers=True, layout_options=options,
                   hub_name=f"hub/{layout}", cache_dir=str(tmp_path / "cache"))  # fmt: skip


def _fake_hub(monkeypatch: pytest.MonkeyPatch, rows: datasets.Dataset) -> None:
    """Hub names load ``rows``; local files (``data_files=``) still load for real."""
    real = datasets.load_dataset
    monkeypatch.setattr(sources.datasets, "load_dataset", lambda *a, **k: real(*a, **k) if "data_files" in k else rows)


@pytest.mark.parametrize("source", ["file", "hub"])
def test_hotpotqa_yes_no_drop_and_prepend(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    path = _write_json(tmp_path / "hotpot_dev_distractor_v1.json", HOTPOT) if source == "file" else None
    if source == "hub":
        _fake_hub(monkeypatch, _hotpot_hub(HOTPOT))
    caplog.set_level(logging.INFO, logger="skim.data.qa_sources")

    dropped = _load(path, "hotpotqa", tmp_path, yes_no="drop")
    assert dropped.features == QA_FEATURES and dropped["id"] == ["5a8b57f25542995d1e6f1371"]
    row = dropped[0]
    # the ten paragraphs in the order given, no titles, sentences joined as given (Block-Skim's context string)
    assert row["context"] == BRIDGE_CONTEXT and row["question"] == HOTPOT[0]["question"] and not row["is_impossible"]
    # the occurrence inside a supporting-fact sentence, not the first one (in the distractor paragraph)
    start = row["answers"]["answer_start"][0]
    assert row["answers"]["text"] == ["Tim Burton"] and start == BRIDGE_CONTEXT.index("produced by Tim Burton") + 12
    assert start != BRIDGE_CONTEXT.index("Tim Burton")
    assert "1 of 4 questions kept; 2 yes/no (dropped); 1 answers not found in the paragraphs" in caplog.text

    prepended = _load(path, "hotpotqa", tmp_path, yes_no="prepend")
    assert prepended["id"] == [ex["_id"] for ex in HOTPOT[:3]]
    assert all(c.startswith("yes no ") for c in prepended["context"])
    assert prepended[0]["context"] == "yes no " + BRIDGE_CONTEXT and prepended[0]["answers"]["answer_start"] == [start + 7]
    assert [r["answers"] for r in prepended][1:] == [{"text": ["yes"], "answer_start": [0]}, {"text": ["no"], "answer_start": [4]}]
    assert "3 of 4 questions kept; 2 yes/no ('yes no ' prepended); 1 answers not found" in caplog.text

    # a wrong option fails when the data module is built, before any file is read
    with pytest.raises(ConfigError, match="data.yes_no must be 'drop' or 'prepend', got 'keep'"):
        QADataModule(tokenizer="unused", name="hotpotqa", layout="hotpotqa", yes_no="keep", hub_name=None)
    with pytest.raises(ConfigError, match="data.layout must be one of squad, hotpotqa, mrqa, got 'hotpot'"):
        QADataModule(tokenizer="unused", name="hotpotqa", layout="hotpot", hub_name=None)


def test_hotpotqa_file_and_hub_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = _load(_write_json(tmp_path / "dev.json", HOTPOT), "hotpotqa", tmp_path, yes_no="prepend")
    _fake_hub(monkeypatch, _hotpot_hub(HOTPOT))
    assert _load(None, "hotpotqa", tmp_path, yes_no="prepend").to_list() == local.to_list()


def test_hotpotqa_bad_files_fail_in_one_line(tmp_path: Path) -> None:
    # the fullwiki test file has no answers: not the distractor layout with answers
    test_file = _write_json(tmp_path / "hotpot_test_fullwiki_v1.json", [{k: v for k, v in HOTPOT[0].items() if k != "answer"}])
    with pytest.raises(DataError) as err:
        _load(test_file, "hotpotqa", tmp_path)
    assert str(test_file) in str(err.value) and "'answer'" in str(err.value) and "\n" not in str(err.value)
    nothing = _write_json(tmp_path / "yes_no_only.json", HOTPOT[1:3])
    with pytest.raises(DataError) as err:  # every question dropped
        _load(nothing, "hotpotqa", tmp_path, yes_no="drop")
    assert str(nothing) in str(err.value) and "no rows" in str(err.value)
    # a question's row is its place in the file's list, whatever questions before it were dropped (a list: no lines)
    empty = _write_json(tmp_path / "empty.json", [*HOTPOT[1:3], {**HOTPOT[0], "question": " "}])
    with pytest.raises(DataError, match=rf"^{re.escape(str(empty))}: row 2, id '5a8b57f25542995d1e6f1371': empty question$"):
        _load(empty, "hotpotqa", tmp_path, yes_no="drop")


# --------------------------------------------------------------------------- MRQA


def _tokens(text: str) -> list[list]:
    return [[m.group(), m.start()] for m in re.finditer(r"\w+|[^\w\s]", text)]


def _span(context: str, text: str, occurrence: int = 0, *, as_text: str | None = None) -> dict[str, Any]:
    """A detected answer: ``text`` (or ``as_text``, the detected string) at its ``occurrence``-th place, end inclusive."""
    starts = [m.start() for m in re.finditer(re.escape(text), context)]
    s = starts[occurrence]
    tokens = [o for _, o in _tokens(context)]
    first = max(i for i, o in enumerate(tokens) if o <= s)
    last = max(i for i, o in enumerate(tokens) if o <= s + len(text) - 1)
    return {"text": as_text or text, "char_spans": [[s, s + len(text) - 1]], "token_spans": [[first, last]]}


def _qa(qid: str, question: str, answers: list[str], detected: list[dict]) -> dict[str, Any]:
    return {"id": f"{qid}-orig", "qid": qid, "question": question, "question_tokens": _tokens(question), "answers": answers,
            "detected_answers": detected}  # fmt: skip


SB = ("CBS broadcast Super Bowl 50 in the U.S. The Super Bowl 50 halftime show was headlined by the British rock "
      "group Coldplay with special guest performers Beyonce and Bruno Mars.")  # fmt: skip
DB = "Denver Broncos beat the Carolina Panthers. The Broncos won Super Bowl 50 in Santa Clara."
GAME = {"text": "super bowl 50", **{key: [_span(SB, "Super Bowl 50", k)[key][0] for k in (1, 0)] for key in ("char_spans", "token_spans")}}
SQUAD_LINES = [
    {"header": {"dataset": "SQuAD", "split": "dev"}},
    {"id": "ctx-1", "context": SB, "context_tokens": _tokens(SB), "qas": [
        # three annotators, the same span (as in the MRQA SQuAD files)
        _qa("f43c83e38d1e424ea00f8ad3c77ec999", "Who headlined the halftime show?", ["Coldplay"] * 3, [_span(SB, "Coldplay")] * 3),
        # the detected string differs in case from the context; two occurrences, listed out of order
        _qa("a1b2c3d4e5f60718293a4b5c6d7e8f90", "Which game did CBS broadcast?", ["Super Bowl 50"], [GAME]),
    ]},
    {"id": "ctx-2", "context": DB, "context_tokens": _tokens(DB), "qas": [
        # two detected answers, the later one listed first: the earliest span is the training label
        _qa("b0626b3af0764c80b1e6f22c114982c1", "Who won Super Bowl 50?", ["The Broncos", "Denver Broncos"],
            [_span(DB, "The Broncos"), _span(DB, "Denver Broncos")]),
    ]},
]  # fmt: skip
NQ_CONTEXT = "[TLE] Santa Clara [PAR] Santa Clara is a city in Santa Clara County, California."
# a raw context that begins with whitespace (as 39 of SQuAD v1.1's do): the Hub's script strips it, not the offsets
WS_CONTEXT = "\n Greece: On March 24, 2008, the Olympic Flame was ignited at Olympia, Greece."
NEWSQA_LINES = [
    {"header": {"dataset": "NewsQA", "split": "dev"}},
    {"id": "./cnn/stories/1.story", "context": NQ_CONTEXT, "context_tokens": _tokens(NQ_CONTEXT), "qas": [
        _qa("849240180c584f71bc56c0c92c5df5fd", "Which county is Santa Clara in?", ["Santa Clara County"],
            [_span(NQ_CONTEXT, "Santa Clara County")]),
    ]},
    {"id": "./cnn/stories/2.story", "context": WS_CONTEXT, "context_tokens": _tokens(WS_CONTEXT), "qas": [
        _qa("5d1f0e2a3b4c5d6e7f8091a2b3c4d5e6", "Where was the flame ignited?", ["Olympia"], [_span(WS_CONTEXT, "Olympia")]),
    ]},
]  # fmt: skip
# the Hub's mrqa, as its loading script declared and produced it (one row per question, subset = the header's dataset)
MRQA_HUB_FEATURES = datasets.Features(
    {
        "subset": datasets.Value("string"),
        "context": datasets.Value("string"),
        "context_tokens": datasets.Sequence({"tokens": datasets.Value("string"), "offsets": datasets.Value("int32")}),
        "qid": datasets.Value("string"),
        "question": datasets.Value("string"),
        "question_tokens": datasets.Sequence({"tokens": datasets.Value("string"), "offsets": datasets.Value("int32")}),
        "detected_answers": datasets.Sequence(
            {
                "text": datasets.Value("string"),
                "char_spans": datasets.Sequence({"start": datasets.Value("int32"), "end": datasets.Value("int32")}),
                "token_spans": datasets.Sequence({"start": datasets.Value("int32"), "end": datasets.Value("int32")}),
            }
        ),
        "answers": datasets.Sequence(datasets.Value("string")),
    }
)


def _mrqa_hub(*files: list[dict]) -> datasets.Dataset:
    rows = []
    for header, *paragraphs in files:
        for p in paragraphs:
            for qa in p["qas"]:
                rows.append({
                    "subset": header["header"]["dataset"], "context": p["context"].strip(),
                    "context_tokens": _struct(p["context_tokens"], "tokens", "offsets"),
                    "qid": qa["qid"], "question": qa["question"].strip(),
                    "question_tokens": _struct(qa["question_tokens"], "tokens", "offsets"),
                    "detected_answers": {
                        "text": [a["text"].strip() for a in qa["detected_answers"]],
                        "char_spans": [_struct(a["char_spans"], "start", "end") for a in qa["detected_answers"]],
                        "token_spans": [_struct(a["token_spans"], "start", "end") for a in qa["detected_answers"]],
                    },
                    "answers": qa["answers"],
                })  # fmt: skip
    return datasets.Dataset.from_list(rows, features=MRQA_HUB_FEATURES)


def _write_jsonl_gz(path: Path, lines: list[dict]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    return path


SQUAD_EXPECTED = [
    ("f43c83e38d1e424ea00f8ad3c77ec999", {"text": ["Coldplay"], "answer_start": [SB.index("Coldplay")]}),
    ("a1b2c3d4e5f60718293a4b5c6d7e8f90", {"text": ["Super Bowl 50"] * 2, "answer_start": [14, SB.index("Super Bowl 50", 15)]}),
    ("b0626b3af0764c80b1e6f22c114982c1", {"text": ["Denver Broncos", "The Broncos"], "answer_start": [0, DB.index("The Broncos")]}),
]


def test_mrqa_jsonl_gz(tmp_path: Path) -> None:
    path = _write_jsonl_gz(tmp_path / "SQuAD.jsonl.gz", SQUAD_LINES)
    qa = _load(path, "mrqa", tmp_path)
    assert qa.features == QA_FEATURES
    # ids are the qids; the answer texts are the context slices (inclusive ends), deduplicated, earliest span first
    assert [(r["id"], r["answers"]) for r in qa] == SQUAD_EXPECTED
    assert qa["title"] == ["SQuAD"] * 3 and qa["context"] == [SB, SB, DB] and not any(qa["is_impossible"])
    assert _load(path, "mrqa", tmp_path, subset="SQuAD").to_list() == qa.to_list()
    with pytest.raises(DataError, match=r"data.subset='NewsQA'; this data holds: SQuAD"):
        _load(path, "mrqa", tmp_path, subset="NewsQA")
    # a file without the header line (not the published format, but MRQA's own samples have none) names no data set
    headless = _load(_write_jsonl_gz(tmp_path / "sample.jsonl.gz", SQUAD_LINES[1:]), "mrqa", tmp_path, subset="NewsQA")
    assert headless["id"] == qa["id"] and headless["title"] == ["NewsQA"] * 3


def test_mrqa_hub_subsets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_hub(monkeypatch, _mrqa_hub(SQUAD_LINES, NEWSQA_LINES))
    everything = _load(None, "mrqa", tmp_path)
    assert everything["title"] == ["SQuAD"] * 3 + ["NewsQA"] * 2
    assert [(r["id"], r["answers"]) for r in everything][:3] == SQUAD_EXPECTED
    newsqa = _load(None, "mrqa", tmp_path, subset="NewsQA")
    assert newsqa["id"] == ["849240180c584f71bc56c0c92c5df5fd", "5d1f0e2a3b4c5d6e7f8091a2b3c4d5e6"]
    assert newsqa["context"] == [NQ_CONTEXT, WS_CONTEXT.strip()]
    assert newsqa[0]["answers"] == {"text": ["Santa Clara County"], "answer_start": [NQ_CONTEXT.index("Santa Clara County")]}
    # the offsets shifted back onto the stripped context (the file keeps the raw context and its own offsets)
    assert newsqa[1]["answers"] == {"text": ["Olympia"], "answer_start": [WS_CONTEXT.strip().index("Olympia")]}
    local = _load(_write_jsonl_gz(tmp_path / "NewsQA.jsonl.gz", NEWSQA_LINES), "mrqa", tmp_path, subset="NewsQA")
    assert local[1]["context"] == WS_CONTEXT and local[1]["answers"]["answer_start"] == [WS_CONTEXT.index("Olympia")]
    # the Hub's names, exactly (TriviaQA-web, NaturalQuestionsShort): a near miss lists what is there
    with pytest.raises(DataError, match=r"data.subset='TriviaQA'; this data holds: SQuAD, NewsQA"):
        _load(None, "mrqa", tmp_path, subset="TriviaQA")


C = SB.index("Coldplay")


@pytest.mark.parametrize(("span", "found"), [([C, len(SB) + 5], "'Coldplay with"), ([len(SB) + 2, len(SB) + 9], "''"), ([C - 2, C + 5], "'p Coldpl'")])
def test_mrqa_bad_span_fails_in_one_line_naming_the_file(tmp_path: Path, span: list[int], found: str) -> None:
    # the end past the context, the whole span past it, a span shifted by two characters
    lines = json.loads(json.dumps(SQUAD_LINES))
    lines[1]["qas"][0]["detected_answers"][0]["char_spans"] = [span]  # outside the context / shifted
    path = _write_jsonl_gz(tmp_path / "SQuAD.jsonl.gz", lines)
    with pytest.raises(DataError) as err:
        _load(path, "mrqa", tmp_path)
    msg = str(err.value)
    # the header is the file's row 0 (line 1); the context is row 1, its first question qas[0]
    assert msg.startswith(f"{path}: row 1 (line 2), qas[0], id 'f43c83e38d1e424ea00f8ad3c77ec999': ") and "\n" not in msg, msg
    assert f"char span {span}" in msg and "not the detected answer 'Coldplay'" in msg and found in msg, msg


# --------------------------------------------------------------------------- one DataModule setup per layout


def _decoded_answers(dm: QADataModule) -> dict[str, set[str]]:
    """For every example, the texts its labelled features' start/end positions cover."""
    out: dict[str, set[str]] = {}
    for s, e, ex, offsets in zip(*(dm.eval_dataset[c] for c in ("start_positions", "end_positions", "example_index", "offset_mapping"))):
        example = dm.eval_examples[ex]
        if s or e:  # 0/0: this window does not hold the answer
            out.setdefault(example["id"], set()).add(example["context"][offsets[s][0] : offsets[e][1]])
    return out


def test_hotpotqa_datamodule(minilm_path: str, tmp_path: Path) -> None:
    path = _write_json(tmp_path / "hotpot_dev_distractor_v1.json", HOTPOT)
    dm = QADataModule(tokenizer=minilm_path, name="hotpotqa", layout="hotpotqa", yes_no="prepend", hub_name=None,
                      train_file=str(path), validation_file=str(path), max_seq_length=64, doc_stride=24,
                      cache_dir=str(tmp_path / "cache"))  # fmt: skip
    dm.setup("fit")
    assert len(dm.eval_examples) == 3 and len(dm.eval_dataset) > 3  # the bridge context needs several windows
    assert _decoded_answers(dm) == {ex["_id"]: {ex["answer"]} for ex in HOTPOT[:3]}
    assert len(dm.train_features) == len(dm.eval_dataset)


def test_mrqa_datamodule(minilm_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_hub(monkeypatch, _mrqa_hub(SQUAD_LINES, NEWSQA_LINES))
    dm = QADataModule(tokenizer=minilm_path, name="mrqa", layout="mrqa", subset="SQuAD", hub_name="mrqa-workshop/mrqa",
                      max_seq_length=48, doc_stride=16, cache_dir=str(tmp_path / "cache"))  # fmt: skip
    dm.setup("fit")
    assert [ex["id"] for ex in dm.eval_examples] == [qid for qid, _ in SQUAD_EXPECTED]
    assert _decoded_answers(dm) == {qid: {answers["text"][0]} for qid, answers in SQUAD_EXPECTED}
