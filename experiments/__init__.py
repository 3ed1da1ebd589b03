"""The runner: a study of Keras image classifiers, trained, chosen on validation and tested once, written
as a run folder of artifacts that report_builder turns into a site.

The sub-packages follow the flow, each importing only from those before it (scripts/import_graph.py
checks that there is no circle):

- ground floor: errors (the one exception hierarchy), interrupts (Ctrl-C and SIGTERM), runtime
  (TensorFlow's process settings), console (messages and progress), artifacts (the run folder's
  format, shared with report_builder), config (the study's typed configuration);
- data -> models -> training -> study -> scale.

The entry points: `experiments.config.load_config(path, overrides)`, then
`experiments.study.run.run_study(config)` (one process) or `experiments.scale.run.run_scaled(config,
force, options)` (worker processes, a job array, Dask).
"""
