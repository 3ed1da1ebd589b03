"""Where a study's numbers also go besides the run folder: TensorBoard and MLflow, and the network
needs of a run.

- TensorBoard (`training.tensorboard`, `--tensorboard`): every trained cell writes event files
  with keras.callbacks.TensorBoard into `<run>/tensorboard/<model>/seed-<seed>/{train,validation}/`,
  at step = the epoch's number in history.json. A resumed cell adds a new event file beside the
  old ones; a cell trained again from its first epoch (`--force`, a changed config) starts its
  folder afresh. A finished cell that has no folder yet (trained before the option was on) gets
  one written from its history.json when the study passes it.
- MLflow (`training.mlflow` / `training.mlflow_uri`, `--mlflow [URI]`): one experiment per run
  name, one MLflow run per cell with its model, seed, config hash, data fingerprint and precision
  as parameters, loss / accuracy / val_loss / val_accuracy / epoch_seconds per epoch at
  step = the epoch's number, and the cell's history.json, state.json and
  validation_predictions.json as artifacts. `<cell>/.mlflow_run.json` names the MLflow run, so a
  resumed cell continues it and a finished cell is not logged twice. The default store is the
  SQLite file `<out_dir>/mlflow.db` with artifacts in `<out_dir>/mlartifacts/<run name>/`.
  Logging must never cost a training: the first MLflow error is reported once and MLflow is left
  off for the rest of the command; the next `train` fills in what it missed from the run folder.
- The network needs of a run (data archive, MobileNetV2 weights, an MLflow server), listed once
  before anything downloads, each with its offline alternative.

Nothing here imports TensorFlow, Keras or MLflow at module level.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from experiments.artifacts.cell_records import History, RunState
from experiments.artifacts.folders import EVENT_FILE_NAME, CellFolder
from experiments.artifacts.ledger import describe_left_files, record_written, remove_written_files, written_names
from experiments.artifacts.side_records import MlflowLink
from experiments.config import StudyConfig
from experiments.console import log
from experiments.data.loading import ARCHIVE_NAME
from experiments.errors import UserError
from experiments.models.backbones import backbone_named
from experiments.models.recipes import chain_root

TENSORBOARD_INSTALL = 'pip install -e ".[tensorboard]"'


MLFLOW_INSTALL = 'pip install -e ".[mlflow]"'


EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def mlflow_enabled(config: StudyConfig) -> bool:
    return config.training.mlflow or bool(config.training.mlflow_uri)


def mlflow_tracking_uri(config: StudyConfig, environ: Mapping[str, str] = os.environ) -> str:
    """training.mlflow_uri, else $MLFLOW_TRACKING_URI, else the SQLite file <out_dir>/mlflow.db."""
    if config.training.mlflow_uri:
        return config.training.mlflow_uri
    if environ.get("MLFLOW_TRACKING_URI"):
        return environ["MLFLOW_TRACKING_URI"]
    return "sqlite:///" + (Path(config.study.out_dir or ".").resolve() / "mlflow.db").as_posix()


def check_tracking_packages(config: StudyConfig, find_spec: Callable[[str], Any] = importlib.util.find_spec) -> None:
    """UserError, before anything is read or trained, when an option's package is missing, or when
    something that is not a folder stands where --tensorboard writes its folders."""
    if config.training.tensorboard and find_spec("tensorboard") is None:
        raise UserError(
            "--tensorboard (training.tensorboard) needs the tensorboard package, which TensorFlow no longer "
            f"installs: run {TENSORBOARD_INSTALL} (or pip install tensorboard), then the same command again"
        )
    if config.training.tensorboard:
        check_tensorboard_folders(config.run_dir, [(name, seed) for name in config.study.models for seed in config.seeds])
    if not mlflow_enabled(config):
        return
    if find_spec("mlflow") is None:
        raise UserError(
            f"--mlflow (training.mlflow) needs the mlflow package: run {MLFLOW_INSTALL} (or pip install mlflow), "
            "then the same command again"
        )
    if mlflow_tracking_uri(config).startswith("sqlite:") and (find_spec("sqlalchemy") is None or find_spec("alembic") is None):
        raise UserError(
            "MLflow's SQLite store needs sqlalchemy and alembic (mlflow-skinny leaves them out): "
            f"run {MLFLOW_INSTALL} (or pip install mlflow), then the same command again"
        )


@dataclass(frozen=True)
class NetworkNeed:
    what: str
    source: str
    offline: str


def keras_cache_base(cache_dir: str = "") -> Path:
    """The folder keras.utils.get_file caches under: `cache_dir` (data.cache_dir), else
    $KERAS_HOME, else ~/.keras; /tmp/.keras when that folder is not writable (as Keras does)."""
    if cache_dir:
        base = Path(cache_dir).expanduser()
    elif "KERAS_HOME" in os.environ:
        base = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        home = Path("~").expanduser()
        base = (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"
    return base if os.access(base, os.W_OK) else Path("/tmp") / ".keras"


def dataset_archive_path(config: StudyConfig) -> Path:

    return keras_cache_base(config.data.cache_dir) / "datasets" / ARCHIVE_NAME


def weights_cache_path(file_name: str) -> Path:
    """Where keras.applications keeps a downloaded weights file."""
    return keras_cache_base() / "models" / file_name


def _display_uri(uri: str) -> str:
    """`uri` without a user name or password in it."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, host + (f":{parts.port}" if parts.port else ""), parts.path, parts.query, parts.fragment))


