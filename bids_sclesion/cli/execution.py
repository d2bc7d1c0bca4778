"""How the participant workflow runs: Nipype's settings, the execution plugin, progress lines."""
from __future__ import annotations

import os
import time
from pathlib import Path

from .parser import ExitCode


class AppError(Exception):
    """A run that cannot go on: printed as ``bids_sclesion: error: <message>``, exit ``code``."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def nipype_settings(args, work_dir: Path) -> dict:
    """Nipype's configuration for a run (logging, and what a failed step does to the others)."""
    # Nipype's node-by-node log is shown from -v on; the progress lines are always shown.
    level = "INFO" if args.verbose else "WARNING"
    return {"logging": {"log_directory": str(work_dir), "log_to_file": False, "workflow_level": level,
                        "interface_level": level, "utils_level": level},
            "execution": {"hash_method": "content",
                          "stop_on_first_crash": "true" if args.stop_on_first_crash else "false"}}


def progress_callback(total: int, names: dict[str, str]):
    """Nipype status callback: one line per finished or failed step, with per-subject and overall counts."""
    per_subject: dict[str, int] = {}
    for name in names.values():
        subject = name.split("_")[0]
        per_subject[subject] = per_subject.get(subject, 0) + 1
    state = {"images_done": 0, "subject_done": {s: 0 for s in per_subject}}
    started = time.time()

    from nipype.interfaces.utility import Merge, Split

    from ..interfaces.bids import DerivativesSink, WarpsSink

    def callback(node, status):
        parts = node.fullname.split(".")
        image = next((names[p] for p in parts if p in names), None)
        # Plumbing (lists merged and split) and the warps' own sink are not steps a user follows;
        # the lesion outputs' sink is the image's last step.
        if image is None or status == "start" or isinstance(node.interface, (Merge, Split, WarpsSink)):
            return
        step = parts[-1]
        subject = image.split("_")[0]
        if status == "exception":
            print(f"[{image}] {step}: FAILED", flush=True)
        elif isinstance(node.interface, DerivativesSink):
            state["images_done"] += 1
            state["subject_done"][subject] = state["subject_done"].get(subject, 0) + 1
            elapsed = time.time() - started
            left = elapsed / state["images_done"] * (total - state["images_done"])
            print(f"[{image}] done: {subject} {state['subject_done'][subject]}/{per_subject.get(subject, '?')} "
                  f"image(s), all {state['images_done']}/{total} ({elapsed:.0f} s, about {left:.0f} s left)",
                  flush=True)
        else:
            print(f"[{image}] {step}", flush=True)

    return callback


#: Workers start from a clean server process, not as forks of this one: this process has used PyTorch (the
#: models are checked before the run) and a forked copy of its OpenMP thread pool can hang forever.
MULTIPROC_START_METHOD = "forkserver"
#: Nipype looks for finished steps every 2 s by default; most steps here take 0.1-3 s, so the workers would
#: sit idle for half of the run (10 subjects on 2 cores: 86 s at 2 s, 42 s at 0.2 s).
MULTIPROC_POLL_SECONDS = 0.2


def plugin_for(args, nprocs: int):
    if args.use_plugin:
        import yaml

        try:
            conf = yaml.safe_load(Path(args.use_plugin).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise AppError(f"{args.use_plugin}: cannot read plugin file ({exc})", ExitCode.INVALID_ARGUMENTS) from exc
        if "plugin" not in conf:
            raise AppError(f"{args.use_plugin}: missing 'plugin' key", ExitCode.INVALID_ARGUMENTS)
        plugin_args = dict(conf.get("plugin_args") or {})
        if conf["plugin"] == "MultiProc":
            plugin_args.setdefault("mp_context", MULTIPROC_START_METHOD)
            plugin_args.setdefault("poll_sleep_duration", MULTIPROC_POLL_SECONDS)
        return conf["plugin"], plugin_args
    if nprocs == 1:
        return "Linear", {}
    plugin_args = {"n_procs": nprocs, "raise_insufficient": False, "mp_context": MULTIPROC_START_METHOD,
                   "poll_sleep_duration": MULTIPROC_POLL_SECONDS}
    memory_gb = args.mem_gb if args.mem_gb else (args.mem / 1024 if args.mem else None)
    if memory_gb:
        plugin_args["memory_gb"] = memory_gb
    return "MultiProc", plugin_args


def user_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a user id without a passwd entry (Singularity, docker --user)
        return f"uid{os.getuid()}"
