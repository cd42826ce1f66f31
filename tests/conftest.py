"""Shared test fixtures. Tests run offline with the real embedded assets at small scale."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The kernel caps of the numerics tier (`make test`): ATen's own kernels, MKL's and oneDNN's
CPU_CAPS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")


def _cpu_capability_line() -> str:
    import torch

    caps = ", ".join(f"{name}={os.environ[name]}" for name in CPU_CAPS if os.environ.get(name))
    return f"cpu capability: {torch.backends.cpu.get_cpu_capability()} ({caps or 'no cap set'})"


def pytest_sessionstart(session: pytest.Session) -> None:
    """A capped run runs the kernels it names, or stops: torch falls back to its own choice
    without a word when it does not take the ATEN_CPU_CAPABILITY given (a typo, say)."""
    import torch

    requested = os.environ.get("ATEN_CPU_CAPABILITY")
    actual = torch.backends.cpu.get_cpu_capability()
    if requested and requested.upper() != actual:
        raise pytest.UsageError(
            f"ATEN_CPU_CAPABILITY={requested} is set but torch reports CPU capability {actual}: "
            "this run would not test the kernels it names"
        )


# The files that take minutes (each a few whole gap runs or a toy training loop), longest first.
# `make test` spreads files over two processes (pytest-xdist, --dist loadfile) in collection
# order; starting these first keeps one process from running a long file alone at the end.
# This changes only the order, never which tests run.
LONG_FILES = (
    "test_pipeline.py",
    "test_gap_run.py",
    "test_seeds.py",
    "test_audio_exchange.py",
    "test_coqui.py",
    "test_gap_generate.py",
    "test_api.py",
    "test_own_data.py",
    "test_endpoint.py",
    "test_batched_scoring.py",
    "test_scoring_lm_eval.py",
    "test_page_browser.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: file order


def pytest_report_header(config: pytest.Config) -> str:
    return _cpu_capability_line()


def pytest_terminal_summary(terminalreporter) -> None:
    """Also at the end, where ``-q`` (no header) shows it: which kernels this tier ran."""
    terminalreporter.write_line(_cpu_capability_line())


@pytest.fixture(autouse=True)
def _own_rebuilt_counts() -> None:
    """Each test sees only the bad entries it rebuilt: the CLI prints the process-wide count."""
    from salad_eval import home

    home.REBUILT.clear()


@pytest.fixture(autouse=True)
def _no_included_tasks():
    """--include-path folders are per process: a test that adds one (in-process CLI runs too)
    leaves none behind for the next."""
    from salad_eval import tasks

    tasks._included.clear()
    yield
    tasks._included.clear()


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    """The local benchmark mirror (``<org>/<name>/<config>/<split>.jsonl``): $SALAD_BENCHMARKS."""
    default = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
    path = Path(os.environ.get("SALAD_BENCHMARKS", default))
    assert path.is_dir(), f"benchmark mirror not found at {path}; set SALAD_BENCHMARKS"
    return path


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    """A tiny random Qwen2 (the paper's LLM architecture) with SmolLM2's tokenizer, saved in bf16
    as Qwen2.5 checkpoints are; pass its path wherever an LLM name goes (``model.llm``)."""
    from salad_eval.assets import llm_path
    from salad_eval.models.tiny_random import save_tiny_qwen2

    return save_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"), llm_path())


@pytest.fixture(scope="module")
def fresh_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty cache home per module that shares only the prepared assets of the real one
    ($SALAD_HOME points at it for the module), so "made" and "cached" counts are real."""
    from salad_eval.home import home

    assets = home() / "assets"
    assets.mkdir(exist_ok=True)
    path = tmp_path_factory.mktemp("salad_home")
    (path / "assets").symlink_to(assets)
    old = os.environ.get("SALAD_HOME")
    os.environ["SALAD_HOME"] = str(path)
    yield path
    if old is None:
        del os.environ["SALAD_HOME"]
    else:
        os.environ["SALAD_HOME"] = old


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """The family tests' eSpeak clips (``family_checks.speech_clips``), made once per module."""
    from family_checks import speech_clips

    return speech_clips(tmp_path_factory.mktemp("audio"))


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one process-wide state and refuses another mixed precision once set; a
    test that needs its own (bf16 autocast on CPU) starts and ends with a clean one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised SALAD checkpoint: small adapter, frozen SmolLM2, Whisper tiny.en."""
    from salad_eval.models.speech_lm import SpeechLM, SpeechLMConfig

    config = SpeechLMConfig(adapter_layers=1, adapter_width=64, adapter_heads=2)
    return SpeechLM.from_config(config, seed=0).save(tmp_path_factory.mktemp("ckpt") / "random")
