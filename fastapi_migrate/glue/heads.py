"""``script_heads``: the revision graph's heads without executing the revision files.

A no-op start costs one version query only if the target is known without loading the scripts:
Alembic learns the revision graph by executing every file in ``versions/``, which costs tens to
hundreds of milliseconds on each restart. Here the graph's heads come from the files without
running them:

1. a small cache, ``<script_location>/__pycache__/fastapi_migrate_heads.json``, written where
   the process may write, that maps a key to the heads. The key is each versions folder's
   ``stat`` (a file added, removed, renamed or replaced, as git, rsync, a deploy or an editor
   that saves by renaming does, changes the folder's mtime and ctime) and the ``stat`` of the
   head files (size, mtime, ctime, inode: an edit in place of a head is seen; ctime cannot be
   set from user space). An edit in place of an older file is seen at the next change of the
   folder: it rewrites history already applied (a new migration takes a new file or an edited
   head), which Alembic refuses, or with target ``heads`` may run again, where the cached answer
   is a no-op. One ``stat`` per file cost as much as the whole version query on SQLite at 1000
   revisions, and listing the folder a third of it;
2. on a cache miss, a strict reading of the ``revision = ...`` / ``down_revision = ...`` lines.

The answer is only ever the heads or "don't know" (None): anything unusual (a line the reader
doubts, branch labels, ``depends_on``, several heads for ``head``, a target other than
``head``/``heads``/an exact id) leaves the engine to load the scripts with Alembic. Once Alembic
has loaded them, ``HeadsLookup.remember`` caches its answer under the fingerprint taken before:
a history the reader cannot vouch for (``__import__``, ``import *``, helpers from the app) costs
a full load on the first start after a change only, and no file is read twice in a start.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import coerce_resource_to_filename

from .config import alembic_option

log = logging.getLogger("fastapi_migrate")

CACHE_NAME = "fastapi_migrate_heads.json"
_FORMAT = 4  # bump when the reading rules change: old caches are then ignored
# A folder or head file changed within this window of the key might change again within the
# same timestamp tick (1-2 s on coarse file systems) without its stat changing: never cache it.
_RACY_NS = 2_000_000_000
_NAMES = rb"(?:revision|down_revision|branch_labels|depends_on)"
# Substrings found in every line that mentions one of the names.
_MENTIONS = (b"revision", b"branch_labels", b"depends_on")
# One top-level ``name[: annotation] = literal`` line, the way every Alembic template writes it.
_ASSIGNMENT = re.compile(
    rb"(?P<name>" + _NAMES + rb")[ \t]*(?::[^=\n]*)?=[ \t]*(?P<value>[^\n]+?)[ \t]*"
    rb"(?:#[^\n'\"]*)?\r?"
)
# Any other line that may bind one of the names (indented, augmented, keyword, walrus, import,
# for, as, del, global) makes the file doubted.
_BINDING = re.compile(
    rb"\b" + _NAMES + rb"\b[ \t]*(?::[^=\n]*)?(?:[-+*/%&|^@]|//|\*\*|>>|<<)?=(?!=)"
    rb"|\b(?:import|as|global|nonlocal|del|for)\b.*\b" + _NAMES + rb"\b"
)
# Ways a module can rebind a name on a line that does not name it.
_DYNAMIC = (
    b"globals",
    b"vars(",
    b"setattr",
    b"exec(",
    b"exec (",
    b"eval(",
    b"eval (",
    b"__import__",
    b"__dict__",
    b"sys.modules",
    b"import *",
    b"import*",
)
# A quoted revision id: no quote, backslash or whitespace inside (escapes are left to Alembic).
_STRING = re.compile(rb"""'([^'"\\\s]+)'|"([^'"\\\s]+)\"""")
_RESERVED = {"head", "heads", "base", "current"}
# Characters Alembic refuses in a revision id (``Revision.verify_rev_id``: dots are fine), and
# quotes and backslashes, left to Alembic.
_DOUBTFUL = frozenset("@-+:'\"\\")


@dataclass(frozen=True)
class ScriptHeads:
    """The revision graph's heads and every revision id, as Alembic would find them."""

    heads: tuple[str, ...]  # what ``head`` resolves to (Alembic's ``RevisionMap.heads``)
    revisions: frozenset[str]
    source: str  # "cache" or "text" (of the files), for the debug log
    # What ``heads`` resolves to: the same but where ``depends_on`` makes them differ.
    real_heads: tuple[str, ...] | None = None

    def target(self, target: str) -> tuple[str, ...] | None:
        """The revisions ``target`` names, for the targets this path understands; else None."""
        if target == "heads":
            return self.real_heads if self.real_heads is not None else self.heads
        if target == "head":  # an empty history's head is no revision at all, as in Alembic
            return self.heads if len(self.heads) <= 1 else None
        if target in self.revisions:
            return (target,)
        return None


@dataclass
class HeadsLookup:
    """One start's look at a versions folder: the heads if known without executing a file,
    and what is needed to cache Alembic's answer once it has loaded the scripts."""

    heads: ScriptHeads | None
    key: str | None = None
    cache: Path | None = None
    keyed_at: int = 0  # time.time_ns() before the key: a head changed since is racy
    settled: bool = False  # no versions folder changed within the racy window of the key

    def remember(self, script: ScriptDirectory) -> None:
        """Cache the heads of the scripts Alembic loaded, under the key taken before loading
        them: the next start with unchanged files executes none. Never an error."""
        if self.heads is not None or self.key is None or self.cache is None or not self.settled:
            return
        try:
            revision_map = script.revision_map
            heads = tuple(sorted(revision_map.heads))
            real = tuple(sorted(revision_map._real_heads))
            revisions = frozenset(s.revision for s in script.walk_revisions())
            files = [_path_of(script, revision) for revision in {*heads, *real}]
        except Exception as error:  # a cache is never worth a failed start
            log.debug("no-op check: heads not cached (%s)", type(error).__name__)
            return
        found = ScriptHeads(heads, revisions, "cache", None if real == heads else real)
        _write_cache(self.cache, self.key, found, files, self.keyed_at)
        self.heads = found


def script_heads(cfg: Config) -> ScriptHeads | None:
    """The graph's heads without executing a revision file; None when in any doubt."""
    return lookup_heads(cfg).heads


def lookup_heads(cfg: Config, *, cache_only: bool = False) -> HeadsLookup:
    """The graph's heads from the cache or the files' text (each file read at most once), and
    the key to cache Alembic's answer under when they are not known. ``cache_only``: no file
    is read on a miss (the heads are then None, and nothing is remembered)."""
    found = version_folders(cfg)
    if found is None:
        return HeadsLookup(None)
    script_folder, folders = found
    keyed_at = time.time_ns()
    key, changed = _folders_key(folders)
    cache = script_folder / "__pycache__" / CACHE_NAME
    cached = _read_cache(cache, key)
    if cached is not None or cache_only:
        return HeadsLookup(cached)
    files = _revision_files(folders)  # none: an empty history, whose heads are none
    settled = changed <= keyed_at - _RACY_NS
    lookup = HeadsLookup(None, key, cache, keyed_at, settled)
    graph = _read_graph(files)
    if graph is None:
        return lookup
    heads = _heads({revision: downs for revision, (downs, _) in graph.items()})
    if heads is not None and settled:
        head_files = [graph[revision][1] for revision in heads.heads]
        _write_cache(cache, key, heads, head_files, keyed_at)
    lookup.heads = heads
    return lookup


def version_folders(cfg: Config) -> tuple[Path, list[Path]] | None:
    """The script folder and the folders Alembic reads revisions from; None for layouts this
    path leaves to Alembic."""
    if alembic_option(cfg, "sourceless") or alembic_option(cfg, "recursive_version_locations"):
        return None
    location = alembic_option(cfg, "script_location")
    if not isinstance(location, str) or not location:
        return None
    try:
        script_folder = coerce_resource_to_filename(location).absolute()
    except ImportError:  # package:folder naming no package: load_scripts says so
        return None
    if not script_folder.is_dir():
        return None  # Alembic's error message is the better one
    locations = cfg.get_version_locations_list()
    if locations:
        return script_folder, [coerce_resource_to_filename(p).absolute() for p in locations]
    return script_folder, [script_folder / "versions"]


def _folders_key(folders: list[Path]) -> tuple[str, int]:
    """A digest of the versions folders' ``stat``, and when the latest of them changed (the
    older of its mtime and ctime: a deploy may set the mtime)."""
    digest = hashlib.blake2b(f"{_FORMAT}\0{folders}\0".encode(), digest_size=20)
    changed = 0
    for folder in folders:
        try:
            stat = os.stat(folder)
        except OSError:
            digest.update(b"missing\0")  # Alembic skips a missing versions folder too
            continue
        fields = (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev)
        digest.update(array("q", fields).tobytes())
        changed = max(changed, min(stat.st_mtime_ns, stat.st_ctime_ns))
    return digest.hexdigest(), changed


def _revision_files(folders: list[Path]) -> list[str]:
    """The revision files' paths, as Alembic finds them (on a cache miss only)."""
    files: list[str] = []
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                # Alembic's rule: r"(?!\.\#|__init__)(.*\.py)$"
                revision_file = name.endswith(".py") and not name.startswith(("__init__", ".#"))
                if revision_file and "\n" not in name and not entry.is_dir():
                    files.append(entry.path)
    return files


def _stats(files: list[str]) -> list[list[int]]:
    """What tells an edit of each file: size, mtime, ctime, inode, device."""
    found = []
    for path in files:
        stat = os.stat(path)
        found.append([stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev])
    return found


def _path_of(script: ScriptDirectory, revision: str) -> str:
    found = script.get_revision(revision)
    if found is None or not found.path:
        raise LookupError(revision)
    return str(found.path)


def _read_graph(files: list[str]) -> dict[str, tuple[tuple[str, ...], str]] | None:
    """Each revision's down revisions and file, read from the files' text; None at the first
    doubt."""
    graph: dict[str, tuple[tuple[str, ...], str]] = {}
    for path in files:
        with open(path, "rb") as handle:
            found = _read_revision(handle.read())
        if found is None:
            log.debug("no-op check: cannot read %s without running it", path)
            return None
        revision, down = found
        if revision in graph:
            return None  # duplicate ids: Alembic's warning and choice, not ours
        graph[revision] = (down, path)
    return graph


def _read_revision(text: bytes) -> tuple[str, tuple[str, ...]] | None:
    """``(revision, down_revisions)`` from one file, or None unless it is plainly literal."""
    if any(word in text for word in _DYNAMIC):
        return None
    values: dict[bytes, bytes] = {}
    for line in _lines_mentioning(text):
        match = _ASSIGNMENT.fullmatch(line)
        if match is None:
            if _BINDING.search(line):
                return None
            continue
        name = match["name"]
        if name in values:
            return None
        values[name] = match["value"]
    if b"revision" not in values or b"down_revision" not in values:
        return None
    for optional in (b"branch_labels", b"depends_on"):
        if values.get(optional, b"None") != b"None":
            return None
    revision = _literal(values[b"revision"])
    down = _literal(values[b"down_revision"])
    if not isinstance(revision, str) or down is None:
        return None
    downs = (down,) if isinstance(down, str) else down
    if revision in downs or len(set(downs)) != len(downs):
        return None
    return revision, downs


def _lines_mentioning(text: bytes) -> list[bytes]:
    """Each line containing one of the names, once: a few lines per file, found at C speed
    (a regex over the whole text costs ~100 us a file)."""
    starts: dict[int, int] = {}
    for word in _MENTIONS:
        at = text.find(word)
        while at != -1:
            start = text.rfind(b"\n", 0, at) + 1
            end = text.find(b"\n", at)
            end = len(text) if end == -1 else end
            starts[start] = end
            at = text.find(word, end)
    return [text[start:end] for start, end in starts.items()]


def _literal(value: bytes) -> str | tuple[str, ...] | None:
    """A revision id, ``()`` for ``None``, a tuple of ids; None for anything else."""
    if value == b"None":
        return ()
    match = _STRING.fullmatch(value)
    if match is not None:
        try:
            return _identifier((match[1] or match[2]).decode())
        except UnicodeDecodeError:
            return None
    if value[:1] in (b"(", b"[") and value[-1:] in (b")", b"]"):
        try:
            items = ast.literal_eval(value.decode())
        except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
            return None
        if not isinstance(items, tuple | list) or not items:
            return None
        ids = tuple(_identifier(i) if isinstance(i, str) else None for i in items)
        return None if any(i is None for i in ids) else ids  # type: ignore[return-value]
    return None


def _identifier(value: str) -> str | None:
    """``value`` if Alembic takes it as a revision id as written (``v3.0.0.a`` included);
    None for the reserved words and anything with a character in doubt."""
    plain = value.isprintable() and not any(c.isspace() or c in _DOUBTFUL for c in value)
    return value if value and plain and value not in _RESERVED else None


def _heads(graph: dict[str, tuple[str, ...]]) -> ScriptHeads | None:
    """Heads of an acyclic graph whose every down revision exists; None otherwise."""
    children: dict[str, list[str]] = {revision: [] for revision in graph}
    for revision, downs in graph.items():
        for down in downs:
            if down not in children:
                return None
            children[down].append(revision)
    # Kahn's walk from the bases: a graph with a cycle never visits every revision.
    waiting = {revision: len(downs) for revision, downs in graph.items()}
    ready = [revision for revision, count in waiting.items() if count == 0]
    visited = 0
    while ready:
        revision = ready.pop()
        visited += 1
        for child in children[revision]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if visited != len(graph):
        return None
    heads = tuple(sorted(revision for revision, below in children.items() if not below))
    return ScriptHeads(heads, frozenset(graph), "text")


def _read_cache(path: Path, key: str) -> ScriptHeads | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _FORMAT or data.get("key") != key:
        return None
    lists = [data.get(name) for name in ("heads", "real_heads", "revisions", "files")]
    if not all(isinstance(x, list) and all(isinstance(r, str) for r in x) for x in lists):
        return None
    heads, real, revisions, files = (x or [] for x in lists)
    if not set(heads + real) <= set(revisions) or (revisions and not files):  # none: empty
        return None
    try:
        if _stats(files) != data.get("stats"):
            return None  # a head file edited in place (or gone)
    except OSError:
        return None
    return ScriptHeads(
        tuple(heads), frozenset(revisions), "cache", None if real == heads else tuple(real)
    )


def _write_cache(path: Path, key: str, heads: ScriptHeads, files: list[str], keyed_at: int) -> None:
    """Write atomically, or not at all (a head file changed within the racy window, a
    read-only folder, no permission): never an error."""
    try:
        stats = _stats(files)
    except OSError as error:
        log.debug("no-op check: cache not written (%s)", error)
        return
    # A file is only as fresh as the older of its mtime and ctime (a deploy may set the mtime).
    if any(min(mtime, ctime) > keyed_at - _RACY_NS for _, mtime, ctime, _, _ in stats):
        log.debug("no-op check: a head file changed in the last 2 s, cache not written")
        return
    data = {
        "format": _FORMAT,
        "key": key,
        "heads": list(heads.heads),
        "real_heads": list(heads.real_heads if heads.real_heads is not None else heads.heads),
        "revisions": sorted(heads.revisions),
        "files": files,
        "stats": stats,
    }
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(exist_ok=True)
        temporary.write_text(json.dumps(data))
        os.replace(temporary, path)
    except OSError as error:
        log.debug("no-op check: cache not written to %s (%s)", path, error)
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
