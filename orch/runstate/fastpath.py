"""Answering `status`, the dry run and a no-op `resume` from the run's no-op manifest, before anything heavy loads.

The manifest (orch.runstate.manifest) holds the signature of every input of a run at a moment doit
found the whole graph up to date, and what status and resume printed then. When every signature still
holds, doit would decide the same now, so the answer is given without importing doit, the config models,
the git adapters or jsonschema (their imports alone cost more than plain doit's whole no-op run). Whenever
anything differs, or anything is in doubt, these functions return None and the command takes its full
path, which finds the change and says why. After a plan edit, status and the dry run are answered from the
manifest and the edit alone when they can be (orch.runstate.delta).

Nothing here writes but what every resume writes: the run's `used.json` (which run is the latest), under
the run's lock. Status and the dry run write nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path

from orch import output
from orch.failpoints import ENV as CRASH_ENV
from orch.runstate import manifest

# Asks for the full path every time (benchmarks and tests compare the two answers); a resume then also checks the
# whole graph after a plan edit (orch.engine.noop_record.affected_by_edit).
FULL_CHECK_ENV = 'CODEX_ORCH_FULL_CHECK'
# More differing files than this and the full path answers without the fast path looking further: an answer
# after an edit needs the plan file to be the only one (orch.runstate.delta).
DIFFERENCES = 1
# Variables that move git's repository discovery (or codex-orch's crash tests): the full path decides.
_IN_DOUBT_ENV = ('GIT_DIR', 'GIT_WORK_TREE', 'GIT_COMMON_DIR', 'GIT_CEILING_DIRECTORIES',
                 'GIT_DISCOVERY_ACROSS_FILESYSTEM', CRASH_ENV, FULL_CHECK_ENV)


def from_argv(argv: list[str]) -> tuple[argparse.Namespace | None, int | None]:
    """Try the fast answer for the plain forms of `status` and `resume`, before argparse is even built
    (building the parser costs more than answering): (the namespace argparse would make, the answer).

    Only forms that argparse parses in exactly one way are recognised (no abbreviations, no combined
    flags); anything else returns (None, None) and goes through argparse and the command as usual.
    """
    args = _simple_namespace(argv)
    if args is None:
        return None, None
    return args, (status(args) if args.command == 'status' else resume(args))


_STATUS_FLAGS = {'--json': 'json', '--watch': 'watch'}
_RESUME_FLAGS = {'--continue': 'keep_going', '--discard-changes': 'discard_changes', '--dry-run': 'dry_run'}


def _simple_namespace(argv: list[str]) -> argparse.Namespace | None:
    if not argv or argv[0] not in ('status', 'resume'):
        return None
    command = argv[0]
    if command == 'status':
        ns = argparse.Namespace(command=command, run_id=None, json=False, watch=False)
        flags = _STATUS_FLAGS
    else:
        ns = argparse.Namespace(command=command, run_id=None, spec_file=None, jobs=None, keep_going=False,
                                quiet=0, verbose=0, discard_changes=False, dry_run=False, executor=None)
        flags = _RESUME_FLAGS
    rest = argv[1:]
    while rest:
        arg = rest.pop(0)
        if arg in flags:
            setattr(ns, flags[arg], True)
        elif command == 'resume' and arg in ('-q', '--quiet'):
            ns.quiet += 1
        elif arg == '--run-id' and rest and rest[0] and not rest[0].startswith('-'):
            ns.run_id = rest.pop(0)
        elif command == 'resume' and arg in ('-j', '--jobs') and rest and rest[0].isdigit() and rest[0].isascii():
            ns.jobs = int(rest.pop(0))
        else:
            return None
    return ns


def status(args: argparse.Namespace) -> int | None:
    """Print the status as the full path would, or return None to let it."""
    want = 'status_json' if args.json else 'status_table'
    answers = noop_answers(args.run_id, want=want)
    if answers is None:
        return None
    text = answers.get(want)
    if text is None and want == 'status_json' and isinstance(answers.get('status_doc'), str):
        # the manifest keeps the document compact: indented as the full path prints it
        try:
            text = json.dumps(json.loads(answers['status_doc']), indent=2, sort_keys=True)
        except (ValueError, RecursionError):   # not what a manifest holds: the full path answers
            return None
    if not isinstance(text, str):
        return None
    output.write_line(text)
    return 0


def resume(args: argparse.Namespace) -> int | None:
    """Print what a no-op resume (or its dry run) prints, or return None. Like the full path, a resume
    records the run's use under its lock (it is then the latest run); a dry run writes nothing."""
    if getattr(args, 'spec_file', None):
        return None   # a new spec changes the run
    if getattr(args, 'dry_run', False):
        answers = noop_answers(args.run_id, want='dry_run_lines')
        code = _print(answers, 'dry_run_lines')
        return code if code is None or answers is None else int(answers.get('dry_run_code', 0))
    if os.environ.get('GITHUB_STEP_SUMMARY'):
        # After a checkout that only touched files, doit re-runs the report step (its digest is of
        # stat signatures), which appends the report to the job summary: the full path does that.
        return None
    if max(0, 1 + args.verbose - args.quiet) >= 2:
        return None   # -v lists every up-to-date step: the full path prints those
    if args.jobs is not None and not 1 <= args.jobs <= 64:
        return None   # the full path refuses it, with its message
    if getattr(args, 'executor', None) == 'dask' or _config_names_dask():
        return None   # the full path reaches the Dask scheduler first (exit 2 when it does not answer)
    return _print(noop_answers(args.run_id, use=True), 'resume_lines')


