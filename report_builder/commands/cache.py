"""`cache`: list the decoded-image caches with their sizes, verify every byte of them, or remove them."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from experiments.config import load_config
from experiments.console import format_size
from experiments.data.cache import NO_FULL_CHECKSUMS, cache_root, list_caches, remove_cache, verify_cache
from experiments.errors import UserError


def _named_caches(names: list[str], root: Path, entries: list, others: list, untouched: str) -> list:
    """The caches `names` name, in that order, each once: a unique start of a cache's name, or
    "all" for every one. A name that is no cache's is a UserError; one that starts a folder that is
    not a cache says so, and that the command leaves it (`untouched`)."""
    chosen = []
    for name in names:
        matches = entries if name == "all" else [entry for entry in entries if entry.name.startswith(name)]
        if not matches and name != "all":
            other = next((entry for entry in others if entry.name.startswith(name)), None)
            if other is not None:
                raise UserError(f"'{other.path}' is not a decoded-image cache (it lacks the index and marker a cache writes), "
                                f"so {untouched}; `python -m report_builder cache` lists the caches.")
            raise UserError(f"There is no decoded-image cache '{name}' in {root}; `python -m report_builder cache` lists them.")
        if len(matches) > 1 and name != "all":
            raise UserError(f"'{name}' names {len(matches)} caches in {root}; give more of the name.")
        chosen.extend(entry for entry in matches if entry not in chosen)
    return chosen


def _verify_caches(root: Path, entries: list, others: list, names: list[str]) -> None:
    """`cache --verify [NAME ...]`: one line per cache, OK or damaged (UserError if any is damaged)."""
    chosen = _named_caches(["all"] if not names or "all" in names else names, root, entries, others, "it is not verified")
    if not chosen:
        print(f"No decoded-image caches in {root}")
        return
    damaged = []
    for entry in chosen:
        if entry.state.startswith(("unfinished", "being removed")):
            print(f"  {entry.name}  not verified: {entry.state}")
            continue
        started = time.perf_counter()
        problem = verify_cache(entry.path)
        seconds = time.perf_counter() - started
        if problem is None:
            print(f"  {entry.name}  OK ({format_size(entry.bytes)} read in {seconds:.1f} s)")
        elif problem == NO_FULL_CHECKSUMS:
            print(f"  {entry.name}  not verifiable: {problem}; the next train that uses it decodes the images again")
        else:
            damaged.append(entry)
            print(f"  {entry.name}  damaged: {problem}")
    if damaged:
        names_text = ", ".join(entry.name for entry in damaged[:3]) + (", ..." if len(damaged) > 3 else "")
        raise UserError(f"{len(damaged)} of {len(chosen)} decoded-image caches in {root} failed the check ({names_text}); "
                        "remove them with `python -m report_builder cache --remove NAME` (the next train decodes the "
                        "images again).")


def cache(arguments: argparse.Namespace) -> None:
    """List the decoded-image caches (name, disk size, images, image size, data folder, date), or remove some."""
    if arguments.cache_dir is not None:
        cache_dir = arguments.cache_dir
    else:
        cache_dir = load_config(arguments.config).data.cache_dir
    root = cache_root(cache_dir)
    if root.parent.exists() and not root.parent.is_dir():
        raise UserError(f"The cache folder {root.parent} (--cache-dir, data.cache_dir) is a file, not a folder; give the folder that holds the caches.")
    everything = list_caches(root)
    entries = [entry for entry in everything if entry.is_cache]
    others = [entry for entry in everything if not entry.is_cache]
    if arguments.verify is not None:
        if arguments.remove:
            raise UserError("Give either --remove or --verify, not both.")
        _verify_caches(root, entries, others, arguments.verify)
        return
    if arguments.remove:
        chosen = _named_caches(arguments.remove, root, entries, others, "it is left alone")
        for entry in chosen:
            removal = remove_cache(root, entry.name)
            if removal:
                print(f"Removed {entry.path} ({format_size(entry.bytes)})")
            elif removal.busy:
                print(f"Not removed: {entry.path} is being built by another process right now")
            elif removal.strangers:
                print(f"Not removed: {entry.path} also holds files the cache did not write ({', '.join(removal.strangers[:3])}"
                      f"{', ...' if len(removal.strangers) > 3 else ''}); it is left alone")
            else:
                print(f"Not removed: {entry.path} is not a decoded-image cache; it is left alone")
        if not chosen:
            print(f"No decoded-image caches in {root}")
        for entry in others if "all" in arguments.remove else []:
            print(f"Left alone: {entry.path} (not a decoded-image cache)")
        return
    if not everything:
        print(f"No decoded-image caches in {root}")
        return
    print(f"Decoded-image caches in {root}:" if entries else f"No decoded-image caches in {root}; it holds:")
    for entry in everything:
        if entry.state == "ok":
            height, width = entry.image_size
            print(f"  {entry.name}  {format_size(entry.bytes)}  {entry.images} images at {height}x{width}  "
                  f"from {entry.data_root}  ({entry.created_at})")
        else:
            print(f"  {entry.name}  {format_size(entry.bytes)}  {entry.state}")
    if entries:
        print(f"{len(entries)} in all, {format_size(sum(entry.bytes for entry in entries))}; "
              "remove with `python -m report_builder cache --remove NAME` (or `--remove all`)"
              + (f"; {len(others)} other folder(s) left alone" if others else ""))


