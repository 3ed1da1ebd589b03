"""Do the report's intervals have their stated error rate when a study has only a few seeds?

Trains a pool of seeds of ONE recipe (the study's `baseline` small CNN, on small real photos,
a few epochs) with the project's own runner, then draws thousands of small studies from that
pool in which every model is the same recipe, so every difference between them is luck:

- two pretend models A and B: disjoint random sets of `n` seeds from the pool (n = 2, 3, 5);
- the validation images: drawn with replacement from the run's validation images, as many as
  it has, so the choice of images is part of the chance as well (the truth is the pool's
  accuracy on all of them);
- each study is read with the report's own code: the per-image right/wrong rows come from the
  run's `validation_predictions.json` through `report_builder.views.load_run` (the records of
  `experiments.artifacts`), the comparison is `analysis.paired_difference(A, B)` and a model is
  called better, as `views.compare` calls it, when that interval excludes 0.

A claim either way is a false "better" (A and B are equal in truth). It prints, per number of
seeds: the rate of false "better" claims (aim: at most 5%) with its two one-sided parts, the
coverage of the paired interval (it should hold the true difference, 0, 95% of the time), the
coverage of `analysis.accuracy_interval` for one pretend model (truth: the pool's mean accuracy
over all seeds and all validation images) and a family check: three pretend models A, B, C
compared as the report compares them (each against the one before it, and the chosen model
against the runner-up when those are A and C), the share of studies with any false "better",
and with Holm's correction over those distinct pairs where the analysis offers it
(`analysis.holm_rejections` over the comparisons' `p_value`, as `views.settle_family` does).

    python benchmarks/calibration.py                 # trains the pool once (cached), then analyses
    python benchmarks/calibration.py --analysis-only # re-analyse the cached pool, no TensorFlow

The pool lives in `--work-dir` (default benchmarks/.calibration/, not committed): a rerun with
the same pool settings trains nothing, and an interrupted training resumes where it stopped.
It measures; it asserts nothing: the exit status is 0 for a finished benchmark, and a line
says so when a rate is above 5%.
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from report_builder import analysis  # noqa: E402  (after the path set-up, like the other benchmarks)

DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data" / "cats-dogs-cc0"
DEFAULT_WORK_DIR = PROJECT_ROOT / "benchmarks" / ".calibration"
MODEL = "baseline"
#: The error rate the report's 95% intervals promise.
TARGET = 0.05


# --------------------------------------------------------------------------- the drawing and the analysis


@dataclass
class Setting:
    """The outcome of many studies with `seeds` seeds per pretend model."""

    seeds: int
    studies: int
    paired: bool = False
    better: int = 0  # A called better than B
    worse: int = 0  # B called better than A
    covered: int = 0  # the paired interval holds the true difference
    width_sum: float = 0.0
    accuracy_covered: int = 0  # A's accuracy interval holds the pool's accuracy
    families: int = 0  # studies with a third model C (enough seeds in the pool)
    family_claims: int = 0  # ... with any "better" in the report's family (family_comparisons)
    family_holm: int | None = None  # ... with any Holm rejection (None: the analysis has no Holm)

    def rate(self, count: int | None, total: int | None = None) -> float | None:
        total = self.studies if total is None else total
        return None if count is None or not total else count / total

    @property
    def claim_rate(self) -> float:
        return self.rate(self.better + self.worse)

    @property
    def coverage(self) -> float:
        return self.rate(self.covered)

    @property
    def accuracy_coverage(self) -> float:
        return self.rate(self.accuracy_covered)

    @property
    def mean_width(self) -> float:
        return self.width_sum / self.studies if self.studies else float("nan")


def interval_options(function, resamples: int | None) -> dict:
    """`resamples=` for an analysis function that takes it (the bootstrap does), else nothing."""
    if resamples and "resamples" in inspect.signature(function).parameters:
        return {"resamples": resamples}
    return {}


def takes_paired() -> bool:
    return "paired" in inspect.signature(analysis.paired_difference).parameters


def draw_studies(pool_a: np.ndarray, seeds: int, studies: int, rng: np.random.Generator, *,
                 pool_b: np.ndarray | None = None, resamples: int | None = None, paired: bool = False,
                 family: bool = True) -> Setting:
    """Draw `studies` studies of two pretend models with `seeds` seeds each and read each one
    with the report's analysis.

    `pool_a` is a (pool seeds, images) right/wrong matrix. Without `pool_b`, A and B (and C for
    the family check, when the pool has 3 x `seeds` seeds) are disjoint seed sets of `pool_a`:
    equal in truth, true difference 0. With `pool_b` (same images), B's seeds come from it:
    the true difference is then pool_a's accuracy minus pool_b's, and no family is drawn.
    Each study draws its images with replacement from all the pool's images.
    """
    pool_a = np.asarray(pool_a, dtype=bool)
    split = pool_b is None
    pool_b = pool_a if split else np.asarray(pool_b, dtype=bool)
    if pool_a.shape[1] != pool_b.shape[1]:
        raise ValueError("pool_a and pool_b must cover the same images")
    needed = 2 * seeds if split else seeds
    if pool_a.shape[0] < needed or pool_b.shape[0] < seeds:
        raise ValueError(f"{seeds} seeds per model need a pool of at least {needed} seeds, got {pool_a.shape[0]}")
    with_family = split and family and pool_a.shape[0] >= 3 * seeds
    truth_accuracy = float(pool_a.mean())
    truth_difference = 0.0 if split else float(pool_a.mean() - pool_b.mean())
    difference_options = interval_options(analysis.paired_difference, resamples)
    if paired:
        difference_options["paired"] = True
    accuracy_options = interval_options(analysis.accuracy_interval, resamples)
    holm = getattr(analysis, "holm_rejections", None)
    result = Setting(seeds, studies, paired)
    images = pool_a.shape[1]
    for _ in range(studies):
        columns = rng.integers(0, images, size=images)
        if split:
            order = rng.permutation(pool_a.shape[0])
            a, b = pool_a[order[:seeds]][:, columns], pool_a[order[seeds:2 * seeds]][:, columns]
        else:
            a = pool_a[rng.choice(pool_a.shape[0], seeds, replace=False)][:, columns]
            b = pool_b[rng.choice(pool_b.shape[0], seeds, replace=False)][:, columns]
        difference = analysis.paired_difference(a, b, **difference_options)
        result.better += difference.low > 0
        result.worse += difference.high < 0
        result.covered += difference.low <= truth_difference <= difference.high
        result.width_sum += difference.high - difference.low
        accuracy = analysis.accuracy_interval(a, **accuracy_options)
        result.accuracy_covered += accuracy.low <= truth_accuracy <= accuracy.high
        if with_family:
            c = pool_a[order[2 * seeds:3 * seeds]][:, columns]
            result.families += 1
            comparisons = family_comparisons([a, b, c], difference, difference_options)
            result.family_claims += any(item.low > 0 or item.high < 0 for item in comparisons)
            p_values = [getattr(item, "p_value", None) for item in comparisons]
            if holm is not None and None not in p_values:
                result.family_holm = (result.family_holm or 0) + any(holm(p_values))
    return result


def family_comparisons(models: list[np.ndarray], first: analysis.Interval, options: dict) -> list:
    """The distinct comparisons the report makes among three models in study order: each model
    against the one before it (B vs A: ``first``, the A vs B interval mirrored, the same claim
    and p-value; C vs B) and the chosen model (highest mean accuracy) against the runner-up,
    which adds a comparison when those two are A and C. The pretend models are separate
    trainings, so none is paired by seed (as ``views.compare`` decides for unrelated models)."""
    comparisons = [first, analysis.paired_difference(models[2], models[1], **options)]
    ranked = sorted(range(3), key=lambda index: -models[index].mean())
    if set(ranked[:2]) == {0, 2}:
        comparisons.append(analysis.paired_difference(models[ranked[0]], models[ranked[1]], **options))
    return comparisons


def analysis_name(resamples: int | None) -> str:
    """Which analysis these numbers are for, in words."""
    if interval_options(analysis.paired_difference, resamples):
        return (f"two-level percentile bootstrap ({resamples} resamples per interval here; "
                f"the report uses {analysis.RESAMPLES})")
    first_line = (analysis.paired_difference.__doc__ or "").strip().splitlines()
    return first_line[0].rstrip(".") if first_line else "report_builder.analysis.paired_difference"


def format_setting(setting: Setting) -> list[str]:
    label = f"seeds={setting.seeds}" + (" paired" if setting.paired else "")
    lines = [
        f"{label} comparisons={setting.studies} false better rate: {setting.claim_rate:.3f} "
        f"(one-sided: {setting.rate(setting.better):.3f} / {setting.rate(setting.worse):.3f}) "
        f"coverage: {setting.coverage:.3f} | accuracy interval coverage: {setting.accuracy_coverage:.3f} "
        f"| mean width: {100 * setting.mean_width:.1f} points"
    ]
    if setting.families:
        holm = setting.rate(setting.family_holm, setting.families)
        lines.append(
            f"{label} families (B vs A, C vs B, chosen vs runner-up)={setting.families} any false better: "
            f"{setting.rate(setting.family_claims, setting.families):.3f}"
            + (f" | with Holm: {holm:.3f}" if holm is not None else " | with Holm: not offered by this analysis")
        )
    warnings = []
    if setting.claim_rate > TARGET:
        warnings.append(f"false better rate {setting.claim_rate:.3f}")
    if setting.families and setting.rate(setting.family_claims, setting.families) > TARGET:
        warnings.append(f"family rate without correction {setting.rate(setting.family_claims, setting.families):.3f}")
    if setting.family_holm is not None and setting.rate(setting.family_holm, setting.families) > TARGET:
        warnings.append(f"family rate with Holm {setting.rate(setting.family_holm, setting.families):.3f}")
    if warnings:
        lines.append(f"  ABOVE {TARGET:.2f} with {setting.seeds} seeds: " + "; ".join(warnings))
    return lines


# --------------------------------------------------------------------------- the pool


def pool_config(args: argparse.Namespace) -> str:
    """The runner's config of the pool: one model, `pool_seeds` seeds, small images, few epochs."""
    def text(value) -> str:
        return json.dumps(str(value))  # a TOML basic string

    return "\n".join([
        "# benchmarks/calibration.py: a pool of seeds of one recipe (written by the benchmark)",
        "[study]",
        'title = "Calibration pool"',
        f"run_name = {text(run_name(args))}",
        f"out_dir = {text(args.work_dir)}",
        f"models = [{text(MODEL)}]",
        f"seed = {args.first_seed}",
        f"seeds = {args.pool_seeds}",
        "",
        "[data]",
        'source = "folder"',
        f"data_dir = {text(args.data_dir)}",
        f"image_size = [{args.image_size}, {args.image_size}]",
        f"cache_dir = {text(args.work_dir / 'cache')}",
        "",
        "[training]",
        f"epochs = {args.epochs}",
        'base_weights = "none"',
        "",
    ])


