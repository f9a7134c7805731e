"""Extractive-QA sources: SQuAD (nested JSON or flat HF rows), HotpotQA (distractor) and MRQA, as one schema::

    id, title, context, question, answers {text: [str], answer_start: [int]}, is_impossible

Each layout is one adapter ``rows -> schema`` (a batched ``map``) in :data:`LAYOUTS`; the checks that scoring by
question id and the training labels rely on then run over the result (:func:`check_qa`). A new dataset in an
existing layout is one YAML in ``conf/data``; a new layout is one adapter here.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Callable
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from skim.data.sources import BadRow, load_rows, quiet, take_split
from skim.errors import DataError, one_line

log = logging.getLogger(__name__)

QA_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": {
            "text": datasets.List(datasets.Value("string")),
            "answer_start": datasets.List(datasets.Value("int32")),
        },
        "is_impossible": datasets.Value("bool"),
    }
)
# what the adapters emit: each question's row in the source (``sources.Source``) and its path inside that row
ROWS = datasets.Features({**QA_FEATURES, "_row": datasets.Value("int64"), "_in": datasets.Value("string")})
# v1.1 scoring takes the best match over a question's gold answers: a question without one cannot be scored
V1_NEEDS_ANSWERS = (
    "SQuAD v1.1 data needs an answer for every question; for data with unanswerable questions use data=squad_v2"
)


def _columns() -> dict[str, list]:
    return {name: [] for name in ROWS}


def _add(out: dict[str, list], row, inner, qid, title, context, question, texts, starts, impossible=False) -> None:
    answers = {"text": texts, "answer_start": starts}
    for key, value in zip(ROWS, (qid, title or "", context, question, answers, bool(impossible), row, inner)):
        out[key].append(value)


def _squad_articles(batch: dict[str, list]) -> dict[str, list]:
    """The official nested layout (``data[].paragraphs[].qas[]``) as one row per question."""
    out = _columns()
    titles = batch.get("title") or [""] * len(batch["paragraphs"])
    for row, title, paragraphs in zip(batch["_row"], titles, batch["paragraphs"]):
        for i, p in enumerate(paragraphs or []):
            for k, qa in enumerate(p["qas"] or []):
                answers = qa.get("answers") or []
                _add(out, row, f".paragraphs[{i}].qas[{k}]", qa["id"], title, p["context"], qa["question"],
                     [a["text"] for a in answers], [a["answer_start"] for a in answers], qa.get("is_impossible"))  # fmt: skip
    return out


def squad(rows: datasets.Dataset, **_: Any) -> datasets.Dataset:
    """Nested SQuAD JSON (``field: data``) or the flat HF layout (parquet, JSONL, the Hub ``squad`` datasets)."""
    if "paragraphs" in rows.column_names:
        return rows.map(_squad_articles, batched=True, remove_columns=rows.column_names, features=ROWS)
    for name, fill in (("title", ""), ("is_impossible", False), ("_in", "")):
        if name not in rows.column_names:
            rows = rows.add_column(name, [fill] * len(rows))
    table = rows.with_format("arrow")
    if rows.features["is_impossible"].dtype != "bool" or table["is_impossible"].null_count or table["title"].null_count:
        # a null flag is a question not marked unanswerable (the Hub's squad_v2 has no flag: no answers say it)
        rows = rows.map(
            lambda b: {"title": [t or "" for t in b["title"]], "is_impossible": [bool(x) for x in b["is_impossible"]]},
            batched=True,
        )
    return rows.select_columns(list(ROWS)).cast(ROWS)


# ---- HotpotQA (distractor) ------------------------------------------------------------------------------------------
YES_NO_PREFIX = "yes no "  # Block-Skim's add_yes_no: the two answers become spans at the front (never truncated away)


def _hotpot_articles(batch: dict[str, list], yes_no: str) -> dict[str, list]:
    out = _columns()
    ids = batch["_id"] if "_id" in batch else batch["id"]  # the published JSON says "_id", the Hub rows "id"
    rows = zip(batch["_row"], ids, batch["question"], batch["answer"], batch["context"], batch["supporting_facts"])
    for row, qid, question, answer, ctx, facts in rows:
        # published JSON: [[title, [sentences]], ...] and [[title, sent_id], ...]; the Hub: the same as dicts of lists
        paragraphs = zip(ctx["title"], ctx["sentences"]) if isinstance(ctx, dict) else ctx
        facts = set(zip(facts["title"], facts["sent_id"])) if isinstance(facts, dict) else {(t, k) for t, k in facts}
        answer = answer.strip()
        is_yes_no = answer.lower() in ("yes", "no")
        if is_yes_no and yes_no == "drop":
            continue
        prefix = YES_NO_PREFIX if yes_no == "prepend" else ""
        # Block-Skim's context: a paragraph's sentences joined as given (each carries its own leading space), the
        # paragraphs by one space, no titles; here all ten paragraphs in the order given (Block-Skim: the 2 gold ones)
        texts, evidence, at = [], [], len(prefix)
        for title, sentences in paragraphs:
            for k, sentence in enumerate(sentences):
                if (title, k) in facts:  # a supporting fact's characters (ids past a paragraph's end never match)
                    evidence.append((at, at + len(sentence)))
                at += len(sentence)
            texts.append("".join(sentences))
            at += 1
        context = prefix + " ".join(texts)
        if is_yes_no:
            answer = answer.lower()
            start = context.find(answer)  # inside the prefix
        else:  # the first occurrence inside a supporting-fact sentence, else the first anywhere (Block-Skim: anywhere)
            start = next((i for a, b in evidence if (i := context.find(answer, a, b)) >= 0), context.find(answer))
        if start < 0 or not answer:
            continue  # not a span of the paragraphs: cannot be extracted; dropped and counted
        _add(out, row, "", qid, "", context, question, [answer], [start])
    return out


def hotpotqa(rows: datasets.Dataset, *, yes_no: str = "drop", **_: Any) -> datasets.Dataset:
    """HotpotQA distractor (the published JSON list or the Hub ``hotpot_qa`` rows) as extractive QA: the ten
    paragraphs concatenated in the order given, the answer at its first occurrence in a supporting-fact sentence (else
    its first occurrence). Yes/no answers are dropped (``yes_no: drop``) or made extractable as in Block-Skim by
    prefixing every context with ``"yes no "`` (``yes_no: prepend``); answers found nowhere are dropped. Both counted."""
    out = rows.map(_hotpot_articles, batched=True, remove_columns=rows.column_names, features=ROWS,
                   fn_kwargs={"yes_no": yes_no})  # fmt: skip
    answers = pc.utf8_lower(pc.utf8_trim_whitespace(rows.with_format("arrow")["answer"]))
    n_yes_no = int(pc.sum(pc.is_in(answers, value_set=pa.array(["yes", "no"]))).as_py() or 0)
    n_missing = len(rows) - len(out) - (n_yes_no if yes_no == "drop" else 0)
    log.info("HotpotQA: %d of %d questions kept; %d yes/no (%s); %d answers not found in the paragraphs (dropped)",
             len(out), len(rows), n_yes_no, "dropped" if yes_no == "drop" else "'yes no ' prepended", n_missing)  # fmt: skip
    return out


# ---- MRQA 2019 shared task ------------------------------------------------------------------------------------------
def _loose(text: str) -> str:
    """Letters and digits only, lower case, accents dropped: what a detected answer and its span must share."""
    return "".join(ch for ch in unicodedata.normalize("NFKD", text.lower()) if ch.isalnum())


def _mrqa_question(out: dict[str, list], row, inner, qid, subset, context, question, spans) -> None:
    """``spans``: (detected text, start, end inclusive). The answer text is the context slice ``context[s:e+1]``:
    the char span is what locates the answer (``text`` is the string the span was detected for and may differ from
    the slice in case, whitespace or punctuation, and the Hub rows hold it stripped), and the labels need the exact
    slice at ``answer_start``. A span whose slice is not the detected text even loosely (case, whitespace and
    punctuation aside) is shifted or out of the context: it is reported, not guessed at. Spans are sorted: the training
    label (the first answer) is the earliest span, as in the MRQA BERT baseline that Block-Skim's ``run_mrqa`` uses."""
    texts, starts = [], []
    for text, s, e in sorted(set(spans), key=lambda t: (t[1], t[2])):
        found = context[s : e + 1] if 0 <= s <= e else ""
        if _loose(found) != _loose(text):
            raise BadRow(row, f"char span [{s}, {e}] holds {found[:60]!r}, not the detected answer {text[:60]!r} "
                         f"(context length {len(context)})", f"{inner}, id {qid!r}")  # fmt: skip
        if (found, s) not in zip(texts, starts):
            texts.append(found)
            starts.append(s)
    _add(out, row, inner, qid, subset, context, question, texts, starts)


