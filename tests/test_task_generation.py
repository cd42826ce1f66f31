"""Generation prompts as task data (issue 28): ``load_items(answer="generate")`` renders each item
as a multiple-choice question with lettered options from the task's ``generate:`` block (or one
derived from its prompt), answered by a letter; log-likelihood items stay exactly as they were.
No model loads here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from salad_eval import tasks
from salad_eval.errors import SaladError
from salad_eval.prompt import Speak, Text
from salad_eval.task_generation import INSTRUCTION, LETTERS

BUILTIN = [
    "demo",
    "arc_easy",
    "arc_challenge",
    "hellaswag",
    "mmlu",
    "mmlu_anatomy",
    "mmsu",
    "openbookqa",
    "piqa",
    "storycloze",
]
SPOKEN_OPTIONS = {"mmlu", "mmlu_anatomy", "mmsu"}  # their spoken question reads the options

# A user's task (no generate: block). Its fingerprint is the one salad gave it before generate:
# blocks existed: a task without a block keeps its fingerprint.
QUIZ_SPEC = """\
task: quiz
version: 1
text_task: quiz
data_files:
  test: quiz.jsonl
test_split: test
fewshot_split: test
id: "{{name}}"
prompt:
  - text: "Question: "
  - speak: "{{question}}"
  - text: "\\nAnswer:"
choices: options
target: label
"""
QUIZ_FINGERPRINT = "5b752ac17d5fa013"
QUIZ_ROWS = [
    {
        "name": "france",
        "question": "What is the capital of France?",
        "options": ["Paris", "Rome", "Madrid", "Oslo"],
        "label": 0,
    }
]
MORE_ROWS = [
    {
        "name": "japan",
        "question": "What is the capital of Japan?",
        "options": ["Seoul", "Tokyo", "Beijing", "Hanoi"],
        "label": 1,
    },
    {
        "name": "italy",
        "question": "What is the capital of Italy?",
        "options": ["Athens", "Vienna", "Rome", "Lisbon"],
        "label": 2,
    },
]
BLOCK = """\
generate:
  version: 1
  options: written
  prompt:
    - text: "Q: "
    - speak: "{{question}}"
    - options: "\\n({{letter}}) {{option}}"
    - text: "\\nLetter:"
"""


def _task(folder: Path, spec: str = QUIZ_SPEC, rows: list[dict] | None = None) -> Path:
    """A user's task folder (quiz.yaml + quiz.jsonl), the only one included."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "quiz.yaml").write_text(spec)
    lines = [json.dumps(row) for row in (QUIZ_ROWS if rows is None else rows)]
    (folder / "quiz.jsonl").write_text("".join(line + "\n" for line in lines))
    tasks._included.clear()
    tasks.include_paths([str(folder)])
    return folder


# Hub-schema rows of the built-in tasks that the local mirror may lack (not freely mirrored), so
# that every built-in block is rendered here: (mirror file, rows)
SYNTHETIC = {
    "piqa": (
        "baber/piqa/default/validation.jsonl",
        [{"goal": "To open a jar,", "sol1": "twist the lid.", "sol2": "bite it.", "label": 0}],
    ),
    "openbookqa": (
        "allenai/openbookqa/main/test.jsonl",
        [
            {
                "id": "7-980",
                "question_stem": "The sun is responsible for",
                "choices": {
                    "text": ["puppies learning", "plants sprouting", "rocks", "snow"],
                    "label": ["A", "B", "C", "D"],
                },
                "answerKey": "B",
            }
        ],
    ),
    "storycloze": (
        "LSDSem/story_cloze/2016/test.jsonl",
        [
            {
                "story_id": "s1",
                **{f"input_sentence_{n}": f"Sentence {n}." for n in range(1, 5)},
                "sentence_quiz1": "It ended well.",
                "sentence_quiz2": "It ended badly.",
                "answer_right_ending": 2,
            }
        ],
    ),
}