def network_needs(config: StudyConfig, is_cached: Callable[[Path], bool] = Path.is_file) -> list[NetworkNeed]:
    """What this run will fetch over the network, each with the way to do without it."""
    needs = []
    if config.data.source == "download" and not is_cached(dataset_archive_path(config)):
        needs.append(NetworkNeed(
            "the image archive", config.data.url,
            "--data-dir DIR (a folder with train/<class>/ and validation/<class>/ images, for example the archive "
            "unpacked on a machine that is online), or --dataset synthetic"))

    downloads: dict[str, list[str]] = {}  # backbone -> the models built on its downloaded weights
    for model_name in config.study.models:
        root = chain_root(model_name, config.models)  # a continuing model: the transfer model it goes back to
        if root.recipe == "transfer" and config.weights_of(root.name) == "imagenet":
            downloads.setdefault(root.backbone, []).append(model_name)
    for backbone_name, models in downloads.items():
        backbone = backbone_named(backbone_name, "backbone")
        name = backbone.weights_file(config.image_size)
        if is_cached(weights_cache_path(name)):
            continue
        way_out = (f"--base-weights PATH ({backbone.display_name} no-top weights, for example {name} copied from "
                   "~/.keras/models/ of a machine that is online), or --base-weights none") if backbone_name == "mobilenet_v2" else (
                   f"weights = \"PATH\" in the [models.<name>] table ({name} copied from ~/.keras/models/ of a machine "
                   "that is online), or --base-weights none")
        needs.append(NetworkNeed(f"the ImageNet weights of {backbone.display_name} (for {', '.join(models)})",
                                 backbone.weights_url(config.image_size), way_out))
    if mlflow_enabled(config):
        uri = mlflow_tracking_uri(config)
        if urlsplit(uri).scheme in ("http", "https", "databricks", "databricks-uc", "uc"):
            needs.append(NetworkNeed("the MLflow tracking server", _display_uri(uri),
                                     "--mlflow without a URI (a local SQLite file, <out>/mlflow.db)"))
    return needs


def network_message(needs: list[NetworkNeed]) -> str | None:
    """One message listing every network need, or None when there is none."""
    if not needs:
        return None
    lines = ["This run needs the network for:"]
    for need in needs:
        lines += [f"  - {need.what}: {need.source}", f"    offline instead: {need.offline}"]
    if any(need.what != "the MLflow tracking server" for need in needs):
        lines.append("Downloads are kept in the Keras cache; later runs do not fetch them again.")
    return "\n".join(lines)


def tensorboard_root(run_root: Path) -> Path:
    return Path(run_root) / "tensorboard"