def _mrqa_contexts(batch: dict[str, list], subset: str) -> dict[str, list]:
    out = _columns()
    for row, context, qas in zip(batch["_row"], batch["context"], batch["qas"]):
        for k, qa in enumerate(qas):
            spans = [(a["text"], s, e) for a in qa["detected_answers"] for s, e in a["char_spans"]]
            _mrqa_question(out, row, f", qas[{k}]", qa["qid"], subset, context, qa["question"], spans)
    return out


def _mrqa_hub(batch: dict[str, list]) -> dict[str, list]:
    out = _columns()
    tokens = batch.get("context_tokens") or [None] * len(batch["qid"])
    rows = zip(batch["_row"], batch["qid"], batch["subset"], batch["context"], batch["question"], batch["detected_answers"], tokens)
    for row, qid, subset, context, question, detected, toks in rows:
        # the Hub's loading script stripped each context but kept the offsets into the raw one (SQuAD has contexts
        # that begin with whitespace): shift back by the raw offset of the first token, which now begins the context
        lead = next((o for t, o in zip(toks["tokens"], toks["offsets"]) if t.strip()), 0) if toks else 0
        spans = [(t, s - lead, e - lead) for t, cs in zip(detected["text"], detected["char_spans"])
                 for s, e in zip(cs["start"], cs["end"])]  # fmt: skip
        _mrqa_question(out, row, "", qid, subset, context, question, spans)
    return out