def _config_names_dask() -> bool:
    """Whether the repository's config may choose the Dask executor: `dask` outside a comment (no YAML parser
    here; a mention that is not the executor's kind only costs the full path)."""
    try:
        repo = repo_root(Path.cwd())
        text = (repo / '.orchestrator' / 'orchestrator.yaml').read_text('utf-8') if repo is not None else ''
    except (OSError, UnicodeDecodeError):
        return False
    return any('dask' in line.split(' #')[0] for line in text.splitlines() if not line.lstrip().startswith('#'))


def _print(answers: dict | None, key: str) -> int | None:
    lines = answers.get(key) if answers is not None else None
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        return None
    for line in lines:
        output.write_line(line)
    return 0


def noop_answers(run_id: str | None, *, use: bool = False, want: str | None = None) -> dict | None:
    """What status and a no-op resume printed when the run (default: the latest, from the current
    directory's repository) was last found up to date, if nothing changed since; else None.

    want: the answer asked for (status_table, status_json, dry_run_lines): after a plan edit that one may
    still be computed from the manifest and the edit (orch.runstate.delta)."""
    if any(os.environ.get(name) for name in _IN_DOUBT_ENV):
        return None
    try:
        repo = repo_root(Path.cwd())
    except OSError:   # a working directory that is gone: the full path says so
        return None
    if repo is None:
        return None
    from orch.errors import OrchError
    from orch.runstate.lock import RunLock, holder_pid
    from orch.runstate.runs import latest_run_id, record_use, run_dir
    try:
        run_id = run_id or latest_run_id(repo)
    except (OrchError, OSError):
        return None
    if '/' in run_id or run_id in ('', '.', '..'):
        return None   # only a plain name can be the run a manifest records (its header says which)
    directory = run_dir(repo, run_id)
    found = manifest.peek(directory, manifest.header(repo, run_id))
    if found is None:
        return None
    if not use:
        try:
            if holder_pid(directory) is not None:
                return None   # a run in progress: the full path says so
        except OSError:
            return None
        differing = manifest.differences(str(repo), found, limit=DIFFERENCES)
        if differing is None:
            return None
        if not differing:   # (the status document is in the manifest's second file)
            return found.all_answers() if want == 'status_json' else found.answers
        if want is None:
            return None
        whole = found.whole()   # (an answer after an edit reads all of the manifest)
        if whole is None:
            return None
        from orch.runstate.delta import answers_after_edit  # an edit: maybe answered from it alone
        return answers_after_edit(repo, whole, differing, want)
    lock = RunLock(directory)
    try:
        lock.acquire()   # as the full path does first: a run in progress is its to report
    except (OrchError, OSError):
        return None
    try:
        if manifest.first_difference(str(repo), found) is not None:
            return None
        record_use(repo, run_id)   # the run is now the latest, as after any resume (not in the manifest)
        return found.answers
    except OSError:
        return None   # e.g. used.json cannot be written: the full path meets the same and says so
    finally:
        lock.release()


def repo_root(start: Path) -> Path | None:
    """The repository's top directory as git finds it, for the plain case only: the nearest directory
    with a `.git` directory, owned by this user. A `.git` file (a linked worktree or a submodule, whose
    main checkout git would look up) or anything unusual returns None."""
    try:
        here = Path(os.path.realpath(start))
    except OSError:
        return None
    for directory in (here, *here.parents):
        git_entry = directory / '.git'
        try:
            st = os.lstat(git_entry)
        except FileNotFoundError:
            continue
        except OSError:
            return None
        if not stat.S_ISDIR(st.st_mode) or not os.path.isfile(git_entry / 'HEAD'):
            return None
        try:
            if os.stat(directory).st_uid != os.geteuid() or st.st_uid != os.geteuid():
                return None   # git's safe.directory rules: the full path asks git
        except OSError:
            return None
        return directory
    return None