def tensorboard_dir(run_root: Path, seed_run: CellFolder) -> Path:
    return tensorboard_root(run_root) / seed_run.model_name / f"seed-{seed_run.seed}"


def _what_is_at(path: Path) -> str:
    import stat

    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return "a link to something that is not a folder"
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "something that is not a folder"


def check_tensorboard_folders(run_root: Path, cells: Iterable[tuple[str, int]]) -> None:
    """UserError, before anything trains, when something that is not a folder stands where
    --tensorboard writes a folder (`<run>/tensorboard`, a cell's `<model>/seed-N/{train,validation}`):
    one sentence naming it; it is left alone (TensorFlow would stop with FailedPreconditionError)."""
    root = tensorboard_root(run_root)
    paths = [root] + [root / model_name / f"seed-{seed}" / part for model_name, seed in cells for part in ("train", "validation")]
    for path in paths:
        current = Path(run_root)
        for part in path.relative_to(run_root).parts:
            current = current / part
            if not os.path.lexists(current):
                break
            if not current.is_dir():
                raise UserError(f"--tensorboard (training.tensorboard) writes its event files into the folder '{current}', "
                                f"but {_what_is_at(current)} is there; move it away (it is left alone) or run without --tensorboard.")


EVENT_SUBFOLDERS = ("train", "validation")


def event_files(directory: Path) -> dict[str, set[str]]:
    """The TensorBoard event files in a cell's train/ and validation/ folders, by subfolder."""
    found: dict[str, set[str]] = {}
    for subfolder in EVENT_SUBFOLDERS:
        try:
            found[subfolder] = {entry.name for entry in os.scandir(directory / subfolder)
                                if EVENT_FILE_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)}
        except OSError:
            found[subfolder] = set()
    return found


def record_event_files(directory: Path, strangers: dict[str, set[str]]) -> None:
    """List in each subfolder's ledger the event files this program wrote there: those present
    now, less `strangers` (what was there, unlisted, before it started writing)."""
    for subfolder, names in event_files(directory).items():
        if ours := names - strangers.get(subfolder, set()):
            record_written(directory / subfolder, ours)


def unlisted_event_files(directory: Path) -> dict[str, set[str]]:
    """The event files in a cell's folders that no ledger lists: someone else's."""
    return {subfolder: names - written_names(directory / subfolder) for subfolder, names in event_files(directory).items()}


def write_tensorboard_history(directory: Path, epochs: list[dict[str, Any]]) -> None:
    """Event files for epochs trained without --tensorboard: the scalars Keras's callback writes."""
    import tensorflow as tf

    strangers = unlisted_event_files(directory)

    for subfolder, prefix in (("train", ""), ("validation", "val_")):
        writer = tf.summary.create_file_writer(str(directory / subfolder))
        with writer.as_default():
            for record in epochs:
                for name in ("loss", "accuracy"):
                    value = record.get(prefix + name)
                    if isinstance(record.get("epoch"), int) and isinstance(value, (int, float)):
                        tf.summary.scalar(f"epoch_{name}", value, step=record["epoch"])
        writer.close()
    record_event_files(directory, strangers)


def _quiet_mlflow_logging() -> None:
    """MLflow and alembic announce every table migration at INFO; keep warnings only. (MLflow
    sets its loggers' level when it is imported: call this after.)"""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _sqlite_artifact_root(uri: str, experiment_name: str) -> str | None:
    """For a SQLite store, `<folder of the database>/mlartifacts/<experiment>` (MLflow's own
    default would be ./mlruns in whatever folder the command runs in); None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    database = uri[len("sqlite:///"):].split("?", 1)[0]
    if not database or database == ":memory:":
        return None
    return (Path(database).resolve().parent / "mlartifacts" / experiment_name).as_uri()


def _milliseconds(timestamp: object) -> int | None:
    try:
        return int(datetime.fromisoformat(str(timestamp)).timestamp() * 1000)
    except ValueError:
        return None


def _history_epochs(seed_run: CellFolder) -> list[dict[str, Any]]:
    """The cell's finished epochs as history.json holds them (empty when it has none)."""
    history = History.read_or_none(seed_run.history)  # a bad one: the study reports it
    return [epoch.to_fields() for epoch in history.epochs] if history else []