def run_name(args: argparse.Namespace) -> str:
    """One run folder per pool recipe, so that other settings never overwrite a pool."""
    return f"pool-{MODEL}-{args.image_size}px-{args.epochs}ep-seed{args.first_seed}"


def load_pool(run_dir: Path) -> tuple[np.ndarray | None, list[int], str | None]:
    """The pool's right/wrong matrix (seeds, validation images) as the report reads it."""
    from report_builder import views
    from report_builder.views import ReportError

    try:
        run = views.load_run(run_dir)
    except ReportError as error:
        return None, [], str(error)
    model = next((view for view in run.models if view.name == MODEL), None)
    if model is None or model.correct is None:
        return None, [], (model.predictions_note if model else f"no {MODEL} model in {run_dir}")
    return model.correct, list(model.correct_seeds), None


def train_pool(args: argparse.Namespace) -> float:
    """Train (or resume, or skip) the pool with the project's runner; the seconds it took."""
    args.work_dir.mkdir(parents=True, exist_ok=True)
    config = args.work_dir / f"{run_name(args)}.toml"
    config.write_text(pool_config(args), encoding="utf-8")
    command = [sys.executable, "-m", "report_builder", "train", "--config", str(config)]
    print(f"training the pool: {' '.join(command)} (its output goes to stderr)", flush=True)
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=PROJECT_ROOT, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"training the pool failed (exit status {completed.returncode}); run the same command again to resume")
    return time.perf_counter() - started