def _data_dir(name: str, tmp_path: Path, mirror: Path) -> str:
    """Where a built-in task's rows are: the local mirror, else a few rows written here."""
    if tasks.is_local(name, str(mirror)):
        return str(mirror)
    if name == "mmsu":
        return str(_mmsu_mirror(tmp_path))
    if name not in SYNTHETIC:
        pytest.skip(f"{name} is not in the local mirror ($SALAD_BENCHMARKS)")
    file, rows = SYNTHETIC[name]
    (tmp_path / file).parent.mkdir(parents=True)
    (tmp_path / file).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(tmp_path)


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_tasks_render_lettered_options(name, tmp_path, benchmarks_dir):
    data_dir = _data_dir(name, tmp_path, benchmarks_dir)
    spec = tasks.get_task(name)
    assert spec.generate is not None and tasks.generation(spec) is spec.generate
    assert spec.generate.version >= 1 and spec.generate.until == ("\n\n",)
    assert spec.generate.options == ("spoken" if name in SPOKEN_OPTIONS else "written")
    assert tasks.generation_problem(name, data_dir) is None
    loglik = tasks.load_items(name, limit=3, data_dir=data_dir)
    generated = tasks.load_items(name, limit=3, data_dir=data_dir, answer="generate")
    assert len(generated) == len(loglik)
    for gen, log in zip(generated, loglik, strict=True):
        same = ("task", "id", "domain", "target", "shots")
        assert [getattr(gen, key) for key in same] == [getattr(log, key) for key in same]
        assert gen.choices == tuple(LETTERS[: len(log.choices)])
        assert len(gen.options) == len(gen.choices)
        assert gen.spoken_texts == log.spoken_texts  # the question is spoken as in loglik
        assert gen.context[0] == log.context[0]  # the description (or header) is kept
        assert gen.text_context.endswith("Answer:")
        if gen.options == gen.choices:
            continue  # a VoiceBench MMSU row: its options are only in its transcript
        for letter, option in zip(gen.choices, gen.options, strict=True):
            assert f"\n{letter}. {option}" in gen.text_context
        spoken = " ".join(gen.spoken_texts)
        assert (f"\nA. {gen.options[0]}" in spoken) == (name in SPOKEN_OPTIONS)
        if spec.generate.option_texts is None:  # the options are the choices, no delimiter
            assert all(c.startswith(spec.target_delimiter) for c in log.choices)
            assert gen.options == tuple(c[len(spec.target_delimiter) :] for c in log.choices)
        else:  # MMLU, MMSU: the loglik choices are the letters themselves
            assert tuple(c.strip() for c in log.choices) == gen.choices


def test_mmlu_letters_stand_for_the_choices_column(benchmarks_dir):
    rows = (benchmarks_dir / "cais/mmlu/anatomy/test.jsonl").read_text().splitlines()[:3]
    data_dir = str(benchmarks_dir)
    items = tasks.load_items("mmlu_anatomy", limit=3, data_dir=data_dir, answer="generate")
    for item, row in zip(items, map(json.loads, rows), strict=True):
        assert item.options == tuple(row["choices"])
        assert item.choices[item.target] == "ABCD"[row["answer"]]


def test_few_shot_examples_are_answered_by_their_letter():
    letter = {i.spoken_texts[0]: LETTERS[i.target] for i in tasks.load_items("demo")}
    items = tasks.load_items("demo", limit=4, shots=3, answer="generate")
    loglik = tasks.load_items("demo", limit=4, shots=3)
    for item, log in zip(items, loglik, strict=True):
        assert item.shots == 3 and item.spoken_texts == log.spoken_texts  # the same examples
        answers = re.findall(r"\nAnswer: ([A-Z])\n\n", item.text_context)
        assert answers == [letter[question] for question in item.spoken_texts[:-1]]
        assert item.text_context.count(INSTRUCTION) == 4  # each example asks as the item does
        assert item.text_context.endswith(INSTRUCTION)
    first = items[0].text_context.split("\n\n")[0]
    assert first == (
        "Question: What pulls things down toward the ground?\n"
        "A. wind\nB. gravity\nC. light\nD. sound\n"
        "Answer with the letter of the correct option.\nAnswer: B"
    )


