"""The artifact contract shared by the runner (experiments) and the report (report_builder): the
names of its modules, re-exported, so that `from experiments.artifacts import X` reads any of them.

The layout and the JSON schema are documented in docs/guide/artifacts.md. Each module does one job
(each imports only those listed above it):

- files: atomic writes, regular files read within a size, JSON read back within bounds;
- records: the base of every typed record (Fields, Record, SCHEMA_VERSION) and utc_now;
- cell_records: the records of a cell's files (History, RunState, ValidationPredictions, ...);
- run_records: the records of manifest.json, dataset.json and metrics.json;
- side_records: the records of a cell's side files and the run's shared settings;
- folders: the run folder's layout (RunFolder, CellFolder) and claiming a folder for a run;
- ledger: the ledger of the files written into shared folders, and removing only those;
- loader: one run folder read for the report (load_run_folder).

Code inside the package imports from the module that defines a name, never from here. A test that
replaces a name (monkeypatch) must replace it in the module that looks it up, not here.
"""

from experiments.artifacts.cell_records import (
    CheckpointProgress,
    Epoch,
    History,
    Layer,
    ModelSummary,
    RunState,
    ValidationPredictions,
    files_digest,
    summary_text_named,
)
from experiments.artifacts.files import (
    JSON_MAX_BYTES,
    JSON_MAX_DEPTH,
    JSON_MAX_INTEGER_DIGITS,
    PER_IMAGE_JSON_FILES,
    PER_IMAGE_JSON_MAX_BYTES,
    UMASK,
    ArtifactError,
    ArtifactFormatError,
    FileTooLarge,
    NotARegularFile,
    UnsafeJson,
    file_sha256,
    json_depth,
    json_size_limit,
    load_json_object,
    parse_json_file,
    parse_json_text,
    read_json,
    read_regular_file,
    write_atomic,
    write_json,
)
from experiments.artifacts.folders import (
    CHECKPOINT_NAME,
    EVENT_FILE_NAME,
    RUN_ENTRIES,
    RUN_MARKER,
    RUN_MARKER_DATA,
    SEED_FOLDER_PREFIX,
    TEMPORARY_NAME,
    TRANSIENT_RUN_ENTRIES,
    CellFolder,
    RunFolder,
    parse_seed_folder,
    seed_folder_name,
    seed_folders,
)
from experiments.artifacts.ledger import (
    LEDGER_NAME,
    describe_left_files,
    record_written,
    remove_written_files,
    written_names,
)
from experiments.artifacts.loader import (
    RERUN_COMMAND,
    ModelFiles,
    RunFolderError,
    RunRecords,
    SeedRun,
    check_epochs,
    is_regular_file_of,
    load_run_folder,
    older_schema_error,
)
from experiments.artifacts.records import (
    SCHEMA_VERSION,
    Fields,
    Record,
    utc_now,
    utc_now_precise,
)
from experiments.artifacts.run_records import (
    PLAN_KINDS,
    BaseWeights,
    ComparisonPairs,
    Dataset,
    DataSource,
    Execution,
    MajorityBaseline,
    Manifest,
    Metrics,
    ModelEntry,
    ModelScore,
    RunEntry,
    Selection,
    SkippedEntry,
    SplitFiles,
    StudyModel,
    StudyRecord,
    TestEvaluation,
    TestPrediction,
    as_dict,
    flatten_config,
)
from experiments.artifacts.side_records import (
    CellOwner,
    MlflowLink,
    RunSettings,
    SideRecord,
)

__all__ = [
    # files
    "UMASK",
    "ArtifactError",
    "ArtifactFormatError",
    "write_atomic",
    "write_json",
    "NotARegularFile",
    "FileTooLarge",
    "read_regular_file",
    "file_sha256",
    "JSON_MAX_DEPTH",
    "JSON_MAX_INTEGER_DIGITS",
    "JSON_MAX_BYTES",
    "PER_IMAGE_JSON_MAX_BYTES",
    "PER_IMAGE_JSON_FILES",
    "json_size_limit",
    "UnsafeJson",
    "json_depth",
    "parse_json_text",
    "parse_json_file",
    "read_json",
    "load_json_object",
    # records
    "SCHEMA_VERSION",
    "Fields",
    "Record",
    "utc_now",
    "utc_now_precise",
    # cell_records
    "Epoch",
    "History",
    "CheckpointProgress",
    "RunState",
    "Layer",
    "summary_text_named",
    "ModelSummary",
    "ValidationPredictions",
    "files_digest",
    # run_records
    "SkippedEntry",
    "DataSource",
    "BaseWeights",
    "RunEntry",
    "ModelEntry",
    "StudyModel",
    "PLAN_KINDS",
    "ComparisonPairs",
    "StudyRecord",
    "as_dict",
    "flatten_config",
    "Execution",
    "Manifest",
    "SplitFiles",
    "MajorityBaseline",
    "Dataset",
    "Selection",
    "TestPrediction",
    "TestEvaluation",
    "ModelScore",
    "Metrics",
    # side_records
    "SideRecord",
    "CellOwner",
    "MlflowLink",
    "RunSettings",
    # folders
    "SEED_FOLDER_PREFIX",
    "seed_folder_name",
    "parse_seed_folder",
    "RUN_MARKER",
    "RUN_MARKER_DATA",
    "RUN_ENTRIES",
    "TRANSIENT_RUN_ENTRIES",
    "TEMPORARY_NAME",
    "CHECKPOINT_NAME",
    "EVENT_FILE_NAME",
    "RunFolder",
    "CellFolder",
    "seed_folders",
    # ledger
    "LEDGER_NAME",
    "written_names",
    "record_written",
    "remove_written_files",
    "describe_left_files",
    # loader
    "RERUN_COMMAND",
    "RunFolderError",
    "check_epochs",
    "SeedRun",
    "ModelFiles",
    "RunRecords",
    "load_run_folder",
    "older_schema_error",
    "is_regular_file_of",
]
