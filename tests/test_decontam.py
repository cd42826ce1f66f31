"""`salad-train decontam`: evaluation items sharing a word n-gram with the training texts."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from salad_eval.prompt import Item, Speak, Text
from salad_train.cli import app
from salad_train.decontam import check_items, index, ngrams

TRAINING = {
    "data.corpus": [
        "Yesterday the old lighthouse keeper painted every window of the "
        "tower bright blue before the storm."
    ]
}


def _item(question: str, choices=("yes", "no"), item_id: str = "q") -> Item:
    return Item(
        "t",
        item_id,
        "d",
        (Text("Question: "), Speak(question), Text("\nAnswer:")),
        tuple(" " + c for c in choices),
        0,
    )


def test_words_are_lowercased_without_punctuation():
    assert ngrams("The Old, old -- LIGHTHOUSE!", 3) == ["the old old", "old old lighthouse"]
    assert ngrams("seven words are too few for this", 8) == []


def test_a_planted_8_gram_is_flagged_and_a_7_word_overlap_is_not():
    seen = index(TRAINING)
    planted = _item("Why had the OLD lighthouse keeper painted every window of it?", item_id="hit")
    near = _item(
        "Did the old lighthouse keeper painted every window? No, he did not.", item_id="near"
    )  # 7 shared words: "the old lighthouse keeper painted every window"
    in_choice = _item(
        "What colour?", ("keeper painted every window of the tower bright", "red"), item_id="choice"
    )
    # the prompt's text parts are not checked: only 7 spoken words meet the training text here
    text_part = Item(
        "t",
        "text",
        "d",
        (Text("Yesterday "), Speak("the old lighthouse keeper painted every window")),
        (" yes",),
        0,
    )
    report = check_items(seen, [planted, near, in_choice, text_part])
    assert report["items"] == 4 and report["flagged"] == 2
    assert report["flagged_items"] == [
        {
            "id": "hit",
            "ngram": "the old lighthouse keeper painted every window of",
            "source": "data.corpus",
        },
        {
            "id": "choice",
            "ngram": "keeper painted every window of the tower bright",
            "source": "data.corpus",
        },
    ]
    assert report["too_short"] == 1  # the last: 7 spoken words, one-word choices
    assert check_items(seen, [_item("What colour?")])["too_short"] == 1


def test_tiny_config_vs_the_demo_task(tmp_path):
    """The tiny preset's training texts (its everyday prose corpus, the Stage II pool) against the
    demo task: both were written for salad, the prose without reading the demo items, and share
    no 8 consecutive words."""
    out = tmp_path / "decontam.json"
    done = CliRunner().invoke(
        app, ["decontam", "--config", "tiny", "--tasks", "demo", "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    assert "demo: 330 items checked, 140 shorter than 8 words, 0 sharing 8 consecutive" in (
        done.output
    )
    report = json.loads(out.read_text())
    assert report["n"] == 8 and report["exclude"] == {"demo": []}
    assert report["sources"] == {"data.corpus": 1059, "data.tasks": 0, "select.pool": 1155}
