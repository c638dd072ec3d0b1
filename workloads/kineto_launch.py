"""Is a Kineto trace bound by its CPU launches? :func:`launch_profile` measures it from the trace.

A replay that ignores launch times (``respect_launch=False``, the default of ``moesim replay``)
runs every kernel as soon as its stream and dependencies allow: as if the CPU always ran ahead of
the GPU. That is right for a GPU-bound trace and wrong for one whose GPU sat idle waiting for the
CPU to launch the next kernel (small kernels, Python overhead, host synchronisation): such a replay
comes out shorter than the measurement by about the time the GPU waited.

The measure: the GPU's busy time is the union of all its ops' intervals (every stream); the idle
time is the rest of the span, a list of gaps. A gap ``[a, b)`` ends when the next op starts at
``b``; that op was *waiting for its launch* for ``min(b - a, e + LAUNCH_LATENCY_US - a)`` of it
(none if that is negative), with ``e`` the end of its launching runtime call (``cudaLaunchKernel``
etc.; its start if the call has no duration): the GPU went idle before the CPU had launched it.
A trace is **launch-bound** when that waiting adds up to at least :data:`LAUNCH_BOUND_SHARE` of the
span: a replay ignoring launch times may then be short by that much. Gaps whose next op has no
known launch count as ``unknown``.
"""

from __future__ import annotations

from dataclasses import dataclass

from workloads.kineto_types import KinetoTrace

LAUNCH_LATENCY_US = 20.0
"""Time (µs) a kernel may take from the end of its launch call to its start and still count as
started by its launch."""
LAUNCH_BOUND_SHARE = 0.2
"""Launch-bound: the GPU waits for launches at least this fraction of the span."""


@dataclass(frozen=True)
class LaunchProfile:
    """How much of a trace's GPU time went to waiting for CPU launches. Times in seconds.

    Attributes:
        span: first GPU op start to last GPU op end.
        busy: time at least one GPU op runs (the union over streams).
        launch_wait: idle time in which the next op was waiting for its launch (module docstring).
        unknown: idle time before ops whose launch is not in the trace.
        gaps: idle gaps (between the union's intervals).
        launch_gaps: gaps with some launch wait.
    """

    span: float
    busy: float
    launch_wait: float
    unknown: float
    gaps: int
    launch_gaps: int

    @property
    def idle(self) -> float:
        """Seconds of the span with no GPU op running."""
        return max(self.span - self.busy, 0.0)

    @property
    def busy_fraction(self) -> float:
        """Busy time over the span (1.0 for an empty span)."""
        return self.busy / self.span if self.span > 0 else 1.0

    @property
    def wait_fraction(self) -> float:
        """Launch wait over the span."""
        return self.launch_wait / self.span if self.span > 0 else 0.0

    @property
    def launch_bound(self) -> bool:
        """Whether the GPU waited for launches at least :data:`LAUNCH_BOUND_SHARE` of the span."""
        return self.wait_fraction >= LAUNCH_BOUND_SHARE

    def verdict(self) -> str:
        """One line: ``launch-bound`` or ``GPU-bound`` with the measured figures."""
        idle = self.idle
        of_idle = f", {self.launch_wait / idle:.1%} of its idle time" if idle > 0 else ""
        line = (
            f"{'launch-bound' if self.launch_bound else 'GPU-bound'}: GPU busy {self.busy_fraction:.1%} of "
            f"the {self.span * 1e3:.3f} ms span; it waited {self.launch_wait * 1e3:.3f} ms for CPU launches "
            f"({self.wait_fraction:.1%} of the span{of_idle}, {self.launch_gaps} of {self.gaps} gaps)"
        )
        if self.unknown > 0:
            line += f"; {self.unknown * 1e3:.3f} ms idle before kernels of unknown launch"
        return line


def launch_profile(trace: KinetoTrace) -> LaunchProfile:
    """Measure how much the GPU of ``trace`` waited for CPU launches (see the module docstring).

    >>> trace = load_kineto("../shared/data/traces/hta_nccl_2rank_rank0.json.gz")  # doctest: +SKIP
    >>> launch_profile(trace).launch_bound  # doctest: +SKIP
    True
    """
    ops = sorted(trace.kernels, key=lambda k: (k.start, k.index))
    if not ops:
        return LaunchProfile(0.0, 0.0, 0.0, 0.0, 0, 0)
    slack = LAUNCH_LATENCY_US * 1e-6
    busy = wait = unknown = 0.0
    gaps = launch_gaps = 0
    lo, hi = ops[0].start, ops[0].end
    for k in ops[1:]:
        if k.start <= hi:
            hi = max(hi, k.end)
            continue
        busy += hi - lo
        gaps += 1
        gap = k.start - hi
        launched = k.launch_end if k.launch_end is not None else k.launch
        if launched is None:
            unknown += gap
        else:
            waited = min(gap, launched + slack - hi)
            if waited > 0:
                wait += waited
                launch_gaps += 1
        lo, hi = k.start, k.end
    busy += hi - lo
    return LaunchProfile(trace.span, busy, wait, unknown, gaps, launch_gaps)