def test_mmlu_few_shot_in_generation_is_dev_answered_by_letter(benchmarks_dir):
    dev = (benchmarks_dir / "cais/mmlu/anatomy/dev.jsonl").read_text().splitlines()
    data_dir = str(benchmarks_dir)
    item = tasks.load_items("mmlu_anatomy", limit=1, shots=5, data_dir=data_dir, answer="generate")[
        0
    ]
    letters = re.findall(r"\nAnswer: ([A-D])\n\n", item.text_context)
    assert letters == ["ABCD"[json.loads(row)["answer"]] for row in dev[:5]]
    assert item.text_context.startswith("The following are multiple choice questions")
    assert len(item.spoken_texts) == 6


def test_shot_budget_counts_the_generation_prompt():
    def words(text: str) -> int:
        return len(text.split())

    full = tasks.load_items("demo", limit=6, shots=5, answer="generate")
    fitted = tasks.load_items(
        "demo", limit=6, shots=5, shot_budget=80, length=words, answer="generate"
    )
    assert min(i.shots for i in fitted) > 0 and max(i.shots for i in fitted) < 5
    for i, (whole, item) in enumerate(zip(full, fitted, strict=True)):
        k = item.shots
        assert item.spoken_texts == (*whole.spoken_texts[:k], whole.spoken_texts[-1])
        assert words(item.text_context) <= 80
        longer = tasks.load_items("demo", limit=6, shots=k + 1, answer="generate")[i]
        assert words(longer.text_context) > 80  # one more example would not fit
    wide = tasks.load_items(
        "demo", limit=6, shots=5, shot_budget=10**6, length=words, answer="generate"
    )
    assert wide == full


def test_loglik_items_are_unchanged():
    first = tasks.load_items("demo", limit=1)[0]
    assert first.context == (
        Text("Question: "),
        Speak("What is the capital city of France?"),
        Text("\nAnswer:"),
    )
    assert first.choices == (" Berlin", " Madrid", " Rome", " Paris") and first.target == 3
    assert first.options == ()
    shot = tasks.load_items("demo", limit=1, shots=1)[0]
    assert shot.text_context == (
        "Question: What pulls things down toward the ground?\nAnswer: gravity\n\n"
        "Question: What is the capital city of France?\nAnswer:"
    )
    assert tasks.load_items("demo", answer="loglik") == tasks.load_items("demo")


def test_unknown_answer_is_an_error():
    with pytest.raises(SaladError, match="answer 'choose' is not one of loglik, generate"):
        tasks.load_items("demo", limit=1, answer="choose")


def test_template_is_part_of_the_fingerprint(tmp_path):
    _task(tmp_path / "plain")
    plain = tasks.get_task("quiz")
    assert plain.generate is None and plain.fingerprint == QUIZ_FINGERPRINT
    prints = {plain.fingerprint}
    variants = [BLOCK, BLOCK.replace("version: 1", "version: 2"), BLOCK + '  until: ["\\n"]\n']
    variants.append(BLOCK.replace("\\nLetter:", "\\nYour letter:"))
    for number, block in enumerate(variants):
        _task(tmp_path / f"v{number}", QUIZ_SPEC + block)
        prints.add(tasks.get_task("quiz").fingerprint)
    assert len(prints) == 1 + len(variants)
    loglik = tasks.load_items("quiz")  # the last variant: a block moves no loglik item
    _task(tmp_path / "again")
    assert tasks.load_items("quiz") == loglik


