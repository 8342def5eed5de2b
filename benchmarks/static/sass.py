"""Parse ``cuobjdump -sass`` / ``-res-usage`` text into the figures the contracts check.

Everything here is static: counts of instructions in the code, not of instructions executed.

- A **loop** is the address range [target, source] of a branch (``BRA``) to an earlier address; back edges
  to the same target merge into one loop (the ``BRA`` to itself that pads the end of a kernel is not one).
  Loops nested inside the measured region are weighted by ``inner_trips`` (their trip count, when the spec
  knows it, e.g. Triton's ``range(NUM_CB)``); otherwise every instruction counts once.
- A **subroutine** is the range from a ``CALL.REL`` target to the next ``RET``. It is not part of the
  kernel's body (its loops are not the kernel's loops). Subroutines sit after the body's last ``EXIT``; a
  ``CALL.REL`` to an address inside the body is a jump: sm_80–89 ptxas ends some loops with a predicated
  ``CALL.REL.NOINC`` to the instruction after the back edge, a loop exit with no ``RET`` (counted as a call,
  it hid the rest of the kernel), while ``CALL.REL.NOINC`` also calls the real division routine. A
  subroutine that converts a 64-bit integer with ``I2F.U64.RP`` and takes ``MUFU.RCP`` of it is the
  software 64-bit division/modulo routine (the code both ptxas and nvcc emit for an int64 ``//`` or ``%``;
  see ``test_detectors_on_probe_kernels`` in the contract tests).
- **Spills** are local-memory stores/loads (``STL``/``LDL``), in bytes by access width. Triton kernels
  have no local arrays, so for them local traffic is spill traffic; for CUDA ptxas's own report is kept
  beside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LINE = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_FUNCTION = re.compile(r"^\s*Function\s*:\s*(\S+)")
_RES = re.compile(r"^\s*Function\s+(\S+?):\s*$")
_REG = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")
_TARGET = re.compile(r"0x([0-9a-f]+)")

BARRIER_OPS = ("BAR.SYNC", "BAR.RED", "BAR.ARV", "BAR")  # block barriers (not MEMBAR, not BRA)


@dataclass(frozen=True)
class Instr:
    addr: int
    pred: str
    op: str  # opcode with modifiers, e.g. "BAR.SYNC.DEFER_BLOCKING"
    args: str

    @property
    def base(self) -> str:
        return self.op.split(".")[0]


@dataclass
class Function:
    name: str
    instrs: list[Instr] = field(default_factory=list)


def parse_sass(text: str) -> dict[str, Function]:
    """``cuobjdump -sass`` text -> {function name: Function}."""
    functions: dict[str, Function] = {}
    current = None
    for line in text.splitlines():
        if m := _FUNCTION.match(line):
            current = functions.setdefault(m.group(1), Function(m.group(1)))
            continue
        m = _LINE.match(line)
        if m is None or current is None:
            continue
        body = m.group(2).strip()
        pred = ""
        if body.startswith("@"):
            pred, _, body = body.partition(" ")
        op, _, args = body.strip().partition(" ")
        current.instrs.append(Instr(int(m.group(1), 16), pred, op, args.strip()))
    return functions


def parse_res_usage(text: str) -> dict[str, dict[str, int]]:
    """``cuobjdump -res-usage`` text -> {function name: {registers, stack, shared, local}}."""
    out: dict[str, dict[str, int]] = {}
    name = None
    for line in text.splitlines():
        if m := _RES.match(line):
            name = m.group(1)
        elif name and (m := _REG.search(line)):
            reg, stack, shared, local = map(int, m.groups())
            out[name] = dict(registers=reg, stack=stack, shared=shared, local=local)
            name = None
    return out


def _branch_target(ins: Instr) -> int | None:
    if ins.base not in ("BRA", "CALL"):
        return None
    m = _TARGET.search(ins.args)
    return int(m.group(1), 16) if m else None


def subroutines(fn: Function) -> dict[int, tuple[int, int]]:
    """{call target: (start, end address)} of the CALL.REL subroutines: targets past the body's last EXIT
    (module docstring; a call into the body is a loop exit)."""
    ends = [i.addr for i in fn.instrs if i.base == "RET"]
    body_end = max((i.addr for i in fn.instrs if i.base == "EXIT"), default=-1)
    out = {}
    for ins in fn.instrs:
        if ins.op.startswith("CALL.REL") and (t := _branch_target(ins)) is not None and t > body_end:
            end = min((e for e in ends if e >= t), default=fn.instrs[-1].addr)
            out[t] = (t, end)
    return out


def _in(addr: int, ranges) -> bool:
    return any(lo <= addr <= hi for lo, hi in ranges)


def loops(fn: Function) -> list[tuple[int, int]]:
    """Loop address ranges (start, end) of the kernel body, from its backward branches."""
    subs = list(subroutines(fn).values())
    heads: dict[int, int] = {}
    for ins in fn.instrs:
        t = _branch_target(ins)
        if ins.base == "BRA" and t is not None and t < ins.addr and not _in(ins.addr, subs):  # not the BRA-to-self pad
            heads[t] = max(heads.get(t, 0), ins.addr)
    return sorted(heads.items())


def main_loop(fn: Function, which: str) -> tuple[int, int] | None:
    """The loop a contract measures: ``outer`` (the widest loop), ``around:<OP>`` (the smallest loop that
    holds an instruction whose opcode starts with OP, e.g. ``around:MUFU.EX2``); None for ``kernel`` or when
    no loop qualifies."""
    ranges = loops(fn)
    if which == "kernel" or not ranges:
        return None
    if which == "outer":
        return max(ranges, key=lambda r: (r[1] - r[0], -r[0]))
    if which.startswith("around:"):
        op = which.split(":", 1)[1]
        marks = [i.addr for i in fn.instrs if i.op.startswith(op)]
        holding = [r for r in ranges if any(r[0] <= a <= r[1] for a in marks)]
        return min(holding, key=lambda r: r[1] - r[0]) if holding else None
    raise ValueError(f"unknown region {which!r} (outer, around:<OP>, kernel)")


def _width(op: str) -> int:
    for mod, size in ((".128", 16), (".64", 8), (".U16", 2), (".S16", 2), (".U8", 1), (".S8", 1)):
        if mod in op:
            return size
    return 4


def is_div64_routine(fn: Function, span: tuple[int, int]) -> bool:
    body = [i for i in fn.instrs if span[0] <= i.addr <= span[1]]
    return any(i.op.startswith("I2F.U64.RP") for i in body) and any(i.op == "MUFU.RCP" for i in body)


def figures(fn: Function, region: str, inner_trips: int = 1) -> dict:
    """Static figures of one kernel; ``region`` picks the measured loop (see :func:`main_loop`)."""
    subs = subroutines(fn)
    sub_ranges = list(subs.values())
    body = [i for i in fn.instrs if not _in(i.addr, sub_ranges) and i.op != "NOP"]
    loop_ranges = loops(fn)
    in_loop = lambda i: _in(i.addr, loop_ranges)
    main = main_loop(fn, region)
    main_body = [i for i in body if main is None or main[0] <= i.addr <= main[1]]
    inner = [r for r in loop_ranges if r != main and (main is None or (main[0] <= r[0] and r[1] <= main[1]))]
    weighted = sum(inner_trips if _in(i.addr, inner) else 1 for i in main_body)
    div_targets = {t for t, span in subs.items() if is_div64_routine(fn, span)}
    div_calls = [i for i in body if i.op.startswith("CALL") and _branch_target(i) in div_targets]
    stl = [i for i in body if i.base == "STL"]
    ldl = [i for i in body if i.base == "LDL"]
    fences = [i for i in body if i.base == "MEMBAR"]
    barrier = lambda i: i.base in ("BAR",) or i.op.startswith(BARRIER_OPS[:3])
    return dict(
        instructions=len(body),
        loops=len(loop_ranges),
        measured_region=region if main is not None or region == "kernel" else f"kernel (no loop for {region})",
        region_instructions=len(main_body),
        region_instructions_weighted=weighted,
        inner_trips=inner_trips,
        spill_store_bytes=sum(_width(i.op) for i in stl),
        spill_load_bytes=sum(_width(i.op) for i in ldl),
        spills_in_loop=sum(1 for i in stl + ldl if in_loop(i)),
        fences=len(fences),
        fences_in_loop=sum(1 for i in fences if in_loop(i)),
        fence_kinds=sorted({i.op for i in fences}),
        div64_routines=len(div_targets),
        div64_calls=len(div_calls),
        div64_calls_in_loop=sum(1 for i in div_calls if in_loop(i)),
        barriers=sum(1 for i in body if barrier(i)),
        barriers_in_region=sum(1 for i in main_body if barrier(i)),
        mufu_ex2_in_region=sum(1 for i in main_body if i.op.startswith("MUFU.EX2")),
        mufu_in_region=sum(1 for i in main_body if i.base == "MUFU"),
        global_stores_in_region=sum(1 for i in main_body if i.base == "STG"),
        atomics_in_region=sum(1 for i in main_body if i.base in ("ATOMG", "RED", "REDG", "ATOM")),
    )
