"""The process's malloc policy: one glibc arena for every thread.

Frames are allocated on one thread and freed on another (the decoder's pump thread makes them, the render
stage's finishing thread and the encoder's feeder drop them), and glibc gives each thread an arena of its own
(up to 8 per core) that keeps what was freed into it. At 1080p (6 MB a frame) the render stage peaked at
1.41 GB with the default and 1.06 GB with one arena, at the same speed (36.4 vs 36.7 frames/s, 1,800 frames;
BENCHMARKS.md "Whole dub"). Python's own small objects have their own allocator, so threads seldom meet
on malloc's lock.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt parameter (glibc's malloc.h)


def one_malloc_arena() -> bool:
    """Limit glibc to one malloc arena; True when it took. Call it before the process starts threads (threads
    that already have an arena keep it). Elsewhere than glibc, nothing happens."""
    try:
        # The process's own symbols (dlopen(NULL)) include libc's; ctypes.util.find_library would run a
        # subprocess to find the file, at every start of the CLI.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no dynamic loader, or a libc without mallopt (musl)
        return False
    done = bool(mallopt(M_ARENA_MAX, 1))
    if not done:
        log.debug("mallopt(M_ARENA_MAX) was refused: per-thread malloc arenas stay")
    return done