def test_a_written_block_renders_as_written(tmp_path):
    _task(tmp_path / "quiz", QUIZ_SPEC + BLOCK + '  until: ["\\n", "Q:"]\n', QUIZ_ROWS + MORE_ROWS)
    spec = tasks.get_task("quiz")
    assert spec.generate.until == ("\n", "Q:") and spec.generate.options == "written"
    item = tasks.load_items("quiz", limit=1, answer="generate")[0]
    assert item.context == (
        Text("Q: "),
        Speak("What is the capital of France?"),
        Text("\n(A) Paris\n(B) Rome\n(C) Madrid\n(D) Oslo\nLetter:"),
    )
    spoken = QUIZ_SPEC + BLOCK.replace("written", "spoken")
    _task(tmp_path / "spoken", spoken, QUIZ_ROWS + MORE_ROWS)
    item = tasks.load_items("quiz", limit=1, answer="generate")[0]
    assert item.context[2] == Speak("\n(A) Paris\n(B) Rome\n(C) Madrid\n(D) Oslo")
    assert item.context[3] == Text("\nLetter:")


BAD_BLOCKS = [  # (generate: block, words of the one-line error)
    (BLOCK.replace("written", "typed"), "field generate.options: spoken or written, got 'typed'"),
    (BLOCK.replace("- options:", "- choices:"), "field generate.prompt[2]: one `text:`"),
    (BLOCK.replace("{{question}}", "{{question}"), "field generate.prompt[1]: bad template"),
    (BLOCK.replace("version: 1", "version: one"), "field generate.version: an integer"),
    (BLOCK.replace("version: 1", "version: 0"), "field generate.version: an integer from 1"),
    (BLOCK.replace("  version: 1\n", ""), "field generate.version is missing"),
    (BLOCK.replace("options: written", "option: written"), "unknown field 'option'"),
    (BLOCK + "  until: \\n\\n\n", "field generate.until: a list"),
    (BLOCK + '  until: [""]\n', "field generate.until"),
    (BLOCK + "  option_texts: choices[\n", "field generate.option_texts: bad expression"),
    (BLOCK + "    - speak: x\n      audio: a b\n", "field generate.prompt[4].audio: bad expr"),
    ("generate: [1]\n", "field generate: a mapping"),
]


@pytest.mark.parametrize(("block", "words"), BAD_BLOCKS)
def test_a_bad_block_is_one_line_naming_file_and_field(block, words, tmp_path):
    _task(tmp_path / "quiz", QUIZ_SPEC + block)
    with pytest.raises(SaladError) as err:
        tasks.get_task("quiz")
    message = str(err.value)
    assert "\n" not in message and "quiz.yaml" in message
    assert words in message, message


def test_a_task_without_a_block_gets_a_derived_template(tmp_path):
    _task(tmp_path / "quiz", rows=QUIZ_ROWS + MORE_ROWS)
    spec = tasks.get_task("quiz")
    derived = tasks.generation(spec)
    assert spec.generate is None and derived.derived
    assert (derived.version, derived.options, derived.until) == (0, "written", ("\n\n",))
    assert derived.prompt == (
        ("text", "Question: "),
        ("speak", "{{question}}"),
        ("options", "\n{{letter}}. {{option}}"),
        ("text", "\nAnswer with the letter of the correct option.\nAnswer:"),
    )
    assert tasks.generation_problem("quiz") is None
    items = tasks.load_items("quiz", answer="generate")
    assert items[0].text_context == (
        "Question: What is the capital of France?\nA. Paris\nB. Rome\nC. Madrid\nD. Oslo\n"
        "Answer with the letter of the correct option.\nAnswer:"
    )
    assert [i.choices[i.target] for i in items] == ["A", "B", "C"]
    assert items[1].options == ("Seoul", "Tokyo", "Beijing", "Hanoi")
    shot = tasks.load_items("quiz", limit=1, shots=1, answer="generate")[0]
    assert re.search(
        r"\nAnswer: [BC]\n\nQuestion: What is the capital of France", shot.text_context
    )


def test_a_prompt_without_an_answer_cue_keeps_all_its_parts(tmp_path):
    spec = QUIZ_SPEC.replace('  - text: "\\nAnswer:"\n', '  - text: "?"\n')
    _task(tmp_path / "quiz", spec)
    derived = tasks.generation(tasks.get_task("quiz"))
    assert derived.prompt[:3] == (("text", "Question: "), ("speak", "{{question}}"), ("text", "?"))


