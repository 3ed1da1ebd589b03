"""The comparison plan (study.compare): which pairs of models the report compares, checked when
the config loads and followed by the front page, the model pages and Holm's family."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from experiments.config import ConfigError, config_hash, load_config
from report_builder.render import render_report
from tests import report_fixtures as fixtures
from tests.conftest import PROJECT_ROOT, cli_environment, run_cli_command

SMOKE = (PROJECT_ROOT / "experiments" / "configs" / "smoke.toml").read_text(encoding="utf-8")
MODELS = '["baseline", "augmented", "preprocessed"]'


def _study(folder: Path, compare: str | None, models: str = MODELS, tables: str = "") -> Path:
    lines = f'run_name = "plan"\nmodels = {models}\n' + (f"compare = {compare}\n" if compare is not None else "")
    path = folder / "study.toml"
    path.write_text(SMOKE.replace('run_name = "smoke"\n', lines) + "\n" + tables, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- declaring the plan


def test_without_a_plan_each_model_is_compared_with_the_one_before_it(tmp_path):
    config = load_config(_study(tmp_path, None))
    assert config.study.compare == "previous"
    assert config.to_dict()["study"]["compare"] == "previous"


def test_a_reference_plan_and_a_pair_list_load_and_leave_the_hash_alone(tmp_path):
    plain = load_config(_study(tmp_path, None))
    reference = load_config(_study(tmp_path, '{ reference = "baseline" }'))
    assert reference.study.compare == {"reference": "baseline"}
    pairs = load_config(_study(tmp_path, '[["preprocessed", "baseline"], ["augmented", "preprocessed"]]'))
    assert pairs.study.compare == [["preprocessed", "baseline"], ["augmented", "preprocessed"]]
    # which models are compared changes no model's training
    assert config_hash(plain) == config_hash(reference) == config_hash(pairs)


def test_a_pair_naming_a_table_with_variants_stands_for_each_variant(tmp_path):
    tables = '[models.mine]\nrecipe = "small_cnn"\nlearning_rate = [1e-3, 3e-4]\n'
    config = load_config(_study(tmp_path, '[["mine", "baseline"]]', models='["baseline", "mine"]', tables=tables))
    assert config.study.compare == [["mine-lr0.001", "baseline"], ["mine-lr0.0003", "baseline"]]
    with pytest.raises(ConfigError, match=r"study.compare.reference: mine has variants \(mine-lr0.001, mine-lr0.0003\)"):
        load_config(_study(tmp_path, '{ reference = "mine" }', models='["baseline", "mine"]', tables=tables))


def test_a_pair_of_a_model_the_run_leaves_out_is_dropped(tmp_path):
    config = load_config(_study(tmp_path, '[["augmented", "baseline"], ["preprocessed", "baseline"]]'),
                         {"study.models": ["baseline", "augmented"]})  # as --models baseline,augmented gives it
    assert config.study.compare == [["augmented", "baseline"]]
    config = load_config(_study(tmp_path, '{ reference = "preprocessed" }'), {"study.models": ["baseline", "augmented"]})
    assert config.study.compare == []


@pytest.mark.parametrize(
    "compare, message",
    [
        ('[["augmented", "resnet"]]', "study.compare names 'resnet', which is not a model of this study (baseline, augmented, preprocessed)"),
        ('{ reference = "basline" }', "study.compare names 'basline', which is not a model of this study"),
        ('[["augmented", "augmented"]]', "study.compare: the pair ['augmented', 'augmented'] compares a model with itself"),
        ('[["augmented", "baseline"], ["baseline", "augmented"]]', "study.compare lists the pair of baseline and augmented twice"),
        ('[["augmented", "baseline", "preprocessed"]]', "study.compare must be \"previous\""),
        ('"next"', "study.compare must be \"previous\""),
        ('{ reference = "baseline", also = "augmented" }', "study.compare as a table must be { reference = \"<model>\" }"),
        ("3", "study.compare must be \"previous\""),
    ],
)
def test_a_bad_plan_is_one_sentence_naming_the_key(tmp_path, compare, message):
    with pytest.raises(ConfigError) as error:
        load_config(_study(tmp_path, compare))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_bad_plan_stops_train_before_anything_runs(tmp_path):
    path = _study(tmp_path, '[["augmented", "resnet"]]')
    result = subprocess.run(run_cli_command("train", "--config", str(path), "--out", str(tmp_path / "out")),
                            cwd=tmp_path, env=cli_environment(), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "study.compare names 'resnet', which is not a model of this study" in lines[0], result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("history.json"))


# --------------------------------------------------------------------------- the report follows it


def _render(tmp_path: Path, compare) -> dict[str, str]:
    run = fixtures.write_artifacts(tmp_path / "artifacts")
    fixtures.rewrite_manifest(run, lambda manifest: manifest["config"].update(study={"compare": compare}))
    docs = tmp_path / "docs"
    return {str(page.relative_to(docs)): page.read_text(encoding="utf-8")
            for page in render_report(run, docs) if page.suffix == ".md"}


def _section(page: str, heading: str) -> str:
    start = page.index(heading)
    end = page.find("\n## ", start + len(heading))
    return page[start:] if end < 0 else page[start:end]


def _pairs_in(text: str) -> list[str]:
    return [line.split(":")[0].strip("- *") for line in text.splitlines() if line.startswith("- **") and " vs " in line]


def test_a_reference_plan_compares_every_model_with_the_reference(tmp_path):
    pages = _render(tmp_path, {"reference": "baseline"})
    index = pages["index.md"]
    assert "### Step by step" not in index
    question = _section(index, "## The question")  # the opening list says what is compared with what
    assert "the study compares each of them with baseline, its reference:" in question
    assert "each against the one before it" not in index and "For each comparison we ask" in question
    against = _section(index, "### Against baseline")
    others = ["augmented", "preprocessed", "transfer", "finetune", "transfer_extended"]
    # the control comparison follows under its own paragraph, as without a plan
    assert _pairs_in(against) == [f"{name} vs baseline" for name in others] + ["finetune vs transfer_extended"]
    # five planned pairs, the control, and the chosen model (finetune) against the runner-up (transfer)
    assert "This report makes seven distinct comparisons in all" in against
    assert "seven distinct comparisons in all" in pages["method.md"]
    assert "Each model is compared with baseline (the study's reference), the chosen model with the runner-up" in pages["method.md"]
    baseline = _section(pages["models/baseline.md"], "## Compared with augmented, preprocessed, transfer, finetune and transfer_extended")
    assert _pairs_in(baseline) == [f"{name} vs baseline" for name in others]
    preprocessed = _section(pages["models/preprocessed.md"], "## Compared with baseline")
    assert _pairs_in(preprocessed) == ["preprocessed vs baseline"]
    assert "preprocessed vs augmented" not in "".join(pages.values())


def test_a_pair_list_makes_exactly_those_comparisons(tmp_path):
    pages = _render(tmp_path, [["finetune", "transfer"], ["augmented", "baseline"]])
    planned = _section(pages["index.md"], "### The planned comparisons")
    assert "the study compares the pairs of them that it lists:" in _section(pages["index.md"], "## The question")
    assert "each against the one before it" not in pages["index.md"]
    assert _pairs_in(planned) == ["finetune vs transfer", "augmented vs baseline", "finetune vs transfer_extended"]
    # two planned pairs and the control; the chosen model against the runner-up is finetune vs transfer again
    assert "This report makes three distinct comparisons in all" in planned
    assert "three distinct comparisons in all" in pages["method.md"]
    assert _pairs_in(_section(pages["models/transfer.md"], "## Compared with finetune")) == ["finetune vs transfer"]
    assert _pairs_in(_section(pages["models/augmented.md"], "## Compared with baseline")) == ["augmented vs baseline"]
    alone = _section(pages["models/preprocessed.md"], "## Compared with other models")
    assert "pairs this model with no other, so this report compares it with none." in alone and _pairs_in(alone) == []
    everything = "".join(pages.values())
    for unplanned in ("augmented vs preprocessed", "preprocessed vs augmented", "transfer vs preprocessed"):
        assert unplanned not in everything


def test_a_plan_with_no_pair_in_this_run_leaves_only_the_control_and_the_chosen_comparison(tmp_path):
    planned = _section(_render(tmp_path, [])["index.md"], "### The planned comparisons")
    assert "None of the planned pairs ran in this study apart from the control's, below." in planned
    assert _pairs_in(planned) == ["finetune vs transfer_extended"]
    assert "This report makes two distinct comparisons in all" in planned


def test_holm_covers_exactly_the_planned_pairs(tmp_path, monkeypatch):
    from report_builder import views

    sizes: list[int] = []
    original = views.analysis.holm_rejections

    def counting(p_values, alpha=0.05):
        sizes.append(len(p_values))
        return original(p_values, alpha)

    monkeypatch.setattr(views.analysis, "holm_rejections", counting)
    _render(tmp_path / "a", [["augmented", "baseline"]])
    # the planned pair, the control's (finetune vs transfer_extended) and the chosen one's (finetune vs transfer)
    assert sizes and set(sizes) == {3}


def test_a_plan_that_no_longer_reads_is_a_problem_and_the_report_compares_step_by_step(tmp_path):
    pages = _render(tmp_path, [["augmented", "nosuchmodel"]])
    assert "### Step by step" in pages["index.md"]
    assert "study.compare names 'nosuchmodel'" in "".join(pages.values())


# --------------------------------------------------------------------------- training settings that differ


def _render_with_training(tmp_path: Path, special: dict[str, dict]) -> dict[str, str]:
    run = fixtures.write_artifacts(tmp_path / "artifacts")
    base = {"optimizer": "adam", "learning_rate": 0.001, "weight_decay": 0.0, "label_smoothing": 0.0,
            "batch_size": 32, "epochs": 10, "schedule": "constant"}
    for model in fixtures.MODEL_ORDER:
        path = run / "models" / model / "summary.json"
        summary = json.loads(path.read_text(encoding="utf-8"))
        summary["training"] = {**base, **special.get(model, {})}
        path.write_text(json.dumps(summary), encoding="utf-8")
    docs = tmp_path / "docs"
    return {str(page.relative_to(docs)): page.read_text(encoding="utf-8")
            for page in render_report(run, docs) if page.suffix == ".md"}


def test_the_settings_that_differ_between_models_are_tabled_on_each_model_page_and_the_method_page(tmp_path):
    pages = _render_with_training(tmp_path, {"augmented": {"optimizer": "sgd"},
                                             "preprocessed": {"optimizer": "sgd", "learning_rate": 0.01}})
    augmented = pages["models/augmented.md"]
    assert "| Setting | augmented | The other models |" in augmented
    assert ("| Optimizer | SGD (momentum 0.9) | Adam for baseline, transfer, finetune and transfer\\_<wbr>extended; "
            "SGD (momentum 0.9) for preprocessed |") in augmented
    assert "| Learning rate | 0.001 | 0.001 for baseline, transfer, finetune and transfer\\_<wbr>extended; 0.01 for preprocessed |" in augmented
    for shared in ("| Weight decay", "| Batch size", "| Epochs", "| Schedule"):  # the same for every model: not shown
        assert shared not in augmented
    method = _section(pages["method.md"], "## Training settings")
    assert "| Model | Optimizer | Learning rate |" in method
    assert "| [preprocessed](models/preprocessed.md) | SGD (momentum 0.9) | 0.01 |" in method
    assert "| [baseline](models/baseline.md) | Adam | 0.001 |" in method


def test_models_that_train_alike_get_no_settings_table(tmp_path):
    pages = _render_with_training(tmp_path, {})
    assert "## Training settings" not in pages["method.md"]
    assert "The other models |" not in pages["models/augmented.md"]