def _state_fields(seed_run: CellFolder) -> dict[str, Any]:
    """The cell's state.json as its JSON object (empty when it has none)."""
    state = RunState.read_or_none(seed_run.state)
    return state.to_json() if state else {}


def cell_params(seed_run: CellFolder, state: Mapping[str, Any]) -> dict[str, str]:
    """The MLflow parameters of a cell: model, seed, and what its training was made from."""
    params = {"model": seed_run.model_name, "seed": str(seed_run.seed)}
    for key in ("config_hash", "data_fingerprint", "precision", "starting_point", "epochs_planned"):
        if state.get(key) is not None:
            params[key] = str(state[key])
    return params


@dataclass
class _OpenRun:
    run_id: str
    logged: set[int] = field(default_factory=set)  # epoch numbers already logged


class MlflowLog:
    """The study's MLflow experiment and its cells' runs. Every call is guarded: the first
    error is reported once and MLflow is off for the rest of this command (training goes on)."""

    def __init__(self, uri: str, experiment_name: str, client: Any = None):
        self.uri = uri
        self.experiment_name = experiment_name
        self.client = client
        self.experiment_id: str | None = None
        self.failed = False
        self.open: dict[Path, _OpenRun] = {}

    # -- guard

    def _guard(self, what: str, action: Callable[[], Any]) -> Any:
        if self.failed:
            return None
        try:
            return action()
        except Exception as error:  # logging must never stop training
            self.failed = True
            detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
            log(f"warning: MLflow logging failed while {what} ({type(error).__name__}{': ' + detail[:300] if detail else ''}); "
                "training goes on without MLflow for the rest of this command. The run folder keeps every number, "
                "and the next `train` of this run logs what MLflow missed.")
            return None

    def connect(self) -> bool:
        def connect() -> None:
            if urlsplit(self.uri).scheme in ("http", "https"):  # a server that is down: fail in seconds, not minutes
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
            if self.client is None:
                from mlflow import MlflowClient

                _quiet_mlflow_logging()
                self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id = self._experiment()

        self._guard(f"opening the store {_display_uri(self.uri)}", connect)
        return not self.failed

    def _experiment(self) -> str:
        client = self.client
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            try:
                return client.create_experiment(self.experiment_name,
                                                artifact_location=_sqlite_artifact_root(self.uri, self.experiment_name))
            except Exception:  # another process created it meanwhile
                experiment = client.get_experiment_by_name(self.experiment_name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id

    # -- runs

    def _stored_run(self, seed_run: CellFolder) -> Any:
        """The MLflow run `<cell>/.mlflow_run.json` names, if it is in this store and experiment."""
        link = MlflowLink.read_or_none(seed_run.mlflow_link)
        if link is None or link.tracking_uri != self.uri:
            return None
        try:
            run = self.client.get_run(link.run_id)
        except Exception as error:
            if getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        if run.info.experiment_id != self.experiment_id or run.info.lifecycle_stage != "active":
            return None
        return run

    def _new_run(self, seed_run: CellFolder, state: Mapping[str, Any], replaces: Any = None, from_files: bool = False) -> _OpenRun:
        from mlflow.entities import Param

        tags = {"model": seed_run.model_name, "seed": str(seed_run.seed), "report_builder.cell": str(seed_run.folder)}
        if from_files:
            tags["report_builder.logged_from"] = "the cell's files, after training"
        run = self.client.create_run(self.experiment_id, run_name=f"{seed_run.model_name} seed {seed_run.seed}", tags=tags,
                                     start_time=_milliseconds(state.get("started_at")) if from_files else None)
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=[Param(key, value) for key, value in cell_params(seed_run, state).items()])
        if replaces is not None:
            self.client.set_tag(replaces.info.run_id, "report_builder.superseded_by", run_id)
        MlflowLink(self.uri, self.experiment_id, run_id).write(seed_run.mlflow_link)
        return _OpenRun(run_id)

    def _continue(self, run: Any) -> _OpenRun:
        run_id = run.info.run_id
        if run.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        return _OpenRun(run_id, {metric.step for metric in self.client.get_metric_history(run_id, "loss")})

    def _sync(self, open_run: _OpenRun, epochs: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        new = [record for record in epochs if isinstance(record.get("epoch"), int) and record["epoch"] not in open_run.logged]
        metrics = []
        for record in new:
            values = {key: record.get(key) for key in EPOCH_METRICS} | {"epoch_seconds": record.get("seconds")}
            metrics += [Metric(key, float(value), now, record["epoch"]) for key, value in values.items()
                        if isinstance(value, (int, float)) and not isinstance(value, bool)]
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(open_run.run_id, metrics=metrics[start:start + 1000])
        open_run.logged.update(record["epoch"] for record in new)

    def _finish(self, seed_run: CellFolder, open_run: _OpenRun, status: str, cell_status: str, error: str | None,
                end_time: int | None = None) -> None:
        self._sync(open_run, _history_epochs(seed_run))
        for path in (seed_run.history, seed_run.state, seed_run.validation_predictions):
            if path.is_file():
                self.client.log_artifact(open_run.run_id, str(path))
        self.client.set_tag(open_run.run_id, "cell_status", cell_status)
        if error:
            self.client.set_tag(open_run.run_id, "error", error[:5000])
        self.client.set_terminated(open_run.run_id, status, end_time=end_time)

    # -- what the study calls

    def open_cell(self, seed_run: CellFolder, state: Mapping[str, Any], resumed: bool, epochs: list[dict[str, Any]]) -> None:
        """A cell starts training: continue its MLflow run when it resumes, else start a new one."""
        def open_cell() -> None:
            stored = self._stored_run(seed_run)
            open_run = self._continue(stored) if resumed and stored is not None else self._new_run(seed_run, state, replaces=stored)
            self.open[seed_run.folder] = open_run
            self._sync(open_run, epochs)

        self._guard(f"starting the MLflow run of {seed_run.label}", open_cell)

    def log_epochs(self, seed_run: CellFolder, epochs: list[dict[str, Any]]) -> None:
        open_run = self.open.get(seed_run.folder)
        if open_run is not None:
            self._guard(f"logging an epoch of {seed_run.label}", lambda: self._sync(open_run, epochs))

    def close_cell(self, seed_run: CellFolder, status: str, cell_status: str, error: str | None = None, create: bool = False) -> None:
        """End the cell's run: its last epochs, its files as artifacts, `status` (FINISHED, FAILED,
        KILLED). With `create`, a cell with no open run continues its stored one or gets a new one."""
        def close_cell() -> None:
            open_run = self.open.pop(seed_run.folder, None)
            if open_run is None:
                if not create:
                    return
                stored = self._stored_run(seed_run)
                open_run = self._continue(stored) if stored is not None else self._new_run(seed_run, _state_fields(seed_run))
            self._finish(seed_run, open_run, status, cell_status, error)

        self._guard(f"ending the MLflow run of {seed_run.label}", close_cell)

    def record_finished(self, seed_run: CellFolder) -> None:
        """A finished cell the study skips: log it from its files unless its run is already finished."""
        def record_finished() -> None:
            stored = self._stored_run(seed_run)
            if stored is not None and stored.info.status == "FINISHED":
                return
            state = _state_fields(seed_run)
            open_run = self._continue(stored) if stored is not None else self._new_run(seed_run, state, from_files=True)
            self._finish(seed_run, open_run, "FINISHED", str(state.get("status", "complete")), None,
                         end_time=_milliseconds(state.get("finished_at")) if stored is None else None)

        self._guard(f"logging the finished {seed_run.label}", record_finished)


class StudyTracking:
    """TensorBoard and MLflow for one study's cells, as the config asks (see the module's docstring)."""

    def __init__(self, config: StudyConfig, run_root: Path, mlflow_client: Any = None):
        self.run_root = Path(run_root)
        self.tensorboard = config.training.tensorboard
        self.mlflow: MlflowLog | None = None
        if self.tensorboard:
            check_tensorboard_folders(self.run_root, [(name, seed) for name in config.study.models for seed in config.seeds])
            log(f"TensorBoard: event files go to {tensorboard_root(self.run_root)}/ "
                f"(view them with: tensorboard --logdir {tensorboard_root(self.run_root)})")
        if mlflow_enabled(config):
            self.mlflow = MlflowLog(mlflow_tracking_uri(config), config.study.run_name, mlflow_client)
            if self.mlflow.connect():
                log(f"MLflow: every cell is logged to experiment '{config.study.run_name}' in {_display_uri(self.mlflow.uri)}")

    @classmethod
    def for_config(cls, config: StudyConfig, run_root: Path) -> StudyTracking | None:
        if not (config.training.tensorboard or mlflow_enabled(config)):
            return None
        return cls(config, run_root)

    def callbacks(self, seed_run: CellFolder, epochs: list[dict[str, Any]], resumed: int, state: Mapping[str, Any]) -> tuple[list, list]:
        """Keras callbacks for a cell about to train: those that go before the epoch's commit
        (TensorBoard, which reads the epoch's logs) and those after it (MLflow, which logs the
        committed epochs). `epochs` is the list the commit appends to; `resumed` its length now."""
        from experiments.training.fit import AfterEpoch, EpochTensorBoard  # loads TensorFlow: only where it is needed

        before, after = [], []
        if self.tensorboard:
            directory = tensorboard_dir(self.run_root, seed_run)
            if not resumed:  # trained afresh: events of an earlier training of this cell would mix in
                left = remove_written_files(directory, EVENT_FILE_NAME, EVENT_SUBFOLDERS)
                if left:  # only the event files this program wrote go; anything else there is someone else's
                    log(describe_left_files(directory, left))
            elif not directory.exists():  # its first epochs were trained without --tensorboard
                write_tensorboard_history(directory, epochs)
            strangers = unlisted_event_files(directory)
            before.append(EpochTensorBoard(log_dir=str(directory), write_graph=False, profile_batch=0))
            before.append(AfterEpoch(lambda: record_event_files(directory, strangers)))  # after TensorBoard's writes
        if self.mlflow is not None:
            mlflow = self.mlflow
            mlflow.open_cell(seed_run, state, resumed > 0, epochs)
            after.append(AfterEpoch(lambda: mlflow.log_epochs(seed_run, epochs)))
        return before, after

    def cell_finished(self, seed_run: CellFolder) -> None:
        if self.mlflow is not None:
            self.mlflow.close_cell(seed_run, "FINISHED", "complete", create=True)

    def cell_stopped(self, seed_run: CellFolder, error: BaseException) -> None:
        """The cell's training ended early: interrupted (KILLED), diverged or failed (FAILED)."""
        if self.mlflow is None:
            return
        if isinstance(error, KeyboardInterrupt):
            self.mlflow.close_cell(seed_run, "KILLED", "interrupted")
        else:
            from experiments.training.fit import TrainingDiverged  # loads TensorFlow: only where it is needed

            message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            self.mlflow.close_cell(seed_run, "FAILED", "diverged" if isinstance(error, TrainingDiverged) else "failed", message)

    def cell_skipped(self, seed_run: CellFolder) -> None:
        """A finished cell the study does not train again: log it where it is missing."""
        if self.tensorboard:
            directory = tensorboard_dir(self.run_root, seed_run)
            epochs = _history_epochs(seed_run)
            if not directory.exists() and epochs:
                try:
                    write_tensorboard_history(directory, epochs)
                except Exception as error:  # a view of the numbers, never a reason to stop
                    log(f"warning: could not write TensorBoard events for {seed_run.label} ({type(error).__name__}: {error})")
        if self.mlflow is not None:
            self.mlflow.record_finished(seed_run)


@contextmanager
def tracked_cell(tracking: StudyTracking | None, seed_run: CellFolder) -> Iterator[None]:
    """Around a cell's training: its MLflow run ends finished, or failed / killed with the error."""
    if tracking is None:
        yield
        return
    try:
        yield
    except BaseException as error:
        tracking.cell_stopped(seed_run, error)
        raise
    tracking.cell_finished(seed_run)