# --------------------------------------------------------------------------- the command line


def seed_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 2,3,5; got {text!r}") from None
    if not counts or min(counts) < 2:
        raise argparse.ArgumentTypeError(f"every number of seeds must be at least 2, got {text!r}")
    return counts


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="photos laid out as DIR/train/<class>/, DIR/validation/<class>/ (default: ../shared/data/cats-dogs-cc0)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                        help="where the pool is trained and kept (default: benchmarks/.calibration)")
    parser.add_argument("--pool-seeds", type=int, default=24, help="seeds in the pool (default 24)")
    parser.add_argument("--first-seed", type=int, default=1000, help="the pool's first seed (default 1000)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per seed (default 5)")
    parser.add_argument("--image-size", type=int, default=48, help="image side in pixels (default 48)")
    parser.add_argument("--seeds", type=seed_counts, default=[2, 3, 5], help="seeds per pretend model, comma-separated (default 2,3,5)")
    parser.add_argument("--studies", type=int, default=2000, help="studies drawn per number of seeds (default 2000)")
    parser.add_argument("--resamples", type=int, default=1000,
                        help="bootstrap resamples per interval, for an analysis that takes resamples= (default 1000; the report uses 20000)")
    parser.add_argument("--rng-seed", type=int, default=2026, help="seed of the study draws (default 2026)")
    parser.add_argument("--analysis-only", action="store_true", help="use the pool as it is; never start the runner")
    args = parser.parse_args(argv)
    for name in ("pool_seeds", "epochs", "image_size", "studies", "resamples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.pool_seeds < 2 * max(args.seeds):
        parser.error(f"--pool-seeds {args.pool_seeds} is too few for {max(args.seeds)} seeds per model: "
                     f"two disjoint models need {2 * max(args.seeds)}")
    args.data_dir = args.data_dir.expanduser().resolve()
    args.work_dir = args.work_dir.expanduser().resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_arguments(argv)
    run_dir = args.work_dir / run_name(args)
    expected = list(range(args.first_seed, args.first_seed + args.pool_seeds))
    pool, seeds, problem = load_pool(run_dir)
    training_seconds = 0.0
    if seeds[:len(expected)] == expected:
        print(f"pool: cached in {run_dir}", flush=True)
    elif args.analysis_only:
        raise SystemExit(f"--analysis-only: no complete pool of {args.pool_seeds} seeds in {run_dir} ({problem or f'it has {len(seeds)}'})")
    else:
        if not (args.data_dir / "train").is_dir() or not (args.data_dir / "validation").is_dir():
            raise SystemExit(f"--data-dir {args.data_dir}: no train/ and validation/ folders there; "
                             "point --data-dir at the photos (the cats-dogs-cc0 layout: train/<class>/, validation/<class>/)")
        training_seconds = train_pool(args)
        pool, seeds, problem = load_pool(run_dir)
        if seeds[:len(expected)] != expected:
            raise SystemExit(f"the pool in {run_dir} is not complete after training: {problem or f'{len(seeds)} seeds'}")
    pool = pool[:len(expected)]
    accuracies = pool.mean(axis=1)
    print(f"pool: {MODEL}, {pool.shape[0]} seeds ({expected[0]}..{expected[-1]}), {args.epochs} epochs, "
          f"{args.image_size}x{args.image_size} px, {pool.shape[1]} validation images")
    print(f"pool accuracy: mean {accuracies.mean():.4f}, sd over seeds {accuracies.std(ddof=1):.4f}, "
          f"min {accuracies.min():.4f}, median {np.median(accuracies):.4f}, max {accuracies.max():.4f}")
    print("pool seed accuracies, sorted: " + " ".join(f"{value:.3f}" for value in sorted(accuracies)))
    print(f"analysis: {analysis_name(args.resamples)}; studies draw images with replacement, rng seed {args.rng_seed}")
    analysis_started = time.perf_counter()
    rng = np.random.default_rng(args.rng_seed)
    variants = [False, True] if takes_paired() else [False]
    for count in args.seeds:
        for paired in variants:
            setting = draw_studies(pool, count, args.studies, rng, resamples=args.resamples, paired=paired, family=not paired)
            for line in format_setting(setting):
                print(line, flush=True)
    analysis_seconds = time.perf_counter() - analysis_started
    print(f"wall time: training {training_seconds:.0f} s, analysis {analysis_seconds:.0f} s, "
          f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