def test_letter_choices_without_a_block_cannot_be_derived(tmp_path):
    fixed = QUIZ_SPEC.replace("choices: options", "choices: \"['A', 'B', 'C', 'D']\"")
    _task(tmp_path / "fixed", fixed)
    problem = tasks.generation_problem("quiz")
    assert problem == (
        "task quiz has no generate: block and its choices are letters ('A', 'B', 'C', 'D'), so "
        "no multiple-choice prompt can be derived; add a generate: block (see tasks/mmlu.yaml)"
    )
    with pytest.raises(SaladError) as err:
        tasks.load_items("quiz", answer="generate")
    assert str(err.value) == problem
    assert tasks.load_items("quiz")[0].choices == (" A", " B", " C", " D")  # loglik still runs

    rows = [{**row, "letters": ["A", "B", "C", "D"]} for row in QUIZ_ROWS]  # letters in the data
    _task(tmp_path / "column", QUIZ_SPEC.replace("choices: options", "choices: letters"), rows)
    assert "choices are letters" in tasks.generation_problem("quiz")
    with pytest.raises(SaladError, match="add a generate: block"):
        tasks.load_items("quiz", answer="generate")

    written = fixed + BLOCK + "  option_texts: options\n"  # a block of its own: it runs
    _task(tmp_path / "block", written)
    assert tasks.generation_problem("quiz") is None
    item = tasks.load_items("quiz", answer="generate")[0]
    assert item.options == ("Paris", "Rome", "Madrid", "Oslo") and item.choices[item.target] == "A"


def test_option_texts_must_match_the_choices(tmp_path):
    _task(tmp_path / "quiz", QUIZ_SPEC + BLOCK + "  option_texts: options[:3]\n")
    with pytest.raises(SaladError, match="gives 3 options for 4 choices") as err:
        tasks.load_items("quiz", answer="generate")
    assert "\n" not in str(err.value) and "item france" in str(err.value)


MMSU = Path("hlt-lab/voicebench/mmsu")


def _mmsu_mirror(root: Path) -> Path:
    """A local MMSU mirror: an MMSU-schema row and a VoiceBench row, each with its recording."""
    data = root / MMSU
    (data / "clips").mkdir(parents=True)
    for name in ("sky", "libri"):
        sf.write(data / "clips" / f"{name}.wav", np.zeros(1600, dtype=np.float32), 16000)
    rows = [
        {
            "question_id": "sky",
            "question": "What color is the sky on a clear day?",
            "choices": ["green", "blue", "red", "black"],
            "answer": "B",
            "subject": "physics",
            "audio": "clips/sky.wav",
        },
        {
            "question_id": "libri",
            "prompt": "Which is a fruit? A. apple, B. stone, C. iron, D. glass",
            "reference": "A",
            "subject": "biology",
            "audio": "clips/libri.wav",
        },
    ]
    (data / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


def test_mmsu_generation_keeps_the_recording_on_its_spoken_part(tmp_path):
    mirror = _mmsu_mirror(tmp_path)
    loglik = tasks.load_items("mmsu", data_dir=str(mirror))
    items = tasks.load_items("mmsu", data_dir=str(mirror), answer="generate")
    for item, log in zip(items, loglik, strict=True):
        (speak,) = [part for part in item.context if isinstance(part, Speak)]
        assert speak == next(part for part in log.context if isinstance(part, Speak))
        assert speak.recording == str(mirror / MMSU / "clips" / f"{item.id}.wav")
        assert item.target == log.target and item.choices == ("A", "B", "C", "D")
        assert item.text_context.endswith(
            "\nAnswer with the letter of the correct option.\nAnswer:"
        )
    assert items[0].options == ("green", "blue", "red", "black")
    assert items[0].spoken_texts == (
        "What color is the sky on a clear day?\nA. green\nB. blue\nC. red\nD. black",
    )
    assert items[1].options == ("A", "B", "C", "D")  # VoiceBench rows: only their transcript
    assert tasks.generation_problem("mmsu", data_dir=str(mirror)) is None