def mrqa(rows: datasets.Dataset, *, subset: str | None = None, **_: Any) -> datasets.Dataset:
    """MRQA 2019 shared task: a published ``.jsonl.gz`` (one file per data set: a ``{"header": {"dataset", "split"}}``
    line, then one line per context with its ``qas``) or the Hub ``mrqa`` rows (one per question, all data sets, a
    ``subset`` column), kept to ``data.subset`` when set. Answers come from ``detected_answers`` char spans."""
    local = "qas" in rows.column_names
    column = "header" if local else "subset"
    names = rows.with_format("arrow")[column] if column in rows.column_names else pa.array([], pa.string())
    names = pc.unique(pc.drop_null(pc.struct_field(names, "dataset") if local and len(names) else names)).to_pylist()
    if subset and names and subset not in names:  # (a file without the header line names no data set)
        raise DataError(f"MRQA: no questions of data.subset={subset!r}; this data holds: {', '.join(names)}")
    if local:  # the header line is a row without a context
        rows = rows.filter(lambda b: [c is not None for c in b["context"]], batched=True)
        name = subset or (names[0] if len(names) == 1 else "")
        return rows.map(_mrqa_contexts, batched=True, remove_columns=rows.column_names, features=ROWS,
                        fn_kwargs={"subset": name})  # fmt: skip
    if subset:
        rows = rows.filter(lambda b: [s == subset for s in b["subset"]], batched=True)
    return rows.map(_mrqa_hub, batched=True, remove_columns=rows.column_names, features=ROWS)


