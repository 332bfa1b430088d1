"""CPU seconds from /proc and getrusage, for benchmarks that compare how much work each way does.

Imported by db_rollback.py and by the module child it runs in a fresh interpreter."""
from __future__ import annotations

import os
import resource


def postgres_cpu_s(postmaster: int) -> float:
    """CPU seconds a PostgreSQL server has used so far: the postmaster, its live children and the
    children it has reaped (backends that ended)."""
    tick = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{postmaster}/task/{postmaster}/children") as listing:
        pids = [postmaster] + [int(p) for p in listing.read().split()]
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended between the listing and the read: the postmaster's cutime has it
        total += sum(int(f) for f in fields[11:13])  # utime, stime
        if pid == postmaster:
            total += sum(int(f) for f in fields[13:15])  # cutime, cstime
    return total / tick


def rusage_cpu_s(*who: int) -> float:
    """User + system CPU seconds of resource.RUSAGE_SELF and/or RUSAGE_CHILDREN (ended children)."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(w) for w in who))
