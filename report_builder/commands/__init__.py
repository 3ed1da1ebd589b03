"""One module per command of `python -m report_builder`; report_builder.cli parses the command line
and maps their errors to one sentence and an exit status."""

#: What the running command writes into (a folder), for a full-disk message that has no file name
OUTPUT: dict[str, object] = {}
