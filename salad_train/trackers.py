"""Training metrics through accelerate's trackers (TensorBoard, Weights & Biases, trackio).

Off by default: ``train.report_to=tensorboard`` (or a list) turns them on; each tracker's package
is an optional extra (``pip install 'salad[tensorboard]'``). Every row that ``metrics.jsonl``
gets is logged to them too, at its training step; the CTC warm-up's rows go under ``align/`` at
their warm-up step. TensorBoard writes under ``<train.out_dir>/trackers``; W&B and trackio use
their own settings (``WANDB_MODE=offline``, say).
"""

from __future__ import annotations

from salad_eval.errors import SaladError

TRACKERS = {  # name -> (accelerate's availability check, the extra that installs it)
    "tensorboard": ("is_tensorboard_available", "tensorboard"),
    "wandb": ("is_wandb_available", "wandb"),
    "trackio": ("is_trackio_available", "trackio"),
}


def check_trackers(report_to: list[str]) -> None:
    """Each named tracker is known and installed (a one-line error before any work)."""
    import accelerate.utils as utils  # noqa: PLC0415 - deferred: heavy accelerate, loaded on this path only

    for name in report_to:
        if name not in TRACKERS:
            raise SaladError(
                f"train.report_to {name!r} is not a tracker; use one of "
                f"{', '.join(TRACKERS)} (or none)"
            )
        available, extra = TRACKERS[name]
        check = getattr(utils, available, None)
        if check is None or not check():
            raise SaladError(
                f"train.report_to {name} needs its package: pip install 'salad[{extra}]'"
            )


def tracker_row(row: dict) -> tuple[dict[str, float], int]:
    """A metrics row as tracker scalars and their step (warm-up rows under ``align/``, a
    probe's figures under ``probe/``)."""
    flat = {
        **row,
        **{
            f"{k}/{n}": v for k, sub in row.items() if isinstance(sub, dict) for n, v in sub.items()
        },
    }
    values = {
        k: float(v)
        for k, v in flat.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    if "align_step" in values:
        step = int(values.pop("align_step"))
        values.pop("step", None)
        return {f"align/{k}": v for k, v in values.items()}, step
    return {k: v for k, v in values.items() if k != "step"}, int(row.get("step", 0))


def flat_config(tree: dict, prefix: str = "") -> dict:
    """A config as the flat scalar mapping trackers store as hyperparameters."""
    flat: dict = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}."))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[name] = "none" if value is None else value
        else:
            flat[name] = str(value)
    return flat
