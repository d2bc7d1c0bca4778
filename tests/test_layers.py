"""The package's import layers: cli -> workflows -> interfaces (and training, reports) -> model -> scoring and
BIDS bookkeeping -> core/utils.

Every import inside the package, at module level or inside a function, goes to the same layer or below.
Numerical code (core, utils) knows nothing of models, Nipype or the command line.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bids_sclesion"
#: Top to bottom. A subpackage or module may import from its own layer and the layers below it.
LAYERS = (
    ("cli",),
    ("workflows",),
    ("interfaces", "training", "reports", "group"),
    ("model", "phantoms"),
    ("evaluate", "derivatives", "bids", "failures", "provenance", "config"),
    ("core", "utils", "__about__", "__init__", "__main__"),
)
LAYER_OF = {name: depth for depth, names in enumerate(LAYERS) for name in names}


def _unit(parts: tuple[str, ...]) -> str:
    """The layer unit of a module path inside the package: its subpackage, or the top-level module."""
    return parts[0] if parts else "__init__"


def _imports(path: Path):
    rel = path.relative_to(PACKAGE).with_suffix("").parts
    package = rel[:-1]  # the package the module lives in (relative imports start there)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (tuple(node.module.split(".")) if node.module else ())
                if not node.module:  # from . import x: x is a module of that package
                    for alias in node.names:
                        yield node.lineno, target + (alias.name,)
                    continue
                yield node.lineno, target
            elif node.module and node.module.split(".")[0] == PACKAGE.name:
                yield node.lineno, tuple(node.module.split(".")[1:])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE.name:
                    yield node.lineno, tuple(alias.name.split(".")[1:])


def test_every_unit_has_a_layer():
    units = {_unit(p.relative_to(PACKAGE).with_suffix("").parts) for p in PACKAGE.rglob("*.py")}
    assert units <= set(LAYER_OF), f"give these a layer in LAYERS: {sorted(units - set(LAYER_OF))}"


def test_imports_never_go_up_a_layer():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _unit(path.relative_to(PACKAGE).with_suffix("").parts)
        for line, target in _imports(path):
            unit = _unit(target)
            if unit in LAYER_OF and LAYER_OF[unit] < LAYER_OF[source]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({source}) imports {'.'.join(target)} ({unit})")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


EXPERIMENTS = PACKAGE.parent / "experiments"


def test_experiment_configs_parse_as_training_options():
    from bids_sclesion.cli.train import get_parser, read_config

    configs = sorted((EXPERIMENTS / "configs").glob("*.yaml"))
    assert configs, "experiments/configs holds the recipes' training settings"
    parser = get_parser()
    for path in configs:
        assert read_config(path, parser).get("space") in ("straight", "native"), path


def test_experiment_recipes_are_valid_shell_and_no_recipe_is_left_in_scripts():
    import subprocess

    for path in sorted((EXPERIMENTS / "recipes").glob("*.sh")):
        assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0, path
    assert not list((PACKAGE.parent / "scripts").glob("train_*.sh")), "training recipes belong in experiments/"


def test_finetune_folder_names_the_bundled_fine_tunings():
    """Both stage-2 recipes find the fine-tuning by datasets.sh's one naming function."""
    import subprocess

    def folder(env: str) -> str:
        script = f'. "{EXPERIMENTS / "datasets.sh"}"; {env} finetune_folder 4000'
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.strip()

    assert folder("") == "stage2_v3_finetune_4000"
    assert folder('SEED=1 WEIGHTS="5 1 1 1"') == "stage2_v3_finetune_4000_seed1_w5-1-1-1"  # 4.1.0's fine-tuning
    assert folder("LR=2e-4 SEED=1") == "stage2_v3_finetune_4000_lr2e-4_seed1"
    assert folder('SEED=1 WEIGHTS="5 1 1 1" AUGMENTATION=domain-straight') == \
        "stage2_v3_finetune_4000_seed1_w5-1-1-1_domain-straight"
    assert folder('SEED=1 WEIGHTS="5 1 1 1" DICE_WEIGHT=3') == "stage2_v3_finetune_4000_seed1_w5-1-1-1_dice3"
    for recipe in ("stage2_v3_finetune.sh", "stage2_v4.sh"):
        assert "finetune_folder" in (EXPERIMENTS / "recipes" / recipe).read_text(), recipe


def test_no_function_over_120_lines_and_no_module_over_450():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 450:
            too_long.append(f"{path.relative_to(PACKAGE.parent)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 120:
                too_long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: "
                                f"{node.end_lineno - node.lineno + 1} lines")
    assert not too_long, "split these:\n" + "\n".join(too_long)