LAYOUTS: dict[str, Callable[..., datasets.Dataset]] = {"squad": squad, "hotpotqa": hotpotqa, "mrqa": mrqa}
# builder arguments per local format: the official SQuAD JSON holds its articles under "data"
FILE_KWARGS = {"squad": {".json": {"field": "data"}}}


def check_qa(batch: dict[str, list], *, require_answers: bool) -> None:
    """What scoring by question id and the answer-span labels rely on; a shifted ``answer_start`` would silently
    corrupt the labels, so it is reported, never repaired."""
    for row, inner, qid, context, question, answers, impossible in zip(
        batch["_row"], batch["_in"], batch["id"], batch["context"], batch["question"], batch["answers"], batch["is_impossible"]
    ):
        at = f"{inner}, id {qid!r}"
        if not (qid or "").strip():
            raise BadRow(row, "empty id (predictions are scored by question id)", inner)
        for name, text in (("context", context), ("question", question)):
            if not (text or "").strip():
                raise BadRow(row, f"empty {name}", at)  # a missing field reads as null: empty too
        texts, starts = answers["text"], answers["answer_start"]
        if impossible and texts:
            raise BadRow(row, f"is_impossible is true but {len(texts)} answer(s) are given (unanswerable questions must have answers [])", at)
        if require_answers and not texts:
            raise BadRow(row, f"{'is_impossible is true' if impossible else 'question has no answers'}; {V1_NEEDS_ANSWERS}", at)
        if len(texts) != len(starts):
            raise BadRow(row, f"answers have {len(texts)} texts but {len(starts)} answer_start values", at)
        for a, (text, start) in enumerate(zip(texts, starts)):
            if not (text or "").strip():
                raise BadRow(row, f"answers[{a}]: empty answer text", at)
            found = context[start : start + len(text)] if start is not None and start >= 0 else ""
            if found != text:
                raise BadRow(row, f"answers[{a}]: answer_start {start} does not match the context: expected {text[:60]!r}, "
                             f"context has {found[:60]!r} there (context length {len(context)})", at)  # fmt: skip


def load_qa(
    source: str | None,
    *,
    layout: str,
    split: str,
    require_answers: bool,
    layout_options: dict | None = None,
    **load: Any,
) -> datasets.Dataset:
    """One split of extractive-QA data in :data:`QA_FEATURES`, checked."""
    if layout not in LAYOUTS:
        raise DataError(f"unknown QA layout data.layout={layout!r}; known: {', '.join(LAYOUTS)}")
    src = load_rows(source, split=split, file_kwargs=FILE_KWARGS.get(layout), **load)
    with src.checking():
        try:
            parts = {name: LAYOUTS[layout](rows, **(layout_options or {})) for name, rows in src.parts.items()}
        except (KeyError, TypeError, ValueError) as err:  # a field the layout needs is absent or of another type
            raise DataError(f"{src.where}: not in the {layout} layout ({type(err).__name__}: {one_line(err)})") from err
        qa = take_split(parts, split, src.where)
        ids = qa.with_format("arrow")["id"]
        counts = pc.value_counts(ids)
        duplicated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
        if len(duplicated):  # the second question with the id is the one reported
            qid = duplicated[0].as_py()
            second = qa[pc.indices_nonzero(pc.equal(ids, qid))[1].as_py()]
            raise BadRow(second["_row"], f"duplicate id {qid!r} (an earlier question has it; predictions are scored by "
                         "question id)", second["_in"])  # fmt: skip
        with quiet():  # a map that returns nothing writes nothing; the first bad row raises
            qa.map(check_qa, batched=True, batch_size=10_000, fn_kwargs={"require_answers": require_answers},
                   load_from_cache_file=False)  # fmt: skip
    return qa.remove_columns(["_row", "_in"])
