"""`codex-orch cache pull|push [REMOTE]`, `cache ls`, `cache gc [--older-than DAYS]`: the result cache.

The cache lives in the repository's refs (`refs/codex-orch/cache/<key>`, orch.adapters.cache_store), so any git
remote carries it: pull and push are a fetch and a push of those refs (an entry is never replaced). REMOTE
defaults to the config's `cache.remote`, else `origin`. `ls` lists the repository's entries and those of the
machine's store (orch.adapters.cache_local), saying where each is; `gc --local` prunes both.
"""
from __future__ import annotations

import argparse
import datetime as dt
import time

from tabulate import tabulate

from orch import output
from orch.adapters import cache_local, cache_store
from orch.commands.common import find_repo
from orch.core.config import CONFIG_FILE, load_config
from orch.errors import EXIT_OK, InputError
from orch.runstate.runs import ORCH_DIR


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser('cache', help='the cache of verified task results: pull, push, ls, gc')
    actions = p.add_subparsers(dest='action', required=True, metavar='ACTION')
    for name, doc in (('pull', "fetch the remote's cache entries"), ('push', 'push the cache entries to the remote')):
        a = actions.add_parser(name, help=doc)
        a.add_argument('remote', nargs='?', help='a git remote (default: config cache.remote, else origin)')
    actions.add_parser('ls', help="list the cache entries: key, task, run, when, where (the repository's refs, "
                       "the machine's local store, or both)")
    gc = actions.add_parser('gc', help='delete cache entries')
    gc.add_argument('--older-than', type=float, default=None, metavar='DAYS',
                    help='only entries written more than DAYS days ago (default: every entry)')
    gc.add_argument('--local', action='store_true',
                    help="prune the machine's local store too (shared by every repository on this machine)")


def cache(args: argparse.Namespace) -> int:
    repo = find_repo()
    store = cache_store.GitRefStore(repo)
    settings = load_config(repo / ORCH_DIR / CONFIG_FILE).cache
    path = cache_local.local_path(repo, settings.local if settings else True)
    local = cache_local.LocalStore(path) if path is not None else None
    if args.action in ('pull', 'push'):
        remote = args.remote or (settings.remote if settings else None) or 'origin'
        if remote.startswith('-'):
            raise InputError(f'invalid remote {remote!r}: name a git remote or a repository path')
        before = {k for k, _ in store.entries()}
        (cache_store.fetch if args.action == 'pull' else cache_store.push)(repo, remote)
        after = {k for k, _ in store.entries()}
        what = f'{len(after - before)} new' if args.action == 'pull' else f'{len(after)}'
        output.write_line(f'cache {args.action}: {what} entries ({remote})')
        return EXIT_OK
    if args.action == 'ls':
        mine, machine = dict(store.entries()), dict(local.entries() if local else [])
        rows = []
        for key, when in sorted({**machine, **mine}.items(), key=lambda kv: kv[1]):
            entry = store.get(key) if key in mine else local.get(key) if local else None
            origin = (entry.data.get('origin') if entry else None) or {}
            rows.append([key[:16], origin.get('task', '?'), origin.get('run', '?'),
                         dt.datetime.fromtimestamp(when).isoformat(timespec='seconds'),
                         'ok' if entry else 'unreadable',
                         'both' if key in mine and key in machine else 'repo' if key in mine else 'local'])
        output.write_line(tabulate(rows, headers=['key', 'task', 'run', 'written', 'entry', 'where']) if rows
                          else 'no cache entries')
        return EXIT_OK
    if args.older_than is not None and args.older_than < 0:
        raise InputError('--older-than must be a number of days, 0 or more')
    cutoff = time.time() - (args.older_than or 0) * 86400
    gone = [key for key, when in store.entries() if args.older_than is None or when < cutoff]
    for key in gone:
        store.delete(key)
    output.write_line(f'cache gc: {len(gone)} entries deleted')
    if args.local and local is None:
        output.write_line('cache gc: the local store is off here (cache.local: false in the config)')
    elif args.local and local is not None:
        pruned = [key for key, when in local.entries() if args.older_than is None or when < cutoff]
        for key in pruned:
            local.delete(key)
        local.collect()
        output.write_line(f'cache gc: {len(pruned)} entries deleted from the local store {local.path}')
    return EXIT_OK
