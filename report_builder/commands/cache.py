"""`cache`: list the decoded-image caches with their sizes, or remove them."""

from __future__ import annotations

import argparse

from experiments.config import load_config
from experiments.console import format_size
from experiments.data.cache import cache_root, list_caches, remove_cache
from experiments.errors import UserError


def cache(arguments: argparse.Namespace) -> None:
    """List the decoded-image caches (name, disk size, images, image size, data folder, date), or remove some."""
    if arguments.cache_dir is not None:
        cache_dir = arguments.cache_dir
    else:
        cache_dir = load_config(arguments.config).data.cache_dir
    root = cache_root(cache_dir)
    everything = list_caches(root)
    entries = [entry for entry in everything if entry.is_cache]
    others = [entry for entry in everything if not entry.is_cache]
    if arguments.remove:
        chosen = []
        for name in arguments.remove:
            matches = entries if name == "all" else [entry for entry in entries if entry.name.startswith(name)]
            if not matches and name != "all":
                other = next((entry for entry in others if entry.name.startswith(name)), None)
                if other is not None:
                    raise UserError(f"'{other.path}' is not a decoded-image cache (it lacks the index and marker a cache writes), "
                                    "so it is left alone; `python -m report_builder cache` lists the caches.")
                raise UserError(f"There is no decoded-image cache '{name}' in {root}; `python -m report_builder cache` lists them.")
            if len(matches) > 1 and name != "all":
                raise UserError(f"'{name}' names {len(matches)} caches in {root}; give more of the name.")
            chosen.extend(entry for entry in matches if entry not in chosen)
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


